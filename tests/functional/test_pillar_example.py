"""pillar.example, as template-formula keeps one: what saltcd's formula reads
from a minion's pillar. Its hand-applied deploy data renders the deploy state
through Salt's own compiler, pinned to its image."""

import yaml


def test_the_pillar_example_renders_the_deploy_state_by_hand(caller, repo_root):
    example = yaml.safe_load((repo_root / "pillar.example").read_text())
    assert set(example) == {"docker-registries", "saltcd_proxy", "saltcd"}
    low = caller.cmd("state.show_sls", "saltcd.deploy", pillar={"saltcd": example["saltcd"]})
    assert isinstance(low, dict), low  # a list would be render errors
    image = example["saltcd"]["image"]
    assert {"name": image} in low["saltcd-deploy-docker_image-present"]["docker_image"]
    running = low["saltcd-deploy-docker_container-running"]["docker_container"]
    assert {"image": image} in running and {"port_bindings": ["8080:8080"]} in running
    assert {"name": "http://127.0.0.1:8080/health"} in low["saltcd-deploy-saltcd_health-passing"]["saltcd_health"]
