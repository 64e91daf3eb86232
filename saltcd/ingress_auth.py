"""Authenticating webhook requests: a shared bearer token or an HMAC of the body.

The webhook engine (and salt-api with webhook_disable_auth) accept anything, so
saltcd checks each request itself. The reactor hands over header values only
as SHA-256 digests (its arguments land in job events and the job cache), so
the expected values are hashed the same way and compared in constant time.
Secrets never appear in a reason, a log line or an event.
"""

import hashlib
import hmac


class Unauthenticated(ValueError):
    """The request does not carry the configured credential."""


def sha256_hex(text):
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def hashed_headers(headers):
    """What the reactor passes on: header names and the SHA-256 of each value."""
    return {"header_names": list(headers), "header_sha256": [sha256_hex(v) for v in headers.values()]}


def _header_digest(data, name):
    """The digest of header `name` (case-insensitive), or None."""
    names = data.get("header_names") or []
    digests = data.get("header_sha256") or []
    for key, digest in zip(names, digests):
        if str(key).lower() == name.lower():
            return str(digest)
    return None


def _matches(given_digest, expected_value):
    return hmac.compare_digest(given_digest.encode("ascii", "replace"),
                               sha256_hex(expected_value).encode("ascii"))


def _as_bytes(body):
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise Unauthenticated("request body is missing")


def check(source, data):
    """Raise Unauthenticated unless the hook event `data` satisfies `source` (a config.Source)."""
    if source.token is not None:
        given = _header_digest(data, source.token_header)
        if given is None:
            raise Unauthenticated(f"missing {source.token_header} header")
        expected = source.token
        if source.token_header.lower() == "authorization" and not expected.lower().startswith("bearer "):
            expected = f"Bearer {expected}"
        if not _matches(given, expected):
            raise Unauthenticated(f"wrong credential in {source.token_header}")
    if source.hmac_secret is not None:
        given = _header_digest(data, source.signature_header)
        if given is None:
            raise Unauthenticated(f"missing signature header {source.signature_header}")
        mac = hmac.new(source.hmac_secret.encode("utf-8"), _as_bytes(data.get("body")), hashlib.sha256)
        if not _matches(given, f"sha256={mac.hexdigest()}"):
            raise Unauthenticated(f"signature in {source.signature_header} does not match the body")


def push_signature(secret, repository, tag, digest=None):
    """The signature a `saltcd/push` event carries when `saltcd:push_secret` is set.

    Salt lets a minion fire any event on the master's bus (the syndic `events`
    path of `_minion_event` forwards data unwrapped), so neither an event's
    minion id nor its lack of one proves where it came from; this MAC does.
    """
    message = f"{repository}\n{tag}\n{digest or ''}".encode("utf-8")
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def check_push(secret, payload):
    """Raise Unauthenticated unless `payload` carries the right `signature`."""
    given = payload.get("signature")
    if not isinstance(given, str):
        raise Unauthenticated("missing signature (saltcd:push_secret is set)")
    expected = push_signature(secret, payload.get("repository"), payload.get("tag"), payload.get("digest"))
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise Unauthenticated("signature does not match the payload")
