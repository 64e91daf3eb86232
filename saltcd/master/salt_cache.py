"""Salt's cache (the master's cache driver), made once per process.

Making one builds a loader (4-6 ms here), and on Python 3.11 the first use of
every new one waits on a lock all of them share (``functools.cached_property``).
The saltcd ext_pillar runs on every pillar compile and the runner on every push
the reactor hands on, both in long-lived master processes: each process keeps
one per driver and cache directory, made on first use (after Salt has forked
it). The reactor's threads share it as Salt's own threads share a loader: the
loader keeps some per-call context, which the localfs calls saltcd makes do
not depend on (they take the cache directory as an argument).

With `saltcd:store:driver: etcd` the store is an etcd cluster that several
masters share (saltcd.ha.etcd_cache.EtcdCache), one per process as well.
"""

from saltcd import compat, config

_CACHES = {}


def cache_for(opts):
    """The Cache for `opts`' driver and cachedir (or saltcd's etcd store), made on first use."""
    conf = config.store_config(opts.get("saltcd"))
    if conf.shared:
        return _etcd_cache(conf)
    key = (opts.get("cache", "localfs"), opts.get("cachedir"))
    if key not in _CACHES:
        import salt.cache  # noqa: PLC0415 - only the master side needs Salt here

        _CACHES[key] = compat.cache(salt.cache.factory(opts))
    return _CACHES[key]


def _etcd_cache(conf):
    key = ("etcd", conf.endpoints, conf.prefix)
    if key not in _CACHES:
        from saltcd.ha import etcd_cache, etcd_cluster  # noqa: PLC0415 - etcd only when configured

        _CACHES[key] = etcd_cache.EtcdCache(etcd_cluster.EtcdCluster(conf), conf.prefix)
    return _CACHES[key]
