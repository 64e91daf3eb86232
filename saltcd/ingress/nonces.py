"""Nonces seen recently, in the store: a signed payload is accepted once.

Banks `saltcd/nonces/<bucket>`, one per BUCKET seconds of arrival time, one key
per nonce. A payload is valid for ±window seconds around its signed time, so a
replay arrives at most 2 x window after the first sighting: a bucket older than
that is flushed whole. Pruning costs one listing of the parent bank; a lookup
one fetch per live bucket (2 x window / BUCKET + 2 of them, 12 by default).

Bounded: only authenticated payloads are recorded (the caller checks the MAC
first), each bucket holds at most MAX_PER_BUCKET nonces (beyond that new ones
are refused: fail closed), and buckets older than the window are flushed.

Concurrency: the Salt cache has no compare-and-swap, so "look, then store" in
two reactor threads (or two runner processes) could both see a nonce as new and
both accept one payload. With `lock_dir` (the master cachedir) the check and
the store happen under an flock on `<lock_dir>/saltcd/locks/nonces.lock`, which
closes that race on one master (a fresh open() per holder, so threads exclude
each other too; the kernel drops it if the holder dies). Several masters
sharing an etcd store (saltcd.ha) need no flock: a sighting is created only if
absent, in one transaction, so exactly one master sees a nonce first. Every
master hears a push fired on the bus (hot multi-master), so a nonce that another
master saw first is not a replay but the same push delivered twice:
first_sighting raises SeenElsewhere, and intake ignores it instead of rejecting it.

The same cache, under bank `saltcd/seen`, tells a push two masters both accepted
from their webhooks (see Controller.accept).
"""

import contextlib
import fcntl
import os
import time

BANK = "saltcd/nonces"
BUCKET = 60  # seconds of signed time per bank
MAX_PER_BUCKET = 10_000


class Full(RuntimeError):
    """More than MAX_PER_BUCKET authenticated payloads in one bucket."""


class SeenElsewhere(RuntimeError):
    """Another master saw this nonce first: the same push, delivered to every master."""

    def __init__(self, master):
        super().__init__(f"accepted by master {master} (every master hears a push)")
        self.master = master


def _bucket(timestamp):
    return int(timestamp // BUCKET) * BUCKET


@contextlib.contextmanager
def _flock(path):
    if path is None:
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NonceCache:
    """`first_sighting(nonce, now, window)`: True once per nonce, then False
    (until `forget(nonce, now)` takes that sighting back)."""

    def __init__(self, cache, lock_dir=None, master=None, bank=BANK):
        self.cache = cache
        self.bank = bank
        self.master = master  # this master's id, told apart from the others' in a shared store
        # A shared store creates a sighting atomically: no flock (it would be this master's only).
        self.shared = hasattr(cache, "create")
        self.lock_path = (os.path.join(lock_dir, "saltcd", "locks", f"{bank.rsplit('/', 1)[-1]}.lock")
                          if lock_dir and not self.shared else None)

    def first_sighting(self, nonce, now=None, window=300):
        """Record `nonce`, arriving at `now`; False if it was seen before. Raises
        Full when this minute already holds MAX_PER_BUCKET nonces. The caller has
        checked the MAC, and that the payload's time is within ±window of `now`."""
        now = time.time() if now is None else now
        sighting = {"seen": now, "master": self.master}
        with _flock(self.lock_path):
            live = self._prune(now, window)
            for name in live:
                earlier = self.cache.fetch(f"{self.bank}/{name}", nonce)
                if earlier:
                    return self._again(earlier)
            bank = f"{self.bank}/{_bucket(now)}"
            if len(self.cache.list(bank)) >= MAX_PER_BUCKET:
                raise Full(f"more than {MAX_PER_BUCKET} signed payloads within {BUCKET} s")
            if not self.shared:
                self.cache.store(bank, nonce, sighting)
                return True
            if self.cache.create(bank, nonce, sighting):
                return True
            earlier = self.cache.fetch(bank, nonce)
            # Our own sighting: the create was committed, then retried at another
            # member after its answer was lost (saltcd.ha.etcd_cluster).
            return True if earlier == sighting else self._again(earlier)

    def _again(self, earlier):
        """A nonce seen before: a replay (False), or the same push heard by another master."""
        if self.master is not None and earlier.get("master") not in (None, self.master):
            raise SeenElsewhere(earlier["master"])
        return False

    def forget(self, nonce, now):
        """Take back the sighting `first_sighting(nonce, now, ...)` recorded: the
        payload was not acted on (the bus refused it), so its sender's retry must
        not count as a replay."""
        with _flock(self.lock_path):
            self.cache.flush(f"{self.bank}/{_bucket(now)}", nonce)

    def _prune(self, now, window):
        """Flush every bucket no replay can reach any more; return the others.

        A payload is accepted within ±window of its signed time, so a replay
        arrives at most 2 x window after the first sighting.
        """
        live = []
        for name in self.cache.list(self.bank):
            try:
                start = int(name)
            except ValueError:
                continue
            if start + BUCKET + 2 * window < now:
                self.cache.flush(f"{self.bank}/{name}")
            else:
                live.append(name)
        return live

    def buckets(self):
        """The bucket banks present."""
        return sorted(self.cache.list(self.bank))
