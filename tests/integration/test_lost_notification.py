"""A push whose notification never became a reaction is still deployed: the
resume schedule finds the tag moved at the registry (reconcile)."""

import time

import pytest
import salt.config
import salt.utils.event
import salt.utils.master

pytestmark = pytest.mark.integration


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


def test_a_push_the_reactor_dropped_is_deployed_by_resume(lab):
    after = time.time()
    first = lab.push("lost", "dev", "1.0.0")
    assert lab.wait_for("saltcd/deploy/lost/dev/finished", after).data["status"] == "succeeded"

    set_reactor_leader(lab, False)
    try:
        dropped = time.time()
        second = lab.push("lost", "dev", "2.0.0")
        lab.wait_for("salt/engines/hook/saltcd/registry", dropped, timeout=30)  # it did arrive
        time.sleep(2)
    finally:
        set_reactor_leader(lab, True)
    assert not [e for e in lab.events("salt/run/*/new", dropped) if e.data.get("fun") == "runner.deploy.accept"]

    # Two passes in a row must see the tag moved (the schedule, every 15 s here, may do either).
    for _ in range(2):
        assert lab.run.run("deploy.resume").returncode == 0
    finished = lab.wait_for("saltcd/deploy/lost/dev/finished", dropped, timeout=180).data
    assert finished["status"] == "succeeded" and finished["digest"] == second
    assert {m: d for m, d in lab.running_digests("lost").items() if d} == {m: second for m in lab.env_minions("dev")}
    record = next(r for r in lab.history("lost", "dev") if r.get("to_digest") == second)
    assert record["trigger"]["kind"] == "reconcile" and "without a notification" in record["note"]
    assert first != second
