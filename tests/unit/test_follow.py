"""deploy.watch's loop (saltcd.present.follow): what a person following a rollout sees
comes from saltcd's record, whatever the events on the bus say."""

import time

from saltcd import store
from saltcd.present import follow
from tests.unit.fakes import MemoryCache

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
FORGED = "sha256:" + "f" * 64
HOSTILE = "Unhealthy: \x1b[2J\x1b]0;pwned\x07 <!channel>\r\x08\x9b31m"
START = float(int(time.time()))


class Clock:
    """The loop's now(); each wait for an event takes a second."""

    def __init__(self):
        self.now = START

    def __call__(self):
        return self.now


class Bus:
    """The events a minion or saltcd fires, one per wait, then quiet seconds;
    `before[step]` changes the store when the first event of that step comes,
    as the rollout does (it saves its record, then fires)."""

    def __init__(self, clock, events, before=None):
        self.clock, self.events, self.before = clock, list(events), before or {}

    def next_event(self):
        self.clock.now += 1
        if not self.events:
            return None
        step, data = self.events.pop(0)
        if step in self.before:
            self.before.pop(step)()
        return {"tag": f"saltcd/deploy/web/dev/{step}", "data": data}


def _record(rollout_id, status="running", batches=(), **extra):
    return {"id": rollout_id, "app": "web", "env": "dev", "status": status, "to_digest": NEW,
            "started": START - 5, "minions": ["dev-1", "dev-2"], "from_digests": {"dev-1": OLD, "dev-2": OLD},
            "batches": list(batches), **extra}


def _batch(number, ok, kind="batch", comment="Healthy"):
    return {"kind": kind, "number": number, "started": START - 4, "ended": START - 2,
            "minions": {"dev-1": {"from": OLD, "to": NEW, "ok": ok, "changed": True, "comment": comment}}}


def _follow(records, next_event, clock, timeout=60):
    lines = []
    return follow.follow(next_event, records, lines.append, "web", "dev", timeout, now=clock), lines


def test_lines_come_from_the_record_not_from_the_event_and_minion_text_is_cleaned():
    records, clock = store.Store(MemoryCache()), Clock()
    rid = store.new_id(START - 5)
    records.save_rollout(_record(rid))
    failed = _record(rid, status="rolled_back", reason="batch 1 failed on dev-1 (" + HOSTILE + "); rolled back",
                     batches=[_batch(1, False, comment=HOSTILE), _batch(1, True, kind="rollback")])
    forged = {"rollout": rid, "digest": FORGED, "healthy": True, "status": "succeeded", "number": 7,
              "minions": {"evil-1": {"from": OLD, "to": FORGED, "ok": True, "comment": "\x1b[2Jforged"}}}
    bus = Bus(clock, [("batch", forged), ("finished", forged)],
              before={"finished": lambda: records.save_rollout(failed)})
    result, lines = _follow(records, bus.next_event, clock)
    text = "\n".join(lines)
    assert result["status"] == "rolled_back"  # the record's outcome, not the event's "succeeded"
    assert lines[0].startswith(f"web/dev: attached to rollout {rid}")
    assert lines[1] == f"web/dev: rollout {rid} started -> {NEW[:19]} on dev-1, dev-2"
    assert "web/dev batch 1: failed" in lines and "web/dev rollback 1: healthy" in lines
    assert lines[-1].startswith("web/dev: rolled_back: batch 1 failed on dev-1 (Unhealthy:")
    # Nothing of the forged data; the minion's comment shown as text only.
    assert FORGED[:19] not in text and "evil-1" not in text and "batch 7" not in text
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\x08" not in text
    assert "\x9b" not in text and "pwned" not in text
    assert "  dev-1: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb replaced, FAILED (Unhealthy:  <!channel> )" in lines


def test_waits_for_the_next_rollout_and_ends_when_its_record_says_so():
    records, clock = store.Store(MemoryCache()), Clock()
    old = store.new_id(START - 86400)
    records.save_rollout(_record(old, status="failed", ended=START - 86000))
    never_ran = store.new_id(START + 1)
    records.save_rollout({"id": never_ran, "app": "web", "env": "dev", "status": "superseded", "ended": START + 1})
    new = store.new_id(START + 2)
    bus = Bus(clock, [
        ("finished", {"rollout": old}),  # a replay of an old rollout: not news
        ("finished", {"rollout": "20260101T000000.000000Z-abcdef"}),  # no such rollout
        ("rollback", {"rollout": never_ran}),  # a request that never ran
        ("started", {"rollout": new}),
        ("finished", {"rollout": new, "status": "failed"}),  # its record still runs: a forgery, go on
        ("batch", {"rollout": new}),
    ], before={
        "started": lambda: records.save_rollout(_record(new, started=START + 2)),
        "batch": lambda: records.save_rollout(_record(new, status="succeeded", ended=START + 6,
                                                      batches=[_batch(1, True)])),
    })
    result, lines = _follow(records, bus.next_event, clock)
    assert result["id"] == new and result["status"] == "succeeded"
    assert lines == ["web/dev: no rollout running; waiting for the next one",
                     f"web/dev: rollout {new} started -> {NEW[:19]} on dev-1, dev-2",
                     "web/dev batch 1: healthy",
                     "  dev-1: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb replaced, healthy",
                     "web/dev: succeeded"]


def test_a_lost_event_does_not_hold_the_watch_and_the_timeout_ends_it():
    records, clock = store.Store(MemoryCache()), Clock()
    rid = store.new_id(START - 5)
    records.save_rollout(_record(rid))
    ended = _record(rid, status="failed", reason="1 minion(s) failed: dev-1", batches=[_batch(1, False)])

    def quiet():  # the rollout ends, and its `finished` event is lost
        clock.now += 1
        if records.rollout("web", "dev", rid)["status"] == "running":
            records.save_rollout(ended)

    result, lines = _follow(records, quiet, clock)
    assert result["status"] == "failed" and clock.now - START == follow.POLL
    assert lines[-1] == "web/dev: failed: 1 minion(s) failed: dev-1"

    # Still running at the timeout: the caller says so; no rollout at all: None.
    records.save_rollout(_record(store.new_id(START)))
    clock = Clock()
    result, _ = _follow(store.Store(records.cache), Bus(clock, []).next_event, clock, timeout=10)
    assert result["status"] == "running" and clock.now - START == 10
    clock = Clock()
    assert _follow(store.Store(MemoryCache()), Bus(clock, []).next_event, clock, timeout=3)[0] is None


def test_cues():
    assert follow.cue({"tag": "saltcd/deploy/web/dev/batch", "data": {"rollout": "r"}}, "web", "dev") == "r"
    assert follow.cue({"tag": "saltcd/deploy/web/qa/batch", "data": {"rollout": "r"}}, "web", "dev") is None
    assert follow.cue({"tag": "saltcd/deploy/web/dev/waiting", "data": {"rollout": "r"}}, "web", "dev") is None
    assert follow.cue({"tag": "saltcd/deploy/web/dev/batch", "data": {"rollout": ["r"]}}, "web", "dev") is None
    assert follow.cue(None, "web", "dev") is None
