"""The registry reactor SLS rendered by Salt's own renderers: the hand-off carries
the body intact and header values only as digests."""

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
