"""Registries as users run them: TLS with htpasswd Basic auth, and TLS with token
auth (a token server of ours). saltcd asks them for digests with its
`registries:` credentials; minions pull with their own `docker-registries`
credentials (`docker.login` in the deploy state)."""

import json
import time
from pathlib import Path

import pytest

from sandbox import app_image, loopback
from tests.integration.conftest import AUTH_APPS, REGISTRY_USERS, TOKEN_LIFETIME

pytestmark = pytest.mark.integration

DEV = ["dev-1", "dev-2"]
PUSHER = {"username": "pusher", "password": REGISTRY_USERS["pusher"]["password"]}


def push(lab, app, version, tag="dev"):
    """Build and push with the pusher's credentials (the builder holds no login)."""
    return app_image.build_and_push(lab.hosts["builder"].url, lab.auth_repositories[app], tag, version,
                                    auth_config=PUSHER)


def health(lab, minion, app):
    """GET the app's health URL on that host, as a user's curl would (None: no answer)."""
    address = next(m["address"] for m in lab.fleet if m["id"] == minion)
    return loopback.status(f"http://{address}:{AUTH_APPS[app][0]}/health")


def outcome(lab, app, after, env="dev", timeout=240):
    return lab.wait_for(f"saltcd/deploy/{app}/{env}/finished", after, timeout).data


def saltcd_token_requests(lab):
    """Token requests saltcd's master made (the engines' own say `docker/` in their User-Agent)."""
    return [r for r in lab.token_server.requests() if not r["agent"].startswith("docker/")]


@pytest.mark.parametrize("app", ["basic", "token"])
def test_push_to_a_registry_with_tls_and_auth_deploys(auth_lab, app):
    start = time.time()
    digest = push(auth_lab, app, "1.0.0")
    data = outcome(auth_lab, app, start)
    assert data["status"] == "succeeded", data
    assert {m: auth_lab.running_digests(app)[m] for m in DEV} == {m: digest for m in DEV}
    assert [health(auth_lab, m, app) for m in DEV] == [200, 200]


@pytest.mark.parametrize("app", ["basicbad", "tokenbad"])
def test_wrong_credentials_fail_the_rollout_and_touch_no_minion(auth_lab, app):
    registry = auth_lab.auth_repositories[app].split("/")[0]
    before = {m["id"]: auth_lab.container(m["id"], app) for m in auth_lab.fleet}
    start = time.time()
    push(auth_lab, app, "1.0.0")
    data = outcome(auth_lab, app, start)
    assert data["status"] == "failed", data
    assert registry in data["reason"], data
    assert REGISTRY_USERS["deployer"]["password"] not in json.dumps(data)
    assert {m["id"]: auth_lab.container(m["id"], app) for m in auth_lab.fleet} == before


def test_an_expired_token_is_renewed_without_failing_the_rollout(auth_lab):
    start = time.time()
    first = push(auth_lab, "renew", "1.0.0")
    assert outcome(auth_lab, "renew", start)["status"] == "succeeded"
    asked = len(saltcd_token_requests(auth_lab))
    assert asked >= 1
    time.sleep(TOKEN_LIFETIME + 3)  # the token saltcd holds has run out
    start = time.time()
    second = push(auth_lab, "renew", "1.0.1")
    data = outcome(auth_lab, "renew", start)
    assert data["status"] == "succeeded", data
    assert second != first
    assert {m: auth_lab.running_digests("renew")[m] for m in DEV} == {m: second for m in DEV}
    assert len(saltcd_token_requests(auth_lab)) > asked


def run_by_hand(lab, minion, app, digest):
    """What ran before saltcd: the container started by hand from the private image."""
    repository = lab.auth_repositories[app]
    client = lab.hosts[minion].client()
    try:
        # Credentials for this one pull only: the engine's minion stays without any.
        client.api.pull(repository, digest, auth_config=PUSHER)
        container = client.containers.run(f"{repository}@{digest}", name=app, detach=True,
                                          ports={"8080/tcp": AUTH_APPS[app][0]}, environment={"PORT": "8080"})
        return container.id
    finally:
        client.close()


def test_minion_pulls_private_images_only_with_its_credentials(auth_lab):
    # dev-1 has `docker-registries` credentials for the token registry, prod-1 none.
    # Tag `seed` maps to no environment: this push deploys nothing by itself.
    old = push(auth_lab, "private", "1.0.0", tag="seed")
    before = {m: run_by_hand(auth_lab, m, "private", old) for m in ("dev-1", "prod-1")}
    deadline = time.time() + 20
    while time.time() < deadline and [health(auth_lab, m, "private") for m in before] != [200, 200]:
        time.sleep(0.5)
    start = time.time()
    new = push(auth_lab, "private", "1.0.1")
    data = outcome(auth_lab, "private", start)
    # Budget of one failure, `continue`: dev-1 gets it, prod-1 is reported.
    assert data["status"] == "succeeded" and data["failed"] == ["prod-1"], data
    assert auth_lab.running_digests("private")["dev-1"] == new
    assert health(auth_lab, "dev-1", "private") == 200
    kept = auth_lab.container("prod-1", "private")
    assert kept["id"] == before["prod-1"] and kept["running"], kept
    assert health(auth_lab, "prod-1", "private") == 200
    record = auth_lab.history("private", "dev", limit=1)[0]
    assert record["to_digest"] == new and record["failed_minions"] == ["prod-1"]
    reasons = {m: r for b in record["batches"] for m, r in b["minions"].items()}
    assert "pull" in reasons["prod-1"]["comment"].lower(), reasons["prod-1"]
    assert reasons["dev-1"]["ok"], reasons["dev-1"]


def test_login_state_under_test_changes_nothing(auth_lab):
    repository = auth_lab.auth_repositories["token"]
    config_file = Path(auth_lab.minions["qa-1"].environ["DOCKER_CONFIG"]) / "config.json"
    pillar = {"saltcd": {"app": "token", "env": "qa", "image": f"{repository}@sha256:{'e' * 64}",
                         "container": "token-dry-run", "ports": [], "environment": {}}}
    ret = auth_lab.minions["qa-1"].salt_call_cli().run(
        "state.apply", "saltcd.deploy", "test=True", f"pillar={json.dumps(pillar)}")
    states = {key.split("_|-")[1]: value for key, value in ret.data.items()}
    assert states["saltcd-deploy-module-run"]["result"] is None, states
    assert states["saltcd-deploy-docker_image-present"]["result"] is None, states
    assert not config_file.exists()  # no login happened
    assert REGISTRY_USERS["deployer"]["password"] not in json.dumps(ret.data)


def test_no_password_in_logs_or_job_cache(auth_lab):
    """Runs last in this file: the rollouts above logged in, pulled and failed."""
    secrets = [u["password"] for u in REGISTRY_USERS.values()]
    files = [Path(auth_lab.master.config["log_file"])]
    files += [Path(m.config["log_file"]) for m in auth_lab.minions.values()]
    files += [p for p in Path(auth_lab.master.config["cachedir"], "jobs").rglob("*") if p.is_file()]
    leaks = [str(f) for f in files if f.exists() and any(s.encode() in f.read_bytes() for s in secrets)]
    assert leaks == []
