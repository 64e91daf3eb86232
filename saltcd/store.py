"""Durable records of saltcd on top of Salt's cache API.

Banks (one key per record, every write atomic per key on the localfs driver):

- `saltcd/requests/<app>/<env>`: accepted pushes waiting to run, key = request id
- `saltcd/rollouts/<app>/<env>`: the history, key = rollout id
- `saltcd/running/<app>/<env>`: an index, one empty key per rollout still `running`
- `saltcd/envs/<app>/<env>`: key `state`, the last digest that completed a rollout
- `saltcd/awaiting/<app>/<env>`: pushes to manual environments, waiting for approval
- `saltcd/specs/<app>/<env>`: container specs by fingerprint (the newest 20)
- `saltcd/audit/rejected`: the newest rejected events in full (source, reason, time;
  never a secret)
- `saltcd/audit/counts`: rejections counted per minute, source and reason; key
  `<minute>-<pid>` so two processes never read-modify-write one key

Ids start with a UTC timestamp so sorting keys sorts by time, and a record's age
is read from its key without fetching it: pruning lists keys and flushes the
excess. The cache has no compare-and-swap, so every read-modify-write of one
app/env happens under that app/env's lock (see locking.py); appending a request
never modifies a record.

Bounds (see `Limits`): the history keeps `history_keep` records per app/env and
none older than `history_days` (the newest 10 always); rejections keep
`rejections_keep` full records and per-minute counts for `rejections_days`.
"""

import calendar
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TypedDict

from saltcd import config

BANK = "saltcd"
REJECTED = f"{BANK}/audit/rejected"
COUNTS = f"{BANK}/audit/counts"
# However old, the newest history records stay: the last good digest and the
# one before it must remain findable in a quiet environment.
KEEP_NEWEST = 10
# One minute's count record holds at most this many (source, reason) pairs;
# the rest are summed under OTHER, so a flood of distinct reasons stays bounded.
MAX_PAIRS_PER_MINUTE = 50
OTHER = ("*", "other reasons")
MAX_TEXT = 200
ABSENT = "absent"  # a baseline: the tag did not exist at the registry yet
# Container specs kept per app/env (a rollback needs the one before; a few more
# let a plan say what changed against a minion left behind).
SPECS_KEPT = 20


def rejection(tag, source, reason, now=None):
    """The record of one rejected event or post: when, what, from where, why."""
    now = time.time() if now is None else now
    return {"id": new_id(now), "time": now, "tag": str(tag)[:200], "source": source, "reason": reason}


def new_id(now=None):
    """A sortable, unique id: `20261126T093633.123456Z-1a2b3c`."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    micros = int((now % 1) * 1_000_000)
    return f"{stamp}.{micros:06d}Z-{secrets.token_hex(3)}"


class Request(TypedDict, total=False):
    """A push or an operator's ask, queued to run for one app/env (bank
    `saltcd/requests`). Its digest, by meaning: `digest_hint` is what the push
    said the tag pointed to (a hint: the registry is asked again); `digest` is a
    pin, deployed exactly (a rollback, an approval, a digest a CI job signed)."""

    id: str
    app: str
    env: str
    repository: str
    tag: str
    digest_hint: str | None
    digest: str
    signed_digest: bool
    trigger: dict  # {"kind": registry|ci|operator|rollback|promote|reconcile..., "origin": who}
    received: float
    awaiting_approval: bool
    reason: str


def new_request(app, env, repository, tag, trigger, digest_hint=None, now=None, **more) -> Request:
    """The one way a Request is made (intake's pushes, an operator's ask)."""
    now = time.time() if now is None else now
    return Request(id=new_id(now), app=app, env=env, repository=str(repository), tag=tag,
                   digest_hint=digest_hint, trigger=trigger, received=now, **more)


class Record(TypedDict, total=False):
    """One rollout (bank `saltcd/rollouts`), from its request to its outcome. Its
    digests, by meaning: `digest_hint` and `pinned` as its request had them
    (Request.digest_hint, Request.digest); `to_digest` what it deploys (None when
    that could not be resolved); `from_digests` what each minion ran before."""

    id: str
    app: str
    env: str
    request: str
    trigger: dict
    tag: str
    digest_hint: str | None
    pinned: str | None
    signed_digest: bool
    approved_by: str | None
    note: str | None
    received: float | None
    started: float
    to_digest: str | None
    to_spec: str
    from_digests: dict
    status: str  # running, then one of vocabulary.GOOD or vocabulary.BAD, or superseded
    ended: float
    reason: str


def new_record(request: Request, now=None) -> Record:
    """The one way a rollout's Record is made: from the request it runs."""
    return Record(id=new_id(), app=request["app"], env=request["env"], request=request["id"],
                  trigger=request["trigger"], tag=request["tag"], digest_hint=request.get("digest_hint"),
                  pinned=request.get("digest"), signed_digest=bool(request.get("signed_digest")),
                  approved_by=request.get("approved_by"), note=request.get("reason"),
                  received=request.get("received"), started=time.time() if now is None else now)


# What new_id makes; anything else is not looked up (an id may come from an operator).
ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$")


def id_time(record_id):
    """The Unix time an id was made at (whole seconds), or None for a foreign key."""
    try:
        return calendar.timegm(time.strptime(str(record_id)[:15], "%Y%m%dT%H%M%S"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Limits:
    """How much history and audit the store keeps."""

    history_keep: int
    history_days: float
    rejections_keep: int
    rejections_days: float

    @classmethod
    def defaults(cls):
        """The defaults of saltcd's configuration table (config.KEYS)."""
        top = config.keys_under("")
        return cls(**{name: top[name].default for name in cls.__dataclass_fields__})

    @classmethod
    def from_settings(cls, settings):
        """The limits of a loaded `saltcd:` configuration."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


def _excess(keys, keep, days, now, protect=(), keep_newest=0):
    """Keys (sorted oldest first) beyond the newest `keep` or older than `days`
    (except the newest `keep_newest`), never one in `protect`."""
    keys = sorted(keys)
    drop = set(keys[:-keep] if keep > 0 else keys)
    cutoff = now - days * 86400
    for key in keys[:-keep_newest] if keep_newest else keys:
        made = id_time(key)
        if made is not None and made < cutoff:
            drop.add(key)
    return sorted(drop - set(protect))


class Store:
    """saltcd's requests, rollout history, per-environment state and audit."""

    # Count records are read-modify-written per process; threads of one
    # process (the webhook engine's) take turns here.
    _counts_guard = threading.Lock()

    def __init__(self, cache, limits=None):
        self.cache = cache
        self.limits = limits or Limits.defaults()
        self._counts_pruned = None  # the minute counts were last pruned at

    def configure(self, limits):
        """Use these Limits from now on (the Controller passes the loaded settings')."""
        self.limits = limits

    @staticmethod
    def _bank(kind, app, env):
        return f"{BANK}/{kind}/{app}/{env}"

    def _fetch_all(self, bank, keys):
        return [r for r in (self.cache.fetch(bank, k) for k in keys) if r]

    def _records(self, kind, app, env):
        bank = self._bank(kind, app, env)
        return self._fetch_all(bank, sorted(self.cache.list(bank)))

    def _put(self, kind, record):
        self.cache.store(self._bank(kind, record["app"], record["env"]), record["id"], record)

    def _drop(self, kind, app, env, record_id):
        self.cache.flush(self._bank(kind, app, env), record_id)

    # requests: accepted pushes waiting for a rollout
    def add_request(self, request):
        """Persist an accepted request (it must have id, app and env); also rewrites one."""
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

    # audit: the newest rejections in full, the rest as counts
    def add_rejection(self, record, now=None):
        """Record a rejected event in full (the caller keeps secrets out of it);
        only the newest `rejections_keep` (within `rejections_days`) are kept."""
        self.add_rejections([record], now)

    def add_rejections(self, records, now=None):
        """add_rejection for several records, pruning once."""
        if not records:
            return
        for record in records:
            self.cache.store(REJECTED, record["id"], record)
        now = time.time() if now is None else now
        for key in _excess(self.cache.list(REJECTED), self.limits.rejections_keep,
                           self.limits.rejections_days, now):
            self.cache.flush(REJECTED, key)

    def rejections(self, limit=None):
        """The rejected events kept in full, newest first (at most `limit`)."""
        keys = sorted(self.cache.list(REJECTED), reverse=True)
        if limit is not None:
            keys = keys[: max(int(limit), 0)]
        return self._fetch_all(REJECTED, keys)

    def count_rejections(self, counts, now=None):
        """Merge `{(source, reason, minute_epoch): n}` into the per-minute counts.

        One key per minute and process: no other process writes it, so the
        merge needs no lock across processes.
        """
        by_minute = {}
        for (source, reason, minute), number in counts.items():
            pair = (str(source)[:MAX_TEXT], str(reason)[:MAX_TEXT])
            minute = int(minute) // 60 * 60
            by_minute.setdefault(minute, {})
            by_minute[minute][pair] = by_minute[minute].get(pair, 0) + int(number)
        with self._counts_guard:
            for minute, pairs in by_minute.items():
                key = f"{minute:012d}-{os.getpid()}"
                merged = {(row["source"], row["reason"]): row["count"]
                          for row in (self.cache.fetch(COUNTS, key) or {}).get("counts", [])}
                for pair, number in pairs.items():
                    if pair not in merged and len(merged) >= MAX_PAIRS_PER_MINUTE:
                        pair = OTHER
                    merged[pair] = merged.get(pair, 0) + number
                self.cache.store(COUNTS, key, {"minute": minute, "counts": [
                    {"source": s, "reason": r, "count": n} for (s, r), n in sorted(merged.items())]})
            self._prune_counts(time.time() if now is None else now)

    def _prune_counts(self, now):
        # Once a minute is enough: the oldest key only ages by a minute a minute.
        minute = int(now) // 60
        if self._counts_pruned == minute:
            return
        self._counts_pruned = minute
        cutoff = now - self.limits.rejections_days * 86400
        for key in self.cache.list(COUNTS):
            try:
                stale = int(key.split("-", 1)[0]) < cutoff
            except ValueError:
                stale = False
            if stale:
                self.cache.flush(COUNTS, key)

    def rejection_counts(self, since=None):
        """Rejections per minute, source and reason, oldest first:
        `[{"minute": epoch, "source", "reason", "count"}]` (from `since` on, if given)."""
        merged = {}
        for key in self.cache.list(COUNTS):
            try:
                minute = int(key.split("-", 1)[0])
            except ValueError:
                continue
            if since is not None and minute + 60 <= since:
                continue
            for row in (self.cache.fetch(COUNTS, key) or {}).get("counts", []):
                pair = (minute, row["source"], row["reason"])
                merged[pair] = merged.get(pair, 0) + row["count"]
        return [{"minute": m, "source": s, "reason": r, "count": n}
                for (m, s, r), n in sorted(merged.items())]

    # history
    def save_rollout(self, record, now=None):
        """Write (or overwrite) one rollout record; a finished one prunes the history."""
        app, env = record["app"], record["env"]
        self._put("rollouts", record)
        running = self._bank("running", app, env)
        if record.get("status") == "running":
            self.cache.store(running, record["id"], {})
        else:
            self.cache.flush(running, record["id"])
            self.prune_history(app, env, now)

    def prune_history(self, app, env, now=None):
        """Flush the records beyond `history_keep` or older than `history_days`
        (keeping the newest 10 and every running one); returns the ids flushed."""
        now = time.time() if now is None else now
        bank = self._bank("rollouts", app, env)
        drop = _excess(self.cache.list(bank), self.limits.history_keep, self.limits.history_days, now,
                       protect=self.cache.list(self._bank("running", app, env)), keep_newest=KEEP_NEWEST)
        for key in drop:
            self.cache.flush(bank, key)
        return drop

    def running_rollouts(self, app, env):
        """Records still `running`, oldest first (reads only those, via the index)."""
        bank = self._bank("running", app, env)
        records = []
        for key in sorted(self.cache.list(bank)):
            record = self.cache.fetch(self._bank("rollouts", app, env), key)
            if record and record.get("status") == "running":
                records.append(record)
            else:
                self.cache.flush(bank, key)  # a stale index entry
        return records

    def is_running(self, app, env, rollout_id):
        """True while rollout `rollout_id` of app/env is recorded as `running`
        (lists the index's keys, reads no record)."""
        return bool(rollout_id) and str(rollout_id) in self.cache.list(self._bank("running", app, env))

    def discard_rollout(self, app, env, rollout_id):
        """Forget one rollout record entirely (a benchmark's stand-in: saltcd's own
        history only ever shrinks by pruning)."""
        self.cache.flush(self._bank("running", app, env), rollout_id)
        self.cache.flush(self._bank("rollouts", app, env), rollout_id)

    def rollout(self, app, env, rollout_id):
        """One rollout record by its id (None when there is none, or the id is not one)."""
        if not ID_RE.fullmatch(str(rollout_id)):
            return None
        return self.cache.fetch(self._bank("rollouts", app, env), rollout_id) or None

    def recent(self, app, env):
        """Rollout records of one app/env, newest first, fetched one at a time as
        the caller iterates (stop early to read only what you need)."""
        bank = self._bank("rollouts", app, env)
        for key in sorted(self.cache.list(bank), reverse=True):
            record = self.cache.fetch(bank, key)
            if record:
                yield record

    def rollouts(self, app, env):
        """Every rollout record of one app/env, oldest first (reads them all)."""
        return self._records("rollouts", app, env)

    # per environment
    def env_state(self, app, env):
        """`{"last_good": digest, "last_good_rollout": id}` or {} when nothing succeeded yet."""
        return self.cache.fetch(self._bank("envs", app, env), "state") or {}

    def set_env_state(self, app, env, state):
        """Replace the per-environment state record."""
        self.cache.store(self._bank("envs", app, env), "state", state)

    def left_behind(self, app, env):
        """`{minion: {"digest", "spec", "rollout"}}`: minions a rollout could not
        reach, and the release each should run (`deploy.resume` converges them)."""
        return self.cache.fetch(self._bank("envs", app, env), "left_behind") or {}

    def set_left_behind(self, app, env, left):
        """Replace the left-behind minions of app/env."""
        self.cache.store(self._bank("envs", app, env), "left_behind", left)

    # container specs by fingerprint: what a rollout's plan compares with, and what a
    # rollback restores (values as configured: sdb:// URIs stay URIs)
    def save_spec(self, app, env, spec_id, spec, now=None):
        """Keep `spec` under its fingerprint (the newest SPECS_KEPT per app/env)."""
        bank = self._bank("specs", app, env)
        self.cache.store(bank, spec_id, {"spec": spec, "saved": time.time() if now is None else now})
        kept = sorted(((self.cache.fetch(bank, key) or {}).get("saved", 0), key) for key in self.cache.list(bank))
        for _, key in kept[:-SPECS_KEPT]:
            self.cache.flush(bank, key)

    def spec(self, app, env, spec_id):
        """The spec kept under `spec_id`, or None."""
        if not spec_id:
            return None
        return (self.cache.fetch(self._bank("specs", app, env), str(spec_id)) or {}).get("spec")

    # per tag: what saltcd last resolved, what reconcile first found it at, and a
    # move it has seen once (reconcile)
    def resolved(self, app, env, tag):
        """The digest the last tag-driven rollout resolved `tag` to, or None."""
        return (self.cache.fetch(self._bank("tags", app, env), f"resolved.{tag}") or {}).get("digest")

    def set_resolved(self, app, env, tag, digest):
        """Written by the drain; one key per writer, so reconcile never clobbers it."""
        self.cache.store(self._bank("tags", app, env), f"resolved.{tag}", {"digest": digest})

    def baseline(self, app, env, tag, repository):
        """What reconcile's first pass found `tag` of `repository` at (a digest,
        or ABSENT) while saltcd had not resolved it yet; None before that pass
        or when it was taken in another repository."""
        found = self.cache.fetch(self._bank("tags", app, env), f"baseline.{tag}") or {}
        return found.get("digest") if found.get("repository") == repository else None

    def set_baseline(self, app, env, tag, repository, digest):
        """Written by reconcile only, once per tag and repository."""
        self.cache.store(self._bank("tags", app, env), f"baseline.{tag}",
                         {"digest": digest, "repository": repository})

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
