"""A push whose notification never became a reaction is still deployed: the
resume schedule finds the tag moved at the registry (reconcile), the first
push of a tag too."""

import time

import pytest
import salt.config
import salt.utils.event
import salt.utils.master

pytestmark = pytest.mark.integration


def _is_push_of(pushes, digest):
    """True if the pushes a `saltcd/ingress/...` event carries (what the webhook
    engine parsed out of the registry's notification) include the push of `digest`."""
    return any(isinstance(p, dict) and p.get("digest") == digest for p in pushes or [])


def set_reactor_leader(lab, value):
    """What `salt-run reactor.set_leader` sends (that runner refuses to run when
    other engines are configured): a reactor that is not the leader drops
    every reaction."""
    opts = salt.config.master_config(str(lab.master.config_file))
    after = time.time()
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        bus.fire_event({"id": opts["id"], "value": value, "key": salt.utils.master.get_master_key("root", opts)},
                       "salt/reactors/manage/set_leader")
    assert lab.wait_for("salt/reactors/manage/leader/value", after, timeout=30).data["result"] is value


def _push_the_reactor_drops(lab, env, version):
    """Push `lost:<env>` while the reactor ignores saltcd's events; (when, digest).

    Waits until the notification of the manifest push did reach the master (a
    pull notification may follow it: it would be ignored anyway)."""
    set_reactor_leader(lab, False)
    try:
        dropped = time.time()
        digest = lab.push("lost", env, version)
        deadline = time.time() + 30
        while time.time() < deadline and not [e for e in lab.events("saltcd/ingress/registry", dropped)
                                              if _is_push_of(e.data.get("pushes"), digest)]:
            time.sleep(0.5)
        assert time.time() < deadline, "the push notification never reached the master"
        time.sleep(2)
    finally:
        set_reactor_leader(lab, True)
    return dropped, digest


def test_a_push_the_reactor_dropped_is_deployed_by_resume(lab):
    after = time.time()
    first = lab.push("lost", "dev", "1.0.0")
    assert lab.wait_for("saltcd/deploy/lost/dev/finished", after).data["status"] == "succeeded"

    dropped, second = _push_the_reactor_drops(lab, "dev", "2.0.0")

    # Two passes in a row must see the tag moved (the schedule, every 15 s here, may do either).
    for _ in range(2):
        assert lab.run.run("deploy.resume").returncode == 0
    finished = lab.wait_for("saltcd/deploy/lost/dev/finished", dropped, timeout=180).data
    assert finished["status"] == "succeeded" and finished["digest"] == second
    assert {m: d for m, d in lab.running_digests("lost").items() if d} == {m: second for m in lab.env_minions("dev")}
    history = lab.history("lost", "dev")
    record = next(r for r in history if r.get("to_digest") == second)
    assert record["trigger"]["kind"] == "reconcile" and "without a notification" in record["note"]
    assert not [r for r in history if r.get("digest_hint") == second and r["trigger"]["kind"] == "registry"]
    assert first != second


def test_a_first_push_the_reactor_dropped_is_deployed_by_resume(lab):
    # lost:qa was never pushed: the pass before the push finds no tag (its baseline).
    assert lab.run.run("deploy.resume").returncode == 0
    dropped, first = _push_the_reactor_drops(lab, "qa", "1.0.0")

    for _ in range(2):
        assert lab.run.run("deploy.resume").returncode == 0
    finished = lab.wait_for("saltcd/deploy/lost/qa/finished", dropped, timeout=180).data
    assert finished["status"] == "succeeded" and finished["digest"] == first
    running = lab.running_digests("lost")
    assert {m: running[m] for m in lab.env_minions("qa")} == {m: first for m in lab.env_minions("qa")}
    record = next(r for r in lab.history("lost", "qa") if r.get("to_digest") == first)
    assert record["trigger"]["kind"] == "reconcile" and "without a notification" in record["note"]


def test_a_lost_push_to_a_manual_environment_awaits_approval_with_its_digest(lab):
    after = time.time()
    first = lab.push("lost", "prod", "1.0.0")
    assert lab.wait_for("saltcd/deploy/lost/prod/awaiting_approval", after).data["digest"] == first
    approved = lab.run.run("deploy.approve", "app=lost", "env=prod")
    assert approved.returncode == 0 and approved.data["to_digest"] == first, approved.data

    dropped, second = _push_the_reactor_drops(lab, "prod", "2.0.0")

    for _ in range(2):
        assert lab.run.run("deploy.resume").returncode == 0
    waiting = lab.wait_for("saltcd/deploy/lost/prod/awaiting_approval", dropped, timeout=60).data
    assert waiting["digest"] == second and waiting["pushed_by"]["kind"] == "reconcile"
    assert lab.run.run("deploy.resume").returncode == 0  # once per digest
    status = lab.run.run("deploy.status", "app=lost", "env=prod").data["lost"]["prod"]
    assert [(w["digest"], w["pushed_by"]["kind"]) for w in status["awaiting_approval"]] == [(second, "reconcile")]
    assert lab.running_digests("lost")["prod-1"] == first  # nothing deployed without approval

    approved = lab.run.run("deploy.approve", "app=lost", "env=prod")
    assert approved.returncode == 0 and approved.data["status"] == "succeeded", approved.data
    assert approved.data["to_digest"] == second and lab.running_digests("lost")["prod-1"] == second
