"""
saltcd_drains: the master engine that runs saltcd's rollouts.

``deploy.accept`` (the reactor), ``deploy.resume`` (the schedule) and anyone
else fire ``saltcd/drain/<app>/<env>``; this engine runs that app/env's queue
in a worker thread, one app/env at a time. Salt finds this engine through
saltcd's ``salt.loader`` entry point; ``python -m saltcd.master.master_config`` only
adds it to the master's engines:

.. code-block:: yaml

    engines:
      - saltcd_drains: {}
"""

import functools
import logging

import salt.utils.event

from saltcd import config, vocabulary
from saltcd.master import wiring
from saltcd.queue.queue_workers import DrainWorkers

log = logging.getLogger(__name__)

__virtualname__ = "saltcd_drains"


def __virtual__():
    return __virtualname__


def _drain(settings, app, env):
    with wiring.controller_for(__opts__, loaded=settings) as ctl:
        drained = ctl.drain(app, env)
    log.info("saltcd: drained %s/%s: %s, %d rollout(s)", app, env, drained["status"], len(drained["rollouts"]))


def start():
    """Listen for drain requests until the master stops this process.

    Any minion can put a `saltcd/drain/...` event on the master bus; it can
    only make an app/env run what is already queued (accepted, authenticated
    requests), so pairs saltcd does not deploy are ignored and nothing else
    is checked. The apps are read once: like the rest of the master's config,
    a change to `saltcd:` takes a master restart.
    """
    try:
        settings = wiring.settings(__opts__)
    except config.ConfigError as exc:
        # The runner functions say the same to whoever calls them.
        wiring.idle_engine(logging.ERROR, "saltcd: drain engine idle: invalid saltcd configuration "
                            "(fix it and restart the master): %s", exc)
    known = {(d.app, d.env) for d in settings.deployments()}
    workers = DrainWorkers(functools.partial(_drain, settings))
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
        log.info("saltcd: drain engine listening for %s*", vocabulary.QUEUE_TAG_PREFIX)
        while True:
            event = bus.get_event(wait=5, tag=vocabulary.QUEUE_TAG_PREFIX, full=True, auto_reconnect=True)
            if not event:
                continue
            pair = tuple(event["tag"][len(vocabulary.QUEUE_TAG_PREFIX):].split("/"))
            if pair not in known:
                log.debug("saltcd: ignoring drain request %r: no such app/env", event["tag"][:200])
                continue
            workers.request(*pair)
