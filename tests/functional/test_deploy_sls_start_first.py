"""The deploy SLS of a start-first environment, through Salt's own state compiler."""

import pytest

from saltcd import config

DIGEST = "sha256:" + "e" * 64


@pytest.mark.parametrize("env", ["dev", "prod"])  # prod is start-first in config.example.yaml
def test_start_first_replaces_through_saltcd_release_and_checks_the_route(caller, example_config, env):
    example_config["apps"]["web"]["environments"]["dev"]["strategy"] = "start-first"
    deployment = config.load(example_config).deployment("web", env)
    assert deployment.strategy == "start-first"
    low = caller.cmd("state.show_sls", "saltcd.deploy", pillar=deployment.pillar(DIGEST))
    assert isinstance(low, dict), low
    assert "saltcd-deploy-docker_container-running" not in low
    release = low["saltcd-deploy-saltcd_release-start_first"]["saltcd_release"]
    image = f"127.0.0.1:5000/saltcd/web@{DIGEST}"
    assert {"name": "web"} in release and {"image": image} in release
    assert {"ports": ["8080:8080"]} in release and {"drain": deployment.drain} in release
    assert {"health": deployment.pillar(DIGEST)["saltcd"]["health"]} in release
    assert [{"docker_image": "saltcd-deploy-docker_image-present"}] in [
        item["require"] for item in release if "require" in item]
    health = low["saltcd-deploy-saltcd_health-passing"]["saltcd_health"]
    # The new container settled privately before the switch: the public check
    # only confirms that HAProxy routes to it.
    assert {"settle": 0} in health
    assert [{"saltcd_release": "saltcd-deploy-saltcd_release-start_first"}] in [
        item["require"] for item in health if "require" in item]


def test_start_first_creates_the_new_container_with_the_apps_options(caller, example_config):
    example_config["apps"]["web"]["options"] = {"binds": ["/srv/web:/data"], "networks": ["backend"]}
    deployment = config.load(example_config).deployment("web", "prod")
    low = caller.cmd("state.show_sls", "saltcd.deploy", pillar=deployment.pillar(DIGEST))
    release = low["saltcd-deploy-saltcd_release-start_first"]["saltcd_release"]
    assert {"options": {"binds": ["/srv/web:/data"], "networks": ["backend"],
                        "labels": {"io.saltcd.spec": deployment.spec_id}}} in release


def test_start_first_state_refuses_more_than_one_published_port(caller):
    caller.cmd("saltutil.sync_all")
    ret = caller.cmd("state.single", "saltcd_release.start_first", "web",
                     image="127.0.0.1:5000/saltcd/web@" + DIGEST, ports=["8080:80", "9090:90"], test=True)
    (result,) = ret.values()
    assert result["result"] is False and "exactly one published port" in result["comment"]
