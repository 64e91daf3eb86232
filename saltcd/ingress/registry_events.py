"""Turning incoming payloads into push hints: (repository, tag, optional digest).

A payload is only a hint. The runner later confirms the digest at the registry,
so a parser's job is to pick the deploy triggers out and to refuse anything
malformed with a reason. Each format is one function returning `Parsed`.
Payloads are hostile until parsed: every shape of JSON, nesting and type is
either ignored with a reason or refused with PayloadError, never a crash.
"""

import json
from dataclasses import dataclass, field

from saltcd.config import references

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    }
)


# Reasons for ignoring the events every push brings along (blobs, pulls).
NOT_A_MANIFEST = "not a manifest push"
NOT_A_PUSH = "not a push"
ROUTINE = (NOT_A_MANIFEST, NOT_A_PUSH)
# The webhook engine's answer to a post that holds nothing but those.
NOTHING_TO_DEPLOY = "accepted: only pulls and blob pushes in it, nothing to deploy"


def is_routine(reason):
    """Is this ignore reason one every push brings along (not news for the log)?"""
    return reason.endswith(ROUTINE)


class PayloadError(ValueError):
    """The payload as a whole cannot be read (not UTF-8, not JSON, not an object)."""


def shown(value, limit=200):
    """Payload text fit for a log line or a reason: control characters (newlines
    too) and non-ASCII escaped, cut to about `limit` characters."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # pylint: disable=broad-except  # (a repr too deep or too big)
        text = f"<{type(value).__name__}>"
    cut = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    cut = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return cut + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class Push:
    """A tag that was pushed: the repository (host/path), the tag, maybe its digest
    and the manifest's media type (when the format says)."""

    repository: references.Repository
    tag: str
    digest: str = None
    media_type: str = None


@dataclass
class Parsed:
    """What one payload yielded: pushes to act on and items ignored, with reasons."""

    pushes: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    @property
    def only_routine(self):
        """No push, and nothing ignored but what every push brings along."""
        return not self.pushes and all(is_routine(reason) for reason in self.ignored)


def json_object(body):
    """Decode `body` (bytes or str) as a JSON object, or raise PayloadError."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("body is not UTF-8") from None
    if isinstance(body, dict):
        return body
    if not isinstance(body, str):
        raise PayloadError(f"body of type {type(body).__name__} is not JSON text")
    try:
        value = json.loads(body)
    except RecursionError:
        raise PayloadError("body is JSON nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError has .msg; an integer of more than 4300 digits is a plain ValueError.
        raise PayloadError(f"body is not JSON: {shown(str(getattr(exc, 'msg', exc)), 80)}") from None
    if not isinstance(value, dict):
        raise PayloadError("body is JSON but not an object")
    return value


def _push(repository, tag, digest=None, media_type=None, default_registry="docker.io"):
    """Build a Push after checking every part against the reference grammar (and
    a media type against the manifest types)."""
    repo = references.parse_repository(repository, default_registry)
    if media_type is not None and (not isinstance(media_type, str) or media_type not in MANIFEST_MEDIA_TYPES):
        raise references.ReferenceError(f"not a manifest media type: {shown(media_type, 80)!r}")
    return Push(
        repository=repo,
        tag=references.parse_tag(tag),
        digest=references.parse_digest(digest) if digest is not None else None,
        media_type=media_type,
    )


def parse_distribution(body):
    """Docker distribution (registry 2.x) notification envelope -> Parsed.

    One envelope holds several events; only manifest pushes that carry a tag are
    deploy triggers. The repository in `target` has no host: the host the client
    pushed to is in `request.host`.
    """
    envelope = json_object(body)
    events = envelope.get("events")
    if not isinstance(events, list):
        raise PayloadError("envelope has no `events` list")
    parsed = Parsed()
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            parsed.ignored.append(f"event {index}: not an object")
            continue
        action = event.get("action")
        if action != "push":
            parsed.ignored.append(f"event {index} ({shown(action, 20)}): {NOT_A_PUSH}")
            continue
        target = event.get("target") or {}
        request = event.get("request")
        if not isinstance(target, dict):
            raise PayloadError(f"event {index}: target is not an object")
        media = target.get("mediaType")
        if not isinstance(media, str) or media not in MANIFEST_MEDIA_TYPES:
            parsed.ignored.append(f"event {index}: {NOT_A_MANIFEST}")
            continue
        if not target.get("tag"):
            parsed.ignored.append(f"event {index}: manifest push without a tag")
            continue
        # A registry never sends a malformed reference: one that does not parse
        # means the envelope is forged or broken, so all of it is refused.
        host = request.get("host") if isinstance(request, dict) else None
        if not isinstance(host, str) or not references.DOMAIN_RE.fullmatch(host):
            raise PayloadError(f"event {index}: request.host missing or invalid")
        try:
            path = target.get("repository")
            if not isinstance(path, str):
                raise references.ReferenceError("target.repository missing")
            parsed.pushes.append(_push(f"{host}/{path}", target["tag"], target.get("digest"), media))
        except references.ReferenceError as exc:
            raise PayloadError(f"event {index}: {exc}") from None
    return parsed


def parse_dockerhub(body):
    """Docker Hub webhook: `{"push_data": {"tag": ...}, "repository": {"repo_name": ...}}`.

    Hub sends no digest (the registry is asked) and no signature: put a proxy in
    front of the webhook that adds the bearer token the source is configured with.
    """
    data = json_object(body)
    push_data = data.get("push_data")
    repository = data.get("repository")
    if not isinstance(push_data, dict) or not isinstance(repository, dict):
        raise PayloadError("not a Docker Hub payload: push_data and repository are required")
    try:
        return Parsed(pushes=[_push(repository.get("repo_name"), push_data.get("tag"))])
    except references.ReferenceError as exc:
        raise PayloadError(str(exc)) from None


# The webhook formats, by the name `saltcd:sources:<name>:format` takes: config
# accepts exactly these, so a new format is one function and one entry here.
PARSERS = {"distribution": parse_distribution, "dockerhub": parse_dockerhub}


def parse_generic(payload):
    """The generic CI form `{"repository": "host/path", "tag": "dev", "digest": opt}`."""
    data = json_object(payload)
    missing = [key for key in ("repository", "tag") if key not in data]
    if missing:
        raise PayloadError(f"missing {', '.join(missing)}")
    try:
        return Parsed(pushes=[_push(data["repository"], data["tag"], data.get("digest"))])
    except references.ReferenceError as exc:
        raise PayloadError(str(exc)) from None
