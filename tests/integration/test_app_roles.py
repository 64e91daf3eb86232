"""Real applications on real parts (issue 24), several containers: an app of
roles (web, worker, a scheduler on one minion) rolled role by role and rolled
back together, the operator's own state (examples/salt/myteam/web.sls) through
a rollout and a rollback, and a container a minion no longer runs removed only
if saltcd made it."""

import time

import pytest

from .test_real_apps import _exec
from .test_safe_rollouts import DEV, deploy_good, outcome

pytestmark = pytest.mark.integration


def _image(lab, minion, container):
    """The pinned image `container` runs on `minion` (None: no such container)."""
    info = lab.container(minion, container)
    return info["image"] if info and info["running"] else None


def test_an_app_of_roles_rolls_role_by_role_and_rolls_back_together(lab):
    """web, worker and (on dev-1 only) scheduler from one push; a version whose
    worker exits fails the batch although its web is healthy, and rolls every
    role of the batch back."""
    good = deploy_good(lab, "shop", "1.0.0")
    pinned = f"{lab.repositories['shop']}@{good}"
    assert {m: [_image(lab, m, c) for c in ("shop-web", "shop-worker", "shop-scheduler")] for m in DEV} == {
        "dev-1": [pinned] * 3, "dev-2": [pinned, pinned, None]}
    record = lab.history("shop", "dev", limit=1)[0]
    assert record["placement"] == {"scheduler": ["dev-1"]}
    time.sleep(1.5)  # the worker writes its mark every second, into the volume the web role shares
    assert _exec(lab, "dev-2", "shop-web", "/bin/busybox", "test", "-s", "/data/worker-alive") == ""
    start = time.time()
    lab.push("shop", "dev", "1.0.1-noworker")
    data = outcome(lab, "shop", start)
    assert data["status"] == "rolled_back" and data["failed"] == ["dev-1"], data
    assert {m: [_image(lab, m, c) for c in ("shop-web", "shop-worker")] for m in DEV} == {
        m: [pinned, pinned] for m in DEV}
    assert _image(lab, "dev-1", "shop-scheduler") == pinned
    record = lab.history("shop", "dev", limit=1)[0]
    (batch,) = [b for b in record["batches"] if b["kind"] == "batch"]
    assert "shop-worker" in batch["minions"]["dev-1"]["comment"], batch  # which role failed


def test_the_operators_own_state_deploys_gates_and_rolls_back(lab):
    """`state: myteam.web` (examples/salt/myteam/web.sls): its network, volume and
    alias reach Docker; saltcd's gate fails a bad image and the same SLS brings
    the previous one back."""
    good = deploy_good(lab, "own", "1.0.0")
    client = lab.hosts["dev-1"].client()
    try:
        attrs = client.api.inspect_container("own")
    finally:
        client.close()
    assert "myteam-web-data:/data" in attrs["HostConfig"]["Binds"]
    assert "web" in attrs["NetworkSettings"]["Networks"]["myteam-net"]["Aliases"]
    assert attrs["Config"]["Labels"]["io.saltcd.spec"] == lab.history("own", "dev", limit=1)[0]["to_spec"]
    start = time.time()
    lab.push("own", "dev", "1.0.1", behaviour="unhealthy")
    data = outcome(lab, "own", start)
    assert data["status"] == "rolled_back" and data["failed"] == ["dev-1"], data
    assert {m: lab.running_digests("own")[m] for m in DEV} == {m: good for m in DEV}


def test_a_container_of_the_app_a_minion_no_longer_runs_goes_if_saltcd_made_it(lab):
    """dev-2 holds `shop` (the app's own container from before it had roles,
    with saltcd's label) and `shop-scheduler` (not saltcd's: no label); the next
    rollout removes the first before it replaces the roles and leaves the other."""
    good = deploy_good(lab, "shop", "2.0.0")
    client = lab.hosts["dev-2"].client()
    try:
        image = f"{lab.repositories['shop']}@{good}"
        client.containers.run(image, name="shop", detach=True, labels={"io.saltcd.spec": "0123456789abcdef"})
        client.containers.create(image, name="shop-scheduler")
        plan = lab.run.run("deploy.rollout", "app=shop", "env=dev", "test=True").data
        why = {m: what.get("why") for step in plan["plan"] for m, what in step["minions"].items()}
        assert why == {"dev-1": None, "dev-2": "to remove: shop"}, why
        start = time.time()
        lab.push("shop", "dev", "2.0.1")
        assert outcome(lab, "shop", start)["status"] == "succeeded"
        names = {c.name for c in client.containers.list(all=True)}
        assert "shop" not in names and "shop-scheduler" in names, names
    finally:
        for name in ("shop", "shop-scheduler"):
            try:
                client.containers.get(name).remove(force=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
        client.close()
