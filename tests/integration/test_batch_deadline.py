"""Every batch has a wall-clock deadline: a pull that never ends is stopped on the
minion at `batch_timeout`, the minion counts as failed, the failure policy applies
(rollback), the old containers keep serving, and the record says why."""

import time

import pytest

from sandbox import app_image

from .conftest import APPS
from .stall_proxy import StallProxy

pytestmark = pytest.mark.integration

# Past the deadline: salt-run's own start, the plan, `saltutil.term_job` (at most
# salt_fleet.STOP_TIMEOUT) and the rollback of the stopped minion (its old image is
# on the host: no pull, settle 0).
MARGIN = 25


@pytest.fixture
def stall_proxy(lab, stall_proxy_port):
    proxy = StallProxy(lab.registry.host, stall_proxy_port, hold=180)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def push(lab, version):
    """Push `stall:dev` straight to the lab registry (the front only forwards pulls);
    the notification names the registry, not the front: saltcd ignores it."""
    return app_image.build_and_push(lab.hosts["builder"].url, f"{lab.registry.host}/saltcd/stall", "dev", version)


def test_a_stalled_pull_ends_at_the_batch_deadline_and_the_old_containers_keep_serving(lab, stall_proxy):
    deadline = APPS["stall"][1]["batch_timeout"]
    dev = lab.env_minions("dev")
    good = push(lab, "1.0.0")
    first = lab.run.run("deploy.rollout", "app=stall", "env=dev")
    assert first.returncode == 0 and first.data["status"] == "succeeded", first.data
    old = {m: lab.container(m, "stall")["id"] for m in dev}

    # A version no other test builds: the images are reproducible, so a common
    # version would already be on the hosts (another app's) and pull no blob.
    stuck = push(lab, "2.0.0-stalled")
    stall_proxy.stall()
    after = time.time()
    started = time.monotonic()
    ret = lab.run.run("deploy.rollout", "app=stall", "env=dev")
    took = time.monotonic() - started

    record = ret.data
    assert ret.returncode == 1 and record["status"] == "rolled_back", record
    assert took < deadline + MARGIN, f"the rollout took {took:.1f} s"
    assert stall_proxy.held, "no pull reached the stalling registry"
    reason = f"batch_timeout of {deadline} s exceeded: state run stopped on the minion"
    batch = record["batches"][0]
    assert batch["timed_out"] == [dev[0]] and reason in batch["minions"][dev[0]]["comment"]
    assert batch["ended"] - batch["started"] < deadline + 8
    assert reason in record["reason"] and record["failed_minions"] == [dev[0]]
    # Batch 1 never reached its container; batch 2 never started.
    for minion in dev:
        assert lab.container(minion, "stall")["id"] == old[minion]
        assert lab.health(minion, "stall") == 200
    assert {m: d for m, d in lab.running_digests("stall").items() if d} == {m: good for m in dev}
    finished = lab.wait_for("saltcd/deploy/stall/dev/finished", after, timeout=30).data
    assert finished["status"] == "rolled_back" and reason in finished["reason"]
    assert lab.events("saltcd/deploy/stall/dev/batch", after)[0].data["timed_out"] == [dev[0]]
    history = lab.history("stall", "dev")[0]
    assert history["id"] == record["id"] and reason in history["reason"] and history["to_digest"] == stuck
