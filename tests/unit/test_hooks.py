"""Release hooks (issue 24): `before` runs once before batch 1 on one minion and
a failure ends the rollout with nothing replaced; `after` runs once after the
last batch and a failure applies the failure policy; plans show them; the
record and the events say what ran where."""

import pytest

from saltcd import config

from .fakes import FakeFleet
from .test_rollout import BAD, NEW, OLD, run


@pytest.fixture
def hooked(raw_config):
    raw_config["apps"]["web"]["hooks"] = {"before": ["./manage.py", "migrate"], "after": "smoke --quick",
                                          "timeout": 60}
    return config.load(raw_config).deployment("web", "dev")


def test_before_runs_once_before_batch_1_and_after_once_after_the_last(hooked):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "dev-3": OLD})
    result, reporter = run(hooked, fleet, NEW)
    assert result["status"] == "succeeded"
    assert fleet.hooks_run == [("dev-1", "before", NEW, ["./manage.py", "migrate"]),
                               ("dev-1", "after", NEW, "smoke --quick")]
    kinds = [kind for kind, _ in fleet.calls]
    assert kinds.index("hook") < kinds.index("apply") and kinds[-1] == "hook"
    assert result["hooks"]["before"]["ok"] is True and result["hooks"]["after"]["minion"] == "dev-1"
    hook_events = [d for t, d in reporter.events if t.endswith("/hook")]
    assert [(e["kind"], e["ok"]) for e in hook_events] == [("before", True), ("after", True)]


def test_a_failed_before_hook_replaces_nothing(hooked):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    fleet.failing_hooks.add("before")
    result, _ = run(hooked, fleet, NEW)
    assert result["status"] == "failed" and "before hook failed on dev-1" in result["reason"]
    assert "nothing replaced" in result["reason"] and "boom" in result["hooks"]["before"]["comment"]
    assert fleet.applied == [] and set(fleet.running.values()) == {OLD}


def test_a_failed_after_hook_applies_the_failure_policy(hooked):
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    fleet.failing_hooks.add("after")
    result, _ = run(hooked, fleet, NEW)
    assert result["status"] == "rolled_back" and "after hook failed on dev-1" in result["reason"]
    assert set(fleet.running.values()) == {OLD}


def test_a_plan_shows_the_hooks_and_runs_none(hooked):
    fleet = FakeFleet({"dev-1": OLD})
    result, _ = run(hooked, fleet, NEW, test=True)
    assert result["hooks"] == {"before": {"command": ["./manage.py", "migrate"], "minion": "dev-1"},
                               "after": {"command": "smoke --quick", "minion": "dev-1"}}
    assert fleet.hooks_run == []


def test_the_hook_minion_can_be_chosen_and_must_be_in_the_environment(raw_config):
    raw_config["apps"]["web"]["hooks"] = {"before": "migrate", "minion": "dev-2"}
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    result, _ = run(config.load(raw_config).deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "succeeded" and fleet.hooks_run[0][0] == "dev-2"
    raw_config["apps"]["web"]["hooks"]["minion"] = "qa-1"
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    result, _ = run(config.load(raw_config).deployment("web", "dev"), fleet, NEW)
    assert result["status"] == "failed" and "qa-1 is not a minion of dev" in result["reason"]
    assert fleet.hooks_run == [] and fleet.applied == []


def test_no_hooks_no_calls(settings):
    fleet = FakeFleet({"dev-1": OLD})
    result, _ = run(settings.deployment("web", "dev"), fleet, BAD)
    assert fleet.hooks_run == [] and result["hooks"] == {}
