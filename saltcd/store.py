"""Durable records of saltcd on top of Salt's cache API.

Banks (one key per record, every write atomic per key on the localfs driver):

- `saltcd/requests/<app>/<env>`: accepted pushes waiting to run, key = request id
- `saltcd/rollouts/<app>/<env>`: the history, key = rollout id
- `saltcd/envs/<app>/<env>`: key `state`, the last digest that completed a rollout
- `saltcd/awaiting/<app>/<env>`: pushes to manual environments, waiting for approval
- `saltcd/audit/rejected`: rejected events (source, reason, time; never a secret)

Ids start with a UTC timestamp so sorting keys sorts by time. The cache has no
compare-and-swap, so every read-modify-write of one app/env happens under that
app/env's lock (see locking.py); appending a request never modifies a record.
"""

import secrets
import time

BANK = "saltcd"


def new_id(now=None):
    """A sortable, unique id: `20261126T093633.123456Z-1a2b3c`."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    micros = int((now % 1) * 1_000_000)
    return f"{stamp}.{micros:06d}Z-{secrets.token_hex(3)}"


class Store:
    """saltcd's requests, rollout history and per-environment state."""

    def __init__(self, cache):
        self.cache = cache

    @staticmethod
    def _bank(kind, app, env):
        return f"{BANK}/{kind}/{app}/{env}"

    def _records(self, kind, app, env):
        bank = self._bank(kind, app, env)
        records = []
        for key in sorted(self.cache.list(bank)):
            record = self.cache.fetch(bank, key)
            if record:
                records.append(record)
        return records

    def _put(self, kind, record):
        self.cache.store(self._bank(kind, record["app"], record["env"]), record["id"], record)

    def _drop(self, kind, app, env, record_id):
        self.cache.flush(self._bank(kind, app, env), record_id)

    # requests: accepted pushes waiting for a rollout
    def add_request(self, request):
        """Persist an accepted request (it must have id, app and env)."""
        self._put("requests", request)

    def pending(self, app, env):
        """Waiting requests of one app/env, oldest first."""
        return self._records("requests", app, env)

    def has_pending(self, app, env):
        """True if app/env has a waiting request (lists keys, reads none)."""
        return bool(self.cache.list(self._bank("requests", app, env)))

    def drop_request(self, app, env, request_id):
        """Forget a request once its outcome is in the history."""
        self._drop("requests", app, env, request_id)

    # manual environments
    def add_awaiting(self, request):
        """Persist a push that waits for `deploy.approve`."""
        self._put("awaiting", request)

    def awaiting(self, app, env):
        """Pushes waiting for approval, oldest first."""
        return self._records("awaiting", app, env)

    def drop_awaiting(self, app, env, request_id):
        """Forget a waiting push once approved or superseded."""
        self._drop("awaiting", app, env, request_id)

    # audit
    def add_rejection(self, record):
        """Record a rejected event (the caller keeps secrets out of it)."""
        self.cache.store(f"{BANK}/audit/rejected", record["id"], record)

    def rejections(self):
        """Rejected events, oldest first."""
        bank = f"{BANK}/audit/rejected"
        return [r for r in (self.cache.fetch(bank, k) for k in sorted(self.cache.list(bank))) if r]

    # history
    def save_rollout(self, record):
        """Write (or overwrite) one rollout record."""
        self._put("rollouts", record)

    def rollouts(self, app, env):
        """Every rollout record of one app/env, oldest first."""
        return self._records("rollouts", app, env)

    # per environment
    def env_state(self, app, env):
        """`{"last_good": digest, "last_good_rollout": id}` or {} when nothing succeeded yet."""
        return self.cache.fetch(self._bank("envs", app, env), "state") or {}

    def set_env_state(self, app, env, state):
        """Replace the per-environment state record."""
        self.cache.store(self._bank("envs", app, env), "state", state)

    # per tag: what saltcd last resolved, and a move it has seen once (reconcile)
    def resolved(self, app, env, tag):
        """The digest the last tag-driven rollout resolved `tag` to, or None."""
        return (self.cache.fetch(self._bank("tags", app, env), f"resolved.{tag}") or {}).get("digest")

    def set_resolved(self, app, env, tag, digest):
        """Written by the drain; one key per writer, so reconcile never clobbers it."""
        self.cache.store(self._bank("tags", app, env), f"resolved.{tag}", {"digest": digest})

    def suspect(self, app, env, tag):
        """A digest reconcile saw the tag moved to on its previous pass, or None."""
        return (self.cache.fetch(self._bank("tags", app, env), f"suspect.{tag}") or {}).get("digest")

    def set_suspect(self, app, env, tag, digest):
        """Written by reconcile only (None clears it)."""
        self.cache.store(self._bank("tags", app, env), f"suspect.{tag}", {"digest": digest})

    def app_envs_with_requests(self):
        """(app, env) pairs that have pending requests."""
        pairs = []
        for app in sorted(self.cache.list(f"{BANK}/requests")):
            for env in sorted(self.cache.list(f"{BANK}/requests/{app}")):
                if self.has_pending(app, env):
                    pairs.append((app, env))
        return pairs
