"""What differs between the Salt lines saltcd supports (3006 LTS, 3007, 3008), in one place.

Each difference the matrix (`make test-matrix`) found is a function here with
the reason, and the rest of saltcd calls the function instead of testing the
Salt version itself. tests/unit/test_compat.py checks each on the line where
it matters.
"""

import importlib
import os
import sys

import salt.version

# The release line of the Salt running this code: 3006, 3007, 3008.
LINE = salt.version.__saltstack_version__.major

# The real tornado modules the webhook engine uses, directly or from inside
# tornado at run time (imported together: see tornado()).
_TORNADO_MODULES = (
    "tornado", "tornado.util", "tornado.escape", "tornado.log", "tornado.concurrent", "tornado.gen",
    "tornado.platform.asyncio", "tornado.ioloop", "tornado.iostream", "tornado.netutil", "tornado.process",
    "tornado.tcpserver", "tornado.httputil", "tornado.http1connection", "tornado.locale", "tornado.template",
    "tornado.routing", "tornado.locks", "tornado.queues", "tornado.httpserver", "tornado.web",
)


def _vendored_tornado_hooks():
    """Salt 3006's import hooks that answer `import tornado...` with its vendored tornado."""
    if not getattr(salt, "USE_VENDORED_TORNADO", False):
        return []
    return [hook for hook in sys.meta_path if type(hook).__name__ == "TornadoImporter"]


def tornado():
    """The tornado package (6.x) the webhook engine serves with.

    Salt 3006 puts an import hook on `sys.meta_path` (`salt.TornadoImporter`)
    that answers every `import tornado...` with its vendored tornado 4
    (`salt.ext.tornado`), whose IOLoop is not asyncio's: saltcd's engine, all
    asyncio, then listened on a loop that never ran and answered nothing. Here
    the real package is imported past that hook, every module of it the engine
    may reach at run time at once (a module first imported later would get
    the vendored one again), and left in `sys.modules` of the engine's own
    process; Salt's own code imports `salt.ext.tornado` by that name and is
    not affected. Salt 3007 and later have no such hook.
    """
    hooks = _vendored_tornado_hooks()
    if hooks:
        for name, module in list(sys.modules.items()):
            if (name == "tornado" or name.startswith("tornado.")) and \
                    getattr(module, "__name__", "").startswith("salt.ext."):
                del sys.modules[name]
        for hook in hooks:
            sys.meta_path.remove(hook)
    try:
        for name in _TORNADO_MODULES:
            importlib.import_module(name)
    finally:
        sys.meta_path[0:0] = hooks
    return sys.modules["tornado"]


class _Listed:
    """A salt.cache.Cache whose `list` gives back the keys as stored (see cache())."""

    def __init__(self, cache):
        self._cache = cache

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def list(self, bank):
        base = os.path.join(self._cache.cachedir, os.path.normpath(bank))
        if not os.path.isdir(base):
            return []
        return [name[:-2] if name.endswith(".p") else name for name in os.listdir(base)]


def cache(salt_cache):
    """`salt_cache` (a salt.cache.Cache) as saltcd uses it.

    The localfs driver of Salt 3006 and 3007 (3007.16 still) lists a key
    stored as `<key>.p` with `rstrip(".p")`, which cuts every trailing `.` and
    `p`: the deploy data of an app called `shop` was listed as `sho`, never
    found, and its every batch failed. There, the localfs banks are listed
    from their folder (as the driver stores them); 3008 lists them right.
    """
    if LINE < 3008 and getattr(salt_cache, "driver", None) == "localfs":
        return _Listed(salt_cache)
    return salt_cache
