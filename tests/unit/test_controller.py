"""Intake, queue, coalescing and history, with fakes for the fleet and the registry."""

import json

import pytest

from saltcd import errors, locking, registry_client
from saltcd.controller import Controller
from saltcd.ingress_auth import hashed_headers
from saltcd.store import Store

from .conftest import TOKEN
from .fakes import FakeFleet, MemoryCache, Recorder

OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64
REPO = "127.0.0.1:5000/saltcd/web"


class FakeRegistry:
    def __init__(self, digest):
        self.digest = digest

    def __call__(self, repository, tag, settings):
        if isinstance(self.digest, Exception):
            raise self.digest
        return self.digest


@pytest.fixture
def ctl(settings, tmp_path):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "qa-1": OLD})
    return Controller(settings, Store(MemoryCache()), fleet, Recorder(), str(tmp_path),
                      resolve=FakeRegistry(NEW))


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
            "data": {"repository": REPO, "tag": "qa", "__pub_fun": "event.send"}}
    verdict = ctl.accept("saltcd/push", data)
    assert verdict["source"] == {"kind": "ci", "origin": "ci-1"}
    assert verdict["accepted"][0]["env"] == "qa"


@pytest.mark.parametrize("tag, data, reason", [
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "id": "dev-1", "cmd": "_minion_event"}, "fired by a minion"),
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "minion_fields": ["cmd", "id"]}, "fired by a minion"),
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "body": b"\xff"}, "not UTF-8"),
    ("salt/engines/hook/saltcd/registry", {**hook_event(), "body": b"[]"}, "not an object"),
    ("saltcd/push", {"repository": REPO, "tag": "dev; rm -rf /"}, "invalid tag"),
    ("saltcd/push", {"repository": "$(id)", "tag": "dev"}, "invalid repository"),
    ("saltcd/push", {"repository": REPO, "tag": "dev", "digest": "sha256:nothex"}, "invalid digest"),
])
def test_rejections_change_nothing_and_are_announced(ctl, tag, data, reason):
    verdict = ctl.accept(tag, data)
    assert reason in verdict["rejected"]
    assert ctl.records.pending("web", "dev") == [] and ctl.fleet.applied == []
    assert ctl.reporter.events[-1][0] == "saltcd/rejected"


def test_unknown_repository_and_unmapped_tag_are_ignored(ctl):
    assert ctl.accept("saltcd/push", {"repository": "127.0.0.1:5000/other", "tag": "dev"})["ignored"]
    assert ctl.accept("saltcd/push", {"repository": REPO, "tag": "latest"})["ignored"]
    assert ctl.accept("saltcd/push", {"repository": REPO, "tag": "prod"})["ignored"] == []  # web has prod
    assert ctl.accept("saltcd/push", {"repository": "127.0.0.1:5000/saltcd/api", "tag": "qa"})["ignored"] == [
        "app 'api' has no environment 'qa'"]


def test_drain_coalesces_to_the_newest_request(ctl):
    for _ in range(3):
        ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    result = ctl.drain("web", "dev")
    history = ctl.history("web", "dev")
    assert [r["status"] for r in reversed(history)] == ["superseded", "superseded", "succeeded"]
    assert result["status"] == "idle" and ctl.records.pending("web", "dev") == []
    assert ctl.records.env_state("web", "dev")["last_good"] == NEW
    assert ctl.fleet.running == {"dev-1": NEW, "dev-2": NEW, "qa-1": OLD}


def test_drain_leaves_the_queue_to_the_lock_holder(ctl):
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    with locking.try_lock(locking.lock_path(ctl.lock_dir, "web", "dev")) as held:
        assert held
        assert ctl.drain("web", "dev")["status"] == "busy"
    assert len(ctl.records.pending("web", "dev")) == 1 and ctl.fleet.applied == []


def test_stale_running_record_becomes_interrupted(ctl):
    ctl.records.save_rollout({"id": "20260101T000000.000000Z-aaaaaa", "app": "web", "env": "dev",
                              "status": "running"})
    ctl.drain("web", "dev")
    assert ctl.history("web", "dev")[0]["status"] == "interrupted"
    assert "saltcd/deploy/web/dev/interrupted" in ctl.reporter.tags()


def test_registry_down_fails_cleanly(ctl):
    ctl.resolve = FakeRegistry(registry_client.RegistryError("registry 127.0.0.1:5000 unreachable"))
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    ctl.drain("web", "dev")
    record = ctl.history("web", "dev")[0]
    assert record["status"] == "failed" and "unreachable" in record["reason"]
    assert ctl.fleet.applied == [] and ctl.records.pending("web", "dev") == []


def test_registry_digest_wins_over_the_event(ctl):
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event(digest=OLD))
    ctl.drain("web", "dev")
    record = ctl.history("web", "dev")[0]
    assert record["to_digest"] == NEW and "registry wins" in record["note"]


def test_status_reports_convergence(ctl):
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    ctl.drain("web", "dev")
    status = ctl.status("web")
    assert status["web"]["dev"]["converged"] is True
    assert status["web"]["qa"]["converged"] is False  # nothing succeeded in qa yet
    assert status["web"]["dev"]["minions"]["dev-1"]["digest"] == NEW


def test_rollback_goes_to_the_good_digest_before_the_current_one(ctl):
    for digest in (OLD, NEW):
        ctl.resolve = FakeRegistry(digest)
        ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
        ctl.drain("web", "dev")
    assert ctl.rollback_target("web", "dev")[0] == OLD
    ctl.fleet.running["dev-2"] = "sha256:" + "9" * 64  # a paused rollout left it mixed
    assert ctl.rollback_target("web", "dev") == (NEW, "the environment does not all run its last good digest")


def test_rollback_without_history_is_refused(ctl):
    with pytest.raises(errors.NotFound, match="nothing to roll back to"):
        ctl.rollback_target("web", "dev")


def test_unchanged_does_not_vouch_for_a_digest(ctl):
    ctl.fleet.running.update({"dev-1": NEW, "dev-2": NEW})  # already there, health unknown
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event())
    ctl.drain("web", "dev")
    assert ctl.history("web", "dev")[0]["status"] == "unchanged"
    assert ctl.records.env_state("web", "dev") == {}


def _run_push(ctl, digest):
    ctl.resolve.digest = digest
    ctl.accept("salt/engines/hook/saltcd/registry", hook_event(digest=digest))
    return ctl.drain("web", "dev")["rollouts"][-1]


def test_reconcile_queues_a_push_whose_notification_never_arrived(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    assert ctl.reconcile() == []                      # the tag is where saltcd left it
    lost = "sha256:" + "2" * 64
    ctl.resolve.digest = lost                         # pushed, but the notification was dropped
    assert ctl.reconcile() == []                      # first sighting: it may still be in flight
    made = ctl.reconcile()
    assert [(r["app"], r["env"], r["tag"], r["trigger"]["kind"]) for r in made] == [("web", "dev", "dev", "reconcile")]
    assert ctl.reconcile() == []                      # already queued: not twice
    record = ctl.drain("web", "dev")["rollouts"][-1]
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
    assert ctl.drain("web", "dev")["rollouts"][-1]["to_digest"] == NEW
    assert ctl.reconcile() == [] and ctl.reconcile() == []  # a pinned rollback is not a tag to catch up with


def test_reconcile_skips_unreachable_registries_and_never_deployed_envs(ctl):
    assert ctl.reconcile() == []                      # nothing was ever rolled out
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    ctl.resolve.digest = registry_client.RegistryError("registry down")
    assert ctl.reconcile() == [] and ctl.reconcile() == [] and ctl.records.pending("web", "dev") == []


def test_reconcile_leaves_a_push_in_flight_alone(ctl):
    assert _run_push(ctl, NEW)["status"] == "succeeded"
    moved = "sha256:" + "4" * 64
    ctl.resolve.digest = moved                        # PUT done, notification not yet accepted
    assert ctl.reconcile() == []
    assert _run_push(ctl, moved)["status"] == "succeeded"  # the notification arrives and runs
    assert ctl.reconcile() == [] and ctl.reconcile() == []
