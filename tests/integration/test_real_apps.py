"""Real applications on real parts (issue 24): an app's `options` reach Docker
(a named volume, a bind-mounted config file, saltcd's spec label), and the
data in its volume survives a stop-first rollout, a start-first switch and a
rollback; the new container sees the bind-mounted file."""

import time

import pytest

from .test_safe_rollouts import DEV, deploy_good, outcome

pytestmark = pytest.mark.integration


def _exec(lab, minion, app, *argv):
    """Run argv in the app's container on `minion` (as `docker exec` would): its output."""
    client = lab.hosts[minion].client()
    try:
        code, output = client.containers.get(app).exec_run(list(argv))
    finally:
        client.close()
    assert code == 0, (argv, output)
    return output.decode().strip()


def _mounts(lab, minion, app):
    client = lab.hosts[minion].client()
    try:
        attrs = client.api.inspect_container(app)
    finally:
        client.close()
    return attrs["HostConfig"]["Binds"], attrs["Config"]["Labels"]


@pytest.mark.parametrize("app", ["vol", "volsf"])  # stop-first, start-first
def test_volume_data_survives_a_rollout_and_a_rollback(lab, lab_root, app):
    config_file = lab_root / "config" / f"{app}.conf"
    config_file.parent.mkdir(exist_ok=True)
    config_file.write_text("setting=1\n")
    deploy_good(lab, app, "1.0.0")
    for minion in DEV:
        binds, labels = _mounts(lab, minion, app)
        assert f"saltcd-{app}-data:/data" in binds and f"{config_file}:/etc/app.conf:ro" in binds
        assert labels.get("io.saltcd.spec") == lab.history(app, "dev", limit=1)[0]["to_spec"]
        _exec(lab, minion, app, "sh", "-c", f"echo kept-on-{minion} > /data/kept")
    config_file.write_text("setting=2\n")  # what the next container must see
    second = deploy_good(lab, app, "1.0.1")
    for minion in DEV:
        assert lab.running_digests(app)[minion] == second
        assert _exec(lab, minion, app, "cat", "/data/kept") == f"kept-on-{minion}"
        assert _exec(lab, minion, app, "cat", "/etc/app.conf") == "setting=2"
    start = time.time()
    lab.push(app, "dev", "1.0.2", behaviour="unhealthy")
    data = outcome(lab, app, start)
    assert data["status"] == "rolled_back", data
    for minion in DEV:
        assert lab.running_digests(app)[minion] == second
        assert _exec(lab, minion, app, "cat", "/data/kept") == f"kept-on-{minion}"


@pytest.mark.parametrize("app, bad", [
    ("tcpcheck", "crash"),         # a connection to the published port: a crashed app refuses it
    ("cmdcheck", "unhealthy"),     # `wget` of /health inside the container: a 500 fails it
])
def test_health_checks_besides_http_gate_the_batch(lab, app, bad):
    good = deploy_good(lab, app, "1.0.0")
    start = time.time()
    lab.push(app, "dev", "1.0.1", behaviour=bad)
    data = outcome(lab, app, start)
    assert data["status"] == "rolled_back" and data["failed"] == ["dev-1"], data
    assert {m: lab.running_digests(app)[m] for m in DEV} == {m: good for m in DEV}
    record = lab.history(app, "dev", limit=1)[0]
    (comment,) = [r["comment"] for b in record["batches"] if b["kind"] == "batch" for r in b["minions"].values()]
    assert "Unhealthy" in comment, comment


def test_a_before_hook_runs_once_with_the_apps_volume_and_an_after_hook_checks(lab):
    start = time.time()
    digest = lab.push("hooked", "dev", "1.0.0")
    data = outcome(lab, "hooked", start)
    assert data["status"] == "succeeded", data
    record = lab.history("hooked", "dev", limit=1)[0]
    assert {k: (v["minion"], v["ok"]) for k, v in record["hooks"].items()} == {
        "before": ("dev-1", True), "after": ("dev-1", True)}
    # The migration wrote into dev-1's volume, which the new container mounts.
    assert _exec(lab, "dev-1", "hooked", "cat", "/data/migrated") == "migrated-on-8080"
    assert {m: lab.running_digests("hooked")[m] for m in DEV} == {m: digest for m in DEV}
    assert [e.data["kind"] for e in lab.events("saltcd/deploy/hooked/dev/hook", start)] == ["before", "after"]
    client = lab.hosts["dev-1"].client()
    try:  # the one-off container is gone
        assert [c.name for c in client.containers.list(all=True) if "-hook-" in c.name] == []
    finally:
        client.close()


def test_a_failed_before_hook_replaces_nothing(lab):
    start = time.time()
    lab.push("hookfail", "dev", "1.0.0")
    data = outcome(lab, "hookfail", start)
    assert data["status"] == "failed" and "before hook failed on dev-1" in data["reason"], data
    record = lab.history("hookfail", "dev", limit=1)[0]
    assert record["hooks"]["before"]["ok"] is False and "boom" in record["hooks"]["before"]["comment"]
    assert all(d is None for d in lab.running_digests("hookfail").values())
    assert [b["kind"] for b in record["batches"]] == []


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
