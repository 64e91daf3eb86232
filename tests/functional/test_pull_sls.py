"""The pull SLS (saltcd.rollout.prepull) rendered through Salt's own state compiler: it
logs in where the minion has credentials and pulls the pinned image, nothing else."""

from saltcd import config

DIGEST = "sha256:" + "d" * 64
IMAGE = f"127.0.0.1:5000/saltcd/web@{DIGEST}"


def test_pull_touches_no_container(caller, example_config):
    deployment = config.load(example_config).deployment("web", "dev")
    low = caller.cmd("state.show_sls", "saltcd.pull", pillar=deployment.pillar(DIGEST))
    assert isinstance(low, dict), low  # a list would be render errors
    assert sorted(low) == ["saltcd-pull-docker_image-present"]
    assert {"name": IMAGE} in low["saltcd-pull-docker_image-present"]["docker_image"]


def test_pull_logs_in_first_with_the_minions_credentials(caller, example_config):
    deployment = config.load(example_config).deployment("web", "dev")
    pillar = {**deployment.pillar(DIGEST),
              "docker-registries": {"127.0.0.1:5000": {"username": "u", "password": "p"}}}
    for sls in ("pull", "deploy"):  # one login state, shared through map.jinja
        low = caller.cmd("state.show_sls", f"saltcd.{sls}", pillar=pillar)
        assert isinstance(low, dict), low
        login = low[f"saltcd-{sls}-module-run"]["module"]
        assert {"docker.login": ["127.0.0.1:5000"]} in login
        assert {"require_in": [{"docker_image": f"saltcd-{sls}-docker_image-present"}]} in login


def test_pull_without_the_runner_pillar_fails_clearly(caller):
    errors = caller.cmd("state.show_sls", "saltcd.pull")
    assert isinstance(errors, list) and "needs pillar saltcd:image" in " ".join(errors)
