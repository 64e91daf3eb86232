"""Safe rollouts on real parts: rollback, failure budgets, a minion or the
registry or the master going away, coalescing, plans and manual rollback."""

import socket
import time

import pytest

from .conftest import APPS

pytestmark = pytest.mark.integration

DEV = ["dev-1", "dev-2"]


def outcome(lab, app, after, env="dev", timeout=240):
    """The `finished` event of the next rollout of app/env after `after`."""
    return lab.wait_for(f"saltcd/deploy/{app}/{env}/finished", after, timeout).data


def deploy_good(lab, app, version):
    start = time.time()
    digest = lab.push(app, "dev", version)
    data = outcome(lab, app, start)
    assert data["status"] == "succeeded", data
    return digest


@pytest.mark.parametrize("app, behaviour", [
    ("crash", "crash"),        # exits at start
    ("never", "unhealthy"),    # starts, never answers 200 on /health
    ("degrade", "degrades"),   # healthy, then unhealthy 4 s later, inside the settle time
])
def test_bad_image_rolls_back_and_later_batches_stay_untouched(lab, app, behaviour):
    good = deploy_good(lab, app, "1.0.0")
    untouched = lab.container("dev-2", app)
    start = time.time()
    bad = lab.push(app, "dev", "1.0.1", behaviour=behaviour)
    data = outcome(lab, app, start)
    assert data["status"] == "rolled_back" and data["failed"] == ["dev-1"], data
    assert {m: lab.running_digests(app)[m] for m in DEV} == {"dev-1": good, "dev-2": good}
    assert [lab.health(m, app) for m in DEV] == [200, 200]
    assert lab.container("dev-2", app) == untouched  # batch 2 never ran
    record = lab.history(app, "dev", limit=1)[0]
    assert record["to_digest"] == bad and record["status"] == "rolled_back"
    assert [(b["kind"], sorted(b["minions"])) for b in record["batches"]] == [
        ("batch", ["dev-1"]), ("rollback", ["dev-1"])]


def test_budget_of_one_with_continue_completes_on_the_others(lab):
    # dev-2's host port is taken, so the container cannot start there.
    with socket.socket() as squatter:
        squatter.bind((lab.hosts["dev-2"].address, APPS["budget"][0]))
        squatter.listen()
        start = time.time()
        digest = lab.push("budget", "dev", "1.0.0")
        data = outcome(lab, "budget", start)
    assert data["status"] == "succeeded" and data["failed"] == ["dev-2"], data
    assert lab.running_digests("budget")["dev-1"] == digest
    assert lab.health("dev-1", "budget") == 200


def test_pause_stops_and_leaves_everything_as_it_is(lab):
    good = deploy_good(lab, "pause", "1.0.0")
    untouched = lab.container("dev-2", "pause")
    start = time.time()
    bad = lab.push("pause", "dev", "1.0.1", behaviour="unhealthy")
    data = outcome(lab, "pause", start)
    assert data["status"] == "paused", data
    assert lab.events("saltcd/deploy/pause/dev/rollback", start) == []
    assert lab.running_digests("pause")["dev-1"] == bad  # left as it is, for inspection
    assert lab.container("dev-2", "pause") == untouched
    assert lab.running_digests("pause")["dev-2"] == good


def test_registry_unreachable_stops_nothing(lab):
    deploy_good(lab, "offline", "1.0.0")
    before = {m: lab.container(m, "offline") for m in DEV}
    lab.registry.stop()
    try:
        ret = lab.run.run("deploy.rollout", "app=offline", "env=dev")
    finally:
        lab.registry.start()
    assert ret.returncode != 0
    assert ret.data["status"] == "failed" and "unreachable" in ret.data["reason"], ret.data
    assert {m: lab.container(m, "offline") for m in DEV} == before


def test_ten_quick_pushes_never_overlap_lose_nothing_and_end_on_the_last(lab):
    start = time.time()
    digests = [lab.push("burst", "dev", f"5.0.{n}") for n in range(10)]
    deadline = time.time() + 300
    while time.time() < deadline:
        history = [r for r in lab.history("burst", "dev") if r["received"] >= start - 1]
        status = lab.run.run("deploy.status", "app=burst", "env=dev").data["burst"]["dev"]
        seen = {r.get("digest_hint") for r in history}
        if (set(digests) <= seen and not status["pending"] and not status["rollout_running"]
                and history[0].get("ended")):
            break
        time.sleep(2)
    # A registry may notify a push more than once: every push is in the history
    # at least once, each as run or superseded (a repeat of a digest that
    # already runs is a no-op "unchanged").
    assert set(digests) <= {r.get("digest_hint") for r in history}, [
        (r["status"], r.get("digest_hint")) for r in history]
    assert all(r["trigger"]["kind"] == "registry" for r in history)
    assert {r["status"] for r in history} <= {"superseded", "succeeded", "unchanged"}
    runs = sorted((r["started"], r["ended"]) for r in history if r["status"] != "superseded")
    assert all(earlier[1] <= later[0] for earlier, later in zip(runs, runs[1:])), runs
    assert history[0]["to_digest"] == digests[-1]
    assert {m: lab.running_digests("burst")[m] for m in DEV} == {m: digests[-1] for m in DEV}


def test_plan_changes_nothing_and_matches_the_rollout(lab):
    digest = deploy_good(lab, "plan", "1.0.0")
    client = lab.hosts["dev-1"].client()
    client.containers.get("plan").remove(force=True)  # drift on dev-1
    client.close()
    before = {m: lab.container(m, "plan") for m in DEV}
    plan = lab.run.run("deploy.rollout", "app=plan", "env=dev", "test=True").data
    assert plan["status"] == "planned"
    assert {m: lab.container(m, "plan") for m in DEV} == before
    steps = [{m: (v["from"], v["to"], v["change"]) for m, v in s["minions"].items()} for s in plan["plan"]]
    assert steps == [{"dev-1": (None, digest, True)}, {"dev-2": (digest, digest, False)}]
    ret = lab.run.run("deploy.rollout", "app=plan", "env=dev")
    assert ret.data["status"] == "succeeded"
    done = [{m: (v["from"], v["to"], v["changed"]) for m, v in b["minions"].items()}
            for b in ret.data["batches"]]
    assert done == steps
    assert lab.container("dev-2", "plan") == before["dev-2"]


def test_manual_rollback_restores_the_previous_good_digest(lab):
    first = deploy_good(lab, "manual", "1.0.0")
    second = deploy_good(lab, "manual", "2.0.0")
    assert lab.running_digests("manual")["dev-1"] == second
    ret = lab.run.run("deploy.rollback", "app=manual", "env=dev")
    assert ret.returncode == 0 and ret.data["status"] == "succeeded", ret.data
    assert ret.data["trigger"]["kind"] == "rollback" and ret.data["to_digest"] == first
    assert {m: lab.running_digests("manual")[m] for m in DEV} == {m: first for m in DEV}
    assert [lab.health(m, "manual") for m in DEV] == [200, 200]


def test_minion_stopped_mid_rollout_is_reported_and_rolled_back(lab):
    good = deploy_good(lab, "gone", "1.0.0")
    start = time.time()
    lab.push("gone", "dev", "2.0.0")
    lab.wait_for("saltcd/deploy/gone/dev/started", start)
    minion = lab.minions["dev-2"]
    minion.terminate()
    try:
        data = outcome(lab, "gone", start, timeout=300)
    finally:
        minion.start(start_timeout=120)
    assert data["status"] == "rolled_back" and data["failed"] == ["dev-2"], data
    record = lab.history("gone", "dev", limit=1)[0]
    assert record["batches"][1]["minions"]["dev-2"]["comment"] == "no answer within the timeout"
    assert lab.running_digests("gone")["dev-1"] == good


def test_master_restart_mid_rollout_is_interrupted_then_converges(lab):
    start = time.time()
    digest = lab.push("restart", "dev", "1.0.0")
    lab.wait_for("saltcd/deploy/restart/dev/started", start)
    lab.master.terminate()
    lab.master.start(start_timeout=120)
    data = outcome(lab, "restart", start, timeout=300)
    assert data["status"] == "succeeded", data
    statuses = [r["status"] for r in lab.history("restart", "dev")]
    assert statuses[:2] == ["succeeded", "interrupted"], statuses
    assert {m: lab.running_digests("restart")[m] for m in DEV} == {m: digest for m in DEV}
