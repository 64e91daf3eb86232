"""Authenticating webhook requests: a shared bearer token or an HMAC of the body.

The webhook engine (and salt-api with webhook_disable_auth) accept anything, so
saltcd checks each request itself. Secrets are compared in constant time and
never appear in a reason, a log line or an event.
"""

import hashlib
import hmac


class Unauthenticated(ValueError):
    """The request does not carry the configured credential."""


def _header(headers, name):
    """Case-insensitive header lookup (tornado and cherrypy spell them differently)."""
    wanted = name.lower()
    for key, value in (headers or {}).items():
        if str(key).lower() == wanted:
            return value[0] if isinstance(value, list) and value else value
    return None


def _as_bytes(body):
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise Unauthenticated("request body is missing")


def check(source, headers, body):
    """Raise Unauthenticated unless the request satisfies `source` (a config.Source)."""
    if source.token is not None:
        given = _header(headers, source.token_header)
        if not isinstance(given, str):
            raise Unauthenticated(f"missing {source.token_header} header")
        expected = source.token
        if source.token_header.lower() == "authorization" and not expected.lower().startswith("bearer "):
            expected = f"Bearer {expected}"
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            raise Unauthenticated(f"wrong credential in {source.token_header}")
    if source.hmac_secret is not None:
        given = _header(headers, source.signature_header)
        if not isinstance(given, str) or not given.startswith("sha256="):
            raise Unauthenticated(f"missing sha256= signature in {source.signature_header}")
        digest = hmac.new(source.hmac_secret.encode("utf-8"), _as_bytes(body), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode("utf-8"), f"sha256={digest}".encode("utf-8")):
            raise Unauthenticated(f"signature in {source.signature_header} does not match the body")
