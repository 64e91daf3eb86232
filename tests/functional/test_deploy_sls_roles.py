"""An app's roles and an operator's own state, rendered through Salt's state compiler."""

from saltcd import config
from saltcd.rollout import deploy_pillar

DIGEST = "sha256:" + "e" * 64
PREVIOUS = "sha256:" + "f" * 64


def _shop(example_config, **app):
    example_config["apps"]["shop"].update(app)
    return config.load(example_config).deployment("shop", "dev")


def _served(deployment, minion, placement=None):
    """The pillar as the `saltcd` ext_pillar serves it to `minion` (its roles only)."""
    pillar = deployment.pillar(DIGEST, placement=placement, previous={minion: PREVIOUS})
    data, override = deploy_pillar.split(pillar)
    served = deploy_pillar.build({"shop": data}, {}, resolve=None, minion=minion)
    return {**override, **served}


def _require(state):
    return [item["require"] for item in state if "require" in item]


def test_roles_are_replaced_in_order_each_after_the_one_before_is_healthy(caller, example_config):
    deployment = _shop(example_config)
    # dev-1 (the caller's id) runs the scheduler too; another minion would not.
    low = caller.cmd("state.show_sls", "saltcd.deploy",
                     pillar=_served(deployment, "dev-1", {"scheduler": ["dev-1"]}))
    assert isinstance(low, dict), low
    web = low["saltcd-deploy-docker_container-running-web"]["docker_container"]
    worker = low["saltcd-deploy-docker_container-running-worker"]["docker_container"]
    assert {"name": "shop-web"} in web and {"port_bindings": ["8081:8080"]} in web
    assert {"name": "shop-worker"} in worker and {"port_bindings": []} in worker
    assert {"command": "worker --queue default"} in worker
    for state in (web, worker):  # the app's options and environment reach every role
        assert {"binds": ["shop-uploads:/uploads"]} in state and {"environment": {"QUEUE": "default"}} in state
        assert {"labels": {"io.saltcd.spec": deployment.spec_id}} in state
    assert [[{"saltcd_health": "saltcd-deploy-saltcd_health-passing-web"}]] == _require(worker)
    health = low["saltcd-deploy-saltcd_health-passing-worker"]["saltcd_health"]
    assert {"check": "running"} in health and {"container": "shop-worker"} in health
    assert "saltcd-deploy-docker_container-running-scheduler" in low
    elsewhere = caller.cmd("state.show_sls", "saltcd.deploy",
                           pillar=_served(deployment, "dev-1", {"scheduler": ["dev-2"]}))
    assert "saltcd-deploy-docker_container-running-scheduler" not in elsewhere
    assert "saltcd-deploy-docker_container-running-worker" in elsewhere
    # What this minion no longer runs goes first (if saltcd made it), before any role is replaced.
    gone = elsewhere["saltcd-deploy-saltcd_release-gone-shop-scheduler"]["saltcd_release"]
    assert {"name": "shop-scheduler"} in gone and "saltcd-deploy-saltcd_release-gone-shop" in elsewhere
    assert [[{"saltcd_release": "saltcd-deploy-saltcd_release-gone-shop-scheduler"}]] == _require(
        elsewhere["saltcd-deploy-docker_container-running-web"]["docker_container"])
    assert "saltcd-deploy-saltcd_release-gone-shop-scheduler" not in low


def test_the_operators_own_state_runs_with_the_gate_after_it(caller, example_config):
    example_config["apps"]["shop"].pop("roles")
    deployment = _shop(example_config, state="myteam.web", ports=["8081:8080"],
                       health={"port": 8081})
    low = caller.cmd("state.show_sls", "saltcd.gate", pillar=_served(deployment, "dev-1"))
    assert isinstance(low, dict), low
    mine = low["myteam-web-shop"]["docker_container"]
    assert {"image": f"127.0.0.1:5000/saltcd/shop@{DIGEST}"} in mine
    assert {"labels": {"io.saltcd.spec": deployment.spec_id}} in mine
    gate = low["saltcd-gate-saltcd_health-passing-shop"]["saltcd_health"]
    assert {"name": "http://127.0.0.1:8081/health"} in gate
    assert [[{"sls": "myteam.web"}]] == _require(gate)


def test_the_pillar_contract_gives_each_minion_its_previous_image(example_config):
    deployment = _shop(example_config, state="myteam.web")
    served = _served(deployment, "dev-1", {"scheduler": ["dev-2"]})["saltcd_deploy"]["shop"]
    assert served["previous_image"] == f"127.0.0.1:5000/saltcd/shop@{PREVIOUS}"
    assert served["image"] == f"127.0.0.1:5000/saltcd/shop@{DIGEST}"
    assert served["state"] == "myteam.web" and served["labels"] == {"io.saltcd.spec": deployment.spec_id}
    assert [role["role"] for role in served["roles"]] == ["web", "worker"]  # the scheduler is dev-2's
    assert "previous_images" not in served and all("minions" not in role for role in served["roles"])
