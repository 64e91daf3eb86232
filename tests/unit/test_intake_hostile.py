"""Hostile input never crashes the intake: arbitrary bytes, JSON values and
envelope shapes, through every webhook format, both webhook doors and the CI
door, always end in a Verdict (requests, ignored, or a rejection with a reason
that is safe to log)."""

import json
import sys

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from saltcd import config
from saltcd.ingress import ingress_key, intake, nonces, registry_events
from saltcd.ingress.ingress_auth import hashed_headers, push_signature
from tests.posting import post

from .conftest import RAW, TOKEN
from .fakes import Nonces

KEY = b"k" * 32
NOW = 1_800_000_000.0
FORMATS = sorted(registry_events.PARSERS)
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
RUNS = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _settings():
    raw = json.loads(json.dumps(RAW))
    raw["sources"] = {f"src-{name}": {"format": name, "token": TOKEN} for name in FORMATS}
    return config.load(raw)


SETTINGS = _settings()
SECRET = "push-secret-of-the-test-0123"
SIGNED = config.load({**json.loads(json.dumps(RAW)), "push_secret": SECRET})



# JSON as a parser sees it, and Python values as an event may carry them
# (msgpack: bytes, non-string keys, tuples).
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
keys = st.text(max_size=12) | st.integers() | st.none() | st.tuples(st.integers())
event_values = st.recursive(json_scalars | st.binary(max_size=20),
                            lambda inner: st.lists(inner, max_size=4) | st.tuples(inner)
                            | st.dictionaries(keys, inner, max_size=4), max_leaves=20)
interesting = st.sampled_from(["push", "pull", "dev", "prod", MANIFEST, "127.0.0.1:5000", "saltcd/web",
                               "sha256:" + "a" * 64, "\n", "\x1b[31m", "\u2028", ""])
field = interesting | json_values


@st.composite
def distribution_envelopes(draw):
    events = draw(st.lists(st.fixed_dictionaries({}, optional={
        "action": field, "target": st.fixed_dictionaries({}, optional={
            "mediaType": field | st.lists(json_scalars, max_size=2), "tag": field,
            "repository": field, "digest": field}) | json_values,
        "request": st.fixed_dictionaries({}, optional={"host": field}) | json_values,
    }) | json_values, max_size=4))
    return draw(st.sampled_from([{"events": events}, {"events": json.dumps(events)}, events]))


@st.composite
def dockerhub_payloads(draw):
    return {"push_data": draw(st.fixed_dictionaries({}, optional={"tag": field}) | json_values),
            "repository": draw(st.fixed_dictionaries({}, optional={"repo_name": field}) | json_values)}


def deep(depth, opener="[", closer="]"):
    return opener * depth + closer * depth


bodies = (st.binary(max_size=200)
          | json_values.map(json.dumps)
          | distribution_envelopes().map(json.dumps)
          | dockerhub_payloads().map(json.dumps)
          | st.sampled_from([deep(100_000), deep(5_000, '{"a":', "}"), "9" * 5000, "1e999999",
                             '{"events": [' + "[" * 50_000 + "]}", "\ud800", '{"events": null}']))


def assert_verdict(verdict):
    """A Verdict every time; reasons are str and cannot break a log line."""
    assert isinstance(verdict, intake.Verdict)
    assert isinstance(verdict.requests, list) and isinstance(verdict.ignored, list)
    texts = list(verdict.ignored) + ([verdict.rejected] if verdict.rejected is not None else [])
    for text in texts:
        assert isinstance(text, str)
        assert "\n" not in text and "\r" not in text and "\x1b" not in text, text
    if verdict.rejected is not None:
        assert verdict.requests == []
        # The parser itself said why: not the last-resort net in classify.
        assert not verdict.rejected.startswith("malformed payload"), verdict.rejected
    return verdict


def engine_event(source, body):
    """The event the engine fires for `body` (what its source's parser keeps of it)."""
    fmt = SETTINGS.sources[source].format if source in SETTINGS.sources else "distribution"
    return ingress_key.envelope(KEY, source, ingress_key.reduced(registry_events.PARSERS[fmt](body)), now=NOW)


@RUNS
@given(fmt=st.sampled_from(FORMATS), body=bodies)
def test_any_body_through_salt_api_hook_gives_a_verdict(fmt, body):
    data = {"body": body, **hashed_headers({"Authorization": f"Bearer {TOKEN}"})}
    assert_verdict(intake.classify(f"salt/netapi/hook/saltcd/src-{fmt}", data, SETTINGS, now=NOW))


@RUNS
@given(fmt=st.sampled_from(FORMATS), body=bodies)
def test_any_body_from_the_webhook_engine_gives_a_verdict(fmt, body):
    """What the door makes of any body (its parser's pushes and reasons, or a
    refusal there) the runner takes as it is, with no other reason to refuse it."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = engine_event(f"src-{fmt}", text)
    except registry_events.PayloadError:
        return  # refused at the door (400): nothing is fired
    verdict = intake.classify(f"saltcd/ingress/src-{fmt}", data, SETTINGS, now=NOW + 1, engine_key=KEY,
                              nonces=Nonces())
    assert_verdict(verdict)
    assert verdict.rejected is None, verdict.rejected


push_fields = st.fixed_dictionaries({"repository": field, "tag": field, "digest": field, "media_type": field})


@RUNS
@given(fmt=st.sampled_from(FORMATS),
       pushes=st.lists(push_fields | event_values, max_size=3),
       ignored=st.lists(st.text(max_size=30) | event_values, max_size=3))
def test_any_reduced_data_with_the_engine_s_mac_gives_a_verdict(fmt, pushes, ignored):
    """The MAC proves the engine made the envelope, not that it is right: every
    field is checked again, and whatever it holds ends in a Verdict."""
    try:
        data = ingress_key.envelope(KEY, f"src-{fmt}", {"pushes": pushes, "ignored": ignored}, now=NOW)
    except (TypeError, ValueError):
        return  # not JSON's (bytes, odd keys): the engine cannot make it
    assert_verdict(intake.classify(f"saltcd/ingress/src-{fmt}", data, SETTINGS, now=NOW + 1, engine_key=KEY,
                                   nonces=Nonces()))


@RUNS
@given(fmt=st.sampled_from(FORMATS),
       envelope=st.dictionaries(st.sampled_from(["pushes", "ignored", "received", "nonce", "mac", "cmd", "id",
                                                 "minion_fields", "headers", "body"]), event_values, max_size=7))
def test_forged_engine_envelopes_are_rejected(fmt, envelope):
    verdict = intake.classify(f"saltcd/ingress/src-{fmt}", envelope, SETTINGS, now=NOW, engine_key=KEY,
                              nonces=Nonces())
    assert assert_verdict(verdict).rejected


@RUNS
@given(tag=st.text(max_size=60) | st.sampled_from(["saltcd/push", "saltcd/ingress/", "salt/netapi/hook/",
                                                   "salt/netapi/hook/saltcd/src-distribution"]),
       data=event_values)
def test_any_tag_and_data_gives_a_verdict(tag, data):
    assert_verdict(intake.classify(tag, data, SETTINGS, now=NOW, engine_key=KEY))


@RUNS
@given(payload=st.dictionaries(st.sampled_from(["repository", "tag", "digest", "signature", "timestamp",
                                                "nonce", "signature_sha256"]), field | event_values,
                               max_size=7),
       minion=event_values, wrapped=st.booleans())
def test_any_ci_payload_gives_a_verdict(payload, minion, wrapped):
    data = {"cmd": "_minion_event", "id": minion, "data": payload} if wrapped else payload
    assert_verdict(intake.classify("saltcd/push", data, SIGNED, now=NOW, nonces=Nonces()))


@RUNS
@given(fields=st.fixed_dictionaries({}, optional={"repository": field, "tag": field, "digest": field}),
       extra=st.dictionaries(keys, event_values, max_size=3), nonce=st.text("abcdef0123456789", min_size=16,
                                                                           max_size=32))
def test_any_signed_ci_payload_gives_a_verdict(fields, extra, nonce):
    """Signed, so the fields reach the parser, whatever they hold."""
    signature = push_signature(SECRET, fields.get("repository"), fields.get("tag"), fields.get("digest"),
                               int(NOW), nonce)
    payload = {**extra, **fields, "timestamp": int(NOW), "nonce": nonce, "signature": signature}
    data = {"cmd": "_minion_event", "id": "ci-1", "data": payload}
    assert_verdict(intake.classify("saltcd/push", data, SIGNED, now=NOW, nonces=Nonces()))


def _nested(depth):
    value = "x"
    for _ in range(depth):
        value = {"a": [value]}
    return value


@pytest.mark.parametrize("data", [
    {"body": deep(sys.getrecursionlimit() * 4), **hashed_headers({"Authorization": f"Bearer {TOKEN}"})},
    {"body": _nested(sys.getrecursionlimit() * 2), **hashed_headers({"Authorization": f"Bearer {TOKEN}"})},
    {"body": {1: "non-string key", (2,): "tuple key"},
     **hashed_headers({"Authorization": f"Bearer {TOKEN}"})},
    {"body": json.dumps({"events": [{"action": "push", "target": {"mediaType": [MANIFEST]}}]}),
     **hashed_headers({"Authorization": f"Bearer {TOKEN}"})},
    {"body": json.dumps({"events": [{"action": "push", "target": "not an object"}]}),
     **hashed_headers({"Authorization": f"Bearer {TOKEN}"})},
    {"body": json.dumps({"events": [{"action": "push", "target": {"mediaType": MANIFEST, "tag": "dev"},
                                     "request": ["not", "an", "object"]}]}),
     **hashed_headers({"Authorization": f"Bearer {TOKEN}"})},
    {"body": b"\xff\xfe", "minion_fields": 5, **hashed_headers({"Authorization": f"Bearer {TOKEN}"})},
], ids=["deep JSON text", "deep Python value", "non-string keys", "unhashable mediaType",
        "target not an object", "request not an object", "minion_fields not a list"])
def test_known_crashers_are_refused_or_ignored_with_a_reason(data):
    verdict = assert_verdict(intake.classify("salt/netapi/hook/saltcd/src-distribution", data, SETTINGS, now=NOW))
    assert verdict.rejected or verdict.ignored
    assert not verdict.requests


def test_a_body_over_the_cap_is_refused_before_parsing():
    body = json.dumps({"events": [], "pad": "x" * SETTINGS.max_body_bytes})
    data = {"body": body, **hashed_headers({"Authorization": f"Bearer {TOKEN}"})}
    verdict = intake.classify("salt/netapi/hook/saltcd/src-distribution", data, SETTINGS, now=NOW)
    assert "larger than max_body_bytes" in verdict.rejected


def test_log_text_is_escaped():
    assert registry_events.shown("a\nb\x1b[31m\u2028") == "a\\nb\\x1b[31m\\u2028"
    assert registry_events.shown("x" * 500, 10) == "x" * 10 + "..."
    assert registry_events.shown(["\n"]) == "['\\n']"


# The door: the saltcd_webhook engine's HTTP handler on loopback, in this process.

def _load_engine():
    """The door's module, loaded afresh for this test. On Salt 3006 the door
    serves with the real tornado, taken past Salt's import hook when the module
    loads (saltcd.compat.tornado), as in the engine's own process; after each
    test tests/conftest.py puts Salt's names back, so a module loaded by an
    earlier test would hold a copy of tornado the next one no longer has."""
    import importlib

    from saltcd.ingress import webhook

    return importlib.reload(webhook)


@pytest.fixture
def door():
    """The engine's door on 127.0.0.1: (url, door, fired events, store)."""
    import asyncio
    import hashlib
    import socket
    import threading

    from saltcd.store import Limits, Store

    from .fakes import MemoryCache

    engine = _load_engine()
    raw = json.loads(json.dumps(RAW))
    raw["sources"]["stamped"] = {"hmac_secret": "stamp-secret", "timestamp_header": "X-Timestamp"}
    # Posts come from 127.0.0.1 here: `fenced` refuses them, `listed` announces only `api`.
    raw["sources"]["fenced"] = {"token": TOKEN, "allow_from": ["10.0.0.0/8", "::1/128"]}
    raw["sources"]["listed"] = {"token": TOKEN, "repositories": ["127.0.0.1:5000/saltcd/api"]}
    raw["max_body_bytes"] = 4096
    settings = config.load(raw)
    records = Store(MemoryCache())
    records.configure(Limits.from_settings(settings))
    fired, bus = [], {"down": False}

    def fire(tag, data):
        if bus["down"]:
            raise ConnectionError("the master's event bus is not reachable")
        fired.append((tag, data))

    gate = engine.Door(settings, KEY, fire, nonces.NonceCache(MemoryCache()))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)

        async def start():
            engine.server(gate, "127.0.0.1", port)
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "door": gate, "fired": fired, "bus": bus,
               "records": records, "sha": hashlib.sha256, "engine": engine}
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        gate.shutdown()


def registry_event(action="push", media=MANIFEST, tag="dev", repository="saltcd/web"):
    """One event of a distribution envelope, as the registry at 127.0.0.1:5000 sends it."""
    return {"action": action, "target": {"mediaType": media, "repository": repository, "tag": tag,
                                         "digest": "sha256:" + "d" * 64}, "request": {"host": "127.0.0.1:5000"}}


PUSH_BODY = json.dumps({"events": [registry_event()]}).encode()


ENVELOPE_KEYS = {"pushes", "ignored", "received", "nonce", "mac"}


def test_the_door_fires_one_signed_envelope_and_no_header(door):
    body = PUSH_BODY.decode()
    status, _ = post(door["url"] + "/saltcd/registry", body.encode(), {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    ((tag, data),) = door["fired"]
    assert tag == "saltcd/ingress/registry" and set(data) == ENVELOPE_KEYS
    assert data["pushes"] == [{"repository": "127.0.0.1:5000/saltcd/web", "tag": "dev",
                               "digest": "sha256:" + "d" * 64, "media_type": MANIFEST}]
    assert data["ignored"] == [] and TOKEN not in json.dumps(data)
    verdict = intake.classify(tag, data, SETTINGS_WITH_REGISTRY, now=data["received"] + 1, engine_key=KEY,
                              nonces=Nonces())
    assert verdict.rejected is None and verdict.ignored == []
    assert [(r["app"], r["env"]) for r in verdict.requests] == [("web", "dev")]


@pytest.mark.parametrize("events", [
    [],
    [registry_event(action="pull")],
    [registry_event(media="application/octet-stream", tag=None), registry_event(action="pull")],
], ids=["no events", "a pull", "a blob push and a pull"])
def test_pulls_and_blob_pushes_go_no_further(door, events):
    body = json.dumps({"events": events}).encode()
    status, text = post(door["url"] + "/saltcd/registry", body, {"Authorization": f"Bearer {TOKEN}"})
    assert (status, text) == (200, registry_events.NOTHING_TO_DEPLOY + "\n")
    assert door["fired"] == []


@pytest.mark.parametrize("body, pushes, ignored", [
    (json.dumps({"events": [registry_event(action="pull"), registry_event()]}),
     ["127.0.0.1:5000/saltcd/web"], ["event 0 (pull): not a push"]),
    (json.dumps({"events": [registry_event(repository="saltcd/nobody-deploys-it")]}),
     ["127.0.0.1:5000/saltcd/nobody-deploys-it"], []),
    (json.dumps({"events": [registry_event(tag=None)]}), [],  # the runner logs it as news
     ["event 0: manifest push without a tag"]),
], ids=["a push among pulls", "a push no app deploys", "a manifest push without a tag"])
def test_anything_but_pulls_and_blob_pushes_goes_on_to_the_runner(door, body, pushes, ignored):
    """...as the pushes and reasons the door parsed out of it: never the body."""
    status, text = post(door["url"] + "/saltcd/registry", body.encode(), {"Authorization": f"Bearer {TOKEN}"})
    assert (status, text) == (200, "accepted\n")
    ((_, data),) = door["fired"]
    assert set(data) == ENVELOPE_KEYS
    assert not [word for word in ('"events"', '"request"', '"action"') if word in json.dumps(data)]
    assert ([p["repository"] for p in data["pushes"]], data["ignored"]) == (pushes, ignored)


def test_a_large_body_is_parsed_at_the_door_too(door):
    """Every body the door accepts is parsed there (nothing goes on unparsed):
    one of max_body_bytes holding only pulls deploys nothing and fires nothing."""
    event = json.dumps(registry_event(action="pull"))
    count = (door["door"].settings.max_body_bytes - 20) // (len(event) + 2)
    body = json.dumps({"events": [registry_event(action="pull")] * count}).encode()
    assert len(body) > door["door"].settings.max_body_bytes * 0.9
    status, text = post(door["url"] + "/saltcd/registry", body, {"Authorization": f"Bearer {TOKEN}"})
    assert (status, text) == (200, registry_events.NOTHING_TO_DEPLOY + "\n")
    assert door["fired"] == []


def test_the_reasons_carried_on_are_bounded_news_first(door):
    """A body with many ignored items fires IGNORED_KEPT reasons, the news
    among them first, and one line that counts the rest."""
    kept = ingress_key.IGNORED_KEPT
    events = [{"action": "pull"}] * (kept + 5) + [registry_event(tag=None)]
    body = json.dumps({"events": events}).encode()
    assert post(door["url"] + "/saltcd/registry", body, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    ((_, data),) = door["fired"]
    assert data["ignored"][0] == f"event {kept + 5}: manifest push without a tag"
    assert len(data["ignored"]) == kept + 1 and data["ignored"][-1] == "6 more ignored item(s) not listed"


SETTINGS_WITH_REGISTRY = config.load(json.loads(json.dumps(RAW)))


@pytest.mark.parametrize("path, headers, body, status, reason", [
    ("/saltcd/registry", {"Authorization": "Bearer wrong"}, b"{}", 401,
     "unauthenticated: wrong credential in Authorization"),
    ("/saltcd/registry", {}, b"{}", 401, "unauthenticated: missing Authorization header"),
    ("/saltcd/nowhere", {"Authorization": f"Bearer {TOKEN}"}, b"{}", 404,
     "no webhook source is configured for this path"),
    ("/saltcd/registry", {"Authorization": f"Bearer {TOKEN}"}, b"x" * 5000, 413, "body larger than max_body_bytes"),
    ("/saltcd/registry", {"Authorization": f"Bearer {TOKEN}"}, b"\xff\xfe", 400, "body is not UTF-8"),
    ("/saltcd/registry", {"Authorization": f"Bearer {TOKEN}"}, b'{"events": 1}', 400,
     "envelope has no `events` list"),
    ("/saltcd/registry", {"Authorization": f"Bearer {TOKEN}"}, b"[" * 2000 + b"]" * 2000, 400,
     "body is JSON nested too deeply"),
    ("/saltcd/registry", {"Authorization": f"Bearer {TOKEN}"},
     json.dumps({"events": [registry_event(repository="../../etc")]}).encode(), 400,
     "event 0: invalid repository path '../../etc'"),
    ("/saltcd/fenced", {"Authorization": f"Bearer {TOKEN}"}, b"{}", 403,
     "sender address not in the source's allow_from"),
], ids=["wrong token", "no token", "unknown source", "oversize", "not UTF-8", "does not parse", "deep JSON",
        "invalid repository", "sender not in allow_from"])
def test_the_door_refuses_fires_nothing_and_counts(door, path, headers, body, status, reason):
    for _ in range(5):
        answer = post(door["url"] + path, body, headers)
        assert answer[0] == status and answer[1].startswith(reason), answer
    assert door["fired"] == []
    source = "(unknown)" if status == 404 else path.rsplit("/", 1)[1]
    counted = door["engine"].counted_reason(reason)  # numbers in it are counted as N
    counts = door["door"].rejections.flush(door["records"])
    assert {k[:2]: n for k, n in counts.items()} == {(source, counted): 5}
    assert [r["reason"] for r in door["records"].rejections()] == [reason] * 3  # a few in full, the rest counted
    assert [(r["source"], r["reason"], r["count"]) for r in door["records"].rejection_counts()] == [
        (source, counted, 5)]


def test_a_sender_outside_allow_from_is_answered_403_before_its_body(door):
    import socket

    with socket.create_connection(("127.0.0.1", door["port"]), timeout=10) as sock:
        sock.sendall(b"POST /saltcd/fenced HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n"
                     + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403") and answer.endswith(b"sender address not in the source's allow_from\n")
    assert door["fired"] == [] and door["door"].in_flight["fenced"] == 0


def test_a_repository_the_source_may_not_announce_is_refused_but_answered_200(door):
    """Counted as refused and never fired, but answered 200: a registry retries a
    refused notification forever and holds back every later one meanwhile."""
    reason = "source 'listed' may not announce repository '127.0.0.1:5000/saltcd/web' (not in its `repositories`)"
    for _ in range(5):
        assert post(door["url"] + "/saltcd/listed", PUSH_BODY, {"Authorization": f"Bearer {TOKEN}"}) == (
            200, f"ignored: {reason}\n")
    assert door["fired"] == []
    counts = door["door"].rejections.flush(door["records"])
    assert {k[:2]: n for k, n in counts.items()} == {("listed", door["engine"].counted_reason(reason)): 5}
    # With a push it may announce beside it, that one goes on alone.
    both = json.dumps({"events": [registry_event(repository="saltcd/web"),
                                  registry_event(repository="saltcd/api")]}).encode()
    assert post(door["url"] + "/saltcd/listed", both, {"Authorization": f"Bearer {TOKEN}"}) == (200, "accepted\n")
    ((_, data),) = door["fired"]
    assert [p["repository"] for p in data["pushes"]] == ["127.0.0.1:5000/saltcd/api"]


def test_a_listed_repository_is_announced(door):
    body = json.dumps({"events": [registry_event(repository="saltcd/api")]}).encode()
    assert post(door["url"] + "/saltcd/listed", body, {"Authorization": f"Bearer {TOKEN}"}) == (200, "accepted\n")
    ((tag, data),) = door["fired"]
    verdict = intake.classify(tag, data, config.load({**json.loads(json.dumps(RAW)), "sources": {
        "listed": {"token": TOKEN, "repositories": ["127.0.0.1:5000/saltcd/api"]}}}),
        now=data["received"] + 1, engine_key=KEY, nonces=Nonces())
    assert [(r["app"], r["env"]) for r in verdict.requests] == [("api", "dev")]


def test_a_post_refused_for_what_it_holds_does_not_use_up_its_signature(door):
    """What a post holds (400, a repository its source may not announce) is
    decided before a timestamped signature is claimed: the same post, once it
    may be accepted, is not a replay."""
    import dataclasses

    body, sources = PUSH_BODY, door["door"].settings.sources
    headers = _stamped(body)
    stamped = sources["stamped"]
    sources["stamped"] = dataclasses.replace(stamped, repositories=frozenset())  # announces nothing
    assert post(door["url"] + "/saltcd/stamped", body, headers)[1].startswith("ignored: ")
    sources["stamped"] = stamped  # the operator lists it; the registry retries
    assert post(door["url"] + "/saltcd/stamped", body, headers)[0] == 200
    assert post(door["url"] + "/saltcd/stamped", body, headers)[0] == 409


def test_the_door_answers_413_before_reading_an_announced_body(door):
    import socket

    with socket.create_connection(("127.0.0.1", door["port"]), timeout=10) as sock:
        sock.sendall(b"POST /saltcd/registry HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n"
                     + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_a_chunked_body_over_the_cap_is_cut_off(door):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", door["port"], timeout=10)
    try:
        connection.request("POST", "/saltcd/registry", body=iter([b"x" * 3000] * 3),
                           headers={"Authorization": f"Bearer {TOKEN}", "Transfer-Encoding": "chunked"})
        assert connection.getresponse().status in (400, 413)
    except (ConnectionError, http.client.HTTPException):
        pass  # cut off: the connection closed
    finally:
        connection.close()
    assert door["fired"] == []


def _stamped(body, stamp=None):
    """The headers of a post of `body` to the `stamped` source, signed for `stamp` (now)."""
    import hashlib
    import hmac
    import time

    stamp = str(int(time.time())) if stamp is None else stamp
    signature = "sha256=" + hmac.new(b"stamp-secret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": signature, "X-Timestamp": stamp}


def test_a_timestamped_signature_is_accepted_once(door):
    import time

    body = PUSH_BODY
    headers = _stamped(body)
    assert post(door["url"] + "/saltcd/stamped", body, headers)[0] == 200
    assert post(door["url"] + "/saltcd/stamped", body, headers)[0] == 409
    status, text = post(door["url"] + "/saltcd/stamped", body, _stamped(body, str(int(time.time()) - 3600)))
    assert status == 401 and "replay or clock skew" in text
    assert len(door["fired"]) == 1


def test_a_post_the_bus_refused_is_not_accepted_and_its_retry_is_not_a_replay(door):
    body = PUSH_BODY
    headers = _stamped(body)
    door["bus"]["down"] = True
    status, text = post(door["url"] + "/saltcd/stamped", body, headers)
    assert (status, text) == (503, "event bus unavailable: not accepted, retry\n")
    assert door["fired"] == []
    door["bus"]["down"] = False
    assert post(door["url"] + "/saltcd/stamped", body, headers)[0] == 200  # the sender's retry
    assert post(door["url"] + "/saltcd/stamped", body, headers)[0] == 409  # and then it is a replay
    assert len(door["fired"]) == 1


def _stall(port, address, count):
    """`count` connections from `address` that announce a body to the `stamped`
    source and send none of it (anyone can: the signature needs the body)."""
    import socket

    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(address, 0))
        sock.sendall(b"POST /saltcd/stamped HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
                     b"X-Timestamp: 1\r\n\r\n")
        socks.append(sock)
    return socks


def _answer(sock, wait):
    """What the engine answered on `sock` within `wait` s (b"": it closed the
    connection without an answer), or None while it still waits for the body."""
    sock.settimeout(wait)
    try:
        return sock.recv(400)
    except TimeoutError:
        return None


def _signed_post(door, n):
    """A post the registry would make to `stamped` (a body of its own, so never a replay)."""
    body = b'{"events": []}' + b" " * n
    return post(door["url"] + "/saltcd/stamped", body, _stamped(body))


def test_a_sender_that_stalls_from_one_address_holds_half_of_an_hmac_sources_slots(door):
    """An HMAC source's slots can be taken by anyone (its signature needs the
    whole body). From one address, a sender that stalls holds half of them: the
    registry, from its own address, is still heard. A second address can fill
    the rest, and the source's bound holds; once they go, every slot is free."""
    import time

    engine, port = door["engine"], door["port"]
    share = engine.MAX_IN_FLIGHT_PER_ADDRESS
    held = _stall(port, "127.0.0.2", share)
    try:
        time.sleep(0.3)  # the engine has read every one's headers
        assert [_answer(sock, 0.05) for sock in held] == [None] * share
        (extra,) = _stall(port, "127.0.0.2", 1)
        held.append(extra)
        answer = _answer(extra, 5)
        assert answer.startswith(b"HTTP/1.1 503") and answer.endswith(b"too many posts in flight from one address\n")
        assert _signed_post(door, 1)[0] == 200  # from 127.0.0.1
        held += _stall(port, "127.0.0.3", engine.MAX_IN_FLIGHT - share)
        time.sleep(0.3)
        assert _signed_post(door, 2) == (503, "too many posts in flight\n")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while door["door"].in_flight_from and time.monotonic() < deadline:
        time.sleep(0.05)
    assert door["door"].in_flight_from == {} and door["door"].in_flight["stamped"] == 0
    assert _signed_post(door, 3)[0] == 200
    held = _stall(port, "127.0.0.2", share)  # the address's share is whole again
    try:
        assert [_answer(sock, 0.3) for sock in held] == [None] * share
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("peer, counted_as", [
    ("127.0.0.2", "127.0.0.2"),
    ("::ffff:127.0.0.2", "127.0.0.2"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("not an address", "not an address"),
])
def test_a_sender_is_counted_by_its_address_or_its_ipv6_64(peer, counted_as):
    assert _load_engine().sender_address(peer) == counted_as


def test_an_engine_envelope_is_accepted_once_in_its_window_and_only_with_the_key():
    body = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": MANIFEST, "repository": "saltcd/web", "tag": "dev"}, "request": {"host": "127.0.0.1:5000"}}]})
    data = engine_event("src-distribution", body)
    tag, nonces = "saltcd/ingress/src-distribution", Nonces()
    first = intake.classify(tag, data, SETTINGS, now=NOW + 1, engine_key=KEY, nonces=nonces)
    assert [(r["app"], r["env"]) for r in first.requests] == [("web", "dev")]
    assert first.source == {"kind": "registry", "origin": tag}
    reasons = [intake.classify(tag, data, SETTINGS, now=NOW + 2, engine_key=KEY, nonces=nonces).rejected,
               intake.classify(tag, engine_event("src-distribution", body), SETTINGS, now=NOW + 301,
                               engine_key=KEY, nonces=Nonces()).rejected,
               intake.classify(tag, engine_event("src-distribution", body), SETTINGS, now=NOW,
                               engine_key=b"another master's key" * 2, nonces=Nonces()).rejected,
               intake.classify(tag, engine_event("src-distribution", body), SETTINGS, now=NOW,
                               engine_key=None, nonces=Nonces()).rejected,
               intake.classify(tag, engine_event("src-distribution", body), SETTINGS, now=NOW,
                               engine_key=KEY).rejected,
               intake.classify(tag, {**data, "pushes": [{**data["pushes"][0], "tag": "qa"}]},
                               SETTINGS, now=NOW, engine_key=KEY, nonces=Nonces()).rejected]
    assert reasons == ["unauthenticated: nonce seen before: a replay",
                       "unauthenticated: envelope is 301 s old, outside push_window (300 s): a replay",
                       "unauthenticated: MAC does not match: not fired by this master's saltcd_webhook engine",
                       "unauthenticated: the ingress key is missing (is the saltcd_webhook engine running?)",
                       "unauthenticated: refused: no nonce cache to detect replays with",
                       "unauthenticated: MAC does not match: not fired by this master's saltcd_webhook engine"]


def test_the_ingress_key_is_created_once_and_private(tmp_path):
    import os
    import stat

    assert ingress_key.load(str(tmp_path)) is None
    key = ingress_key.load_or_create(str(tmp_path))
    assert len(key) == 32 and ingress_key.load_or_create(str(tmp_path)) == key
    assert stat.S_IMODE(os.stat(ingress_key.key_path(str(tmp_path))).st_mode) == 0o600


def test_the_bus_is_tried_twice_and_a_refusal_is_raised_not_swallowed(monkeypatch):
    import salt.utils.event

    class Refusing:
        """Salt's SaltEvent when it cannot connect: fire_event returns False."""
        made, destroyed = 0, 0

        def __init__(self):
            Refusing.made += 1

        def fire_event(self, data, tag):
            return False

        def destroy(self):
            Refusing.destroyed += 1

    monkeypatch.setattr(salt.utils.event, "get_master_event", lambda *args, **kwargs: Refusing())
    from saltcd.master import engines

    bus = engines.MasterBus({"sock_dir": "/nonexistent"})
    with pytest.raises(ConnectionError):
        bus.fire("saltcd/ingress/registry", {"pushes": [], "ignored": []})
    assert (Refusing.made, Refusing.destroyed) == (2, 2)


def test_a_signature_another_master_took_is_answered_ignored_not_refused(door):
    """Several masters sharing a store, each notified by the registry: the one that
    comes second answers 200 (a registry retries anything else), fires nothing."""
    import time

    from saltcd.ingress import ingress_auth

    body = PUSH_BODY
    headers = _stamped(body)
    taken = nonces.NonceCache(door["door"].nonces.cache, master="master-a")
    assert taken.first_sighting(ingress_auth.sha256_hex(headers["X-Hub-Signature-256"]), time.time())
    door["door"].nonces.master = "master-b"
    answer = post(door["url"] + "/saltcd/stamped", body, headers)
    assert answer == (200, "ignored: already accepted by another master\n")
    assert door["fired"] == []
