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
