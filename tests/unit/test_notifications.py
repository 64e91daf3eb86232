import json

import pytest

from saltcd.ingress import registry_events as n

DIGEST = "sha256:" + "c" * 64
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def event(action="push", media=MANIFEST, tag="dev", repo="saltcd/web", host="127.0.0.1:5000", digest=DIGEST):
    target = {"mediaType": media, "repository": repo, "digest": digest, "size": 525}
    if tag is not None:
        target["tag"] = tag
    return {"id": "x", "action": action, "target": target, "request": {"host": host, "method": "PUT"}}


def envelope(*events):
    return json.dumps({"events": list(events)}).encode()


def test_only_tagged_manifest_pushes_trigger():
    body = envelope(
        event(media="application/octet-stream", tag=None),       # blob push
        event(action="pull"),
        event(action="delete"),
        event(tag=None),                                          # push by digest
        event(),
        event(media="application/vnd.oci.image.index.v1+json", tag="qa"),
    )
    parsed = n.parse_distribution(body)
    assert [(str(p.repository), p.tag, p.digest) for p in parsed.pushes] == [
        ("127.0.0.1:5000/saltcd/web", "dev", DIGEST),
        ("127.0.0.1:5000/saltcd/web", "qa", DIGEST),
    ]
    assert len(parsed.ignored) == 4


@pytest.mark.parametrize("bad, reason", [
    (event(tag="x" * 200), "invalid tag"),
    (event(repo="../../etc"), "invalid repository path"),
    (event(digest="sha256:zz"), "invalid digest"),
    (event(host="evil host"), "request.host missing or invalid"),
])
def test_a_malformed_reference_refuses_the_whole_envelope(bad, reason):
    with pytest.raises(n.PayloadError, match=reason):
        n.parse_distribution(envelope(event(), bad))


def test_docker_hub_payload():
    body = json.dumps({"push_data": {"tag": "dev"}, "repository": {"repo_name": "team/web"}})
    (push,) = n.parse_dockerhub(body).pushes
    assert (str(push.repository), push.tag, push.digest) == ("docker.io/team/web", "dev", None)
    with pytest.raises(n.PayloadError, match="push_data and repository are required"):
        n.parse_dockerhub(b'{"repository": {}}')


@pytest.mark.parametrize("body, reason", [
    (b"\xff\xfe", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"events": "nope"}', "no `events` list"),
])
def test_unreadable_envelopes_are_errors(body, reason):
    with pytest.raises(n.PayloadError, match=reason):
        n.parse_distribution(body)


def test_generic_ci_form():
    parsed = n.parse_generic({"repository": "127.0.0.1:5000/saltcd/web", "tag": "qa"})
    assert parsed.pushes[0].tag == "qa" and parsed.pushes[0].digest is None
    with pytest.raises(n.PayloadError, match="missing tag"):
        n.parse_generic({"repository": "127.0.0.1:5000/saltcd/web"})
    with pytest.raises(n.PayloadError, match="invalid tag"):
        n.parse_generic({"repository": "127.0.0.1:5000/saltcd/web", "tag": "$(id)"})


@pytest.mark.parametrize("body, reason", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"events": [' + b"9" * 5000 + b"]}", "not JSON: Exceeds the limit"),
    (envelope({"action": "push", "target": "a string"}), "event 0: target is not an object"),
    (envelope({**event(), "request": ["a", "list"]}), "request.host missing or invalid"),
])
def test_hostile_envelopes_are_refused_with_a_reason(body, reason):
    with pytest.raises(n.PayloadError, match=reason):
        n.parse_distribution(body)


def test_odd_shapes_are_ignored_not_crashes():
    body = envelope({**event(), "target": {"mediaType": [MANIFEST], "tag": "dev"}},  # unhashable
                    {"action": {"a": 1}}, "not an event", {"action": "push\n2026 INFO forged line"})
    parsed = n.parse_distribution(body)
    assert parsed.pushes == [] and len(parsed.ignored) == 4
    assert all("\n" not in reason for reason in parsed.ignored)
    assert "push\\n2026" in parsed.ignored[3]
