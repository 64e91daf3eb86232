"""The master-local key that vouches for `saltcd/ingress/<source>` events.

Any minion can put any tag on the master's bus, but no minion can read the
master's files. So the saltcd_webhook engine, having authenticated a request
at the door, fires its event with an HMAC made with a random key kept in the
master's cachedir (0600), and the runner checks that MAC, the event's age and
its nonce (a nonce seen before is a replay). Nothing secret rides on the event:
the MAC covers the source, the time, the nonce and the SHA-256 of the body.
"""

import hashlib
import hmac
import os
import secrets
import time

KEY_FILE = ("saltcd", "ingress.key")
KEY_BYTES = 32
TAG_PREFIX = "saltcd/ingress/"


class Forged(ValueError):
    """The event does not carry a valid MAC, or is too old, or was seen before."""


def key_path(cachedir):
    return os.path.join(cachedir, *KEY_FILE)


def load_or_create(cachedir):
    """The key, created (0600, atomically: O_EXCL) on first use."""
    path = key_path(cachedir)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(cachedir)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES))
    return load(cachedir)


def load(cachedir):
    """The key, or None when the engine has not created it yet."""
    try:
        with open(key_path(cachedir), encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    return bytes.fromhex(text) if len(text) >= 2 * KEY_BYTES else None


def mac(key, source, received, nonce, body):
    """HMAC-SHA256 over `source|received|nonce|sha256(body)` (body: str)."""
    digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
    message = f"{source}|{received!r}|{nonce}|{digest}".encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def envelope(key, source, body, now=None):
    """The data of one `saltcd/ingress/<source>` event for an authenticated body (str)."""
    received = float(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return {"body": body, "received": received, "nonce": nonce,
            "mac": mac(key, source, received, nonce, body)}


def verify(key, source, data, now, window, first_sighting):
    """Raise Forged unless `data` is an envelope the engine made for `source`,
    no older than `window` seconds (and not from the future beyond a little
    clock slack), whose nonce `first_sighting(nonce, now, window)` has not seen.
    Without a nonce cache (None) nothing passes: replays could not be told."""
    if first_sighting is None:
        raise Forged("refused: no nonce cache to detect replays with")
    if key is None:
        raise Forged("the ingress key is missing (is the saltcd_webhook engine running?)")
    body, received, nonce, given = (data.get(k) for k in ("body", "received", "nonce", "mac"))
    if not isinstance(body, str) or not isinstance(nonce, str) or not isinstance(given, str):
        raise Forged("not an envelope of the saltcd_webhook engine")
    if isinstance(received, bool) or not isinstance(received, (int, float)) or received != received:
        raise Forged("not an envelope of the saltcd_webhook engine")
    expected = mac(key, source, float(received), nonce, body)
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("ascii")):
        raise Forged("MAC does not match: not fired by this master's saltcd_webhook engine")
    age = now - float(received)
    if age > window or age < -30:
        raise Forged(f"envelope is {age:.0f} s old, outside push_window ({window:g} s): a replay")
    if not first_sighting(nonce, now, window):
        raise Forged("nonce seen before: a replay")
