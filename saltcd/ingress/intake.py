"""From an event on the master's bus to deploy requests.

Two doors lead in: a registry webhook (tag `saltcd/ingress/<source>` from
the saltcd_webhook engine, which authenticated the request at the door,
reduced its body to the pushes in it (checked again here) and vouches for
the event with a MAC made with a master-local key; or
`salt/netapi/hook/...` from salt-api, with header digests), and a CI job's
`salt-call event.send saltcd/push {...}`, signed with the push secret (its
app's own, or the global one), which arrives wrapped with the sending minion's
id. Each becomes requests for configured app/env pairs, or a rejection with a
reason. Nothing here touches a minion, and nothing here raises on hostile
input: every malformed event becomes a rejection.

What the bus cannot prove: Salt's `events` path (the one syndics use) lets any
minion put any data on the bus, a wrapped-looking `{"cmd", "id", "data"}` with
another minion's id included. So the id is checked against `ci_minions` but
is not what authenticates a push: the signature is, and an app with its own
`push_secret` cannot be pushed with another app's key. An unwrapped
`saltcd/push` names no minion at all and is refused (operators use
`salt-run deploy.rollout`).
"""

import logging
import time
from dataclasses import dataclass, field

from saltcd import store, vocabulary
from saltcd.config import references
from saltcd.errors import NotFound
from saltcd.ingress import ingress_auth, ingress_key, registry_events
from saltcd.ingress.nonces import SeenElsewhere

log = logging.getLogger(__name__)

# `salt/engines/hook/` is what Salt's own webhook engine fires; the shipped
# wiring no longer routes it (saltcd_webhook fires saltcd/ingress/ instead),
# but a master still wired the old way is checked the same as salt-api's.
MINION_FIELDS = ("cmd", "id")
# Requests one event may make: a registry batches a few events per envelope,
# and each push becomes a request (and, superseded, a record), so a body full
# of pushes must not become thousands of them.
MAX_PUSHES = 50


# Event text in log lines and reasons goes through this (escapes newlines & co).
shown = registry_events.shown


@dataclass
class Verdict:
    """What one event yields: requests to persist, ignored pushes, or a rejection."""

    source: dict
    requests: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    rejected: str = None


class NotAllowed(Exception):
    """An authentic push its sender may not make (refused before its nonce is claimed)."""


UNWRAPPED = ("an unwrapped saltcd/push names no minion that ci_minions could allow: push from a CI "
             "minion with `salt-call event.send`, or roll out with `salt-run deploy.rollout`")


def _source(tag, data):
    """Where an event says it came from: {"kind": registry|ci|unwrapped, "origin": ...}."""
    if tag.startswith(vocabulary.SALT_HOOK_PREFIXES + (vocabulary.INGRESS_TAG_PREFIX,)):
        return {"kind": "registry", "origin": shown(tag, 120)}
    if data.get("cmd") == "_minion_event" and "id" in data:
        return {"kind": "ci", "origin": shown(data["id"], 120)}
    return {"kind": "unwrapped", "origin": "unknown"}


def _webhook_source(tag, settings):
    """The configured Source a hook tag names (`.../hook/saltcd/<name>` or
    `saltcd/ingress/<name>`), or raise."""
    if tag.startswith(vocabulary.INGRESS_TAG_PREFIX):
        path = vocabulary.SOURCE_PREFIX + tag[len(vocabulary.INGRESS_TAG_PREFIX):]
    else:
        path = tag.split("/hook/", 1)[1]
    name = path[len(vocabulary.SOURCE_PREFIX):] if path.startswith(vocabulary.SOURCE_PREFIX) else None
    if not name or name not in settings.sources:
        raise registry_events.PayloadError(f"no webhook source is configured for {shown(path, 60)!r}")
    return settings.sources[name]


def _minion_fields(data):
    """Minion fields the event carries (the reactor lists those of the original event)."""
    listed = data.get("minion_fields")
    listed = [str(k) for k in listed] if isinstance(listed, (list, tuple)) else []
    return sorted(set(listed) | {k for k in MINION_FIELDS if k in data})


def _hook_body(data, settings):
    """The body of a hook event, refused before parsing when over `max_body_bytes`
    (salt-api's path has no cap of its own before this; the engine's has)."""
    body = data.get("body", b"")
    if isinstance(body, (str, bytes, bytearray)) and len(body) > settings.max_body_bytes:
        raise registry_events.PayloadError(
            f"body of {len(body)} bytes is larger than max_body_bytes ({settings.max_body_bytes})")
    return body


def _engine_parsed(data):
    """The Parsed of an engine envelope (its MAC checked), every field checked
    again against the reference grammar: the MAC proves who reduced the body,
    not that the reduction was right."""
    parsed = registry_events.Parsed()
    for index, item in enumerate(data["pushes"]):
        if not isinstance(item, dict) or set(item) != set(ingress_key.PUSH_FIELDS):
            raise registry_events.PayloadError(f"push {index}: not a push of the saltcd_webhook engine")
        try:
            parsed.pushes.append(registry_events._push(*(item[k] for k in ingress_key.PUSH_FIELDS)))  # pylint: disable=protected-access
        except references.ReferenceError as exc:
            raise registry_events.PayloadError(f"push {index}: {exc}") from None
    # The engine keeps IGNORED_KEPT and one line counting the rest.
    for reason in data["ignored"][:ingress_key.IGNORED_KEPT + 1]:
        if not isinstance(reason, str):
            raise registry_events.PayloadError("ignored: not a list of reasons")
        parsed.ignored.append(shown(reason))
    return parsed


def check_announced(webhook, pushes):
    """Raise NotAllowed at the first push of a repository that `webhook` (a
    config.Source) may not announce (its `repositories`). The engine's door
    and the runner both ask this."""
    for push in pushes:
        if not webhook.may_announce(push.repository):
            raise NotAllowed(f"source {webhook.name!r} may not announce repository "
                             f"'{shown(str(push.repository), 120)}' (not in its `repositories`)")


def _parse_hook(tag, data, settings, now, engine_key, nonces):
    """A webhook event (engine envelope or salt-api hook) -> Parsed, or raise."""
    present = _minion_fields(data)
    if present:
        raise registry_events.PayloadError(
            f"hook event carries minion fields {present}: fired by a minion, not the webhook")
    webhook = _webhook_source(tag, settings)
    if tag.startswith(vocabulary.INGRESS_TAG_PREFIX):
        # The engine checked the source's address and credential at the door
        # and reduced the body to its pushes; the MAC proves this event is
        # the engine's, the nonce that it is new.
        try:
            ingress_key.verify(engine_key, webhook.name, data, now, settings.push_window,
                               nonces.first_sighting if nonces else None)
        except ingress_key.Forged as exc:
            raise ingress_auth.Unauthenticated(str(exc)) from None
        parsed = _engine_parsed(data)
    else:
        if webhook.allow_from is not None:
            # salt-api's event names no sender address: fail closed.
            raise NotAllowed(f"source {webhook.name!r} has `allow_from`, which salt-api's hook event "
                             "cannot be checked against (it carries no sender address): post to "
                             "the saltcd_webhook engine")
        ingress_auth.check(webhook, data, now=now, window=settings.push_window)
        parsed = registry_events.PARSERS[webhook.format](_hook_body(data, settings))
    check_announced(webhook, parsed.pushes)
    return parsed


def _parse(tag, data, source, settings, now=None, nonces=None, engine_key=None):
    """(the Parsed pushes of an event, the nonce to claim once they are allowed or
    None), or raise PayloadError / Unauthenticated."""
    if source["kind"] == "registry":
        return _parse_hook(tag, data, settings, now, engine_key, nonces), None
    if tag != vocabulary.PUSH_TAG:
        raise registry_events.PayloadError(f"unexpected event tag {tag[:80]!r}")
    # reactor/ci_push.sls hands every form over as {"id", "cmd", "data": {fields,
    # signature_sha256}}; `salt-run deploy.accept saltcd/push '{...}'` passes the
    # fields flat. Wrapped or not, every push meets the same checks first (a bad
    # one is refused for what is wrong with it); classify then refuses the unwrapped.
    nested = source["kind"] == "ci" or isinstance(data.get("data"), dict)
    payload = data.get("data") if nested else data
    if not isinstance(payload, dict):
        raise registry_events.PayloadError("event data is not an object")
    secret = settings.push_secret_for(payload.get("repository"))
    nonce = ingress_auth.verify_push(secret, payload, now, settings.push_window)
    fields = {k: payload[k] for k in ("repository", "tag", "digest") if payload.get(k) is not None}
    return registry_events.parse_generic(fields), nonce


def classify(tag, data, settings, now=None, nonces=None, engine_key=None):
    """Turn one event into a Verdict; `settings` is a validated config.Settings.

    `nonces`: a saltcd.ingress.nonces.NonceCache (replays of signed events);
    `engine_key`: the master-local key of saltcd_webhook's envelopes
    (ingress_key.load(cachedir)). Never raises on what the event holds.
    """
    now = time.time() if now is None else now
    if not isinstance(tag, str) or not isinstance(data, dict):
        return Verdict(source={"kind": "unknown", "origin": "?"}, rejected="event is not a tag and a mapping")
    source = _source(tag, data)
    verdict = Verdict(source=source)
    try:
        parsed, nonce = _parse(tag, data, source, settings, now=now, nonces=nonces, engine_key=engine_key)
        if source["kind"] == "unwrapped":
            raise NotAllowed(UNWRAPPED)
        _allow(parsed, source, settings)
        if nonce is not None:  # the push may do what it asks: now it is used up
            ingress_auth.claim_nonce(nonces, nonce, now, settings.push_window)
    except SeenElsewhere as exc:
        # Not a replay: every master heard this push, and another one took it.
        verdict.ignored.append(f"push already {exc}")
        return verdict
    except ingress_auth.Unauthenticated as exc:
        verdict.rejected = f"unauthenticated: {exc}"
        return verdict
    except NotAllowed as exc:
        verdict.rejected = str(exc)
        return verdict
    except registry_events.PayloadError as exc:
        verdict.rejected = str(exc)
        return verdict
    except RecursionError:
        verdict.rejected = "payload nested too deeply"
        return verdict
    except Exception as exc:  # pylint: disable=broad-except
        # A parser missed a shape: still a rejection, never a crash of the
        # reaction; the log says which, so the parser can be fixed.
        log.warning("saltcd: malformed event %s: %s", shown(tag, 120), shown(f"{type(exc).__name__}: {exc}"))
        verdict.rejected = f"malformed payload ({type(exc).__name__})"
        return verdict
    verdict.ignored.extend(parsed.ignored)
    if len(parsed.pushes) > MAX_PUSHES:
        verdict.ignored.append(f"{len(parsed.pushes) - MAX_PUSHES} push(es) past the first {MAX_PUSHES} "
                               "of one event")
    for push in parsed.pushes[:MAX_PUSHES]:
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
        request = store.new_request(app, env, push.repository, push.tag, source, digest_hint=push.digest,
                                    now=now, awaiting_approval=deployment.mode == "manual")
        if source["kind"] == "ci" and push.digest:
            # The signature covers the digest: it is a pin, not a hint. The
            # rollout deploys exactly it (once the registry confirms it has it
            # under this repository), wherever the tag points by then.
            request.update({"digest": push.digest, "signed_digest": True})
        verdict.requests.append(request)
    return verdict


def _allow(parsed, source, settings):
    """Raise NotAllowed unless a CI minion's push names only apps that
    `ci_minions` lets it deploy (before its nonce is claimed: a push refused
    here does not use up the real one's nonce)."""
    if source["kind"] != "ci":
        return
    for push in parsed.pushes:
        app = settings.app_for_repository(push.repository)
        if app is not None and not settings.ci_allowed(source["origin"], app):
            raise NotAllowed(f"minion {source['origin']!r} may not deploy app {app!r} (not in ci_minions)")


def operator_request(settings, app, env, user="operator", now=None):
    """A request made by hand (`salt-run deploy.rollout`): deploy the env's tag."""
    now = time.time() if now is None else now
    deployment = settings.deployment(app, env)
    tags = sorted(tag for tag, mapped in settings.tag_environments.items() if mapped == env)
    if not tags:
        raise NotFound(f"no image tag maps to environment {env!r}")
    return store.new_request(app, env, deployment.repository, tags[0], {"kind": "operator", "origin": user}, now=now)
