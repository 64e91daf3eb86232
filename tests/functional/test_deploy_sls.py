"""The deploy SLS rendered through Salt's own state compiler, per environment."""

import pytest

from saltcd import config

DIGEST = "sha256:" + "d" * 64


# prod is start-first in config.example.yaml: test_deploy_sls_start_first.py covers it.
@pytest.mark.parametrize("env", ["dev", "qa"])
def test_rendered_state_pins_the_digest_and_gates_on_health(caller, example_config, env):
    deployment = config.load(example_config).deployment("web", env)
    low = caller.cmd("state.show_sls", "saltcd.deploy", pillar=deployment.pillar(DIGEST))
    assert isinstance(low, dict), low  # a list would be render errors
    image = f"127.0.0.1:5000/saltcd/web@{DIGEST}"
    pull = low["saltcd-deploy-docker_image-present"]
    assert {"name": image} in pull["docker_image"]
    running = low["saltcd-deploy-docker_container-running"]["docker_container"]
    assert {"image": image} in running and {"name": "web"} in running
    assert {"port_bindings": ["8080:8080"]} in running
    assert {"environment": {"GREETING": "hello"}} in running
    health = low["saltcd-deploy-saltcd_health-passing"]["saltcd_health"]
    # Probed on the minion itself (the lab's minions override the host by grain).
    assert {"name": "http://127.0.0.1:8080/health"} in health
    assert {"settle": deployment.health.settle} in health
    assert [{"docker_container": "saltcd-deploy-docker_container-running"}] in [
        item["require"] for item in health if "require" in item]


def test_state_without_the_runner_pillar_fails_clearly(caller):
    errors = caller.cmd("state.show_sls", "saltcd.deploy")
    assert isinstance(errors, list)
    assert "needs pillar saltcd:image" in " ".join(errors)


def test_health_state_under_test_changes_nothing(caller, repo_root):
    caller.cmd("saltutil.sync_all")
    ret = caller.cmd("state.single", "saltcd_health.passing", "http://127.0.0.1:9/health", test=True)
    (result,) = ret.values()
    assert result["result"] is None and "Would wait" in result["comment"]


def test_the_apps_options_reach_docker_container_running_with_the_spec_label(caller, example_config):
    example_config["apps"]["web"]["options"] = {
        "binds": ["/srv/web/uploads:/uploads:rw"], "command": "serve --port 8080", "mem_limit": "256m",
        "networks": [{"backend": {"aliases": ["web"]}}], "labels": {"team": "web"}}
    deployment = config.load(example_config).deployment("web", "dev")
    low = caller.cmd("state.show_sls", "saltcd.deploy", pillar=deployment.pillar(DIGEST))
    assert isinstance(low, dict), low
    running = low["saltcd-deploy-docker_container-running"]["docker_container"]
    for option in ({"binds": ["/srv/web/uploads:/uploads:rw"]}, {"command": "serve --port 8080"},
                   {"mem_limit": "256m"}, {"networks": [{"backend": {"aliases": ["web"]}}]},
                   {"labels": {"team": "web", "io.saltcd.spec": deployment.spec_id}}):
        assert option in running, option


def test_the_hook_sls_runs_the_hook_in_a_one_off_container_of_the_pinned_image(caller, example_config):
    example_config["apps"]["web"]["hooks"] = {"before": ["./manage.py", "migrate"], "timeout": 120}
    example_config["apps"]["web"]["options"] = {"binds": ["web-data:/data"]}
    pillar = config.load(example_config).deployment("web", "dev").pillar(DIGEST)
    pillar["saltcd"]["hook"] = "before"
    low = caller.cmd("state.show_sls", "saltcd.hook", pillar=pillar)
    assert isinstance(low, dict), low
    hook = low["saltcd-hook-saltcd_release-hook"]["saltcd_release"]
    for item in ({"name": "web-hook-before"}, {"image": f"127.0.0.1:5000/saltcd/web@{DIGEST}"},
                 {"command": ["./manage.py", "migrate"]}, {"timeout": 120}, {"environment": {"GREETING": "hello"}}):
        assert item in hook, item
    assert [o["options"]["binds"] for o in hook if "options" in o] == [["web-data:/data"]]
    pillar["saltcd"]["hook"] = "after"  # the app has no after hook
    assert isinstance(caller.cmd("state.show_sls", "saltcd.hook", pillar=pillar), list)


def test_a_step_with_an_older_lock_token_than_the_minion_has_seen_is_refused(caller, example_config):
    """Several masters (docs/ha.md): the job's selector and the deploy data carry the
    rollout's lock token; the minion keeps the highest per app/env and refuses a lower one."""
    import uuid  # noqa: PLC0415

    env = f"ha{uuid.uuid4().hex[:6]}"  # a fresh high-water mark on this (session-long) minion
    entry = {**config.load(example_config).deployment("web", "dev").pillar(DIGEST)["saltcd"], "env": env}

    def step(token, served=None):
        selector = {"app": "web", "env": env, "digest": DIGEST, "fence": token}
        deploy = {"web": {**entry, "fence": token if served is None else served}}
        return caller.cmd("state.show_sls", "saltcd.deploy", pillar={"saltcd": selector, "saltcd_deploy": deploy})

    assert isinstance(step(10), dict)
    assert isinstance(step(11), dict)
    refused = step(10)
    assert isinstance(refused, list) and "has seen 11" in " ".join(refused), refused
    stale = step(12, served=13)  # the job of a master whose deploy data another master replaced
    assert isinstance(stale, list) and "another master holds the rollout" in " ".join(stale), stale
    assert isinstance(step(13), dict)
