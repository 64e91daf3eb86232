"""What crosses the bus from the webhook door: only the reduced data (pushes and
reasons), vouched for by the ingress key's MAC and checked again by the runner;
and what a source may do: the addresses it posts from (`allow_from`) and the
repositories it may announce (`repositories`)."""

import json

import pytest
import salt.payload

from saltcd import config
from saltcd.ingress import ingress_key, intake, registry_events
from saltcd.ingress.ingress_auth import hashed_headers

from .conftest import RAW, TOKEN
from .fakes import Nonces

KEY = b"k" * 32
NOW = 1_800_000_000.0
TAG = "saltcd/ingress/registry"
DIGEST = "sha256:" + "d" * 64
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
WEB = "127.0.0.1:5000/saltcd/web"
GOOD = {"repository": WEB, "tag": "dev", "digest": DIGEST, "media_type": MANIFEST}


def settings(**source):
    raw = json.loads(json.dumps(RAW))
    raw["sources"]["registry"].update(source)
    return config.load(raw)


def mac_ed(pushes, ignored=(), source="registry"):
    """An envelope made with the engine's key: what only the engine (or a thief
    of the master's key file) can make."""
    return ingress_key.envelope(KEY, source, {"pushes": pushes, "ignored": list(ignored)}, now=NOW)


def classify(data, tag=TAG, conf=None):
    return intake.classify(tag, data, conf or settings(), now=NOW + 1, engine_key=KEY, nonces=Nonces())


def test_a_good_envelope_deploys_and_carries_no_body():
    data = mac_ed([GOOD], ["event 0 (pull): not a push"])
    assert set(data) == {"pushes", "ignored", "received", "nonce", "mac"}
    verdict = classify(data)
    assert verdict.rejected is None and verdict.ignored == ["event 0 (pull): not a push"]
    assert [(r["app"], r["env"], r["digest_hint"]) for r in verdict.requests] == [("web", "dev", DIGEST)]


@pytest.mark.parametrize("push, reason", [
    ({**GOOD, "repository": "127.0.0.1:5000/app; rm -rf /"}, "push 0: invalid repository path 'app; rm -rf /'"),
    ({**GOOD, "repository": "../../etc"}, "push 0: invalid registry host '..'"),
    ({**GOOD, "repository": 5}, "push 0: repository must be a non-empty string"),
    ({**GOOD, "tag": "$(id)"}, "push 0: invalid tag"),
    ({**GOOD, "tag": "t" * 300}, "push 0: invalid tag"),
    ({**GOOD, "digest": "sha256:" + "z" * 64}, "push 0: invalid digest"),
    ({**GOOD, "media_type": "application/octet-stream"}, "push 0: not a manifest media type"),
    ({**GOOD, "body": "{}"}, "push 0: not a push of the saltcd_webhook engine"),
    ({k: v for k, v in GOOD.items() if k != "digest"}, "push 0: not a push of the saltcd_webhook engine"),
    ("127.0.0.1:5000/saltcd/web:dev", "push 0: not a push of the saltcd_webhook engine"),
], ids=["shell in repository", "path traversal", "repository not a string", "shell in tag", "long tag",
        "non-hex digest", "blob media type", "an extra field", "a missing field", "not an object"])
def test_the_runner_checks_every_field_of_a_mac_ed_envelope_again(push, reason):
    """The MAC proves the engine made the envelope, not that it is right: a
    forged-but-MACed envelope with a bad field is rejected, deploys nothing."""
    verdict = classify(mac_ed([push]))
    assert verdict.requests == [] and verdict.rejected is not None
    assert verdict.rejected.startswith(reason), verdict.rejected
    assert "\n" not in verdict.rejected


def test_ignored_reasons_must_be_text_and_are_bounded_and_escaped():
    assert "not a list of reasons" in classify(mac_ed([GOOD], [5])).rejected
    many = [f"event {i}: manifest push without a tag\n\x1b[31m" for i in range(100)]
    verdict = classify(mac_ed([GOOD], many))
    assert len(verdict.ignored) == ingress_key.IGNORED_KEPT + 1 and verdict.requests
    assert all("\n" not in r and "\x1b" not in r for r in verdict.ignored)


def test_the_mac_covers_the_reduced_data_in_canonical_form():
    """Key order and the bus's own encoding (msgpack) do not matter; any change
    of a field does; so does the envelope of another layout (a body)."""
    data = mac_ed([GOOD])
    shuffled = {"pushes": [dict(reversed(list(GOOD.items())))], **{k: v for k, v in data.items() if k != "pushes"}}
    assert classify(salt.payload.loads(salt.payload.dumps(shuffled))).rejected is None
    for changed in ({"tag": "qa"}, {"digest": None}, {"media_type": None}):
        tampered = {**data, "pushes": [{**GOOD, **changed}]}
        assert "MAC does not match" in classify(tampered).rejected, changed
    assert "MAC does not match" in classify({**data, "ignored": ["added"]}).rejected
    assert "MAC does not match" in classify(mac_ed([GOOD], source="hub"), tag=TAG).rejected
    old_layout = {"body": json.dumps({"events": []}), **{k: data[k] for k in ("received", "nonce", "mac")}}
    assert "not an envelope of the saltcd_webhook engine" in classify(old_layout).rejected
    assert "not an envelope" in classify({**data, "pushes": [{b"bytes": 1}]}).rejected


def test_reduced_keeps_only_what_saltcd_uses():
    body = json.dumps({"events": [
        {"id": "e-1", "action": "push", "target": {"mediaType": MANIFEST, "repository": "saltcd/web", "tag": "dev",
                                                    "digest": DIGEST, "size": 525, "url": "http://x/v2/"},
         "request": {"host": "127.0.0.1:5000", "useragent": "docker/20.10", "addr": "10.1.2.3:4"},
         "actor": {"name": "someone"}, "source": {"instanceID": "i-1"}},
        {"action": "pull"}]})
    data = ingress_key.reduced(registry_events.parse_distribution(body))
    assert data == {"pushes": [GOOD], "ignored": ["event 1 (pull): not a push"]}


def test_a_source_may_announce_only_its_repositories_at_the_runner_too():
    """Defense in depth: the door refuses these (403); the runner refuses them
    on the engine's envelopes and on salt-api's hook events alike."""
    listed = settings(repositories=["127.0.0.1:5000/saltcd/api"])
    reason = ("source 'registry' may not announce repository '127.0.0.1:5000/saltcd/web' "
              "(not in its `repositories`)")
    assert classify(mac_ed([GOOD]), conf=listed).rejected == reason
    body = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": MANIFEST, "repository": "saltcd/web", "tag": "dev"}, "request": {"host": "127.0.0.1:5000"}}]})
    hook = {"body": body, **hashed_headers({"Authorization": f"Bearer {TOKEN}"})}
    verdict = intake.classify("salt/netapi/hook/saltcd/registry", hook, listed, now=NOW)
    assert (verdict.rejected, verdict.requests) == (reason, [])
    api = {**GOOD, "repository": "127.0.0.1:5000/saltcd/api"}
    assert [r["app"] for r in classify(mac_ed([api]), conf=listed).requests] == ["api"]


def test_salt_api_cannot_show_a_sender_address_so_allow_from_refuses_it():
    fenced = settings(allow_from=["10.0.0.0/8"])
    body = json.dumps({"events": []})
    hook = {"body": body, **hashed_headers({"Authorization": f"Bearer {TOKEN}"})}
    verdict = intake.classify("salt/netapi/hook/saltcd/registry", hook, fenced, now=NOW)
    assert "has `allow_from`, which salt-api's hook event cannot be checked against" in verdict.rejected
    assert classify(mac_ed([GOOD]), conf=fenced).requests  # the engine checked the address at the door


@pytest.mark.parametrize("allow_from, allowed, refused", [
    (["10.0.0.0/8"], ["10.1.2.3", "::ffff:10.1.2.3"], ["11.0.0.1", "::1", "not an address", ""]),
    (["2001:db8::/32", "127.0.0.1"], ["2001:db8:1::5", "127.0.0.1", "::ffff:127.0.0.1"],
     ["2001:db9::1", "127.0.0.2", "10.0.0.1"]),
])
def test_allow_from_matches_ipv4_ipv6_and_mapped_addresses(allow_from, allowed, refused):
    source = settings(allow_from=allow_from).sources["registry"]
    assert [a for a in allowed + refused if source.allows_sender(a)] == allowed
    assert settings().sources["registry"].allows_sender("203.0.113.9")  # default: any address


@pytest.mark.parametrize("key, value, message", [
    ("allow_from", "10.0.0.0/8", "allow_from: must be a non-empty list of networks"),
    ("allow_from", [], "allow_from: must be a non-empty list of networks"),
    ("allow_from", ["10.0.0.1/8"], "allow_from:0: 10.0.0.1/8 has host bits set"),
    ("allow_from", ["10.0.0.0/8", "nope"], "allow_from:1: 'nope' does not appear to be an IPv4 or IPv6 network"),
    ("allow_from", [10], "allow_from:0: must be a network as text"),
    ("repositories", "127.0.0.1:5000/saltcd/web", "repositories: must be a non-empty list of repositories"),
    ("repositories", [], "repositories: must be a non-empty list of repositories"),
    ("repositories", ["127.0.0.1:5000/a; rm -rf /"], "repositories:0: invalid repository path"),
])
def test_source_keys_are_checked_when_the_config_loads(key, value, message):
    with pytest.raises(config.ConfigError, match="saltcd:sources:registry:" + message.replace("[", r"\[")):
        settings(**{key: value})


def test_listed_repositories_are_canonical_like_an_app_s():
    source = settings(repositories=["index.docker.io/library/web", "team/api"]).sources["registry"]
    assert source.repositories == {config.references.parse_repository("web"),
                                   config.references.parse_repository("docker.io/team/api")}
