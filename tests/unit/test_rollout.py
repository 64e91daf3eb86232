"""The rollout policy against a fake fleet: plan, gate, budget, rollback."""

from saltcd.rollout import Rollout, failure_budget

from .fakes import FakeFleet, Recorder

OLD, NEW, BAD = ("sha256:" + c * 64 for c in "01b")


def run(deployment, fleet, digest, test=False):
    reporter = Recorder()
    record = {"id": "r1", "app": deployment.app, "env": deployment.env}
    result = Rollout(deployment, digest, fleet, reporter, record).run(test=test)
    return result, reporter


def test_batches_in_order_and_recorded(settings):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "qa-1": OLD})
    result, reporter = run(settings.deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "succeeded"
    assert fleet.applied == [(["dev-1"], NEW), (["dev-2"], NEW)]
    assert fleet.running == {"dev-1": NEW, "dev-2": NEW, "qa-1": OLD}
    assert reporter.tags() == ["saltcd/deploy/web/dev/started", "saltcd/deploy/web/dev/batch",
                               "saltcd/deploy/web/dev/batch", "saltcd/deploy/web/dev/finished"]
    assert [b["minions"]["dev-" + str(b["number"])]["from"] for b in result["batches"]] == [OLD, OLD]


def test_nothing_to_do_when_all_run_the_digest(settings):
    fleet = FakeFleet({"dev-1": NEW, "dev-2": NEW})
    result, reporter = run(settings.deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "unchanged" and fleet.applied == []
    assert reporter.events == [("saltcd/deploy/web/dev/finished", reporter.events[0][1])]
    assert reporter.events[0][1]["status"] == "unchanged"


def test_plan_changes_nothing(settings):
    fleet = FakeFleet({"qa-1": OLD, "qa-2": NEW, "qa-3": OLD})
    result, _ = run(settings.deployment("web", "qa"), fleet, NEW, test=True)
    assert result["status"] == "planned" and fleet.applied == []
    assert [sorted(step["minions"]) for step in result["plan"]] == [["qa-1", "qa-2"], ["qa-3"]]
    assert result["plan"][0]["minions"]["qa-2"]["change"] is False
    assert result["plan"][0]["minions"]["qa-1"] == {"from": OLD, "to": NEW, "answered": True, "change": True}


def test_unhealthy_batch_rolls_back_and_later_batches_untouched(settings):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "dev-3": OLD}, bad={BAD})
    result, reporter = run(settings.deployment("web", "dev"), fleet, BAD)
    assert result["status"] == "rolled_back"
    assert fleet.applied == [(["dev-1"], BAD), (["dev-1"], OLD)]
    assert fleet.running == {"dev-1": OLD, "dev-2": OLD, "dev-3": OLD}
    assert [t.rsplit("/", 1)[1] for t in reporter.tags()] == [
        "started", "batch", "failed", "rollback", "rolled_back", "finished"]
    assert reporter.events[-1][1]["status"] == "rolled_back"


def test_pause_leaves_things_as_they_are(settings, raw_config):
    fleet = FakeFleet({"prod-1": OLD, "prod-2": OLD, "prod-3": OLD}, bad={BAD})
    # prod: ramp [1, 100%], budget 1, pause
    result, _ = run(settings.deployment("web", "prod"), fleet, BAD)
    assert result["status"] == "paused"
    assert fleet.running == {"prod-1": BAD, "prod-2": BAD, "prod-3": BAD}
    assert len(fleet.applied) == 2  # the first failure was within the budget


def test_silent_minion_counts_as_failed(settings):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, silent={"dev-2"})
    result, _ = run(settings.deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "rolled_back"
    assert result["failed_minions"] == ["dev-2"]
    assert result["batches"][1]["minions"]["dev-2"]["comment"] == "no answer within the timeout"
    assert fleet.running["dev-1"] == OLD


def test_no_minions_is_a_clear_failure(settings):
    result, _ = run(settings.deployment("web", "dev"), FakeFleet({"qa-1": OLD}), NEW)
    assert result["status"] == "failed" and "matches no minion" in result["reason"]


def test_failure_budget():
    assert failure_budget(0, 10) == 0
    assert failure_budget(2, 10) == 2
    assert failure_budget("25%", 10) == 2
    assert failure_budget("100%", 3) == 3


def test_rollback_uses_the_last_good_digest_when_a_minion_had_nothing(settings):
    fleet = FakeFleet({"dev-1": None, "dev-2": OLD}, bad={BAD})
    record = {"id": "r1", "app": "web", "env": "dev"}
    result = Rollout(settings.deployment("web", "dev"), BAD, fleet, Recorder(), record,
                     last_good=OLD).run()
    assert result["status"] == "rolled_back" and fleet.running["dev-1"] == OLD


def test_a_first_deploy_with_nothing_to_return_to_is_a_failure(settings):
    fleet = FakeFleet({"dev-1": None, "dev-2": None}, bad={BAD})
    result, _ = run(settings.deployment("web", "dev"), fleet, BAD)
    assert result["status"] == "failed" and result["rollback_failed"] == ["dev-1"]
    assert "no earlier good digest for dev-1" in result["reason"]
