"""saltcd.compat: what differs between Salt lines, each checked on the line where it matters."""

import asyncio
import sys

import salt.version

from saltcd import compat


def test_the_line_is_the_running_salt_s():
    assert compat.LINE == salt.version.__saltstack_version__.major
    assert compat.LINE in (3006, 3007, 3008)


def test_the_webhook_engine_gets_tornado_6_whose_loop_is_asyncio_s():
    """Salt 3006 answers `import tornado` with its vendored tornado 4 (an import
    hook); the engine's asyncio server needs the real package on every line."""
    vendored_hooks = compat._vendored_tornado_hooks()  # pylint: disable=protected-access
    assert bool(vendored_hooks) == (compat.LINE == 3006)
    tornado = compat.tornado()
    assert tornado.version_info[0] >= 6 and "salt/ext" not in tornado.__file__
    import tornado.ioloop  # what the engine's own modules now resolve to
    assert sys.modules["tornado.ioloop"] is tornado.ioloop and "salt/ext" not in tornado.ioloop.__file__

    async def current():
        return tornado.ioloop.IOLoop.current().asyncio_loop is asyncio.get_running_loop()

    assert asyncio.run(current())
    assert compat._vendored_tornado_hooks() == vendored_hooks  # pylint: disable=protected-access


def test_the_cache_lists_keys_as_stored_on_every_line(tmp_path):
    """The localfs driver of Salt 3006 and 3007 lists `shop.p` as `sho`
    (rstrip(".p")): an app whose name ends in `p` lost its deploy data there."""
    import salt.cache
    import salt.config

    opts = salt.config.master_config(None)
    opts["cachedir"] = str(tmp_path)
    cache = compat.cache(salt.cache.factory(opts))
    for key in ("shop", "app.p", "web"):
        cache.store("saltcd/pillar/dev-1", key, {"app": key})
    assert sorted(cache.list("saltcd/pillar/dev-1")) == ["app.p", "shop", "web"]
    assert cache.list("saltcd/pillar") == ["dev-1"] and cache.list("saltcd/nothing") == []
    assert cache.fetch("saltcd/pillar/dev-1", "shop") == {"app": "shop"}
