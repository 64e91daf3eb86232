"""Salt's cache interface (fetch, store, flush, list) on etcd, plus what Salt's
cache lacks: create-if-absent, and writes fenced by a lease lock.

A record is one key, `<prefix>/data/<bank>/<key>`, its value the record as
JSON (what Salt's localfs driver keeps as msgpack: dicts, lists, text, numbers).
`list(bank)` names what is directly under the bank, records and banks alike,
as localfs lists files and folders.

Fencing: inside `fenced(lock)`, every store and flush this thread makes is a
transaction that succeeds only while `lock` is still held at its token, and
is refused before it is sent once the lock's own deadline has passed. A
refused write raises Fenced: the master that made it has lost the app/env.
"""

import contextlib
import json
import threading

from saltcd.errors import Fenced
from saltcd.ha import etcd_cluster
from saltcd.ha.lease_lock import holder_of


class EtcdCache:
    """saltcd's store on an etcd cluster (see the module docstring)."""

    def __init__(self, cluster, prefix):
        self.cluster = cluster
        self.prefix = prefix
        self._local = threading.local()

    def _path(self, bank, key=None):
        base = f"{self.prefix}/data/{bank.strip('/')}"
        return base if key is None else f"{base}/{key}"

    def fetch(self, bank, key):
        """The record at bank/key, or {} (as Salt's cache answers for a missing key)."""
        found = self.cluster.range(self._path(bank, key))
        return json.loads(found[0][1]) if found and found[0][1] else {}

    def list(self, bank):
        """The names directly under `bank` (records and banks), without duplicates."""
        base = self._path(bank) + "/"
        names = {path[len(base):].split("/", 1)[0]
                 for path, _, _ in self.cluster.range(base, prefix=True, keys_only=True)}
        return sorted(names)

    def holds(self, key, token):
        """True while lock `key` is held at `token` (a rollout's deploy data is served only then)."""
        return holder_of(self.cluster, key)[1] == token

    def store(self, bank, key, data):
        self._write([etcd_cluster.put_op(self._path(bank, key), json.dumps(data))])

    def flush(self, bank, key=None):
        """Forget one record, or a whole bank with what is under it."""
        if key is None:
            self._write([etcd_cluster.delete_op(self._path(bank) + "/", prefix=True)])
        else:
            self._write([etcd_cluster.delete_op(self._path(bank, key))])

    def create(self, bank, key, data):
        """Store `data` at bank/key only if nothing is there: True if this call made it.

        What two masters that both heard one push do: exactly one of them creates."""
        path = self._path(bank, key)
        made, _ = self.cluster.txn([etcd_cluster.absent(path), *self._fence_compares()],
                                   [etcd_cluster.put_op(path, json.dumps(data))])
        if not made:
            self._check_fence()
        return made

    # fencing
    @contextlib.contextmanager
    def fenced(self, lock):
        """Make this thread's writes conditional on `lock` (a held LeaseLock)."""
        previous = getattr(self._local, "lock", None)
        self._local.lock = lock
        try:
            yield self
        finally:
            self._local.lock = previous

    def _fence_compares(self):
        lock = getattr(self._local, "lock", None)
        if lock is None:
            return []
        lock.check("write to the store")
        return [etcd_cluster.created_at(lock.key, lock.token)]

    def _check_fence(self):
        """After a refused transaction: raise Fenced if the fence is what refused it."""
        lock = getattr(self._local, "lock", None)
        if lock is not None:
            _, token = holder_of(self.cluster, lock.key)
            if token != lock.token:
                raise Fenced(f"fenced: {lock.key} is held at token {token}, not ours ({lock.token}): write refused")

    def _write(self, ops):
        compares = self._fence_compares()
        if not compares:
            for op in ops:  # one op each: no transaction needed
                self._send(op)
            return
        done, _ = self.cluster.txn(compares, ops)
        if not done:
            lock = self._local.lock
            raise Fenced(f"fenced: {lock.key} is no longer held at token {lock.token}: write refused")

    def _send(self, op):
        if "request_put" in op:
            self.cluster.call("kv/put", op["request_put"])
        else:
            self.cluster.call("kv/deleterange", op["request_delete_range"])

