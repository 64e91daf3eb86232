"""What saltcd's three master engines do on the running master, given its opts.

The engine modules (_engines/) only hand Salt's `__opts__` and their
configured arguments to these functions, which run until the master stops the
engine's process. An engine that cannot work (invalid configuration, nothing
to send to) says why once and idles (wiring.idle_engine): the master restarts
an engine process that ends, so returning would log the same error forever.
"""

import asyncio
import functools
import logging

from saltcd import config, store, vocabulary
from saltcd.config import notify_targets
from saltcd.ingress import ingress_key, nonces
from saltcd.master import salt_cache, wiring
from saltcd.present import outgoing, sent_marks
from saltcd.queue import locking
from saltcd.queue.queue_workers import QueueWorkers

log = logging.getLogger(__name__)



class MasterBus:
    """The master's event bus, one connection reused by the webhook's worker thread."""

    def __init__(self, opts):
        self.opts = opts
        self.event = None

    def fire(self, tag, data):
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        for attempt in (1, 2):
            try:
                if self.event is None:
                    self.event = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"],
                                                                   listen=False)
                if self.event.fire_event(data, tag) is False:  # could not connect to the bus
                    raise ConnectionError("the master's event bus is not reachable")
                return
            except Exception:  # pylint: disable=broad-except
                if self.event is not None:
                    self.event.destroy()
                self.event = None
                if attempt == 2:
                    raise


def _listen(opts):
    """The master's event bus, to listen on."""
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    return salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)


def serve_webhook(opts, address=vocabulary.WEBHOOK_ADDRESS, port=vocabulary.WEBHOOK_PORT,
                  ssl_crt=None, ssl_key=None):
    """The saltcd_webhook engine: serve POST /saltcd/<source> (saltcd.ingress.webhook)."""
    # Only this engine's process serves with tornado 6, which on Salt 3006 means
    # taking it past Salt's import hook (saltcd.compat.tornado): the other
    # engines, which import this module too, keep Salt's tornado as they found it.
    from saltcd.ingress import webhook  # pylint: disable=import-outside-toplevel

    key = ingress_key.load_or_create(opts["cachedir"])
    cache = salt_cache.cache_for(opts)
    try:
        settings = wiring.settings(opts)
    except config.ConfigError as exc:
        # Fail closed but visibly: the log says why; every post gets 503 (INVALID_CONFIG).
        log.error("saltcd_webhook: invalid saltcd configuration, refusing every post: %s", exc)
        settings = None
    records = store.Store(cache)
    if settings is not None:
        records.configure(store.Limits.from_settings(settings))
    door = webhook.Door(settings, key, MasterBus(opts).fire,
                        nonces.NonceCache(cache, lock_dir=opts["cachedir"], master=opts["id"]))
    ssl_options = {"certfile": ssl_crt, "keyfile": ssl_key} if ssl_crt and ssl_key else None

    async def main():
        webhook.server(door, address, port, ssl_options)
        log.info("saltcd_webhook: listening on %s:%s (%s)", address, port, "https" if ssl_options else "http")
        await webhook.flush_forever(door, records)

    asyncio.run(main())


def _run_one_queue(opts, settings, app, env):
    with wiring.controller_for(opts, loaded=settings) as ctl:
        drained = ctl.run_queue(app, env)
    log.info("saltcd: drained %s/%s: %s, %d rollout(s)", app, env, drained["status"], len(drained["rollouts"]))


def run_queues(opts):
    """The saltcd_drains engine: run an app/env's queue when `saltcd/drain/<app>/<env>` fires.

    Any minion can put such an event on the master bus; it can only make an
    app/env run what is already queued (accepted, authenticated requests), so
    pairs saltcd does not deploy are ignored and nothing else is checked. The
    apps are read once: like the rest of the master's config, a change to
    `saltcd:` takes a master restart.
    """
    try:
        settings = wiring.settings(opts)
    except config.ConfigError as exc:
        # The runner functions say the same to whoever calls them.
        wiring.idle_engine(logging.ERROR, "saltcd: drain engine idle: invalid saltcd configuration "
                           "(fix it and restart the master): %s", exc)
    known = {(d.app, d.env) for d in settings.deployments()}
    workers = QueueWorkers(functools.partial(_run_one_queue, opts, settings))
    orphans = _orphan_finder(opts, settings, known)
    with _listen(opts) as bus:
        log.info("saltcd: drain engine listening for %s*", vocabulary.QUEUE_TAG_PREFIX)
        while True:
            for pair in orphans(workers.running()):
                workers.request(*pair)
            # With a shared store, wake for orphans every lease_renew (orphans is always a function).
            event = bus.get_event(wait=settings.store.lease_renew if settings.store.shared else 5,
                                  tag=vocabulary.QUEUE_TAG_PREFIX, full=True, auto_reconnect=True)
            if not event:
                continue
            pair = tuple(event["tag"][len(vocabulary.QUEUE_TAG_PREFIX):].split("/"))
            if pair not in known:
                log.debug("saltcd: ignoring drain request %r: no such app/env", event["tag"][:200])
                continue
            workers.request(*pair)


def _orphan_finder(opts, settings, known):
    """With a shared store: a function that names the app/envs with queued requests
    and no master holding their lock (their master died, or the drain event
    reached no master that could run it): the engine drains them, which takes a
    dead master's rollout over. One master: a function that names none (its own
    drains start from events, and a restart marks what was running interrupted)."""
    if not settings.store.shared:
        return lambda running: []
    records = store.Store(salt_cache.cache_for(opts))
    locks = locking.SharedLocks(records.cache, settings.store, opts["id"])

    def orphans(running):
        try:
            pairs = [pair for pair in records.app_envs_with_requests()
                     if pair in known and pair not in running and not locks.taken(*pair)]
        except Exception as exc:  # noqa: BLE001 - the store unreachable or refusing: look again later
            log.warning("saltcd: cannot look for rollouts to take over: %s", f"{type(exc).__name__}: {exc}"[:300])
            return []
        for app, env in pairs:
            log.info("saltcd: %s/%s has queued requests and no master running them: draining", app, env)
        return pairs
    return orphans


def send_notifications(opts, backoff=1.0):
    """The saltcd_notify engine: send the notifications of every rollout (saltcd.present.outgoing).

    Reads `saltcd:notify` once (a change takes a master restart, like the rest
    of the master config); with no endpoint configured, or an invalid one, it idles.
    """
    raw = (opts.get("saltcd") or {}).get("notify") or []
    try:
        targets = notify_targets.targets(raw, resolve_secret=lambda value: wiring.resolve_secret(value, opts))
    except (notify_targets.NotifyConfigError, config.ConfigError) as exc:
        wiring.idle_engine(logging.ERROR, "saltcd: notify engine idle: invalid saltcd:notify "
                           "(fix it and restart the master): %s", exc)
    if not targets:
        wiring.idle_engine(logging.DEBUG, "saltcd: no saltcd:notify endpoint configured; notify engine idle")
    notifier = outgoing.Notifier(targets, backoff=float(backoff))
    cache = salt_cache.cache_for(opts)
    records = outgoing.Records(store.Store(cache).rollout, sent_marks.SentMarks(cache))
    with _listen(opts) as bus:
        log.info("saltcd: notify engine sending to %d endpoint(s)", len(targets))
        while True:
            event = bus.get_event(wait=5, tag=vocabulary.DEPLOY_TAG_PREFIX, full=True, auto_reconnect=True)
            data = records.data(event["tag"], event.get("data")) if event else None
            if data is not None:
                notifier.submit(event["tag"], data)
