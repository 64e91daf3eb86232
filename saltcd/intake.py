"""From an event on the master's bus to deploy requests.

Three doors lead in: a registry webhook (tag `salt/engines/hook/...` from the
webhook engine, or `salt/netapi/hook/...` from salt-api), a CI job's
`salt-call event.send saltcd/push {...}` (arrives wrapped, with the minion id
that the master verified), and an operator's `salt-run event.send saltcd/push`
on the master. Each becomes requests for configured app/env pairs, or a
rejection with a reason. Nothing here touches a minion.
"""

import time
from dataclasses import dataclass, field

from saltcd import ingress_auth, notifications, store
from saltcd.errors import NotFound

HOOK_PREFIXES = ("salt/engines/hook/", "salt/netapi/hook/")
SOURCE_PREFIX = "saltcd/"
CI_TAG = "saltcd/push"
MINION_FIELDS = ("cmd", "id")


@dataclass
class Verdict:
    """What one event yields: requests to persist, ignored pushes, or a rejection."""

    source: dict
    requests: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    rejected: str = None


def _source(tag, data):
    """Where an event came from: {"kind": registry|ci|operator, "origin": ...}."""
    if tag.startswith(HOOK_PREFIXES):
        return {"kind": "registry", "origin": tag[:120]}
    if isinstance(data, dict) and data.get("cmd") == "_minion_event" and "id" in data:
        return {"kind": "ci", "origin": str(data["id"])}
    return {"kind": "operator", "origin": "master"}


def _webhook_source(tag, settings):
    """The configured Source a hook tag names (`.../hook/saltcd/<name>`), or raise."""
    path = tag.split("/hook/", 1)[1]
    name = path[len(SOURCE_PREFIX):] if path.startswith(SOURCE_PREFIX) else None
    if not name or name not in settings.sources:
        raise notifications.PayloadError(f"no webhook source is configured for {path[:60]!r}")
    return settings.sources[name]


def _parse(tag, data, source, settings):
    """The Parsed pushes of an event, or raise PayloadError / Unauthenticated."""
    if source["kind"] == "registry":
        # The reactor lists which of the event's keys were minion fields.
        present = sorted(set(data.get("minion_fields") or []) | {k for k in MINION_FIELDS if k in data})
        if present:
            raise notifications.PayloadError(
                f"hook event carries minion fields {present}: fired by a minion, not the webhook")
        webhook = _webhook_source(tag, settings)
        ingress_auth.check(webhook, data)
        return notifications.PARSERS[webhook.format](data.get("body", b""))
    if tag != CI_TAG:
        raise notifications.PayloadError(f"unexpected event tag {tag[:80]!r}")
    payload = data.get("data") if source["kind"] == "ci" else data
    if not isinstance(payload, dict):
        raise notifications.PayloadError("event data is not an object")
    if settings.push_secret is not None:
        ingress_auth.check_push(settings.push_secret, payload)
    fields = {k: v for k, v in payload.items() if not k.startswith("_") and k != "signature"}
    return notifications.parse_generic(fields)


def classify(tag, data, settings, now=None):
    """Turn one event into a Verdict; `settings` is a validated config.Settings."""
    now = time.time() if now is None else now
    if not isinstance(tag, str) or not isinstance(data, dict):
        return Verdict(source={"kind": "unknown", "origin": "?"}, rejected="event is not a tag and a mapping")
    source = _source(tag, data)
    verdict = Verdict(source=source)
    try:
        parsed = _parse(tag, data, source, settings)
    except ingress_auth.Unauthenticated as exc:
        verdict.rejected = f"unauthenticated: {exc}"
        return verdict
    except notifications.PayloadError as exc:
        verdict.rejected = str(exc)
        return verdict
    verdict.ignored.extend(parsed.ignored)
    for push in parsed.pushes:
        app = settings.app_for_repository(push.repository)
        env = settings.env_for_tag(push.tag)
        if app is None:
            verdict.ignored.append(f"{push.repository}: no app deploys this repository")
            continue
        if env is None:
            verdict.ignored.append(f"{push.repository}:{push.tag}: tag maps to no environment")
            continue
        try:
            deployment = settings.deployment(app, env)
        except NotFound as exc:
            verdict.ignored.append(str(exc))
            continue
        if source["kind"] == "ci" and not settings.ci_allowed(source["origin"], app):
            # The id is the master-verified minion id: an allowlist is a sound anchor.
            verdict.requests.clear()
            verdict.rejected = f"minion {source['origin']!r} may not deploy app {app!r} (not in ci_minions)"
            return verdict
        verdict.requests.append({
            "id": store.new_id(now),
            "app": app,
            "env": env,
            "repository": str(push.repository),
            "tag": push.tag,
            "digest_hint": push.digest,
            "trigger": source,
            "received": now,
            "awaiting_approval": deployment.mode == "manual",
        })
    return verdict


def operator_request(settings, app, env, user="operator", now=None):
    """A request made by hand (`salt-run deploy.rollout`): deploy the env's tag."""
    now = time.time() if now is None else now
    deployment = settings.deployment(app, env)
    tags = sorted(tag for tag, mapped in settings.tag_environments.items() if mapped == env)
    if not tags:
        raise NotFound(f"no image tag maps to environment {env!r}")
    return {
        "id": store.new_id(now),
        "app": app,
        "env": env,
        "repository": str(deployment.repository),
        "tag": tags[0],
        "digest_hint": None,
        "trigger": {"kind": "operator", "origin": user},
        "received": now,
    }
