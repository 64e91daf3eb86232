"""saltcd bound to a running master: its opts, cache, event bus and minions.

Both the `deploy` runner and the `saltcd_drains` engine build their Controller
here, so a rollout behaves the same whichever process runs it.
"""

import contextlib
import logging
import time
import typing

import salt.utils.event
import salt.utils.sdb

from saltcd import config, store
from saltcd.ingress import registry_events
from saltcd.master import salt_cache, salt_fleet
from saltcd.queue import controller, locking

log = logging.getLogger(__name__)



class Reporter:
    """Events on the master bus; progress lines to the log and, under salt-run, the job."""

    def __init__(self, opts, jid_event=None):
        self.opts = opts
        self.jid_event = jid_event

    def fire(self, tag, data):
        with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False) as bus:
            bus.fire_event(data, tag)

    def progress(self, text):
        # Progress lines carry what minions said (state comments): escaped for the log.
        log.info("saltcd: %s", registry_events.shown(text, 2000))
        if self.jid_event is not None:
            self.jid_event.fire_event({"message": text}, "progress")


def idle_engine(level, message, *args) -> typing.NoReturn:
    """Log `message` once, then wait until the master stops this engine process.

    An engine that returns is started again by the master's process manager,
    over and over, logging its reason each time; an engine with nothing to do
    (a configuration error, no endpoint) idles instead."""
    log.log(level, message, *args)
    while True:
        time.sleep(3600)


def resolve_secret(value, opts):
    """`value`, or what its `sdb://profile/key` names; ConfigError when that does not resolve.

    Strict: without it, sdb_get returns the URI itself for a missing profile, and a
    typo would make the URI text the secret. The URI (a path, not a secret) may be
    named in the error; the value never is.
    """
    if not (isinstance(value, str) and value.startswith("sdb://")):
        return value
    try:
        resolved = salt.utils.sdb.sdb_get(value, opts, strict=True)
    except Exception as exc:  # pylint: disable=broad-except  # any driver failure: same answer
        raise config.ConfigError(f"{value} does not resolve: {exc}") from None
    if not isinstance(resolved, str) or not resolved or resolved == value:
        raise config.ConfigError(f"{value} does not resolve to a non-empty string")
    return resolved


def settings(opts):
    """The validated `saltcd:` section; secrets given as `sdb://profile/key` are looked up."""
    return config.load(opts.get("saltcd"), resolve_secret=lambda value: resolve_secret(value, opts))


@contextlib.contextmanager
def controller_for(opts, jid_event=None, loaded=None):
    """A Controller on this master; its LocalClient is closed on exit (the engine lives long).
    `loaded`: settings already loaded from these opts (the engine loads them once)."""
    loaded = loaded or settings(opts)
    cache = salt_cache.cache_for(opts)
    fleet = salt_fleet.SaltFleet(opts)
    try:
        yield controller.Controller(
            settings=loaded,
            records=store.Store(cache),
            fleet=fleet,
            reporter=Reporter(opts, jid_event),
            lock_dir=opts["cachedir"],
            locks=locking.locks_for(cache, loaded.store, opts["cachedir"], opts["id"]),
            master=opts["id"],
        )
    finally:
        fleet.close()
