"""The saltcd_webhook engine on a real master: a registry push through HTTP
deploys, and only what saltcd uses of its notification (the pushes) crosses
the bus, the reaction and the job cache, never the body; a wrong token, an
unknown source, an oversize body, a sender outside `allow_from` or a push of a
repository the source may not announce is refused at the door
(401/404/413/403, or 200 `ignored:`), puts nothing on the bus and is counted in the store; a
`saltcd/ingress/...` event a minion forges or replays is rejected."""

import http.client
import json
import socket
import time
from pathlib import Path

import pytest

from saltcd.ingress import registry_events, webhook
from tests import posting

pytestmark = pytest.mark.integration

INGRESS_KEYS = {"pushes", "ignored", "received", "nonce", "mac"}
# In every notification distribution sends (request.useragent, source.instanceID),
# as JSON text: in nothing saltcd makes of one.
BODY_ONLY = ('"useragent"', '"instanceID"')
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def engine_port(lab):
    return next(e["saltcd_webhook"]["port"] for e in lab.master.config["engines"] if "saltcd_webhook" in e)


def post(lab, path, body, headers):
    """(status, answer text) of one POST, as the registry would make it."""
    return posting.post(f"http://127.0.0.1:{engine_port(lab)}/{path}", body,
                        {"Content-Type": "application/json", **headers})


def announce(lab, path, length, headers):
    """Send only the headers of a POST announcing `length` bytes; the status the engine answers."""
    lines = [f"POST /{path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", engine_port(lab)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def post_from(lab, address, path, body, headers):
    """The status of one POST sent from `address` (a loopback address of its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", engine_port(lab), timeout=10, source_address=(address, 0))
    try:
        connection.request("POST", f"/{path}", body=body, headers={"Content-Type": "application/json", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


def counted(lab, source, reason):
    data = lab.run.run("deploy.rejections", "limit=100").data
    return sum(r["count"] for r in data["counted"] if r["source"] == source and r["reason"] == reason)


def wait_counted(lab, source, reason, expected, timeout=30):
    """The count once it reaches `expected` (the store records each refusal on
    its own, so returning at the first increase would race the rest)."""
    deadline = time.time() + timeout
    while True:
        now = counted(lab, source, reason)
        if now >= expected or time.time() > deadline:
            return now
        time.sleep(1)


def events_since(lab, after):
    return lab.listener.get_events([(lab.master.id, "*")], after_time=after)


def fire_unwrapped(lab, minion, tag, data):
    """What any minion can do: an event on the master's bus without its id (the syndic path)."""
    preload = json.dumps({"events": [{"tag": tag, "data": data}]})
    ret = lab.minions[minion].salt_call_cli().run("event.fire_master", "{}", "saltcd/decoy", f"preload={preload}")
    assert ret.returncode == 0, ret


@pytest.fixture(scope="module")
def pushed(lab, webhook_token):
    """A real push of `door:dev` through the engine, and the ingress event it made."""
    start = time.time()
    digest = lab.push("door", "dev", "1.0.0")
    finished = lab.wait_for("saltcd/deploy/door/dev/finished", start).data
    ingress = [e for e in lab.events("saltcd/ingress/registry", start)
               if digest in [p.get("digest") for p in e.data.get("pushes") or []]]
    return {"digest": digest, "finished": finished, "ingress": ingress, "start": start}


def test_a_push_through_the_engine_deploys_and_no_header_reaches_the_bus(lab, pushed, webhook_token):
    assert pushed["finished"]["status"] == "succeeded" and pushed["finished"]["digest"] == pushed["digest"]
    assert set(lab.running_digests("door").values()) >= {pushed["digest"]}
    assert pushed["ingress"], "no saltcd/ingress/registry event carried the push"
    for event in pushed["ingress"]:
        assert set(event.data) - {"_stamp"} == INGRESS_KEYS
        assert [{k: v for k, v in p.items() if k != "media_type"} for p in event.data["pushes"]] == [
            {"repository": lab.repositories["door"], "tag": "dev", "digest": pushed["digest"]}]
        assert event.data["pushes"][0]["media_type"] in registry_events.MANIFEST_MEDIA_TYPES
        assert not [text for text in BODY_ONLY if text in json.dumps(event.data)]
    record = lab.history("door", "dev", limit=1)[0]
    assert record["trigger"] == {"kind": "registry", "origin": "saltcd/ingress/registry"}
    # Salt's own webhook engine is gone: no raw hook event, no token on the bus.
    assert lab.events("salt/engines/hook/*", 0.0) == []
    assert not [e for e in events_since(lab, 0.0) if webhook_token in json.dumps(e.data, default=str)]


def test_no_notification_body_reaches_the_reaction_or_the_job_cache(lab, pushed):
    """The reaction's arguments (salt/run/<jid>/new, kept in the job cache) are
    the pushes the engine parsed out, with its MAC: no registry notification
    text is in them, nor anywhere in the master's job cache."""
    deadline, reactions = time.time() + 60, []
    while time.time() < deadline and not reactions:
        reactions = [e for e in lab.events("salt/run/*/new", pushed["start"])
                     if e.data.get("fun") == "runner.deploy.accept" and pushed["digest"] in json.dumps(e.data)]
        time.sleep(0.5)
    assert reactions, "no deploy.accept reaction carried the push"
    for event in reactions:
        (handed,) = [a["data"] for a in event.data["fun_args"] if isinstance(a, dict) and "data" in a]
        assert handed["body"] is None and handed["pushes"] == pushed["ingress"][0].data["pushes"]
        assert not [text for text in BODY_ONLY if text in json.dumps(event.data)]
    found = []
    for path in Path(lab.master.config["cachedir"], "jobs").rglob("*"):
        try:
            blob = path.read_bytes() if path.is_file() else b""
        except FileNotFoundError:  # a temporary file renamed away meanwhile
            continue
        found += [f"{path}: {text}" for text in BODY_ONLY if text.encode() in blob]
    assert found == []


def test_a_sender_outside_allow_from_gets_403_before_its_body(lab, webhook_token):
    """`fenced` takes posts from 127.0.0.2 only: from 127.0.0.1 the answer is
    403 on the headers (the announced body is never sent) and is counted."""
    reason = "sender address not in the source's allow_from"
    auth = {"Authorization": f"Bearer {webhook_token}"}
    before, start = counted(lab, "fenced", reason), time.time()
    assert announce(lab, "saltcd/fenced", 1000, auth) == 403
    assert post(lab, "saltcd/fenced", b'{"events": []}', auth) == (403, reason + "\n")
    assert post_from(lab, "127.0.0.2", "saltcd/fenced", b'{"events": []}', auth) == 200
    assert wait_counted(lab, "fenced", reason, before + 2) == before + 2
    assert lab.events("saltcd/ingress/fenced", start) == []


def test_a_push_of_a_repository_the_source_may_not_announce_is_refused_and_deploys_nothing(
        lab, pushed, webhook_token):
    """`listed` may announce one repository no app deploys: a push of `door`
    through it is refused at the door (counted; answered 200, or the registry
    would hold back every later notification), fires nothing, deploys nothing."""
    repository = lab.repositories["door"]
    reason = f"source 'listed' may not announce repository '{repository}' (not in its `repositories`)"
    history = [r["id"] for r in lab.history("door", "dev")]
    before, start = counted(lab, "listed", webhook.counted_reason(reason)), time.time()
    host, path = repository.split("/", 1)
    body = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": MANIFEST, "repository": path, "tag": "dev", "digest": "sha256:" + "e" * 64},
        "request": {"host": host}}]}).encode()
    assert post(lab, "saltcd/listed", body, {"Authorization": f"Bearer {webhook_token}"}) == (
        200, f"ignored: {reason}\n")
    assert wait_counted(lab, "listed", webhook.counted_reason(reason), before + 1) == before + 1
    assert any(r["reason"] == reason for r in lab.run.run("deploy.rejections", "limit=100").data["recent"])
    time.sleep(2)
    assert lab.events("saltcd/ingress/listed", start) == []
    assert not [e for e in events_since(lab, start) if "e" * 64 in json.dumps(e.data, default=str)]
    assert [r["id"] for r in lab.history("door", "dev")] == history
    assert set(lab.running_digests("door").values()) >= {pushed["digest"]}


def test_wrong_token_is_refused_at_the_door_counted_and_nothing_is_fired(lab):
    reason = "unauthenticated: wrong credential in Authorization"
    before = counted(lab, "registry", reason)
    start = time.time()
    body = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": "saltcd/door",
        "tag": "dev", "digest": "sha256:" + "a" * 64}, "request": {"host": lab.registry.host}}]}).encode()
    for _ in range(20):
        status, text = post(lab, "saltcd/registry", body, {"Authorization": "Bearer not-the-token"})
        assert (status, text.strip()) == (401, reason)
    assert wait_counted(lab, "registry", reason, before + 20) == before + 20
    time.sleep(1)
    # Only what these posts could have fired (their made-up digest): the
    # registry's own notifications (other tests' pulls, its retries) may arrive meanwhile.
    fired = [e for e in events_since(lab, start) if "a" * 64 in json.dumps(e.data, default=str)
             or "not-the-token" in json.dumps(e.data, default=str)]
    assert not [e for e in fired if e.tag.startswith(("saltcd/ingress/", "salt/engines/hook/", "saltcd/rejected"))]
    assert not [e for e in fired if "not-the-token" in json.dumps(e.data, default=str)]
    recent = lab.run.run("deploy.rejections", "limit=100").data["recent"]
    assert any(r["reason"] == reason for r in recent)
    assert "not-the-token" not in json.dumps(recent)


def test_unknown_source_and_oversize_are_refused_before_the_body(lab, webhook_token):
    auth = {"Authorization": f"Bearer {webhook_token}"}
    before = counted(lab, "registry", "body larger than max_body_bytes")
    assert post(lab, "saltcd/elsewhere", b"{}", auth)[0] == 404
    assert post(lab, "not/saltcd", b"{}", auth)[0] == 404
    # 100 MB announced, none sent: the answer comes before the body.
    assert announce(lab, "saltcd/registry", 100 * 1048576, auth) == 413
    assert announce(lab, "saltcd/registry", 1048576 + 1, auth) == 413
    assert wait_counted(lab, "registry", "body larger than max_body_bytes", before + 2) == before + 2


def test_senders_without_the_token_take_no_slot(lab, webhook_token):
    """A wrong token is refused on the headers: the body is dropped as it comes
    (the 401 follows it), so stalled senders without the token never fill the
    slots of the token's source."""
    before = counted(lab, "registry", "unauthenticated: wrong credential in Authorization")
    stalled = stall(lab, webhook_engine_cap() + 4, {"Authorization": "Bearer not-the-token"})
    try:
        time.sleep(0.5)
        assert post(lab, "saltcd/registry", b'{"events": []}', {"Authorization": f"Bearer {webhook_token}"})[0] == 200
    finally:
        for sock in stalled:
            sock.close()
    expected = before + webhook_engine_cap() + 4
    assert wait_counted(lab, "registry", "unauthenticated: wrong credential in Authorization", expected) == expected


def stall(lab, count, headers, address="127.0.0.1"):
    """`count` connections from `address` that announce a 1000-byte POST to
    /saltcd/registry and send no body."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": "1000"}.items())
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", engine_port(lab)), timeout=10, source_address=(address, 0))
        sock.sendall(f"POST /saltcd/registry HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        socks.append(sock)
    return socks


def hold_every_slot(lab, cap, headers, tries=5):
    """`cap` stalled senders, none of them answered: every slot is held, half
    from 127.0.0.2 and half from 127.0.0.3 (one address holds at most half). A
    few tries, because the lab's registry posts its own notifications (other
    tests' pulls) and one of them may hold a slot for a moment; a slot that
    never came back fails every try."""
    for _ in range(tries):
        stalled = stall(lab, cap // 2, headers, "127.0.0.2") + stall(lab, cap - cap // 2, headers, "127.0.0.3")
        time.sleep(0.5)  # the engine has read every one's headers
        if not any(answered(sock) for sock in stalled):
            return stalled
        for sock in stalled:
            sock.close()
        time.sleep(1)
    raise AssertionError(f"{cap} stalled senders could not all hold a slot in {tries} tries")


def answered(sock):
    """Did the engine answer this connection already (instead of waiting for its body)?"""
    sock.settimeout(0.2)
    try:
        return bool(sock.recv(64))
    except TimeoutError:
        return False


def test_one_address_holds_at_most_half_the_slots(lab, webhook_token):
    """A sender that stalls from one address gets 503 past its half, and the
    registry (the lab's posts come from 127.0.0.1) is still heard."""
    auth = {"Authorization": f"Bearer {webhook_token}"}
    share = webhook.MAX_IN_FLIGHT_PER_ADDRESS
    stalled = stall(lab, share, auth, "127.0.0.2")
    try:
        time.sleep(0.5)  # the engine has read every one's headers
        assert not any(answered(sock) for sock in stalled)
        (extra,) = stall(lab, 1, auth, "127.0.0.2")
        stalled.append(extra)
        extra.settimeout(10)
        answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and answer.endswith(b"too many posts in flight from one address\n")
        assert post(lab, "saltcd/registry", b'{"events": []}', auth)[0] == 200
    finally:
        for sock in stalled:
            sock.close()


def test_bodies_read_at_once_are_bounded_and_the_slots_come_back(lab, webhook_token):
    """Senders that announce a body and stall hold a slot each; past the cap
    the engine answers 503 at once; once they go, every slot is free again."""
    auth = {"Authorization": f"Bearer {webhook_token}"}
    cap = webhook_engine_cap()
    for _ in range(2):  # the second round finds all `cap` slots again
        stalled = hold_every_slot(lab, cap, auth)
        try:
            assert announce(lab, "saltcd/registry", 1000, auth) == 503
        finally:
            for sock in stalled:
                sock.close()
        time.sleep(0.5)
    # Accepted at the door (a notification without events: it deploys nothing).
    assert post(lab, "saltcd/registry", b'{"events": []}', auth)[0] == 200


def test_a_method_other_than_post_is_refused_before_its_body(lab):
    """Not a way around the token check and the slot count: 405 on the headers."""
    with socket.create_connection(("127.0.0.1", engine_port(lab)), timeout=10) as sock:
        sock.sendall(b"PUT /saltcd/registry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
        assert int(sock.recv(4096).split(b" ", 2)[1]) == 405


def webhook_engine_cap():
    """The engine's MAX_IN_FLIGHT, read from its module."""
    return webhook.MAX_IN_FLIGHT


def test_forged_and_replayed_ingress_events_from_a_minion_are_rejected(lab, pushed):
    real = {k: pushed["ingress"][0].data[k] for k in INGRESS_KEYS}
    forged = {**real, "received": time.time(), "nonce": "0" * 32}  # fresh, but no key to sign with
    start = time.time()
    fire_unwrapped(lab, "dev-2", "saltcd/ingress/registry", forged)
    rejected = lab.wait_for("saltcd/rejected", start, timeout=60).data
    assert "MAC does not match" in rejected["reason"], rejected
    start = time.time()
    fire_unwrapped(lab, "dev-2", "saltcd/ingress/registry", real)  # a copy of the real one
    rejected = lab.wait_for("saltcd/rejected", start, timeout=60).data
    assert "nonce seen before" in rejected["reason"] or "a replay" in rejected["reason"], rejected
    start = time.time()
    ret = lab.minions["dev-2"].salt_call_cli().run("event.send", "saltcd/ingress/registry", json.dumps(real))
    assert ret.returncode == 0, ret
    rejected = lab.wait_for("saltcd/rejected", start, timeout=60).data
    assert "fired by a minion" in rejected["reason"], rejected
    assert len([r for r in lab.history("door", "dev") if r["trigger"]["kind"] == "registry"]) == 1
