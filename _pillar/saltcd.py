"""
saltcd: the deploy data of the rollouts that have this minion in a batch now.

Salt compiles pillar per minion on the master and sends it encrypted to that
minion only, so the image, ports and (often secret) environment of an app
reach the minions that run it, never the job that every minion's
subscription sees. The drain writes the entries (saltcd.rollout.deploy_pillar) just
before a batch's ``state.apply`` and takes them back after it. Salt finds
this module through saltcd's ``salt.loader`` entry point; ``python -m
saltcd.master_config`` adds it to the master's ``ext_pillar``:

.. code-block:: yaml

    ext_pillar:
      - saltcd: {}

Environment values given as ``sdb://profile/key`` are looked up here, on the
master (strictly: one that does not resolve fails the minion's pillar, and
with it the state run, naming the variable). Values under the minion's own
pillar ``saltcd_environment:<app>`` are added over them.
"""

import logging

import salt.utils.sdb

from saltcd.master import salt_cache
from saltcd.rollout import deploy_pillar

log = logging.getLogger(__name__)

__virtualname__ = "saltcd"


def __virtual__():
    return __virtualname__


def ext_pillar(minion_id, pillar, **kwargs):  # pylint: disable=unused-argument
    """{"saltcd_deploy": {app: {image, digest, container, ports, environment, ...}}}
    for the apps whose rollout has `minion_id` in its current batch, or pulling
    ahead of it (saltcd.rollout.prepull); {} otherwise."""
    entries = deploy_pillar.DeployPillar(salt_cache.cache_for(__opts__)).entries(minion_id)
    if not entries:
        return {}
    log.debug("saltcd: deploy pillar for %s: %s", minion_id, sorted(entries))
    return deploy_pillar.build(
        entries, pillar, resolve=lambda uri: salt.utils.sdb.sdb_get(uri, __opts__, strict=True),
        minion=minion_id)
