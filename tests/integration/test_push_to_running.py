"""The whole path on real parts: registry push -> webhook engine -> reactor ->
runner -> state.apply on the minions, batch by batch, health-gated."""

import time

import pytest

pytestmark = pytest.mark.integration


def wait_outcome(lab, app, env, after, timeout=180):
    """The `finished` event that ends a rollout of app/env: (status, event data)."""
    data = lab.wait_for(f"saltcd/deploy/{app}/{env}/finished", after, timeout).data
    return data["status"], data


def test_registry_push_deploys_the_digest_on_dev_only(lab):
    start = time.time()
    digest = lab.push("web", "dev", "1.0.0")
    outcome, data = wait_outcome(lab, "web", "dev", start)
    assert outcome == "succeeded", data
    assert data["digest"] == digest
    running = lab.running_digests("web")
    assert {m: running[m] for m in lab.env_minions("dev")} == {"dev-1": digest, "dev-2": digest}
    assert all(running[m] is None for m in lab.env_minions("qa") + lab.env_minions("prod"))
    history = lab.run.run("deploy.history", "app=web", "env=dev", "limit=1").data
    assert history[0]["trigger"]["kind"] == "registry" and history[0]["to_digest"] == digest


def test_status_shows_the_digest_and_health_live(lab):
    status = lab.run.run("deploy.status", "app=web", "env=dev").data
    dev = status["web"]["dev"]
    assert dev["converged"] is True, dev
    assert {m: (i["digest"], i["healthy"]) for m, i in dev["minions"].items()} == {
        m: (dev["last_good"], True) for m in ("dev-1", "dev-2")}


def test_pushing_the_same_digest_again_restarts_nothing(lab):
    before = {m: lab.container(m, "web") for m in lab.env_minions("dev")}
    digest = before["dev-1"]["image"].rsplit("@", 1)[1]
    start = time.time()
    assert lab.retag("web", digest, "dev") == digest
    outcome, data = wait_outcome(lab, "web", "dev", start)
    assert data["status"] == "unchanged", data
    after = {m: lab.container(m, "web") for m in lab.env_minions("dev")}
    assert after == before  # same container ids, same start times


def test_new_digest_rolls_out_batch_after_healthy_batch(lab):
    old = lab.running_digests("web")["dev-1"]
    start = time.time()
    digest = lab.push("web", "dev", "1.1.0")
    outcome, data = wait_outcome(lab, "web", "dev", start)
    assert data["status"] == "succeeded", data
    batches = [e.data for e in lab.events("saltcd/deploy/web/dev/batch", start)]
    assert [b["number"] for b in batches] == [1, 2]
    assert all(b["healthy"] for b in batches)
    record = lab.run.run("deploy.history", "app=web", "env=dev", "limit=1").data[0]
    first, second = record["batches"]
    assert first["ended"] <= second["started"], "batch 2 started before batch 1 was healthy"
    assert {m: r["from"] for m, r in {**first["minions"], **second["minions"]}.items()} == {
        "dev-1": old, "dev-2": old}
    assert lab.running_digests("web")["dev-2"] == digest
    # Only batch 1 was asked what it runs before its job went out; dev-2 was
    # asked while batch 1 ran, and `started` still names what each ran before.
    jobs = [(e.data.get("fun"), e.data.get("arg"), e.data.get("minions"))
            for e in lab.events("salt/job/*/new", start) if e.data.get("fun") in ("saltcd.containers", "state.apply")]
    asked_and_applied = [(fun, minions) for fun, arg, minions in jobs
                         if fun == "saltcd.containers" and arg == [["web"]]
                         or fun == "state.apply" and "saltcd.deploy" in arg]
    assert asked_and_applied[:3] == [("saltcd.containers", ["dev-1"]), ("state.apply", ["dev-1"]),
                                     ("saltcd.containers", ["dev-2"])], jobs
    started = lab.wait_for("saltcd/deploy/web/dev/started", start).data
    assert started["from_digests"] == {"dev-1": old, "dev-2": old}


def remove_container(lab, minion, app):
    """Drift: the app's container is gone from one host (ours, in the lab engine)."""
    client = lab.hosts[minion].client()
    try:
        client.containers.get(app).remove(force=True)
    finally:
        client.close()


def test_ci_minion_event_triggers_the_same_rollout(lab):
    start = time.time()
    digest = lab.push("ci", "qa", "2.0.0")
    assert wait_outcome(lab, "ci", "qa", start)[0] == "succeeded"
    remove_container(lab, "qa-1", "ci")
    # `ci` has a push key of its own: the lab's shared one, which pushes every
    # other app, cannot push it, whatever minion sends it.
    start = time.time()
    lab.ci_push("ci-1", {"repository": lab.repositories["ci"], "tag": "qa"}, secret=lab.push_secret)
    verdict = lab.wait_for("saltcd/rejected", start, timeout=60).data
    assert verdict["reason"] == "unauthenticated: signature does not match the payload", verdict
    assert lab.container("qa-1", "ci") is None and lab.history("ci", "qa", limit=1)[0]["to_digest"] == digest
    start = time.time()
    lab.ci_push("ci-1", {"repository": lab.repositories["ci"], "tag": "qa"})
    outcome, data = wait_outcome(lab, "ci", "qa", start)
    assert outcome == "succeeded" and data["digest"] == digest, data
    assert lab.running_digests("ci")["qa-1"] == digest
    record = lab.run.run("deploy.history", "app=ci", "env=qa", "limit=1").data[0]
    assert record["trigger"] == {"kind": "ci", "origin": "ci-1"}


def test_orchestrate_runs_the_rollout_by_hand(lab):
    start = time.time()
    digest = lab.push("orch", "prod", "3.0.0")
    assert wait_outcome(lab, "orch", "prod", start)[0] == "succeeded"
    remove_container(lab, "prod-1", "orch")
    ret = lab.run.run("state.orchestrate", "orch.deploy", 'pillar={"app": "orch", "env": "prod"}')
    assert ret.returncode == 0, ret
    assert lab.running_digests("orch")["prod-1"] == digest
    record = lab.run.run("deploy.history", "app=orch", "env=prod", "limit=1").data[0]
    assert record["trigger"]["kind"] == "operator" and record["status"] == "succeeded"


def test_unhealthy_image_stops_after_the_first_batch(lab):
    start = time.time()
    good = lab.push("sick", "dev", "1.0.0")
    assert wait_outcome(lab, "sick", "dev", start)[1]["status"] == "succeeded"
    untouched = lab.container("dev-2", "sick")
    start = time.time()
    lab.push("sick", "dev", "1.0.1", behaviour="unhealthy")
    outcome, data = wait_outcome(lab, "sick", "dev", start)
    assert outcome == "rolled_back", data
    failed = lab.events("saltcd/deploy/sick/dev/failed", start)
    assert failed and failed[0].data["failed"] == ["dev-1"]
    assert lab.running_digests("sick")["dev-1"] == good
    assert lab.container("dev-2", "sick") == untouched  # batch 2 never ran
