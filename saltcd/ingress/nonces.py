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
sharing one cache backend still race across masters; the worst outcome is one
authentic push accepted twice within milliseconds, which the drain treats as
one rollout (newest request wins, same digest): acceptable.
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

    def __init__(self, cache, lock_dir=None):
        self.cache = cache
        self.lock_path = os.path.join(lock_dir, "saltcd", "locks", "nonces.lock") if lock_dir else None

    def first_sighting(self, nonce, now=None, window=300):
        """Record `nonce`, arriving at `now`; False if it was seen before. Raises
        Full when this minute already holds MAX_PER_BUCKET nonces. The caller has
        checked the MAC, and that the payload's time is within ±window of `now`."""
        now = time.time() if now is None else now
        with _flock(self.lock_path):
            live = self._prune(now, window)
            if any(self.cache.fetch(f"{BANK}/{name}", nonce) for name in live):
                return False
            bank = f"{BANK}/{_bucket(now)}"
            if len(self.cache.list(bank)) >= MAX_PER_BUCKET:
                raise Full(f"more than {MAX_PER_BUCKET} signed payloads within {BUCKET} s")
            self.cache.store(bank, nonce, {"seen": now})
            return True

    def forget(self, nonce, now):
        """Take back the sighting `first_sighting(nonce, now, ...)` recorded: the
        payload was not acted on (the bus refused it), so its sender's retry must
        not count as a replay."""
        with _flock(self.lock_path):
            self.cache.flush(f"{BANK}/{_bucket(now)}", nonce)

    def _prune(self, now, window):
        """Flush every bucket no replay can reach any more; return the others.

        A payload is accepted within ±window of its signed time, so a replay
        arrives at most 2 x window after the first sighting.
        """
        live = []
        for name in self.cache.list(BANK):
            try:
                start = int(name)
            except ValueError:
                continue
            if start + BUCKET + 2 * window < now:
                self.cache.flush(f"{BANK}/{name}")
            else:
                live.append(name)
        return live

    def buckets(self):
        """The bucket banks present."""
        return sorted(self.cache.list(BANK))
