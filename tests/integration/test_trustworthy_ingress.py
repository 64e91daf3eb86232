"""The ingress on real parts: every bad input is refused with a reason (at the
webhook's door, or by the intake's own verdict) and changes nothing; a signed
push is accepted once and not when stale; authenticated pushes, Docker Hub and
CI payloads deploy; the registry's digest wins; manual environments wait;
promotion goes by digest."""

import json
import time
import urllib.error
import urllib.request

import pytest

from sandbox import layout
from sandbox.registry import LocalRegistry

pytestmark = pytest.mark.integration

GOOD_ENVELOPE = {"events": [{"action": "push", "target": {
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "repository": "saltcd/guard", "tag": "dev", "digest": "sha256:" + "a" * 64},
    "request": {"host": "HOST"}}]}


def envelope(lab, **target):
    env = json.loads(json.dumps(GOOD_ENVELOPE).replace("HOST", lab.registry.host))
    env["events"][0]["target"].update(target)
    return json.dumps(env).encode()


def post(lab, path, body, headers):
    """POST to the saltcd_webhook engine: (HTTP status, answer text)."""
    port = lab.master.config["engines"][0]["saltcd_webhook"]["port"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def fleet_snapshot(lab, app):
    return {m["id"]: lab.container(m["id"], app) for m in lab.fleet}


def history_ids(lab, app, env):
    return [r["id"] for r in lab.history(app, env, limit=1000)]


def intake_verdict(lab, after, reason, timeout=60):
    """The `deploy.accept` return (its `salt/run/<jid>/ret` event, as the job cache
    keeps it) whose rejection contains `reason`: the intake's own verdict."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for event in lab.events("salt/run/*/ret", after):
            ret = event.data.get("return")
            if (event.data.get("fun") == "runner.deploy.accept" and isinstance(ret, dict)
                    and reason in str(ret.get("rejected"))):
                return ret
        time.sleep(0.5)
    raise AssertionError(f"no deploy.accept verdict rejecting {reason!r} within {timeout}s")


def assert_refused(lab, after, reason, app="guard", env="dev"):
    """The intake said no, with `reason`, and kept nothing: no request, no rollout."""
    verdict = intake_verdict(lab, after, reason)
    assert verdict["accepted"] == [] and verdict.get("drains", []) == [], verdict
    rejected = lab.wait_for("saltcd/rejected", after, timeout=60).data
    assert reason in rejected["reason"], rejected
    return verdict


def refused_count(lab, source, reason):
    """How many posts `deploy.rejections` counts for (source, reason)."""
    data = lab.run.run("deploy.rejections", "limit=100").data
    return sum(row["count"] for row in data["counted"] if row["source"] == source and row["reason"] == reason)


@pytest.fixture(scope="module")
def guard(lab):
    """App `guard` runs on dev: anything that changes it fails the test."""
    start = time.time()
    lab.push("guard", "dev", "1.0.0")
    assert lab.wait_for("saltcd/deploy/guard/dev/finished", start).data["status"] == "succeeded"
    return lab


def _cases():
    token = "TOKEN"
    auth = {"Authorization": f"Bearer {token}"}
    # Refused at the door (saltcd_webhook): an HTTP status, nothing on the bus.
    door = [
        ("no credential", "saltcd/registry", lambda lab: envelope(lab), {}, 401, "missing Authorization header"),
        ("wrong token", "saltcd/registry", lambda lab: envelope(lab), {"Authorization": "Bearer nope"},
         401, "wrong credential in Authorization"),
        ("token without Bearer", "saltcd/registry", lambda lab: envelope(lab), {"Authorization": token},
         401, "wrong credential in Authorization"),
        ("not UTF-8", "saltcd/registry", lambda lab: b"\xff\xfe\x00", auth, 400, "not UTF-8"),
        ("unknown source", "saltcd/elsewhere", lambda lab: envelope(lab), auth, 404,
         "no webhook source is configured"),
        ("hub without token", "saltcd/hub",
         lambda lab: b'{"push_data": {"tag": "dev"}, "repository": {"repo_name": "x/y"}}', {},
         401, "missing Authorization header"),
        # Authenticated, but the body does not parse: refused there too, with
        # the parser's reason (it used to go on to the intake, which refused it).
        ("not JSON", "saltcd/registry", lambda lab: b"{events:", auth, 400, "not JSON"),
        ("JSON array", "saltcd/registry", lambda lab: b"[1, 2]", auth, 400, "not an object"),
        ("JSON string", "saltcd/registry", lambda lab: b'"push"', auth, 400, "not an object"),
        ("no events", "saltcd/registry", lambda lab: b'{"events": "x"}', auth, 400, "no `events` list"),
        ("tag of 300 characters", "saltcd/registry", lambda lab: envelope(lab, tag="t" * 300), auth,
         400, "invalid tag"),
        ("path traversal", "saltcd/registry", lambda lab: envelope(lab, repository="../../etc"), auth,
         400, "invalid repository path"),
        ("shell in repository", "saltcd/registry", lambda lab: envelope(lab, repository="app; rm -rf /"),
         auth, 400, "invalid repository path"),
        ("non-hex digest", "saltcd/registry", lambda lab: envelope(lab, digest="sha256:" + "z" * 64), auth,
         400, "invalid digest"),
        ("hub shell in tag", "saltcd/hub",
         lambda lab: json.dumps({"push_data": {"tag": "$(id)"},
                                 "repository": {"repo_name": lab.repositories["guard"]}}).encode(),
         auth, 400, "invalid tag"),
    ]
    good = {"tag": "dev"}
    ci = [
        ("CI: shell in repository", "ci-1", {"repository": "app; rm -rf /", **good}, "invalid repository"),
        ("CI: command substitution", "ci-1", {"repository": "$(id)", **good}, "invalid repository"),
        ("CI: path traversal", "ci-1", {"repository": "../../etc", **good}, "invalid registry host '..'"),
        ("CI: tag of 300 characters", "ci-1", {"repository": "REPO", "tag": "t" * 300}, "invalid tag"),
        ("CI: non-hex digest", "ci-1", {"repository": "REPO", "tag": "dev", "digest": "sha256:xyz"},
         "invalid digest"),
        ("CI: shell in tag", "ci-1", {"repository": "REPO", "tag": "dev;reboot"}, "invalid tag"),
        ("CI: no tag", "ci-1", {"repository": "REPO"}, "missing tag"),
        ("CI: no repository", "ci-1", good, "missing repository"),
        ("CI: repository not a string", "ci-1", {"repository": 5, **good}, "must be a non-empty string"),
        ("CI: minion not on the allowlist", "dev-1", {"repository": "REPO", **good},
         "may not deploy app 'guard'"),
    ]
    unsigned = [
        ("CI: no signature", "ci-1", {"repository": "REPO", **good}, None,
         "missing signature (every saltcd/push must be signed)"),
        ("CI: signature of another tag", "ci-1", {"repository": "REPO", **good}, {"tag": "qa"},
         "signature does not match the payload"),
    ]
    forged = [
        ("forged engine ingress event from a minion", "saltcd/ingress/registry", "fired by a minion"),
        ("forged salt-api hook from a minion", "salt/netapi/hook/saltcd/registry", "fired by a minion"),
    ]
    operator = [
        ("operator: double slash", {"repository": "127.0.0.1:1/a//b", **good}, "invalid repository"),
        ("operator: uppercase digest", {"repository": "REPO", "tag": "dev", "digest": "sha256:" + "A" * 64},
         "invalid digest"),
        ("operator: tag starting with a dash", {"repository": "REPO", "tag": "-dev"}, "invalid tag"),
    ]
    for name, path, body, headers, status, reason in door:
        yield pytest.param("door", (path, body, headers, status), reason, id=name)
    for name, minion, payload, reason in ci:
        yield pytest.param("ci", (minion, payload), reason, id=name)
    for name, minion, payload, signed_as, reason in unsigned:
        yield pytest.param("unsigned", (minion, payload, signed_as), reason, id=name)
    yield pytest.param("syndic", None, "missing signature",
                       id="minion forging an unwrapped operator event (Salt's syndic events path)")
    for name, tag, reason in forged:
        yield pytest.param("forged", tag, reason, id=name)
    for name, payload, reason in operator:
        yield pytest.param("operator", payload, reason, id=name)


@pytest.mark.parametrize("channel, what, reason", list(_cases()))
def test_bad_input_is_rejected_with_a_reason_and_changes_nothing(guard, webhook_token, channel, what, reason):
    lab = guard
    before, history = fleet_snapshot(lab, "guard"), history_ids(lab, "guard", "dev")
    start = time.time()
    repo = lab.repositories["guard"]
    if channel == "door":
        path, body, headers, status = what
        headers = {k: v.replace("TOKEN", webhook_token) for k, v in headers.items()}
        answer = post(lab, path, body(lab), headers)
        assert answer[0] == status and reason in answer[1], answer
        assert webhook_token not in answer[1]
    elif channel == "ci":
        minion, payload = what
        lab.ci_push(minion, {k: (repo if v == "REPO" else v) for k, v in payload.items()})
    elif channel == "unsigned":
        minion, payload, signed_as = what
        payload = {k: (repo if v == "REPO" else v) for k, v in payload.items()}
        if signed_as:  # a signature made for other fields
            made = json.loads(lab.signed({**payload, **signed_as}))
            payload = {**made, **payload}
        ret = lab.minions[minion].salt_call_cli().run("event.send", "saltcd/push", json.dumps(payload))
        assert ret.returncode == 0, ret
    elif channel == "syndic":
        forged = {"events": [{"tag": "saltcd/push", "data": {"repository": repo, "tag": "dev"}}]}
        ret = lab.minions["dev-2"].salt_call_cli().run(
            "event.fire_master", "{}", "saltcd/decoy", f"preload={json.dumps(forged)}")
        assert ret.returncode == 0, ret
    elif channel == "forged":
        # What a minion can fire: it lacks the token (and the engine's key).
        body = envelope(lab, digest=None, tag="dev").decode()
        payload = {"body": body, "headers": {"Authorization": "Bearer a-guess"}}
        ret = lab.minions["dev-2"].salt_call_cli().run("event.send", what, json.dumps(payload))
        assert ret.returncode == 0, ret
    else:
        payload = lab.signed({k: (repo if v == "REPO" else v) for k, v in what.items()})
        ret = lab.run.run("event.send", "saltcd/push", f"data={payload}")
        assert ret.returncode == 0, ret
    if channel != "door":
        verdict = assert_refused(lab, start, reason)
        assert webhook_token not in json.dumps(verdict)
    assert history_ids(lab, "guard", "dev") == history
    assert fleet_snapshot(lab, "guard") == before


def test_a_captured_push_is_accepted_once(guard):
    """A signed payload seen once (a CI log, a process list) cannot be used again:
    not from the CI minion, not unwrapped from another minion, not later."""
    lab = guard
    captured = lab.signed({"repository": lab.repositories["guard"], "tag": "dev"})
    start = time.time()
    ret = lab.minions["ci-1"].salt_call_cli().run("event.send", "saltcd/push", captured)
    assert ret.returncode == 0, ret
    assert lab.wait_for("saltcd/deploy/guard/dev/finished", start).data["status"] in ("succeeded", "unchanged")
    before, history = fleet_snapshot(lab, "guard"), history_ids(lab, "guard", "dev")
    start = time.time()
    ret = lab.minions["ci-1"].salt_call_cli().run("event.send", "saltcd/push", captured)
    assert ret.returncode == 0, ret
    assert_refused(lab, start, "replay: this push's nonce was seen before")
    start = time.time()
    # Another minion, through Salt's events path: unwrapped, then dressed as ci-1's.
    for data in (json.loads(captured), {"cmd": "_minion_event", "id": "ci-1", "data": json.loads(captured)}):
        syndic = {"events": [{"tag": "saltcd/push", "data": data}]}
        ret = lab.minions["dev-2"].salt_call_cli().run(
            "event.fire_master", "{}", "saltcd/decoy", f"preload={json.dumps(syndic)}")
        assert ret.returncode == 0, ret
        assert_refused(lab, start, "unwrapped saltcd/push names no minion" if "id" not in data
                       else "replay: this push's nonce was seen before")
        start = time.time()
    start = time.time()
    stale = lab.signed({"repository": lab.repositories["guard"], "tag": "dev"}, timestamp=time.time() - 3600)
    ret = lab.minions["ci-1"].salt_call_cli().run("event.send", "saltcd/push", stale)
    assert ret.returncode == 0, ret
    assert_refused(lab, start, "replay or clock skew")
    assert history_ids(lab, "guard", "dev") == history
    assert fleet_snapshot(lab, "guard") == before


def test_rejections_are_on_record_without_secrets(guard, webhook_token):
    records = guard.run.run("deploy.rejections", "limit=100").data
    # The runner's refusals in full; the door's (401/404/413) as counts.
    assert len(records["recent"]) >= 25 and sum(row["count"] for row in records["counted"]) > 0
    assert webhook_token not in json.dumps(records)
    assert guard.push_secret not in json.dumps(records)
    assert not any(signature in json.dumps(records) for signature in guard.signatures)
    assert {"time", "source", "reason", "tag"} <= set(records["recent"][0])


def test_registry_with_the_wrong_token_deploys_nothing(lab, lab_root, webhook_port, rogue_registry_port):
    rogue = LocalRegistry(lab_root / "rogue", port=rogue_registry_port,
                          notify_url=f"http://127.0.0.1:{webhook_port}/saltcd/registry",
                          notify_headers=layout.notify_headers("not-the-token"))
    reason = "unauthenticated: wrong credential in Authorization"
    before = refused_count(lab, "registry", reason)
    rogue.start()
    try:
        start = time.time()
        lab.push("rogue", "dev", "1.0.0")
            # The engine refuses it at the door (401) and counts it: nothing on the bus.
        deadline, counted = time.time() + 60, before
        while time.time() < deadline and counted == before:
            time.sleep(1)
            counted = refused_count(lab, "registry", reason)
    finally:
        rogue.stop()
    assert counted > before, "the rogue registry's notification was not refused on record"
    # (The lab's other registries notify the same webhook: only the rogue's count.)
    assert [e for e in lab.events("saltcd/ingress/*", start) if "saltcd/rogue" in str(e.data.get("pushes"))] == []
    assert lab.history("rogue", "dev") == []
    assert all(d is None for d in lab.running_digests("rogue").values())


def test_docker_hub_payload_triggers_a_rollout(lab, webhook_token):
    start = time.time()
    digest = lab.push("hub", "dev", "1.0.0")
    assert lab.wait_for("saltcd/deploy/hub/dev/finished", start).data["status"] == "succeeded"
    client = lab.hosts["dev-1"].client()
    client.containers.get("hub").remove(force=True)  # drift, so the Hub trigger has work to do
    client.close()
    start = time.time()
    body = json.dumps({"push_data": {"tag": "dev", "pusher": "ci"},
                       "repository": {"repo_name": lab.repositories["hub"]}}).encode()
    assert post(lab, "saltcd/hub", body, layout.notify_headers(webhook_token))[0] == 200
    data = lab.wait_for("saltcd/deploy/hub/dev/finished", start).data
    assert data["status"] == "succeeded" and data["digest"] == digest
    assert lab.running_digests("hub")["dev-1"] == digest
    record = lab.history("hub", "dev", limit=1)[0]
    assert record["trigger"] == {"kind": "registry", "origin": "saltcd/ingress/hub"}


def test_a_signed_digest_the_registry_lacks_and_a_missing_tag_deploy_nothing(lab):
    start = time.time()
    lab.push("truth", "dev", "1.0.0")
    assert lab.wait_for("saltcd/deploy/truth/dev/finished", start).data["status"] == "succeeded"
    before = fleet_snapshot(lab, "truth")
    liar = "sha256:" + "b" * 64
    start = time.time()
    # A signed digest is a pin (tests/integration/test_fail_closed.py): one the
    # repository does not have is refused, not swapped for what the tag holds.
    lab.ci_push("ci-1", {"repository": lab.repositories["truth"], "tag": "dev", "digest": liar})
    data = lab.wait_for("saltcd/deploy/truth/dev/finished", start).data
    assert data["status"] == "failed" and data["digest"] is None, data
    assert "signed digest refused" in data["reason"] and "has no manifest" in data["reason"]
    record = lab.history("truth", "dev", limit=1)[0]
    assert record["pinned"] == liar and record["signed_digest"] is True
    start = time.time()
    lab.ci_push("ci-1", {"repository": lab.repositories["truth"], "tag": "qa"})  # never pushed
    data = lab.wait_for("saltcd/deploy/truth/qa/finished", start).data
    assert data["status"] == "failed" and "does not exist" in data["reason"]
    assert fleet_snapshot(lab, "truth") == before


def test_manual_prod_waits_for_approval_and_promotion_goes_by_digest(lab):
    start = time.time()
    qa_digest = lab.push("gated", "qa", "1.0.0")
    assert lab.wait_for("saltcd/deploy/gated/qa/finished", start).data["status"] == "succeeded"
    # A push of :prod waits: nothing runs until someone approves.
    start = time.time()
    prod_digest = lab.push("gated", "prod", "9.9.9")
    lab.wait_for("saltcd/deploy/gated/prod/awaiting_approval", start, timeout=60)
    time.sleep(2)
    assert lab.running_digests("gated")["prod-1"] is None
    status = lab.run.run("deploy.status", "app=gated", "env=prod").data["gated"]["prod"]
    assert status["mode"] == "manual" and len(status["awaiting_approval"]) == 1
    ret = lab.run.run("deploy.approve", "app=gated", "env=prod")
    assert ret.returncode == 0 and ret.data["status"] == "succeeded", ret.data
    assert ret.data["approved_by"] and ret.data["to_digest"] == prod_digest
    assert lab.running_digests("gated")["prod-1"] == prod_digest
    # Promotion deploys what was healthy in qa, whatever :prod points to.
    ret = lab.run.run("deploy.promote", "app=gated", "from=qa", "to=prod")
    assert ret.returncode == 0 and ret.data["status"] == "succeeded", ret.data
    assert ret.data["trigger"]["kind"] == "promote" and ret.data["to_digest"] == qa_digest
    assert lab.running_digests("gated")["prod-1"] == qa_digest
    refused = lab.run.run("deploy.promote", "app=gated", "from=dev", "to=prod")
    assert refused.returncode != 0 and "no healthy rollout to promote" in refused.data["error"]
