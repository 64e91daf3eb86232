"""The registry reactor SLS rendered by Salt's own renderers: from the
saltcd_webhook engine, only the reduced data (pushes, reasons, MAC) is handed
on, never a body; from salt-api's hook, the body intact and header values only
as digests."""

import hashlib

import salt.config
import salt.loader
import salt.template


def test_reactor_passes_body_and_only_digests_of_headers(repo_root):
    opts = salt.config.master_config(None)
    renderers = salt.loader.render(opts, {})
    data = {"body": b"\xff not utf-8 \x00", "_stamp": "2026-11-26T00:00:00",
            "headers": {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}}
    high = salt.template.compile_template(
        str(repo_root / "reactor" / "registry_push.sls"), renderers, opts["renderer"],
        opts["renderer_blacklist"], opts["renderer_whitelist"],
        tag="salt/engines/hook/saltcd/registry", data=data)
    (reaction,) = high.values()
    args = reaction["runner.deploy.accept"][0]["args"]
    handed = args[1]["data"]
    assert args[0]["tag"] == "salt/engines/hook/saltcd/registry"
    assert handed["body"] == data["body"]
    assert "s3cret" not in repr(high)
    assert handed["header_names"] == ["Authorization", "Content-Type"]
    assert handed["header_sha256"][0] == hashlib.sha256(b"Bearer s3cret").hexdigest()
    assert handed["minion_fields"] == []


def test_reactor_hands_on_only_the_engine_s_reduced_data(repo_root):
    """What the reaction's arguments (salt/run/<jid>/new, the job cache) hold for
    an engine event: the pushes and reasons as the MAC covers them, no body."""
    from saltcd.ingress import ingress_key, intake, registry_events
    from tests.unit.test_ingress_reduced import KEY, Nonces, settings

    body = ('{"events": [{"id": "e-7f3a", "action": "push", "target": {"mediaType": '
            '"application/vnd.docker.distribution.manifest.v2+json", "repository": "saltcd/web", "tag": "1.0", '
            '"digest": "sha256:' + "d" * 64 + '"}, "request": {"host": "127.0.0.1:5000", "useragent": "ua-x"}}, '
            '{"action": "pull"}]}')
    event = ingress_key.envelope(KEY, "registry", ingress_key.reduced(registry_events.parse_distribution(body)))
    opts = salt.config.master_config(None)
    renderers = salt.loader.render(opts, {})
    high = salt.template.compile_template(
        str(repo_root / "reactor" / "registry_push.sls"), renderers, opts["renderer"],
        opts["renderer_blacklist"], opts["renderer_whitelist"],
        tag="saltcd/ingress/registry", data={**event, "_stamp": "2026-11-26T00:00:00"})
    (reaction,) = high.values()
    handed = reaction["runner.deploy.accept"][0]["args"][1]["data"]
    assert {k: handed[k] for k in ("pushes", "ignored", "received", "nonce", "mac")} == {
        k: event[k] for k in ("pushes", "ignored", "received", "nonce", "mac")}
    assert handed["pushes"][0]["tag"] == "1.0"  # YAML kept it text
    assert handed["body"] is None and handed["header_names"] == [] and handed["minion_fields"] == []
    assert not [text for text in ("e-7f3a", "useragent", "ua-x", "events") if text in repr(high)]
    # ...and the runner takes it: the MAC still matches after the YAML hand-off.
    verdict = intake.classify("saltcd/ingress/registry", handed, settings(), now=event["received"] + 1,
                              engine_key=KEY, nonces=Nonces())
    assert verdict.rejected is None and verdict.ignored[0] == "event 1 (pull): not a push"


def _render_ci(repo_root, data):
    opts = salt.config.master_config(None)
    renderers = salt.loader.render(opts, {})
    high = salt.template.compile_template(
        str(repo_root / "reactor" / "ci_push.sls"), renderers, opts["renderer"],
        opts["renderer_blacklist"], opts["renderer_whitelist"], tag="saltcd/push", data=data)
    (reaction,) = high.values()
    return high, reaction["runner.deploy.accept"][0]["args"]


def test_ci_reactor_passes_only_a_digest_of_the_signature(repo_root):
    from saltcd import ci_push
    payload = ci_push.payload("127.0.0.1:5000/saltcd/web", "dev", "p" * 32, digest="sha256:" + "a" * 64)
    wrapped = {"id": "ci-1", "cmd": "_minion_event", "tag": "saltcd/push", "_stamp": "2026-11-26T00:00:00",
               "data": {**payload, "__pub_fun": "event.send", "signature_sha256": ["forged"]}}
    unwrapped = {**payload, "_stamp": "2026-11-26T00:00:00"}
    handed = []
    for data in (wrapped, unwrapped):
        high, args = _render_ci(repo_root, data)
        assert args[0]["tag"] == "saltcd/push"
        assert payload["signature"] not in repr(high) and payload["signature"][7:] not in repr(high)
        handed.append(args[1]["data"])
    digest = hashlib.sha256(payload["signature"].encode()).hexdigest()
    fields = {k: payload.get(k) for k in ("repository", "tag", "digest", "timestamp", "nonce")}
    assert handed[0] == {"id": "ci-1", "cmd": "_minion_event", "data": {**fields, "signature_sha256": [digest]}}
    assert handed[1] == {"id": None, "cmd": None, "data": handed[0]["data"]}  # the same check


def test_ci_reactor_hands_over_odd_shapes_for_the_runner_to_reject(repo_root):
    for data in ({"id": "ci-1", "cmd": "_minion_event", "data": "not a mapping"},
                 {"repository": 5, "signature": 7}, {}):
        _, args = _render_ci(repo_root, data)
        assert args[1]["data"]["data"]["signature_sha256"] == []
