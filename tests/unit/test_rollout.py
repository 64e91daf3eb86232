"""The rollout policy against a fake fleet: plan, gate, budget, rollback, deadline, watch."""

import pytest

from saltcd import config
from saltcd.rollout import Rollout, failure_budget, watch_problem

from .fakes import FakeClock, FakeFleet, Recorder

OLD, NEW, BAD, DIES, SLOW = ("sha256:" + c * 64 for c in "01bd5")


def run(deployment, fleet, digest, test=False, clock=None):
    reporter = Recorder()
    record = {"id": "r1", "app": deployment.app, "env": deployment.env}
    result = Rollout(deployment, digest, fleet, reporter, record, clock=clock or FakeClock()).run(test=test)
    return result, reporter


def steps(reporter):
    return [t.rsplit("/", 1)[1] for t in reporter.tags()]


def test_batches_in_order_and_recorded(settings):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "qa-1": OLD})
    result, reporter = run(settings.deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "succeeded"
    assert fleet.applied == [(["dev-1"], NEW), (["dev-2"], NEW)]
    assert fleet.running == {"dev-1": NEW, "dev-2": NEW, "qa-1": OLD}
    # The shipped settle (5 s) is also the watch after the last batch.
    assert reporter.tags() == ["saltcd/deploy/web/dev/started", "saltcd/deploy/web/dev/batch",
                               "saltcd/deploy/web/dev/batch", "saltcd/deploy/web/dev/watch",
                               "saltcd/deploy/web/dev/finished"]
    assert result["watch"]["outcome"] == "passed" and result["watch"]["seconds"] == 5
    assert [b["minions"]["dev-" + str(b["number"])]["from"] for b in result["batches"]] == [OLD, OLD]


def test_nothing_to_do_when_all_run_the_digest(settings):
    fleet = FakeFleet({"dev-1": NEW, "dev-2": NEW})
    result, reporter = run(settings.deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "unchanged" and fleet.applied == []
    assert reporter.events == [("saltcd/deploy/web/dev/finished", reporter.events[0][1])]
    assert reporter.events[0][1]["status"] == "unchanged"


# who is asked what it runs, and when
def test_the_rest_is_asked_while_the_first_batch_runs(settings):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "dev-3": None})
    result, reporter = run(settings.deployment("web", "dev"), fleet, NEW)
    # The first job goes out after one minion's answer, not the environment's.
    assert fleet.calls[:3] == [("inspect", ["dev-1"]), ("apply", ["dev-1"]), ("inspect", ["dev-2", "dev-3"])]
    assert steps(reporter)[:2] == ["started", "batch"]
    started = reporter.events[0][1]
    assert started["from_digests"] == {"dev-1": OLD, "dev-2": OLD, "dev-3": None}
    assert started["batches"] == [["dev-1"], ["dev-2"], ["dev-3"]]
    assert result["from_digests"] == started["from_digests"]
    assert [b["minions"][m]["from"] for b, m in zip(result["batches"], ("dev-1", "dev-2", "dev-3"))] == [
        OLD, OLD, None]
    assert result["status"] == "succeeded"


class NeverPublishes(FakeFleet):
    """The first batch's job never goes out (the master refused the publish);
    `published` is still called, as SaltFleet.apply does."""

    def apply(self, minions, pillar, timeout, test=False, limit=None, published=None):
        self.calls.append(("apply", list(minions)))
        if published is not None:
            published()
        return {m: None for m in minions}


def test_the_rest_is_asked_even_when_the_first_job_never_went_out(settings):
    fleet = NeverPublishes({"dev-1": OLD, "dev-2": OLD})
    result, reporter = run(settings.deployment("web", "dev"), fleet, NEW)
    assert fleet.calls[:3] == [("inspect", ["dev-1"]), ("apply", ["dev-1"]), ("inspect", ["dev-2"])]
    assert steps(reporter)[:2] == ["started", "batch"]
    assert result["from_digests"] == {"dev-1": OLD, "dev-2": OLD}
    assert result["status"] != "succeeded"


def test_a_first_batch_with_nothing_to_change_asks_everyone_before_any_job(settings):
    fleet = FakeFleet({"dev-1": NEW, "dev-2": OLD})
    result, reporter = run(settings.deployment("web", "dev"), fleet, NEW)
    assert fleet.calls[:3] == [("inspect", ["dev-1"]), ("inspect", ["dev-2"]), ("apply", ["dev-1"])]
    assert reporter.events[0][1]["from_digests"] == {"dev-1": NEW, "dev-2": OLD}
    assert result["status"] == "succeeded" and fleet.running == {"dev-1": NEW, "dev-2": NEW}


def test_a_no_op_asks_twice_and_applies_nothing(settings):
    fleet = FakeFleet({"dev-1": NEW, "dev-2": NEW, "dev-3": NEW})
    result, _ = run(settings.deployment("web", "dev"), fleet, NEW)
    assert fleet.calls == [("inspect", ["dev-1"]), ("inspect", ["dev-2", "dev-3"])]
    assert result["status"] == "unchanged"


class FailsOn(FakeFleet):
    """New digests fail their health gate on the minions in `failing` only."""

    def __init__(self, running, failing):
        super().__init__(running)
        self.failing = set(failing)

    def apply(self, minions, pillar, timeout, test=False, limit=None, published=None):
        out = super().apply(minions, pillar, timeout, test, limit, published)
        if pillar["saltcd"]["digest"] == NEW:
            out.update({m: {"ok": False, "changed": True, "comment": "Unhealthy: 500"}
                        for m in minions if m in self.failing})
        return out


def test_a_failed_later_batch_rolls_back_to_what_the_rest_answered(settings):
    two = "sha256:" + "2" * 64
    fleet = FailsOn({"dev-1": OLD, "dev-2": two, "dev-3": OLD}, failing={"dev-2"})
    result, _ = run(settings.deployment("web", "dev"), fleet, NEW)
    # dev-2 was asked during batch 1; its rollback goes back to what it answered.
    assert result["status"] == "rolled_back"
    assert fleet.applied == [(["dev-1"], NEW), (["dev-2"], NEW), (["dev-1"], OLD), (["dev-2"], two)]
    assert fleet.running == {"dev-1": OLD, "dev-2": two, "dev-3": OLD}


def test_plan_changes_nothing(settings):
    fleet = FakeFleet({"qa-1": OLD, "qa-2": NEW, "qa-3": OLD})
    result, _ = run(settings.deployment("web", "qa"), fleet, NEW, test=True)
    assert result["status"] == "planned" and fleet.applied == []
    assert [sorted(step["minions"]) for step in result["plan"]] == [["qa-1", "qa-2"], ["qa-3"]]
    assert result["plan"][0]["minions"]["qa-2"]["change"] is False
    assert result["plan"][0]["minions"]["qa-1"] == {"from": OLD, "to": NEW, "answered": True, "change": True,
                                                    "why": "new digest"}


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
                     last_good=OLD, clock=FakeClock()).run()
    assert result["status"] == "rolled_back" and fleet.running["dev-1"] == OLD


def test_a_first_deploy_with_nothing_to_return_to_is_a_failure(settings):
    fleet = FakeFleet({"dev-1": None, "dev-2": None}, bad={BAD})
    result, _ = run(settings.deployment("web", "dev"), fleet, BAD)
    assert result["status"] == "failed" and result["rollback_failed"] == ["dev-1"]
    assert "no earlier good digest for dev-1" in result["reason"]


def test_a_batch_past_its_deadline_fails_and_rolls_back_saying_why(raw_config):
    raw_config["apps"]["web"]["batch_timeout"] = 20
    deployment = config.load(raw_config).deployment("web", "dev")
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, slow={SLOW})
    result, reporter = run(deployment, fleet, SLOW)
    assert fleet.limits[0] == 20
    assert result["status"] == "rolled_back" and result["failed_minions"] == ["dev-1"]
    assert "batch_timeout of 20 s exceeded: state run stopped on the minion" in result["reason"]
    batch = result["batches"][0]
    assert batch["timed_out"] == ["dev-1"] and batch["minions"]["dev-1"]["timed_out"] is True
    event = next(data for tag, data in reporter.events if tag.endswith("/batch"))
    assert event["timed_out"] == ["dev-1"] and event["deadline"] == 20
    finished = reporter.events[-1][1]
    assert finished["status"] == "rolled_back" and "batch_timeout of 20 s" in finished["reason"]


def test_the_deadline_defaults_to_what_a_batch_may_wait_for(settings):
    dep = settings.deployment("web", "dev")
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    run(dep, fleet, NEW)
    assert fleet.limits == [300 + 20 + 5 + 10] * 2  # state, health timeout, settle, stop timeout


def test_a_container_that_dies_after_the_last_batch_fails_the_rollout_and_rolls_back(settings):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, dies={DIES})
    result, reporter = run(settings.deployment("web", "dev"), fleet, DIES)
    assert result["status"] == "rolled_back"
    assert fleet.running == {"dev-1": OLD, "dev-2": OLD}
    assert steps(reporter) == ["started", "batch", "batch", "watch", "failed", "rollback", "rollback",
                               "rolled_back", "finished"]
    assert result["watch"]["outcome"] == "failed"
    assert result["watch"]["problems"] == {"dev-1": "container exited (exit code 1)",
                                           "dev-2": "container exited (exit code 1)"}
    assert result["reason"].startswith("watch after the last batch: dev-1 container exited (exit code 1)")


def test_the_watch_lasts_its_window_polling_at_the_health_interval(raw_config):
    raw_config["apps"]["web"]["watch"] = 3
    raw_config["apps"]["web"]["health"]["interval"] = 0.5
    clock = FakeClock()
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    result, _ = run(config.load(raw_config).deployment("web", "dev"), fleet, NEW, clock=clock)
    assert result["status"] == "succeeded" and clock.now == 3 and clock.slept == [0.5] * 6
    assert fleet.status_calls == 7


def test_no_watch_when_it_is_zero(raw_config):
    raw_config["apps"]["web"]["health"]["settle"] = 0
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, dies={DIES})
    result, reporter = run(config.load(raw_config).deployment("web", "dev"), fleet, DIES)
    assert result["status"] == "succeeded" and "watch" not in steps(reporter) and fleet.status_calls == 0


def test_the_watch_respects_the_failure_policy(raw_config):
    raw_config["apps"]["web"]["on_failure"] = "continue"
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, dies={DIES})
    result, _ = run(config.load(raw_config).deployment("web", "dev"), fleet, DIES)
    assert result["status"] == "failed" and result["failed_minions"] == ["dev-1", "dev-2"]
    assert fleet.running == {"dev-1": DIES, "dev-2": DIES}


UP = {"exists": True, "running": True, "id": "a" * 64, "started_at": "t0", "restart_count": 0,
      "health": {"healthy": True, "status": 200}}


@pytest.mark.parametrize("now, problem", [
    (UP, None),
    ({**UP, "running": False, "exit_code": 137}, "container exited (exit code 137)"),
    ({**UP, "id": "b" * 64}, "container replaced (aaaaaaaaaaaa -> bbbbbbbbbbbb)"),
    ({**UP, "started_at": "t1", "restart_count": 1}, "container restarted (restart count 0 -> 1)"),
    ({**UP, "health": {"healthy": False, "status": 503}}, "failed its health probe (503)"),
    ({"exists": False, "running": False}, "lost its container"),
])
def test_watch_problems(now, problem):
    assert watch_problem(UP, now) == problem


def test_a_minion_that_died_after_replacing_is_rolled_back_once_it_answers(settings):
    # dev-2 took the new digest and died before it returned; it was back by the rollback.
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, lost={"dev-2"})
    result, _ = run(settings.deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "rolled_back" and result["failed_minions"] == ["dev-2"]
    assert fleet.running == {"dev-1": OLD, "dev-2": OLD}
    assert result["unreachable"] == [] and "left_behind" not in result
    assert result["rolled_back_to"]["dev-2"]["digest"] == OLD


def test_a_minion_still_silent_at_the_rollback_is_left_behind_with_its_release(settings):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, lost={"dev-2"})
    fleet.stays_dead.add("dev-2")  # its rollback cannot reach it either
    result, _ = run(settings.deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "rolled_back" and result["unreachable"] == ["dev-2"]
    assert fleet.running == {"dev-1": OLD, "dev-2": NEW}
    assert "not answering, left as they are: dev-2" in result["reason"]
    assert result["left_behind"] == {"dev-2": {"digest": OLD, "spec": result["from_specs"]["dev-2"],
                                               "rollout": "r1"}}


def test_a_success_without_a_silent_minion_leaves_it_behind_on_the_new_release(settings, raw_config):
    raw_config["apps"]["web"]["environments"]["dev"]["max_failures"] = 1
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD}, silent={"dev-2"})
    result, _ = run(config.load(raw_config).deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "succeeded"
    assert result["left_behind"] == {"dev-2": {"digest": NEW, "spec": result["to_spec"], "rollout": "r1"}}


def test_converge_brings_the_answering_minions_to_the_release_and_keeps_the_silent(settings):
    fleet = FakeFleet({"dev-1": NEW, "dev-2": NEW, "dev-3": OLD}, silent={"dev-3"})
    reporter, record = Recorder(), {"id": "r2", "app": "web", "env": "dev"}
    result = Rollout(settings.deployment("web", "dev"), OLD, fleet, reporter, record,
                     clock=FakeClock()).converge(["dev-1", "dev-3"])
    assert result["status"] == "converged"
    assert fleet.running == {"dev-1": OLD, "dev-2": NEW, "dev-3": OLD}
    assert fleet.applied == [(["dev-1"], OLD)]
    assert result["left_behind"] == {"dev-3": {"digest": OLD, "spec": result["to_spec"], "rollout": "r2"}}
    assert "brought dev-1 to" in result["reason"] and "still not answering: dev-3" in result["reason"]
    assert steps(reporter) == ["converge", "finished"]


def test_converge_that_fails_ends_failed(settings):
    fleet = FakeFleet({"dev-1": NEW}, bad={OLD})
    record = {"id": "r2", "app": "web", "env": "dev"}
    result = Rollout(settings.deployment("web", "dev"), OLD, fleet, Recorder(), record,
                     clock=FakeClock()).converge(["dev-1"])
    assert result["status"] == "failed" and "failed on dev-1" in result["reason"]
    assert "left_behind" not in result


def test_a_rollback_gives_a_left_behind_minion_its_release_not_what_it_ran(settings):
    # dev-2 was left behind on BAD (it should run OLD); the next rollout passes its
    # gates, then the watch sees both containers exit: both roll back, dev-2 to OLD.
    fleet = FakeFleet({"dev-1": OLD, "dev-2": BAD}, dies={NEW})
    record = {"id": "r3", "app": "web", "env": "dev"}
    result = Rollout(settings.deployment("web", "dev"), NEW, fleet, Recorder(), record, clock=FakeClock(),
                     left_behind={"dev-2": {"digest": OLD, "spec": None}}).run()
    assert result["status"] == "rolled_back"
    assert fleet.running == {"dev-1": OLD, "dev-2": OLD}
    assert result["rolled_back_to"]["dev-2"]["digest"] == OLD
