"""Intake, queue, coalescing and history, with fakes for the fleet and the registry."""

import json
import time

import pytest

from saltcd import ci_push, config, errors
from saltcd.ingress.ingress_auth import hashed_headers
from saltcd.queue import left_behind, locking, registry_client
from saltcd.queue.controller import Controller
from saltcd.store import Store

from .conftest import TOKEN
from .fakes import FakeClock, FakeFleet, MemoryCache, Recorder

OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64
REPO = "127.0.0.1:5000/saltcd/web"


class FakeRegistry:
    def __init__(self, digest):
        self.digest = digest

    def __call__(self, repository, tag, settings):
        if isinstance(self.digest, Exception):
            raise self.digest
        return self.digest


PUSH_SECRET = "p" * 32


def signed(repository=REPO, tag="dev", digest=None):
    """A `saltcd/push` payload as `python -m saltcd.ci_push` makes it."""
    return ci_push.payload(repository, tag, PUSH_SECRET, digest=digest)


def from_ci(payload, minion="ci-1"):
    """The payload as the master's bus carries a CI minion's `salt-call event.send`."""
    return {"id": minion, "cmd": "_minion_event", "data": payload}


@pytest.fixture
def ctl(raw_config, tmp_path):
    raw_config["push_secret"] = PUSH_SECRET
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "qa-1": OLD})
    return Controller(config.load(raw_config), Store(MemoryCache()), fleet, Recorder(), str(tmp_path),
                      resolve=FakeRegistry(NEW), clock=FakeClock())


def hook_event(tag="dev", digest=NEW, media="application/vnd.docker.distribution.manifest.v2+json"):
    body = {"events": [{"action": "push", "target": {"mediaType": media, "repository": "saltcd/web",
                                                     "tag": tag, "digest": digest},
                        "request": {"host": "127.0.0.1:5000"}}]}
    return {"body": json.dumps(body).encode(), **hashed_headers({"Authorization": f"Bearer {TOKEN}"})}


def test_registry_push_is_persisted_not_run(ctl):
    verdict = ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    assert [(r["app"], r["env"]) for r in verdict["accepted"]] == [("web", "dev")]
    assert verdict["source"]["kind"] == "registry"
    assert len(ctl.records.pending("web", "dev")) == 1
    assert ctl.fleet.applied == []


def test_ci_event_carries_the_minion_id(ctl):
    data = {"id": "ci-1", "cmd": "_minion_event", "tag": "saltcd/push",
            "data": {**signed(tag="qa"), "__pub_fun": "event.send"}}
    verdict = ctl.accept("saltcd/push", data)
    assert verdict["source"] == {"kind": "ci", "origin": "ci-1"}
    assert verdict["accepted"][0]["env"] == "qa"


@pytest.mark.parametrize("tag, data, reason", [
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "id": "dev-1", "cmd": "_minion_event"}, "fired by a minion"),
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "minion_fields": ["cmd", "id"]}, "fired by a minion"),
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "body": b"\xff"}, "not UTF-8"),
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "body": b"[]"}, "not an object"),
    # Signed when the test runs, not at collection: the signature is timed.
    ("saltcd/push", lambda: signed(tag="dev; rm -rf /"), "invalid tag"),
    ("saltcd/push", lambda: signed(repository="$(id)"), "invalid repository"),
    ("saltcd/push", lambda: signed(digest="sha256:nothex"), "invalid digest"),
])
def test_rejections_change_nothing_and_are_announced(ctl, tag, data, reason):
    verdict = ctl.accept(tag, data() if callable(data) else data)
    assert reason in verdict["rejected"]
    assert ctl.records.pending("web", "dev") == [] and ctl.fleet.applied == []
    assert ctl.reporter.events[-1][0] == "saltcd/rejected"


def test_unknown_repository_and_unmapped_tag_are_ignored(ctl):
    assert ctl.accept("saltcd/push", from_ci(signed("127.0.0.1:5000/other")))["ignored"]
    assert ctl.accept("saltcd/push", from_ci(signed(tag="latest")))["ignored"]
    assert ctl.accept("saltcd/push", from_ci(signed(tag="prod")))["ignored"] == []  # web has prod
    assert ctl.accept("saltcd/push", from_ci(signed("127.0.0.1:5000/saltcd/api", "qa")))["ignored"] == [
        "app 'api' has no environment 'qa'"]


def test_drain_coalesces_to_the_newest_request(ctl):
    for _ in range(3):
        ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    result = ctl.run_queue("web", "dev")
    history = ctl.history("web", "dev")
    assert [r["status"] for r in reversed(history)] == ["superseded", "superseded", "succeeded"]
    assert result["status"] == "idle" and ctl.records.pending("web", "dev") == []
    assert ctl.records.env_state("web", "dev")["last_good"] == NEW
    assert ctl.fleet.running == {"dev-1": NEW, "dev-2": NEW, "qa-1": OLD}


def test_drain_leaves_the_queue_to_the_lock_holder(ctl):
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    with locking.try_lock(locking.lock_path(ctl.lock_dir, "web", "dev")) as held:
        assert held
        assert ctl.run_queue("web", "dev")["status"] == "busy"
    assert len(ctl.records.pending("web", "dev")) == 1 and ctl.fleet.applied == []


def test_stale_running_record_becomes_interrupted(ctl):
    ctl.records.save_rollout({"id": "20260101T000000.000000Z-aaaaaa", "app": "web", "env": "dev",
                              "status": "running"})
    ctl.run_queue("web", "dev")
    assert ctl.history("web", "dev")[0]["status"] == "interrupted"
    assert "saltcd/deploy/web/dev/interrupted" in ctl.reporter.tags()


def test_registry_down_fails_cleanly(ctl):
    ctl.resolve = FakeRegistry(registry_client.RegistryError("registry 127.0.0.1:5000 unreachable"))
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    ctl.run_queue("web", "dev")
    record = ctl.history("web", "dev")[0]
    assert record["status"] == "failed" and "unreachable" in record["reason"]
    assert ctl.fleet.applied == [] and ctl.records.pending("web", "dev") == []


def test_registry_digest_wins_over_the_event(ctl):
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event(digest=OLD))
    ctl.run_queue("web", "dev")
    record = ctl.history("web", "dev")[0]
    assert record["to_digest"] == NEW and "registry wins" in record["note"]


def test_status_reports_convergence(ctl):
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    ctl.run_queue("web", "dev")
    status = ctl.status("web")
    assert status["web"]["dev"]["converged"] is True
    assert status["web"]["qa"]["converged"] is False  # nothing succeeded in qa yet
    assert status["web"]["dev"]["minions"]["dev-1"]["digest"] == NEW


def test_rollback_goes_to_the_good_digest_before_the_current_one(ctl):
    for digest in (OLD, NEW):
        ctl.resolve = FakeRegistry(digest)
        ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
        ctl.run_queue("web", "dev")
    assert ctl.rollback_target("web", "dev")[0] == OLD
    ctl.fleet.running["dev-2"] = "sha256:" + "9" * 64  # a paused rollout left it mixed
    assert ctl.rollback_target("web", "dev") == (NEW, "the environment does not all run its last good digest")


def test_rollback_without_history_is_refused(ctl):
    with pytest.raises(errors.NotFound, match="nothing to roll back to"):
        ctl.rollback_target("web", "dev")


def test_unchanged_does_not_vouch_for_a_digest(ctl):
    ctl.fleet.running.update({"dev-1": NEW, "dev-2": NEW})  # already there, health unknown
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    ctl.run_queue("web", "dev")
    assert ctl.history("web", "dev")[0]["status"] == "unchanged"
    assert ctl.records.env_state("web", "dev") == {}


def _run_push(ctl, digest):
    ctl.resolve.digest = digest
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event(digest=digest))
    return ctl.run_queue("web", "dev")["rollouts"][-1]


def _made(requests, app="web", env="dev"):
    """The requests reconcile made for one app/env (the fake registry moves every
    app's tags at once, and apps saltcd never resolved are reconciled too)."""
    return [r for r in requests if (r["app"], r["env"]) == (app, env)]


def test_reconcile_queues_a_push_whose_notification_never_arrived(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    assert ctl.reconcile() == []                      # the tag is where saltcd left it
    lost = "sha256:" + "2" * 64
    ctl.resolve.digest = lost                         # pushed, but the notification was dropped
    assert ctl.reconcile() == []                      # first sighting: it may still be in flight
    made = _made(ctl.reconcile())
    assert [(r["app"], r["env"], r["tag"], r["trigger"]["kind"]) for r in made] == [("web", "dev", "dev", "reconcile")]
    assert ctl.reconcile() == []                      # already queued: not twice
    record = ctl.run_queue("web", "dev")["rollouts"][-1]
    assert record["status"] == "succeeded" and record["to_digest"] == lost
    assert set(ctl.fleet.running[m] for m in ("dev-1", "dev-2")) == {lost}


def test_reconcile_does_not_retry_a_rolled_back_image_or_undo_a_manual_rollback(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    bad = "sha256:" + "3" * 64
    ctl.fleet.bad.add(bad)
    assert _run_push(ctl, bad)["status"] == "rolled_back"
    assert ctl.reconcile() == [] and ctl.reconcile() == []  # the registry still says `bad`: seen, not lost
    ctl.fleet.bad.discard(bad)
    assert _run_push(ctl, bad)["status"] == "succeeded"
    digest, _ = ctl.rollback_target("web", "dev")
    ctl.request("web", "dev", kind="rollback", digest=digest, reason="by hand")
    assert ctl.run_queue("web", "dev")["rollouts"][-1]["to_digest"] == NEW
    assert ctl.reconcile() == [] and ctl.reconcile() == []  # a pinned rollback is not a tag to catch up with


def test_reconcile_skips_unreachable_registries_and_never_deployed_envs(ctl):
    assert ctl.reconcile() == []                      # nothing was ever rolled out
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    ctl.resolve.digest = registry_client.RegistryError("registry down")
    assert ctl.reconcile() == [] and ctl.reconcile() == [] and ctl.records.pending("web", "dev") == []


def test_reconcile_catches_a_first_push_whose_notification_never_arrived(ctl):
    ctl.resolve.digest = registry_client.TagNotFound("not pushed yet")
    assert ctl.reconcile() == []                      # the first pass: no tag yet (its baseline)
    ctl.resolve.digest = NEW                          # the first push; its notification was dropped
    assert ctl.reconcile() == []                      # first sighting: it may still be in flight
    made = _made(ctl.reconcile())
    assert [(r["tag"], r["digest_hint"], r["trigger"]["kind"]) for r in made] == [("dev", NEW, "reconcile")]
    record = ctl.run_queue("web", "dev")["rollouts"][-1]
    assert record["status"] == "succeeded" and record["to_digest"] == NEW


def test_reconcile_leaves_what_the_tag_held_before_saltcd_watched_alone(ctl):
    for _ in range(3):
        assert ctl.reconcile() == []                  # NEW was there at the first pass: not saltcd's
    assert ctl.records.pending("web", "dev") == [] and ctl.fleet.running["dev-1"] == OLD
    moved = "sha256:" + "5" * 64
    ctl.resolve.digest = moved                        # then a push whose notification was lost
    assert ctl.reconcile() == []
    assert [r["digest_hint"] for r in _made(ctl.reconcile())] == [moved]


def test_reconcile_takes_no_baseline_from_a_registry_that_did_not_answer(ctl):
    ctl.resolve.digest = registry_client.RegistryError("401 unauthorized")
    assert ctl.reconcile() == []                      # no answer: no baseline either
    ctl.resolve.digest = NEW                          # what the tag held all along
    for _ in range(3):
        assert _made(ctl.reconcile()) == []
    assert ctl.records.pending("web", "dev") == []


def test_reconcile_takes_a_new_baseline_when_the_repository_changes(ctl, raw_config, tmp_path):
    ctl.resolve.digest = registry_client.TagNotFound("a mistyped repository")
    assert ctl.reconcile() == []                      # baseline: absent, in the old repository
    raw_config["apps"]["web"]["repository"] = REPO + "-fixed"
    fixed = Controller(config.load(raw_config), ctl.records, ctl.fleet, Recorder(), str(tmp_path),
                       resolve=FakeRegistry(NEW), clock=FakeClock())
    for _ in range(3):                                # NEW was in the fixed repository before
        assert _made(fixed.reconcile()) == []
    assert fixed.records.pending("web", "dev") == [] and fixed.fleet.running["dev-1"] == OLD


def test_reconcile_leaves_a_deleted_tag_alone_and_forgets_what_it_saw_before(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    moved = "sha256:" + "6" * 64
    ctl.resolve.digest = moved
    assert ctl.reconcile() == []                      # seen once
    ctl.resolve.digest = registry_client.TagNotFound("deleted")
    assert ctl.reconcile() == [] and ctl.reconcile() == []
    ctl.resolve.digest = moved                        # pushed again: a first sighting again
    assert ctl.reconcile() == []
    assert [r["digest_hint"] for r in _made(ctl.reconcile())] == [moved]


def test_reconcile_does_not_bring_back_a_push_a_newer_request_superseded(ctl):
    ctl.resolve.digest = registry_client.TagNotFound("not pushed yet")
    assert ctl.reconcile() == []                      # baseline: absent
    pushed = "sha256:" + "7" * 64
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event(digest=pushed))
    ctl.request("web", "dev", kind="rollback", digest=OLD, reason="by hand, before the push ran")
    ctl.resolve.digest = pushed
    assert ctl.run_queue("web", "dev")["rollouts"][-1]["status"] == "unchanged"  # OLD runs already
    assert [r["digest_hint"] for r in ctl.records.rollouts("web", "dev") if r["status"] == "superseded"] == [pushed]
    assert _made(ctl.reconcile()) == [] and _made(ctl.reconcile()) == []
    assert ctl.fleet.running["dev-1"] == OLD


def test_reconcile_runs_one_pass_at_a_time(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    moved = "sha256:" + "8" * 64
    ctl.resolve.digest = moved
    assert ctl.reconcile() == []                      # seen once
    with locking.try_lock(locking.reconcile_lock_path(ctl.lock_dir)) as held:
        assert held                                   # another deploy.resume's pass
        assert ctl.reconcile() == []                  # not a second pass: it leaves it to that one
    assert [r["digest_hint"] for r in _made(ctl.reconcile())] == [moved]


def test_resume_starts_due_work_before_the_sweep_and_what_the_sweep_queued_after_it(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    moved = "sha256:" + "9" * 64
    ctl.resolve.digest = moved
    assert _made(ctl.reconcile()) == []               # web/dev seen moved once
    ctl.request("web", "qa", reason="released by hand")  # due now
    order, registry = [], ctl.resolve

    def asked(repository, tag, settings):
        order.append(("registry", tag))
        return registry(repository, tag, settings)

    def start(app, env):
        order.append(("start", app, env))
        return {"requested": f"{app}/{env}"}

    ctl.resolve = asked
    result = ctl.resume(start)
    starts = [i for i, step in enumerate(order) if step[0] == "start"]
    assert [order[i] for i in starts] == [("start", "web", "qa"), ("start", "web", "dev")]
    assert starts[0] == 0 and starts[1] == len(order) - 1   # the sweep asked the registry in between
    assert any(step[0] == "registry" for step in order[1:-1])
    assert [(r["app"], r["env"]) for r in result["reconciled"]] == [("web", "dev")]
    assert [(s["app"], s["env"], s["requested"]) for s in result["started"]] == [
        ("web", "qa", "web/qa"), ("web", "dev", "web/dev")]


def test_reconcile_leaves_a_push_in_flight_alone(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    moved = "sha256:" + "4" * 64
    ctl.resolve.digest = moved                        # PUT done, notification not yet accepted
    assert ctl.reconcile() == []
    assert _run_push(ctl, moved)["status"] == "succeeded"  # the notification arrives and runs
    assert ctl.reconcile() == [] and ctl.reconcile() == []


# approvals by digest (manual environments)
@pytest.fixture
def manual(raw_config, tmp_path):
    raw_config["apps"]["web"]["environments"]["prod"]["mode"] = "manual"
    fleet = FakeFleet({"prod-1": OLD})
    return Controller(config.load(raw_config), Store(MemoryCache()), fleet, Recorder(), str(tmp_path),
                      resolve=FakeRegistry(NEW), clock=FakeClock())


def test_a_manual_push_records_the_digest_and_approval_deploys_it(manual):
    manual.accept("salt/engines/hook/saltcd/registry", hook_event(tag="prod"))
    event = dict(manual.reporter.events)["saltcd/deploy/web/prod/awaiting_approval"]
    assert event["digest"] == NEW and event["short"] == NEW[:19] and event["tag"] == "prod"
    assert event["pushed_by"]["kind"] == "registry" and event["received"]
    waiting = manual.status("web", "prod")["web"]["prod"]["awaiting_approval"]
    assert [(w["digest"], w["tag"]) for w in waiting] == [(NEW, "prod")]
    request = manual.approve("web", "prod", user="alice")
    assert request["digest"] == NEW and request["approved_by"] == "alice"
    record = manual.run_queue("web", "prod")["rollouts"][-1]
    assert record["status"] == "succeeded" and record["pinned"] == NEW and record["to_digest"] == NEW


def test_approval_refuses_when_the_tag_moved_unless_a_digest_is_given(manual):
    manual.accept("salt/engines/hook/saltcd/registry", hook_event(tag="prod"))
    moved = "sha256:" + "5" * 64
    manual.resolve.digest = moved                          # someone pushed :prod, unannounced
    with pytest.raises(errors.SaltcdError, match="moved since the push was reviewed"):
        manual.approve("web", "prod", user="alice")
    assert manual.records.pending("web", "prod") == [] and len(manual.records.awaiting("web", "prod")) == 1
    with pytest.raises(errors.SaltcdError, match="neither a waiting push"):
        manual.approve("web", "prod", user="alice", digest="sha256:" + "6" * 64)
    with pytest.raises(errors.SaltcdError, match="digest="):
        manual.approve("web", "prod", user="alice", digest="sha256:nothex")
    assert manual.approve("web", "prod", user="alice", digest=NEW)["digest"] == NEW
    assert manual.run_queue("web", "prod")["rollouts"][-1]["to_digest"] == NEW


def test_approval_of_a_push_whose_digest_is_unknown_needs_a_digest(manual):
    manual.resolve.digest = registry_client.RegistryError("registry down")
    manual.accept("salt/engines/hook/saltcd/registry", hook_event(tag="prod"))
    waiting = manual.records.awaiting("web", "prod")[0]
    assert waiting["digest"] is None and "registry down" in waiting["digest_error"]
    with pytest.raises(errors.SaltcdError, match="unknown"):
        manual.approve("web", "prod", user="alice")
    manual.resolve.digest = NEW
    with pytest.raises(errors.SaltcdError, match=f"approve with digest={NEW}"):
        manual.approve("web", "prod", user="alice")
    assert manual.approve("web", "prod", user="alice", digest=NEW)["digest"] == NEW


def test_approval_refuses_when_the_registry_cannot_confirm_the_tag(manual):
    manual.accept("salt/engines/hook/saltcd/registry", hook_event(tag="prod"))
    manual.resolve.digest = registry_client.RegistryError("registry down")
    with pytest.raises(errors.SaltcdError, match=f"approve with digest={NEW} to deploy it anyway"):
        manual.approve("web", "prod", user="alice")
    assert manual.approve("web", "prod", user="alice", digest=NEW)["digest"] == NEW


# cooldown and windows
@pytest.fixture
def timed(raw_config, tmp_path):
    raw_config["apps"]["web"]["environments"]["dev"].update({"cooldown": 60})
    raw_config["apps"]["web"]["environments"]["qa"].update(
        {"windows": ["Mon 09:00-10:00 UTC"]})  # closed nearly all the week
    fleet = FakeFleet({"dev-1": OLD, "qa-1": OLD})
    return Controller(config.load(raw_config), Store(MemoryCache()), fleet, Recorder(), str(tmp_path),
                      resolve=FakeRegistry(NEW), clock=FakeClock())


def test_a_push_waits_out_its_cooldown_visibly(timed):
    timed.accept("salt/engines/hook/saltcd/registry", hook_event())
    result = timed.run_queue("web", "dev")
    assert result["status"] == "waiting" and result["waiting"]["waiting_for"] == "cooldown"
    assert timed.fleet.applied == [] and timed.due_pairs() == []
    pending = timed.status("web", "dev")["web"]["dev"]["pending"]
    assert len(pending) == 1 and pending[0]["waiting_for"] == "cooldown" and pending[0]["runs_at"]
    request = timed.records.pending("web", "dev")[0]
    assert request["not_before"] == pytest.approx(request["received"] + 60)
    assert "saltcd/deploy/web/dev/waiting" in timed.reporter.tags()
    # Time passes (the request was received a minute ago): resume finds it due, the drain runs it.
    request["received"] -= 61
    timed.records.add_request(request)
    assert timed.due_pairs() == [("web", "dev")]
    assert timed.run_queue("web", "dev")["rollouts"][-1]["status"] == "succeeded"


def test_a_newer_push_restarts_the_cooldown(timed):
    timed.accept("salt/engines/hook/saltcd/registry", hook_event())
    first = timed.records.pending("web", "dev")[0]
    first["received"] -= 50
    timed.records.add_request(first)
    timed.accept("salt/engines/hook/saltcd/registry", hook_event())
    assert timed.run_queue("web", "dev")["status"] == "waiting"
    (left,) = timed.records.pending("web", "dev")
    assert left["id"] != first["id"] and left["not_before"] == pytest.approx(left["received"] + 60)
    assert timed.history("web", "dev")[0]["status"] == "superseded"


def test_a_push_outside_the_window_waits_for_it(timed):
    timed.accept("salt/engines/hook/saltcd/registry", hook_event(tag="qa"))
    result = timed.run_queue("web", "qa")
    held = result["waiting"]
    if held is None:  # it is Monday 09:xx UTC right now
        return
    assert held["waiting_for"] == "window" and "Mon 09:00-10:00 UTC" in held["reason"]
    assert time.gmtime(held["not_before"])[3:7] == (9, 0, 0, 0)  # Monday 09:00:00
    assert timed.fleet.applied == []


def test_an_operator_rollout_outside_the_window_needs_force_and_a_rollback_never_does(timed):
    from saltcd.config import deploy_windows

    if deploy_windows.is_open(timed.settings.deployment("web", "qa").windows, time.time()):
        pytest.skip("the window happens to be open now")
    with pytest.raises(errors.SaltcdError, match="outside its deploy windows.*next window opens at .* force=True"):
        timed.request("web", "qa")
    assert timed.records.pending("web", "qa") == []
    request = timed.request("web", "qa", force=True)
    assert timed.run_queue("web", "qa")["rollouts"][-1]["request"] == request["id"]
    assert timed.fleet.running["qa-1"] == NEW
    timed.request("web", "qa", kind="rollback", digest=OLD, reason="by hand")  # not refused
    assert timed.run_queue("web", "qa")["rollouts"][-1]["to_digest"] == OLD
    # An operator's rollout ignores the cooldown.
    timed.request("web", "dev")
    assert timed.run_queue("web", "dev")["rollouts"][-1]["status"] == "succeeded"


def test_history_reads_and_status_do_not_read_the_whole_history(ctl):
    for _ in range(3):
        ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
        ctl.run_queue("web", "dev")
    assert len(ctl.history("web", "dev", limit=2)) == 2
    assert ctl.status("web", "dev")["web"]["dev"]["rollout_running"] == []


# every rollout ends with `finished` and a closed record
class CrashingFleet(FakeFleet):
    """A fleet whose second state run raises (a bug, a broken connection...), after a
    newer push arrived for the same environment."""

    def __init__(self, running, on_crash):
        super().__init__(running)
        self.on_crash = on_crash

    def apply(self, minions, pillar, timeout, test=False, limit=None, published=None):
        if len(self.applied) == 1:
            self.applied.append((list(minions), pillar["saltcd"]["digest"]))
            self.on_crash()
            raise KeyError("boom")
        return super().apply(minions, pillar, timeout, test, limit, published)


def test_a_crash_mid_rollout_closes_the_record_says_finished_and_the_queue_goes_on(ctl):
    newer = "sha256:" + "7" * 64

    def push_newer():
        ctl.resolve.digest = newer
        ctl.accept("salt/engines/hook/saltcd/registry", hook_event(digest=newer))

    ctl.fleet = CrashingFleet(ctl.fleet.running, push_newer)
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    result = ctl.run_queue("web", "dev")
    crashed, after = result["rollouts"]
    assert crashed["status"] == "failed" and crashed["ended"] >= crashed["started"]
    assert crashed["reason"] == "crashed: KeyError: 'boom'"
    assert ctl.history("web", "dev")[1]["status"] == "failed"  # closed in the store too
    finished = [data for tag, data in ctl.reporter.events if tag == "saltcd/deploy/web/dev/finished"]
    assert finished[0]["rollout"] == crashed["id"] and finished[0]["status"] == "failed"
    assert finished[0]["reason"] == "crashed: KeyError: 'boom'" and finished[0]["digest"] == NEW
    # The crashed request was dropped; the one queued behind it ran.
    assert after["status"] == "succeeded" and after["to_digest"] == newer
    assert result["status"] == "idle" and ctl.records.pending("web", "dev") == []
    assert len(finished) == 2


def test_a_plan_whose_digest_cannot_be_resolved_fails(ctl):
    ctl.resolve = FakeRegistry(registry_client.RegistryError("registry 127.0.0.1:5000 unreachable"))
    plan = ctl.plan("web", "dev")
    assert plan["status"] == "failed" and "unreachable" in plan["reason"]
    assert ctl.history("web", "dev") == [] and "saltcd/deploy/web/dev/finished" not in ctl.reporter.tags()


# a lost notification for a manual environment
def test_reconcile_records_a_lost_manual_push_as_awaiting_approval_once(manual):
    manual.accept("salt/engines/hook/saltcd/registry", hook_event(tag="prod"))
    manual.approve("web", "prod", user="alice")
    assert manual.run_queue("web", "prod")["rollouts"][-1]["status"] == "succeeded"
    assert manual.reconcile() == [] and manual.reconcile() == []   # in step with the push it heard of
    lost = "sha256:" + "6" * 64
    manual.resolve.digest = lost                                  # pushed; the notification was dropped
    assert manual.reconcile() == []                               # first sighting: may be in flight
    made = _made(manual.reconcile(), env="prod")
    assert [(r["env"], r["digest"], r["trigger"]["kind"]) for r in made] == [("prod", lost, "reconcile")]
    assert manual.reconcile() == [] and manual.reconcile() == []   # once per digest
    assert manual.records.pending("web", "prod") == [] and manual.fleet.running["prod-1"] == NEW
    events = [data for tag, data in manual.reporter.events if tag == "saltcd/deploy/web/prod/awaiting_approval"]
    assert [e["digest"] for e in events] == [NEW, lost] and events[1]["pushed_by"]["kind"] == "reconcile"
    waiting = manual.status("web", "prod")["web"]["prod"]["awaiting_approval"]
    assert [(w["digest"], w["pushed_by"]["kind"]) for w in waiting] == [(lost, "reconcile")]
    assert manual.approve("web", "prod", user="bob")["digest"] == lost
    assert manual.run_queue("web", "prod")["rollouts"][-1]["to_digest"] == lost
    assert manual.reconcile() == [] and manual.reconcile() == []


def test_reconcile_leaves_a_manual_env_saltcd_never_heard_of_alone(manual):
    assert manual.reconcile() == [] and manual.reconcile() == []
    assert manual.records.awaiting("web", "prod") == []


def test_a_minion_left_behind_by_a_rollback_is_converged_once_it_answers(ctl):
    """The chaos suite's find: dev-2 took the new (bad) digest, died before it
    returned and missed the rollback; once it answers, deploy.resume brings it
    back to the release the rollback chose, as a `converge` rollout of its own."""
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    # The next push: dev-1's batch passes, dev-2 takes it and dies (batch 1 is dev-1).
    ctl.fleet.lost, ctl.fleet.stays_dead = {"dev-2"}, {"dev-2"}
    bad = "sha256:" + "b" * 64
    record = _run_push(ctl, bad)
    assert record["status"] == "rolled_back" and record["unreachable"] == ["dev-2"]
    assert ctl.fleet.running == {"dev-1": NEW, "dev-2": bad, "qa-1": OLD}
    assert ctl.records.left_behind("web", "dev")["dev-2"]["digest"] == NEW

    started = []
    assert ctl.resume(lambda app, env: started.append((app, env)))["converging"] == []  # still silent
    assert ctl.records.pending("web", "dev") == [] and started == []

    ctl.fleet.silent.discard("dev-2")  # it is back
    result = ctl.resume(lambda app, env: ctl.run_queue(app, env))
    assert [(r["env"], r["minions"]) for r in result["converging"]] == [("dev", ["dev-2"])]
    assert ctl.fleet.running == {"dev-1": NEW, "dev-2": NEW, "qa-1": OLD}
    converged = ctl.history("web", "dev")[0]
    assert converged["status"] == "converged" and converged["trigger"]["kind"] == "converge"
    assert converged["minions"] == ["dev-2"] and converged["to_digest"] == NEW
    assert converged["from_digests"] == {"dev-2": bad}
    assert ctl.records.left_behind("web", "dev") == {}
    assert ctl.records.env_state("web", "dev")["last_good"] == NEW
    assert ctl.reporter.events[-1][1]["status"] == "converged"
    # Nothing more to do on the next pass.
    assert ctl.resume(lambda app, env: None)["converging"] == []


def test_a_rollout_of_the_environment_runs_before_a_converge_and_settles_it(ctl):
    ctl.records.set_left_behind("web", "dev", {"dev-2": {"digest": OLD, "spec": None, "rollout": "r0"}})
    ctl.fleet.running["dev-2"] = "sha256:" + "b" * 64
    assert [r["minions"] for r in ctl.queue_left_behind()] == [["dev-2"]]
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())  # a push arrives meanwhile
    ctl.run_queue("web", "dev")
    history = ctl.history("web", "dev")
    assert [(r["trigger"]["kind"], r["status"]) for r in reversed(history)] == [
        ("converge", "superseded"), ("registry", "succeeded")]
    assert "whole environment" in history[1]["reason"]
    assert ctl.fleet.running["dev-2"] == NEW and ctl.records.left_behind("web", "dev") == {}


def test_a_left_behind_minion_that_left_the_target_or_got_there_is_forgotten(ctl):
    ctl.records.set_left_behind("web", "dev", {"dev-1": {"digest": OLD, "spec": None, "rollout": "r0"},
                                               "dev-9": {"digest": OLD, "spec": None, "rollout": "r0"}})
    assert ctl.queue_left_behind() == []
    assert ctl.records.left_behind("web", "dev") == {} and ctl.records.pending("web", "dev") == []


def test_a_converge_whose_minions_a_rollout_reached_meanwhile_is_dropped(ctl):
    other = "sha256:" + "b" * 64
    ctl.records.set_left_behind("web", "dev", {"dev-2": {"digest": OLD, "spec": None, "rollout": "r0"}})
    ctl.fleet.running["dev-2"] = other
    assert ctl.queue_left_behind()
    ctl.records.set_left_behind("web", "dev", {})  # a rollout reached dev-2 after the converge was queued
    assert ctl.run_queue("web", "dev")["rollouts"] == []
    record = ctl.history("web", "dev")[0]
    assert record["status"] == "superseded" and record["superseded_by"] is None
    assert "reached since" in record["reason"] and ctl.fleet.running["dev-2"] == other


def test_a_left_behind_release_of_a_spec_no_longer_kept_counts_as_the_current_one(ctl):
    # The minion runs the digest with the app's spec: nothing to do, and forgotten (not a converge every pass).
    ctl.records.set_left_behind("web", "dev", {"dev-2": {"digest": OLD, "spec": "0123456789abcdef", "rollout": "r0"}})
    ctl.fleet.specs["dev-2"] = ctl.settings.deployment("web", "dev").spec_id
    assert ctl.queue_left_behind() == [] and ctl.records.left_behind("web", "dev") == {}


def test_a_minion_silent_in_every_converge_is_given_up(ctl):
    ctl.records.set_left_behind("web", "dev", {"dev-2": {"digest": OLD, "spec": None, "rollout": "r0"}})
    ctl.fleet.running["dev-2"] = "sha256:" + "b" * 64
    for attempt in range(1, left_behind.MAX_TRIES + 1):
        ctl.fleet.lost = {"dev-2"}  # answers the question, dies in the apply (and answers again)
        ctl.fleet.running["dev-2"] = "sha256:" + "b" * 64
        assert ctl.queue_left_behind()
        ctl.run_queue("web", "dev")
        left = ctl.records.left_behind("web", "dev")
        if attempt < left_behind.MAX_TRIES:
            assert left["dev-2"]["tries"] == attempt
    assert ctl.records.left_behind("web", "dev") == {}


def test_a_converge_runs_while_a_rollout_of_the_environment_waits_for_its_cooldown(timed):
    timed.records.set_left_behind("web", "dev", {"dev-1": {"digest": OLD, "spec": None, "rollout": "r0"}})
    timed.fleet.running["dev-1"] = "sha256:" + "b" * 64
    timed.accept("salt/engines/hook/saltcd/registry", hook_event())  # held 60 s
    assert [r["minions"] for r in timed.queue_left_behind()] == [["dev-1"]]
    result = timed.run_queue("web", "dev")
    assert result["status"] == "waiting" and [r["status"] for r in result["rollouts"]] == ["converged"]
    assert timed.fleet.running["dev-1"] == OLD
    assert [r["trigger"]["kind"] for r in timed.records.pending("web", "dev")] == ["registry"]


def test_status_shows_the_left_behind_minions(ctl):
    left = {"dev-2": {"digest": OLD, "spec": None, "rollout": "r0"}}
    ctl.records.set_left_behind("web", "dev", left)
    assert ctl.status("web")["web"]["dev"]["left_behind"] == left
