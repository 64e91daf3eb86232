"""Deploy data through the `saltcd` ext_pillar, compiled by Salt's own pillar and state
compilers (no daemons): a minion gets only its own entries, sdb:// values resolve on
the master (strictly), and the deploy SLS renders from the entry the job selects."""

import json
import subprocess
import sys

import salt.cache
import salt.client
import salt.config
import salt.pillar
import yaml

from saltcd import config, store
from saltcd.rollout import deploy_pillar, holder

DIGEST = "sha256:" + "d" * 64
OTHER = "sha256:" + "e" * 64


def _split(opts, dep, digest, rollout_id="20261207T120000.000000Z-aaaaaa", owner=None):
    """deploy_pillar.split of a rollout recorded as running in `opts`' store, run
    by `owner` (this process unless given), as Rollout publishes it."""
    pillar = holder.tie(dep.pillar(digest), rollout_id, owner or holder.current())
    store.Store(salt.cache.factory(opts)).save_rollout(
        {"id": rollout_id, "app": dep.app, "env": dep.env, "status": "running"})
    return deploy_pillar.split(pillar)


def _compile(opts, minion_id, override=None):
    pillar = salt.pillar.get_pillar(opts, {"id": minion_id}, minion_id, saltenv="base",
                                    pillar_override=override)
    return pillar.compile_pillar()


def _master(master_opts, example_config, tmp_path, environment):
    """A master with the web app's dev environment set to `environment`, and an sdb
    profile `vault` (Salt's yaml driver) holding one secret."""
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text(yaml.safe_dump({"web": {"dev": {"token": "dev-token-from-sdb"}}}))
    raw = dict(example_config)
    raw["apps"]["web"]["environments"]["dev"]["environment"] = environment
    opts = master_opts(raw)
    opts.update({"vault": {"driver": "yaml", "files": [str(secrets_file)]},
                 "pillar_roots": {"base": [str(tmp_path / "pillar")]}})
    return opts, config.load(raw).deployment("web", "dev")


def test_only_the_batch_minions_receive_the_entry(master_opts, example_config, tmp_path):
    opts, dep = _master(master_opts, example_config, tmp_path, {"API_TOKEN": "dev-secret-1"})
    data, override = _split(opts, dep, DIGEST)
    entries = deploy_pillar.DeployPillar(salt.cache.factory(opts))
    entries.publish(["dev-1"], data)
    mine = _compile(opts, "dev-1", override)
    assert mine["saltcd_deploy"]["web"]["environment"]["API_TOKEN"] == "dev-secret-1"
    assert mine["saltcd_deploy"]["web"]["image"].endswith(DIGEST)
    # Another minion, even one that asks for the same selector, gets nothing of it.
    other = _compile(opts, "qa-1", override)
    assert "saltcd_deploy" not in other and "dev-secret-1" not in repr(other)
    # The job's override names the app, env and digest: nothing secret.
    assert override["saltcd"] == {"app": "web", "env": "dev", "digest": DIGEST}
    assert "dev-secret-1" not in repr(override)
    entries.withdraw(["dev-1"], data)
    assert "saltcd_deploy" not in _compile(opts, "dev-1", override)


def test_withdraw_leaves_a_newer_rollouts_entry(master_opts, example_config, tmp_path):
    opts, dep = _master(master_opts, example_config, tmp_path, {})
    entries = deploy_pillar.DeployPillar(salt.cache.factory(opts))
    old, _ = _split(opts, dep, DIGEST)
    new, _ = _split(opts, dep, OTHER, rollout_id="20261207T120001.000000Z-bbbbbb")
    entries.publish(["dev-1"], old)
    entries.publish(["dev-1"], new)
    entries.withdraw(["dev-1"], old)
    assert entries.entries("dev-1")["web"]["digest"] == OTHER


def test_sdb_values_resolve_on_the_master(master_opts, example_config, tmp_path):
    opts, dep = _master(master_opts, example_config, tmp_path,
                        {"API_TOKEN": "sdb://vault/web:dev:token"})
    data, override = _split(opts, dep, DIGEST)
    # What the store and the job hold is the URI, never the value.
    assert data["environment"]["API_TOKEN"] == "sdb://vault/web:dev:token"
    deploy_pillar.DeployPillar(salt.cache.factory(opts)).publish(["dev-1"], data)
    pillar = _compile(opts, "dev-1", override)
    assert pillar["saltcd_deploy"]["web"]["environment"]["API_TOKEN"] == "dev-token-from-sdb"


def test_an_unresolved_sdb_value_fails_the_pillar_naming_it(master_opts, example_config, tmp_path):
    opts, dep = _master(master_opts, example_config, tmp_path,
                        {"API_TOKEN": "sdb://vaullt/web:dev:token"})
    data, override = _split(opts, dep, DIGEST)
    deploy_pillar.DeployPillar(salt.cache.factory(opts)).publish(["dev-1"], data)
    pillar = _compile(opts, "dev-1", override)
    assert "saltcd_deploy" not in pillar
    errors = " ".join(pillar["_errors"])
    assert "API_TOKEN" in errors and "did not resolve" in errors


def test_minion_pillar_adds_environment_values(master_opts, example_config, tmp_path):
    opts, dep = _master(master_opts, example_config, tmp_path, {"API_TOKEN": "from-config"})
    pillar_dir = tmp_path / "pillar"
    pillar_dir.mkdir()
    (pillar_dir / "top.sls").write_text("base:\n  'dev-*':\n    - secrets\n")
    (pillar_dir / "secrets.sls").write_text("saltcd_environment:\n  web:\n    API_TOKEN: from-pillar\n")
    data, override = _split(opts, dep, DIGEST)
    deploy_pillar.DeployPillar(salt.cache.factory(opts)).publish(["dev-1"], data)
    pillar = _compile(opts, "dev-1", override)
    assert pillar["saltcd_deploy"]["web"]["environment"]["API_TOKEN"] == "from-pillar"


def test_the_entry_of_a_rollout_that_ended_or_whose_process_died_is_not_served(
        master_opts, example_config, tmp_path):
    opts, dep = _master(master_opts, example_config, tmp_path, {"API_TOKEN": "dev-secret-1"})
    cache = salt.cache.factory(opts)
    entries = deploy_pillar.DeployPillar(cache)
    # A drain killed mid-batch: its record still says running, its process is gone.
    dead = subprocess.run([sys.executable, "-c", "import json; from saltcd.rollout import holder; "
                           "print(json.dumps(holder.current()))"], capture_output=True, check=True, text=True)
    data, override = _split(opts, dep, DIGEST, owner=json.loads(dead.stdout))
    entries.publish(["dev-1"], data)
    pillar = _compile(opts, "dev-1", override)
    assert "saltcd_deploy" not in pillar and "dev-secret-1" not in repr(pillar)
    # The next drain marks it interrupted and takes its entries back.
    entries.withdraw_rollout(["dev-1"], "web", data["rollout"])
    assert cache.list(f"{deploy_pillar.BANK}/dev-1") == []
    # A live process, but its rollout ended: not served either.
    data, override = _split(opts, dep, DIGEST, rollout_id="20261207T120002.000000Z-cccccc")
    entries.publish(["dev-1"], data)
    assert _compile(opts, "dev-1", override)["saltcd_deploy"]["web"]["digest"] == DIGEST
    assert "rollout" not in _compile(opts, "dev-1", override)["saltcd_deploy"]["web"]  # kept on the master
    store.Store(cache).save_rollout({"id": data["rollout"], "app": "web", "env": "dev", "status": "failed"})
    assert "saltcd_deploy" not in _compile(opts, "dev-1", override)
    # An entry that names no rollout is never served.
    bare, override = deploy_pillar.split(dep.pillar(DIGEST))
    entries.publish(["dev-1"], bare)
    assert "saltcd_deploy" not in _compile(opts, "dev-1", override)


def _local_minion(tmp_path, repo_root):
    """A masterless minion with the `saltcd` ext_pillar (its own cache is the store)."""
    opts = salt.config.minion_config(None)
    opts.update({
        "id": "dev-1", "file_client": "local",
        "file_roots": {"base": [str(repo_root / "salt")]},
        "pillar_roots": {"base": [str(tmp_path / "pillar")]},
        "root_dir": str(tmp_path), "cachedir": str(tmp_path / "cache"),
        "pki_dir": str(tmp_path / "pki"), "sock_dir": str(tmp_path / "sock"),
        "extension_modules": str(tmp_path / "extmods"),
        # saltcd's minion utils, as a minion has them once synced
        "utils_dirs": [str(repo_root / "salt" / "_utils")],
        "ext_pillar": [{"saltcd": {}}],
    })
    return opts, salt.client.Caller(mopts=opts)


def test_deploy_sls_renders_from_the_selected_entry(tmp_path, repo_root, example_config):
    opts, caller = _local_minion(tmp_path, repo_root)
    dep = config.load(example_config).deployment("web", "dev")
    data, override = _split(opts, dep, DIGEST)
    deploy_pillar.DeployPillar(salt.cache.factory(opts)).publish(["dev-1"], data)
    low = caller.cmd("state.show_sls", "saltcd.deploy", pillar=override)
    assert isinstance(low, dict), low
    running = low["saltcd-deploy-docker_container-running"]["docker_container"]
    assert {"image": f"127.0.0.1:5000/saltcd/web@{DIGEST}"} in running
    assert {"environment": {"GREETING": "hello"}} in running
    # A selector for another digest (the batch it was for is over) is refused.
    stale = {**override, "saltcd": {**override["saltcd"], "digest": OTHER}}
    errors = caller.cmd("state.show_sls", "saltcd.deploy", pillar=stale)
    assert isinstance(errors, list) and "no deploy data for web/dev" in " ".join(errors)
