"""One master at a time per app/env: an etcd key held under a lease, its revision
the fencing token.

A master takes `<prefix>/locks/<app>.<env>` only if the key is absent, under a
lease of `lease_ttl` seconds that a thread renews every `lease_renew`. The
revision at which it took the key (the key's create_revision) is its token:
etcd's revisions only grow, so a later holder always has a larger one.

A lease is not a lock by itself (etcd's own documentation): a master paused
past its TTL wakes believing it still holds the key. So the token is checked
where the harm would be done:

- every write to the store while holding the lock is a transaction that
  succeeds only while the key still exists at that revision (EtcdCache.fenced);
- before every step on the minions the holder checks its own deadline: the
  last renewal the cluster confirmed, plus the TTL, counted from when that
  renewal was *sent* (so the master's deadline comes before etcd's);
- the minions keep the highest token they have seen per app/env and refuse a
  step that carries a lower one (salt/_utils/saltcd_minion.py: fence).
"""

import json
import logging
import threading
import time

from saltcd.errors import Fenced
from saltcd.ha import etcd_cluster

log = logging.getLogger(__name__)


__all__ = ["Fenced", "LeaseLock", "holder_of", "lock_key"]


def lock_key(prefix, name):
    """The etcd key of one lock (`app.env`, or `reconcile`)."""
    return f"{prefix}/locks/{name}"


class LeaseLock:
    """The lock of one app/env on one etcd cluster (`owner`: who holds it, for people)."""

    def __init__(self, cluster, key, ttl, renew, owner, clock=None):
        self.cluster = cluster
        self.key = key
        self.ttl = ttl
        self.renew = renew
        self.owner = owner
        # CLOCK_BOOTTIME goes on while the host is suspended (monotonic does not):
        # a master that slept past its lease must see its deadline passed.
        self.clock = clock or (lambda: time.clock_gettime(time.CLOCK_BOOTTIME))
        self.lease = None
        self.token = None
        self.deadline = 0.0
        self._stop = threading.Event()
        self._renewer = None

    def acquire(self):
        """Take the key if it is free: True, with `token` set and renewal running."""
        sent = self.clock()
        lease = self.cluster.grant(self.ttl)
        taken, reply = self.cluster.txn(
            [etcd_cluster.absent(self.key)],
            [etcd_cluster.put_op(self.key, json.dumps({**self.owner, "lease": lease}), lease)])
        if not taken:
            self.cluster.revoke(lease)
            return False
        self.lease, self.token = lease, int(reply["header"]["revision"])
        self.deadline = sent + self.ttl
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                         name=f"saltcd-lease-{self.key.rsplit('/', 1)[-1]}")
        self._renewer.start()
        return True

    def valid(self):
        """True while the last confirmed renewal still covers now."""
        return self.token is not None and self.clock() < self.deadline

    def stamp(self):
        """What a rollout's record and deploy data carry of this lock: which master
        holds it, and the token the minions compare."""
        return {"master": self.owner.get("master"), "token": self.token, "lock": self.key}

    def check(self, what="go on"):
        """Raise Fenced unless this master may still `what`."""
        if not self.valid():
            raise Fenced(f"fenced: lost the lock {self.key} (lease not renewed within {self.ttl:g} s): "
                         f"will not {what}")

    def _renew_until_stopped(self):
        while not self._stop.wait(self.renew):
            sent = self.clock()
            try:
                left = self.cluster.keepalive(self.lease)
            except Exception as exc:  # noqa: BLE001 - any failure: try again until the deadline
                log.warning("saltcd: cannot renew %s (%s); it lapses in %.1f s", self.key, exc,
                            max(self.deadline - self.clock(), 0))
                continue
            if left <= 0:
                log.error("saltcd: the lease of %s had expired: another master may hold it now", self.key)
                self.deadline = 0.0
                return
            self.deadline = sent + left

    def release(self):
        """Stop renewing and give the key back (revoking the lease deletes it)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(self.renew + 1)
        if self.lease is not None:
            try:
                self.cluster.revoke(self.lease)
            except etcd_cluster.StoreUnavailable as exc:
                log.warning("saltcd: could not release %s (%s): it lapses with its lease", self.key, exc)
        self.lease, self.token, self.deadline = None, None, 0.0


def holder_of(cluster, key):
    """(owner, token) of whoever holds `key` now, or (None, None)."""
    found = cluster.range(key)
    if not found:
        return None, None
    _, value, revision = found[0]
    try:
        owner = json.loads(value)
    except ValueError:
        owner = {}
    return owner, revision
