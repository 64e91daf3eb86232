"""
saltcd_notify: the master engine that sends rollout notifications.

It listens for ``saltcd/deploy/<app>/<env>/started|finished`` and posts to the
endpoints of ``saltcd:notify`` (Slack incoming webhooks, generic JSON
webhooks) from its own thread and bounded queue: a slow or dead endpoint
never holds up a rollout. What it sends comes from saltcd's rollout record,
not from the event (which any minion could fire), once per rollout and kind,
remembered in saltcd's store across restarts: see ``outgoing.Records``. Salt
finds this engine through saltcd's ``salt.loader`` entry point;
``python -m saltcd.master_config`` adds it:

.. code-block:: yaml

    engines:
      - saltcd_notify: {}
"""

from saltcd.master import engines

__virtualname__ = "saltcd_notify"


def __virtual__():
    return __virtualname__


def start(backoff=1.0):
    """Send the notifications of every rollout until the master stops this process."""
    engines.send_notifications(__opts__, backoff)  # noqa: F821 - Salt's dunder
