"""
saltcd_drains: the master engine that runs saltcd's rollouts.

``deploy.accept`` (the reactor), ``deploy.resume`` (the schedule) and anyone
else fire ``saltcd/drain/<app>/<env>``; this engine runs that app/env's queue
in a worker thread, one app/env at a time. Wired by ``python -m
saltcd.master_config``:

.. code-block:: yaml

    engines_dirs: [/srv/saltcd/_engines]
    engines:
      - saltcd_drains: {}
"""

import logging

import salt.utils.event

from saltcd import binding
from saltcd.drain_workers import DrainWorkers

log = logging.getLogger(__name__)

__virtualname__ = "saltcd_drains"


def __virtual__():
    return __virtualname__


def _drain(app, env):
    with binding.controller_for(__opts__) as ctl:
        drained = ctl.drain(app, env)
    log.info("saltcd: drained %s/%s: %s, %d rollout(s)", app, env, drained["status"], len(drained["rollouts"]))


def start():
    """Listen for drain requests until the master stops this process."""
    workers = DrainWorkers(_drain)
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
        log.info("saltcd: drain engine listening for %s*", binding.DRAIN_TAG_PREFIX)
        while True:
            event = bus.get_event(wait=5, tag=binding.DRAIN_TAG_PREFIX, full=True)
            if not event:
                continue
            parts = event["tag"][len(binding.DRAIN_TAG_PREFIX):].split("/")
            if len(parts) != 2 or not all(parts):
                log.warning("saltcd: ignoring malformed drain request %r", event["tag"])
                continue
            workers.request(*parts)
