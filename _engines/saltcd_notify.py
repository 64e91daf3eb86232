"""
saltcd_notify: the master engine that sends rollout notifications.

It listens for ``saltcd/deploy/<app>/<env>/started|finished`` and posts to the
endpoints of ``saltcd:notify`` (Slack incoming webhooks, generic JSON
webhooks) from its own thread and bounded queue: a slow or dead endpoint
never holds up a rollout. What it sends comes from saltcd's rollout record,
not from the event (which any minion could fire), once per rollout and kind,
remembered in saltcd's store across restarts: see ``outgoing.Records``. Salt
finds this engine through saltcd's ``salt.loader`` entry point;
``python -m saltcd.master.master_config`` adds it:

.. code-block:: yaml

    engines:
      - saltcd_notify: {}
"""

import logging

import salt.utils.event

from saltcd import store, vocabulary
from saltcd.config import notify_targets
from saltcd.master import salt_cache, wiring
from saltcd.present import outgoing, sent_marks

log = logging.getLogger(__name__)

__virtualname__ = "saltcd_notify"



def __virtual__():
    return __virtualname__


def start(backoff=1.0):
    """Send the notifications of every rollout until the master stops this process.

    Reads `saltcd:notify` once (a change takes a master restart, like the rest
    of the master config); with no endpoint configured, or an invalid one, it idles.
    """
    raw = (__opts__.get("saltcd") or {}).get("notify") or []
    try:
        targets = notify_targets.targets(raw, resolve_secret=lambda value: wiring.resolve_secret(value, __opts__))
    except (notify_targets.NotifyConfigError, wiring.config.ConfigError) as exc:
        wiring.idle_engine(logging.ERROR, "saltcd: notify engine idle: invalid saltcd:notify "
                            "(fix it and restart the master): %s", exc)
    if not targets:
        wiring.idle_engine(logging.DEBUG, "saltcd: no saltcd:notify endpoint configured; notify engine idle")
    notifier = outgoing.Notifier(targets, backoff=float(backoff))
    cache = salt_cache.cache_for(__opts__)
    records = outgoing.Records(store.Store(cache).rollout, sent_marks.SentMarks(cache))
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
        log.info("saltcd: notify engine sending to %d endpoint(s)", len(targets))
        while True:
            event = bus.get_event(wait=5, tag=vocabulary.DEPLOY_TAG_PREFIX, full=True, auto_reconnect=True)
            data = records.data(event["tag"], event.get("data")) if event else None
            if data is not None:
                notifier.submit(event["tag"], data)
