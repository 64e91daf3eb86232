"""Which rollout notifications were sent, kept in saltcd's store.

The notify engine sends each (rollout, step) once. Remembered in memory only,
a restart of the engine (every master restart) would forget, and a forged or
replayed `saltcd/deploy/...` event naming an old rollout would send its
message again. So the marks live in Salt's cache, like saltcd's records
(store.py): bank `saltcd/notified/<app>/<env>`, key `<rollout id>.<step>`.

Bounded by age: a mark is kept for `KEEP` seconds after its rollout started
(the time in the rollout's id, store.id_time), and a rollout older than that
is not notified at all, so no mark is ever needed past it.
"""

import time

from saltcd import store

BANK = f"{store.BANK}/notified"
# A week: far longer than any rollout runs (its batches have deadlines), so a
# real `finished` always comes within it.
KEEP = 7 * 86400
# Pruning lists a bank's keys: once an hour per app/env is enough.
PRUNE_EVERY = 3600


class SentMarks:
    """The (rollout, step) pairs already notified, per app/env, in `cache`."""

    def __init__(self, cache, keep=KEEP):
        self.cache = cache
        self.keep = keep
        self._pruned = {}  # bank -> when it was last pruned

    @staticmethod
    def _bank(app, env):
        return f"{BANK}/{app}/{env}"

    def stale(self, rollout_id, now=None):
        """Did the rollout start longer ago than the marks are kept (or is the id no rollout's)?"""
        made = store.id_time(rollout_id)
        return made is None or made < (time.time() if now is None else now) - self.keep

    def sent(self, app, env, rollout_id, step):
        """Was this step of this rollout notified already?"""
        return bool(self.cache.fetch(self._bank(app, env), f"{rollout_id}.{step}"))

    def mark(self, app, env, rollout_id, step, now=None):
        """Remember that this step of this rollout is notified (then prune, now and then)."""
        now = time.time() if now is None else now
        bank = self._bank(app, env)
        self.cache.store(bank, f"{rollout_id}.{step}", {"sent": now})
        if now - self._pruned.get(bank, float("-inf")) >= PRUNE_EVERY:
            self._pruned[bank] = now
            self.prune(app, env, now)

    def prune(self, app, env, now=None):
        """Flush the marks of rollouts too old to be notified; returns the keys flushed."""
        bank = self._bank(app, env)
        dropped = [key for key in self.cache.list(bank) if self.stale(key.split(".", 1)[0], now)]
        for key in dropped:
            self.cache.flush(bank, key)
        return dropped
