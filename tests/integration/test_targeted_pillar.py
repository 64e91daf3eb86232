"""Deploy data reaches only its minions: an app whose dev and qa environments carry
different secret values is rolled out to both; qa's minion never receives dev's
values (its pillar, the jobs it was sent, its own cache), and the containers get
exactly their environment's values. Also measures what targeted pillar costs a
batch (bench.pillar_cost) and prints the figures."""

import json
import time
from pathlib import Path

import pytest
import salt.config
import salt.payload

from bench import pillar_cost
from tests.integration.conftest import APPS

pytestmark = pytest.mark.integration

APP = "secrets"
TOKENS = {env: APPS[APP][1]["environments"][env]["environment"]["APP_TOKEN"] for env in ("dev", "qa")}


def _rolled_out(lab, env, digest, timeout=240):
    """Run `deploy.rollout` (a push's own rollout may be running: then wait for it)
    until every minion of `env` runs `digest`."""
    ret = lab.run.run("deploy.rollout", f"app={APP}", f"env={env}")
    assert ret.returncode == 0 or (ret.data or {}).get("status") == "queued", ret
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(lab.running_digests(APP)[m] == digest for m in lab.env_minions(env)):
            return
        time.sleep(1)
    raise AssertionError(f"{APP}/{env} does not run {digest[:19]}: {lab.running_digests(APP)}")


def _container_env(lab, minion):
    client = lab.hosts[minion].client()
    try:
        (found,) = [c for c in client.containers.list(all=True) if c.name == APP]
        return dict(item.split("=", 1) for item in found.attrs["Config"]["Env"])
    finally:
        client.close()


def _job_loads(master):
    """Every job the master published, as its job cache keeps it (`.load.p`)."""
    for path in Path(master.config["cachedir"], "jobs").rglob(".load.p"):
        yield salt.payload.loads(path.read_bytes())


def _files_containing(root, needle):
    return [p for p in Path(root).rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def deployed(lab):
    started = time.time()
    digest = lab.push(APP, "dev", "1.0.0")
    lab.retag(APP, digest, "qa")
    for env in ("dev", "qa"):
        _rolled_out(lab, env, digest)
    return {"digest": digest, "started": started}


def test_containers_get_their_environments_values(lab, deployed):
    for minion in lab.env_minions("dev"):
        assert _container_env(lab, minion)["APP_TOKEN"] == TOKENS["dev"]
    for minion in lab.env_minions("qa"):
        assert _container_env(lab, minion)["APP_TOKEN"] == TOKENS["qa"]


def test_qa_minion_never_receives_devs_values(lab, deployed):
    (qa,) = lab.env_minions("qa")
    # Its pillar, as the master compiles it now (the entries live only during a batch).
    ret = lab.master.salt_cli(timeout=60).run("pillar.items", minion_tgt=qa)
    assert ret.returncode == 0, ret
    assert TOKENS["dev"] not in json.dumps(ret.data) and "saltcd_deploy" not in ret.data
    # Every job the master published (what any minion's subscription saw): no
    # environment value at all; the deploy jobs name the app, env and digest.
    deploy_jobs = []
    for load in _job_loads(lab.master):
        text = json.dumps(load, default=str)
        assert TOKENS["dev"] not in text and TOKENS["qa"] not in text, load.get("jid")
        if load.get("fun") == "state.apply" and f'"app": "{APP}"' in text:
            deploy_jobs.append(load)
    assert deploy_jobs
    for load in deploy_jobs:
        (selector,) = [a["pillar"]["saltcd"] for a in load["arg"] if isinstance(a, dict) and "pillar" in a]
        assert set(selector) == {"app", "env", "digest"}
        # A qa minion is sent only qa's batches, and only its own.
        if qa in load["tgt"]:
            assert selector["env"] == "qa" and load["tgt"] == [qa], load
    # The publish events on the master bus carry the same (minus nothing).
    for event in lab.events("salt/job/*/new", deployed["started"]):
        assert TOKENS["dev"] not in json.dumps(event.data, default=str)
    # The qa minion's own cache (its job cache, proc files, pillar, ...).
    assert _files_containing(lab.minions[qa].config["cachedir"], TOKENS["dev"]) == []


def test_the_pillar_cost_bench_runs_on_a_real_master(lab, deployed):
    """bench.pillar_cost's instruments on the lab (one round): the figures live in
    the bench, not in a timed test."""
    opts = salt.config.master_config(str(lab.master.config_file))
    figures = pillar_cost.measure(opts, APP, "dev", rounds=1)
    assert figures["ext_pillar_median_s"] > 0
