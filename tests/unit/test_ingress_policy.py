"""Authentication, allowlists, manual environments and promotion, against fakes."""

import hashlib
import hmac
import json

import pytest

from saltcd import errors
from saltcd.ingress.ingress_auth import hashed_headers
from saltcd.queue.controller import Controller
from saltcd.store import Store

from .conftest import TOKEN
from .fakes import FakeClock, FakeFleet, MemoryCache, Recorder
from .test_controller import NEW, OLD, REPO, FakeRegistry, hook_event

HOOK = "salt/engines/hook/saltcd/registry"


@pytest.fixture
def ctl(settings, tmp_path):
    fleet = FakeFleet({"dev-1": OLD, "qa-1": OLD, "prod-1": OLD})
    return Controller(settings, Store(MemoryCache()), fleet, Recorder(), str(tmp_path),
                      resolve=FakeRegistry(NEW), clock=FakeClock())


def hub_event(tag="dev", secret="hub-secret", repo=REPO):
    body = json.dumps({"push_data": {"tag": tag}, "repository": {"repo_name": repo}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"body": body, **hashed_headers({"X-Hub-Signature-256": signature})}


@pytest.mark.parametrize("headers, reason", [
    ({}, "unauthenticated: missing Authorization header"),
    ({"Authorization": "Bearer wrong"}, "unauthenticated: wrong credential in Authorization"),
    ({"Authorization": TOKEN}, "unauthenticated: wrong credential in Authorization"),
    ({"authorization": f"Bearer {TOKEN}x"}, "unauthenticated: wrong credential in Authorization"),
])
def test_registry_hook_needs_the_token(ctl, headers, reason):
    verdict = ctl.accept(HOOK, {**hook_event(), **hashed_headers(headers)})
    assert verdict["rejected"] == reason
    assert ctl.records.pending("web", "dev") == []
    rejection = ctl.records.rejections()[-1]
    assert rejection["reason"] == reason and TOKEN not in json.dumps(rejection)


def test_lowercase_header_names_are_accepted(ctl):
    assert ctl.accept(HOOK, {**hook_event(), **hashed_headers({"authorization": f"Bearer {TOKEN}"})})["accepted"]


def test_hmac_source_and_dockerhub_format(ctl):
    assert ctl.accept("salt/engines/hook/saltcd/hub", hub_event())["accepted"][0]["env"] == "dev"
    forged = hub_event(secret="guess")
    assert ctl.accept("salt/engines/hook/saltcd/hub", forged)["rejected"].startswith("unauthenticated")
    tampered = {**hub_event(), "body": hub_event(tag="qa")["body"]}
    assert "does not match the body" in ctl.accept("salt/engines/hook/saltcd/hub", tampered)["rejected"]


def test_unknown_hook_path_is_rejected(ctl):
    verdict = ctl.accept("salt/engines/hook/other/thing", hook_event())
    assert "no webhook source is configured" in verdict["rejected"]


def test_ci_allowlist(ctl, raw_config):
    from saltcd import ci_push, config
    ctl.settings = config.load({**raw_config, "push_secret": "p" * 32})
    event = {"id": "dev-1", "cmd": "_minion_event", "data": ci_push.payload(REPO, "dev", "p" * 32)}
    assert "may not deploy app 'web'" in ctl.accept("saltcd/push", event)["rejected"]
    event = {"id": "ci-1", "cmd": "_minion_event", "data": ci_push.payload(REPO, "dev", "p" * 32)}
    assert ctl.accept("saltcd/push", event)["accepted"]


def test_manual_environment_waits_for_approval(ctl, raw_config):
    from saltcd import config
    raw_config["apps"]["web"]["environments"]["prod"]["mode"] = "manual"
    ctl.settings = config.load(raw_config)
    verdict = ctl.accept(HOOK, hook_event(tag="prod"))
    assert verdict["accepted"][0]["awaiting_approval"] is True
    assert ctl.records.pending("web", "prod") == [] and len(ctl.records.awaiting("web", "prod")) == 1
    ctl.run_queue("web", "prod")
    assert ctl.fleet.applied == []
    ctl.approve("web", "prod", user="alice")
    ctl.run_queue("web", "prod")
    record = ctl.history("web", "prod")[0]
    assert record["status"] == "succeeded" and record["approved_by"] == "alice"
    assert ctl.fleet.running["prod-1"] == NEW


def test_prod_is_manual_by_default(raw_config):
    from saltcd import config
    raw_config["apps"]["web"]["environments"]["prod"].pop("mode")
    assert config.load(raw_config).deployment("web", "prod").mode == "manual"
    assert config.load(raw_config).deployment("web", "qa").mode == "auto"


def test_promote_deploys_the_digest_that_was_healthy_in_qa(ctl):
    with pytest.raises(errors.NotFound, match="no healthy rollout to promote"):
        ctl.promote("web", "qa", "prod", user="bob")
    ctl.accept(HOOK, hook_event(tag="qa"))
    ctl.run_queue("web", "qa")
    ctl.resolve = FakeRegistry("sha256:" + "7" * 64)  # the :prod tag points elsewhere
    ctl.promote("web", "qa", "prod", user="bob")
    ctl.run_queue("web", "prod")
    record = ctl.history("web", "prod")[0]
    assert record["to_digest"] == NEW and record["trigger"] == {"kind": "promote", "origin": "bob"}
    assert ctl.fleet.running["prod-1"] == NEW


def test_secrets_can_come_from_a_resolver(raw_config):
    from saltcd import config
    raw_config["sources"]["registry"]["token"] = "sdb://vault/token"
    settings = config.load(raw_config, resolve_secret=lambda v: "from-vault" if v.startswith("sdb://") else v)
    assert settings.sources["registry"].token == "from-vault"
    assert "from-vault" not in repr(settings.sources["registry"])


def test_a_source_without_credentials_is_a_config_error(raw_config):
    from saltcd import config
    raw_config["sources"]["registry"] = {"format": "distribution"}
    with pytest.raises(config.ConfigError, match="saltcd:sources:registry: needs `token` or `hmac_secret`"):
        config.load(raw_config)


def test_a_timestamp_header_needs_an_hmac_to_cover_it(raw_config):
    from saltcd import config
    raw_config["sources"]["registry"]["timestamp_header"] = "X-Timestamp"
    with pytest.raises(config.ConfigError, match="saltcd:sources:registry:timestamp_header: needs `hmac_secret`"):
        config.load(raw_config)
    raw_config["sources"]["hub"]["timestamp_header"] = "X-Timestamp"
    del raw_config["sources"]["registry"]["timestamp_header"]
    assert config.load(raw_config).sources["hub"].timestamp_header == "X-Timestamp"


def test_the_token_is_checked_on_the_headers_alone(settings):
    from saltcd.ingress import ingress_auth
    source = settings.sources["registry"]
    ingress_auth.check_token(source, hashed_headers({"Authorization": f"Bearer {TOKEN}"}))
    for headers, why in (({}, "missing Authorization header"),
                         ({"Authorization": "Bearer nope"}, "wrong credential in Authorization")):
        with pytest.raises(ingress_auth.Unauthenticated, match=why):
            ingress_auth.check_token(source, hashed_headers(headers))
    ingress_auth.check_token(settings.sources["hub"], hashed_headers({}))  # an HMAC source: nothing to check yet


def test_every_push_must_be_signed(ctl, raw_config):
    from saltcd import ci_push, config
    secret = "p" * 32
    ctl.settings = config.load({**raw_config, "push_secret": secret})
    wrapped = {"id": "ci-1", "cmd": "_minion_event", "data": ci_push.payload(REPO, "dev", secret)}
    assert ctl.accept("saltcd/push", wrapped)["accepted"]
    # Signed but unwrapped (the master's own, or any minion's through Salt's events path): no sender.
    assert "unwrapped saltcd/push names no minion" in ctl.accept(
        "saltcd/push", ci_push.payload(REPO, "dev", secret))["rejected"]
    unsigned = {"id": "ci-1", "cmd": "_minion_event", "data": {"repository": REPO, "tag": "dev"}}
    assert ctl.accept("saltcd/push", unsigned)["rejected"] == (
        "unauthenticated: missing signature (every saltcd/push must be signed)")
    # A minion forging a CI minion's event cannot sign it.
    forged = {"id": "ci-1", "cmd": "_minion_event", "data": ci_push.payload(REPO, "dev", "x" * 32)}
    assert ctl.accept("saltcd/push", forged)["rejected"] == (
        "unauthenticated: signature does not match the payload")
    retagged = {**ci_push.payload(REPO, "dev", secret), "tag": "qa"}
    assert "does not match" in ctl.accept("saltcd/push", retagged)["rejected"]
    assert ctl.records.pending("web", "qa") == []


API = "127.0.0.1:5000/saltcd/api"


def test_an_app_with_its_own_push_secret_takes_only_that_key(ctl, raw_config):
    """A CI job given only web's key (the global one) cannot push api, whichever
    minion id its event carries; api's key pushes api, and only api."""
    from saltcd import ci_push, config
    shared, api_key = "p" * 32, "a" * 32
    raw_config["apps"]["api"]["push_secret"] = api_key
    ctl.settings = config.load({**raw_config, "push_secret": shared})
    assert api_key not in repr(ctl.settings) and "push_secret" not in ctl.settings.apps["api"]

    def push(repository, key):
        return ctl.accept("saltcd/push", {"id": "ci-1", "cmd": "_minion_event",
                                          "data": ci_push.payload(repository, "dev", key)})

    assert push(API, shared)["rejected"] == "unauthenticated: signature does not match the payload"
    assert push(REPO, api_key)["rejected"] == "unauthenticated: signature does not match the payload"
    assert ctl.records.pending("api", "dev") == [] and ctl.records.pending("web", "dev") == []
    assert [r["app"] for r in push(API, api_key)["accepted"]] == ["api"]
    assert [r["app"] for r in push(REPO, shared)["accepted"]] == ["web"]
    # With no global key, only the app with its own key can be pushed.
    ctl.settings = config.load(raw_config)
    assert "no push_secret is configured for this push" in push(REPO, shared)["rejected"]
    assert [r["app"] for r in push(API, api_key)["accepted"]] == ["api"]


def test_a_refused_sender_does_not_use_up_the_nonce(ctl, raw_config):
    """A minion that saw a CI push before the master did fires it first, unwrapped
    or as a minion not in ci_minions: refused, and the real push still lands."""
    from saltcd import ci_push, config
    secret = "p" * 32
    ctl.settings = config.load({**raw_config, "push_secret": secret})
    payload = ci_push.payload(REPO, "dev", secret)
    assert "unwrapped" in ctl.accept("saltcd/push", dict(payload))["rejected"]
    stranger = {"id": "dev-2", "cmd": "_minion_event", "data": payload}
    assert ctl.accept("saltcd/push", stranger)["rejected"] == (
        "minion 'dev-2' may not deploy app 'web' (not in ci_minions)")
    assert ctl.records.pending("web", "dev") == []
    real = {"id": "ci-1", "cmd": "_minion_event", "data": payload}
    assert [r["app"] for r in ctl.accept("saltcd/push", real)["accepted"]] == ["web"]
    assert "replay" in ctl.accept("saltcd/push", real)["rejected"]


def test_a_replayed_or_stale_push_is_rejected(ctl, raw_config):
    import time

    from saltcd import ci_push, config
    secret = "p" * 32
    ctl.settings = config.load({**raw_config, "push_secret": secret, "push_window": 60})
    captured = {"id": "ci-1", "cmd": "_minion_event", "data": ci_push.payload(REPO, "dev", secret)}
    assert ctl.accept("saltcd/push", captured)["accepted"]
    again = ctl.accept("saltcd/push", captured)
    assert again["rejected"] == "unauthenticated: replay: this push's nonce was seen before"
    assert again["accepted"] == []
    old = ci_push.payload(REPO, "dev", secret, timestamp=time.time() - 61)
    assert "replay or clock skew" in ctl.accept("saltcd/push", old)["rejected"]
    assert len(ctl.records.pending("web", "dev")) == 1
    assert again["rejected"] in [r["reason"] for r in ctl.records.rejections()]


def test_without_a_push_secret_every_push_is_refused(ctl):
    from saltcd import ci_push
    for event in ({"repository": REPO, "tag": "dev"},  # the master's own, unsigned
                  {"id": "ci-1", "cmd": "_minion_event", "data": ci_push.payload(REPO, "dev", "p" * 32)}):
        verdict = ctl.accept("saltcd/push", event)
        assert verdict["accepted"] == [] and "set `saltcd:push_secret`" in verdict["rejected"]
