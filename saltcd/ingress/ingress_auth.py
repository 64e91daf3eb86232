"""Authenticating what enters: webhook requests and signed `saltcd/push` events.

The webhook engine (and salt-api with webhook_disable_auth) accept anything, so
saltcd checks each request itself: a shared bearer token or an HMAC of the body
(optionally with the send time, against replay). The reactor hands over header
values only as SHA-256 digests (its arguments land in job events and the job
cache), so the expected values are hashed the same way and compared in constant
time.

A `saltcd/push` event is always signed: an HMAC-SHA256 with `saltcd:push_secret`
over repository, tag, digest, a timestamp and a nonce. Salt lets any minion put
any event on the master's bus, so neither a minion id nor its absence proves
where an event came from; the MAC does, the timestamp bounds how long a leaked
payload stays usable, and the nonce (remembered in saltcd.ingress.nonces) makes it
usable once. The CI reactor passes only the SHA-256 of the signature on.

Secrets never appear in a reason, a log line or an event.
"""

import hashlib
import hmac
import re
import time

from saltcd.ingress.nonces import Full

PUSH_MESSAGE_VERSION = "saltcd-push-v2"
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
DEFAULT_WINDOW = 300
HOW_TO_SIGN = ("set `saltcd:push_secret` in the master config and sign pushes with "
               "`python -m saltcd.ci_push --secret-file FILE`; operators use `salt-run deploy.rollout`")


class Unauthenticated(ValueError):
    """The request does not carry the configured credential."""


class Replay(Unauthenticated):
    """Authentic, but stale or seen before."""


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


def _timestamp(value, what):
    """Unix seconds as an int, from an int or a string of digits; else Unauthenticated."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or value < 0:
        raise Unauthenticated(f"missing or invalid {what} (Unix seconds)")
    return value


def _fresh(timestamp, now, window, what):
    """Replay unless `timestamp` is within ±window seconds of the master's clock."""
    skew = now - timestamp
    if abs(skew) > window:
        direction = "old" if skew > 0 else "in the future"
        raise Replay(f"replay or clock skew: {what} is {abs(skew):.0f} s {direction} "
                     f"(push_window is {window:g} s)")


def check_token(source, data):
    """Raise Unauthenticated unless `data` carries `source`'s bearer token (if it has
    one). Headers only: the webhook engine checks it before it reads the body."""
    if source.token is None:
        return
    given = _header_digest(data, source.token_header)
    if given is None:
        raise Unauthenticated(f"missing {source.token_header} header")
    expected = source.token
    if source.token_header.lower() == "authorization" and not expected.lower().startswith("bearer "):
        expected = f"Bearer {expected}"
    if not _matches(given, expected):
        raise Unauthenticated(f"wrong credential in {source.token_header}")


def check(source, data, now=None, window=DEFAULT_WINDOW):
    """Raise Unauthenticated unless the hook event `data` satisfies `source` (a config.Source).

    With `source.timestamp_header`, `data["timestamp"]` is that header's clear value,
    the HMAC covers `b"<timestamp>." + body` (the form GitHub-style and Stripe-style
    senders use) and a timestamp more than `window` seconds off is a replay.
    """
    check_token(source, data)
    if source.hmac_secret is not None:
        given = _header_digest(data, source.signature_header)
        if given is None:
            raise Unauthenticated(f"missing signature header {source.signature_header}")
        message = _as_bytes(data.get("body"))
        timestamp = None
        if source.timestamp_header:
            if data.get("timestamp") is None:
                raise Unauthenticated(f"missing timestamp header {source.timestamp_header}")
            timestamp = _timestamp(data.get("timestamp"), f"timestamp in {source.timestamp_header}")
            message = f"{timestamp}.".encode("ascii") + message
        mac = hmac.new(source.hmac_secret.encode("utf-8"), message, hashlib.sha256)
        if not _matches(given, f"sha256={mac.hexdigest()}"):
            raise Unauthenticated(f"signature in {source.signature_header} does not match the body")
        if timestamp is not None:
            _fresh(timestamp, _now(now), window, f"timestamp in {source.timestamp_header}")


def _now(now):
    return time.time() if now is None else now


def push_message(repository, tag, digest, timestamp, nonce):
    """The bytes a push signature covers: one field per line, digest empty if none.

    `saltcd-push-v2\\n<repository>\\n<tag>\\n<digest>\\n<timestamp>\\n<nonce>` (UTF-8),
    so a CI job without Python can sign with `openssl dgst -sha256 -hmac`.
    """
    fields = [PUSH_MESSAGE_VERSION, repository, tag, digest or "", str(timestamp), nonce]
    return "\n".join("" if f is None else str(f) for f in fields).encode("utf-8")


def push_signature(secret, repository, tag, digest, timestamp, nonce):
    """The `signature` of a `saltcd/push` event: `sha256=<hex HMAC>` of push_message()."""
    message = push_message(repository, tag, digest, timestamp, nonce)
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _given_signature_digest(payload):
    """The SHA-256 (hex) of the signature the event carried, or None.

    The CI reactor passes `signature_sha256` (a list of zero or one digests, so that
    the reactor needs no `if`); a direct `salt-run deploy.accept` may pass `signature`.
    """
    digests = payload.get("signature_sha256")
    if isinstance(digests, str):
        digests = [digests]
    if isinstance(digests, list) and len(digests) == 1 and isinstance(digests[0], str):
        return digests[0]
    if isinstance(payload.get("signature"), str):
        return sha256_hex(payload["signature"])
    return None


def check_push(secret, payload, now, nonces, window=DEFAULT_WINDOW):
    """Raise Unauthenticated (Replay for a stale or repeated push) unless `payload`, a
    `saltcd/push` event's data, is signed with `secret`, fresh and new: verify_push,
    then claim_nonce."""
    claim_nonce(nonces, verify_push(secret, payload, now, window), now, window)


def verify_push(secret, payload, now, window=DEFAULT_WINDOW):
    """Raise Unauthenticated (Replay for a stale push) unless `payload` is signed
    with `secret` and within `window` of `now`; return its nonce, which the caller
    claims (claim_nonce) once it has also decided that the sender may push what it
    pushes: a refused push then does not use up the nonce of the real one."""
    if not secret:
        raise Unauthenticated("no push_secret is configured for this push (neither `saltcd:push_secret` "
                              f"nor its app's own), so it is refused: {HOW_TO_SIGN}")
    given = _given_signature_digest(payload)
    if given is None:
        raise Unauthenticated("missing signature (every saltcd/push must be signed)")
    timestamp = _timestamp(payload.get("timestamp"), "timestamp")
    nonce = payload.get("nonce")
    if not isinstance(nonce, str) or not NONCE_RE.fullmatch(nonce):
        raise Unauthenticated("missing or invalid nonce (16-128 letters, digits, '-' or '_')")
    # Six lines exactly: a field with a newline in it cannot pass for a signed one
    # (the grammar refuses such fields later anyway).
    fields = [payload.get(k) for k in ("repository", "tag", "digest")]
    expected = push_signature(secret, *fields, timestamp, nonce)
    if not _matches(given, expected):
        raise Unauthenticated("signature does not match the payload")
    _fresh(timestamp, now, window, "the push's timestamp")
    return nonce


def claim_nonce(nonces, nonce, now, window=DEFAULT_WINDOW):
    """Record the nonce of a verified push; Replay if it was seen before.

    `nonces`: a saltcd.ingress.nonces.NonceCache; only verified pushes get here, so
    unauthenticated events cannot fill it."""
    if nonces is None:  # a caller without the store: fail closed
        raise Unauthenticated("refused: no nonce cache to detect replays with")
    try:
        first = nonces.first_sighting(nonce, now, window)
    except Full as exc:
        raise Unauthenticated(f"refused: {exc}") from None
    if not first:
        raise Replay("replay: this push's nonce was seen before")
