"""The master-local key that vouches for `saltcd/ingress/<source>` events.

Any minion can put any tag on the master's bus, but no minion can read the
master's files. So the saltcd_webhook engine, having authenticated a request
at the door, fires its event with an HMAC made with a random key kept in the
master's cachedir (0600), and the runner checks that MAC, the event's age and
its nonce (a nonce seen before is a replay).

The body itself never rides on the event: the engine parses it at the door
and the event carries only what saltcd uses of it (`reduced`): the pushes
(repository, tag, digest, media type) and the reasons for what it ignored,
a bounded list. The MAC covers the source, the time, the nonce and the
SHA-256 of the canonical JSON of that data. Nothing secret rides on it.
"""

import hashlib
import hmac
import json
import os
import secrets
import time

from saltcd.ingress import registry_events

KEY_FILE = ("saltcd", "ingress.key")
KEY_BYTES = 32
# What the MAC message starts with: an envelope of another layout never matches.
MAC_VERSION = "saltcd-ingress-v2"
# The fields of one push on the event, as registry_events.Push names them (the
# runner re-checks every one).
PUSH_FIELDS = ("repository", "tag", "digest", "media_type")
# Ignore reasons carried on: a registry envelope has a handful; a hostile one
# could have thousands, and each reason lands in the job cache and the log.
IGNORED_KEPT = 20


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


def reduced(parsed):
    """What an event carries of a registry_events.Parsed: {"pushes": [{PUSH_FIELDS}],
    "ignored": [reasons]}, reasons that are news first, at most IGNORED_KEPT
    of them (then one that counts the rest)."""
    pushes = [{**{name: getattr(push, name) for name in PUSH_FIELDS}, "repository": str(push.repository)}
              for push in parsed.pushes]
    ordered = sorted(parsed.ignored, key=registry_events.is_routine)  # stable: news first
    ignored = [registry_events.shown(reason) for reason in ordered[:IGNORED_KEPT]]
    if len(ordered) > IGNORED_KEPT:
        ignored.append(f"{len(ordered) - IGNORED_KEPT} more ignored item(s) not listed")
    return {"pushes": pushes, "ignored": ignored}


def canonical(data):
    """The bytes the MAC covers of reduced data: JSON, sorted keys, no spaces,
    ASCII. Raises TypeError/ValueError for what JSON cannot hold (a forgery)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def mac(key, source, received, nonce, data):
    """HMAC-SHA256 over `MAC_VERSION|source|received|nonce|sha256(canonical(data))`."""
    digest = hashlib.sha256(canonical(data)).hexdigest()
    message = f"{MAC_VERSION}|{source}|{received!r}|{nonce}|{digest}".encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def envelope(key, source, data, now=None):
    """The data of one `saltcd/ingress/<source>` event for the reduced data of an
    authenticated body (see reduced())."""
    received = float(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return {"pushes": data["pushes"], "ignored": data["ignored"], "received": received, "nonce": nonce,
            "mac": mac(key, source, received, nonce, data)}


def _data(data):
    """The reduced data an event carries, or raise Forged when it holds none."""
    pushes, ignored = data.get("pushes"), data.get("ignored")
    if not isinstance(pushes, list) or not isinstance(ignored, list):
        raise Forged("not an envelope of the saltcd_webhook engine")
    return {"pushes": pushes, "ignored": ignored}


def verify(key, source, data, now, window, first_sighting):
    """Raise Forged unless `data` is an envelope the engine made for `source`,
    no older than `window` seconds (and not from the future beyond a little
    clock slack), whose nonce `first_sighting(nonce, now, window)` has not seen.
    Without a nonce cache (None) nothing passes: replays could not be told.
    What the envelope carries is the engine's word, not yet checked: the
    caller re-checks every field."""
    if first_sighting is None:
        raise Forged("refused: no nonce cache to detect replays with")
    if key is None:
        raise Forged("the ingress key is missing (is the saltcd_webhook engine running?)")
    received, nonce, given = (data.get(k) for k in ("received", "nonce", "mac"))
    if not isinstance(nonce, str) or not isinstance(given, str):
        raise Forged("not an envelope of the saltcd_webhook engine")
    if isinstance(received, bool) or not isinstance(received, (int, float)) or received != received:
        raise Forged("not an envelope of the saltcd_webhook engine")
    reduced_data = _data(data)
    try:
        expected = mac(key, source, float(received), nonce, reduced_data)
    except (TypeError, ValueError, RecursionError):  # bytes, odd keys, NaN, nesting: not JSON's
        raise Forged("not an envelope of the saltcd_webhook engine") from None
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("ascii")):
        raise Forged("MAC does not match: not fired by this master's saltcd_webhook engine")
    age = now - float(received)
    if age > window or age < -30:
        raise Forged(f"envelope is {age:.0f} s old, outside push_window ({window:g} s): a replay")
    if not first_sighting(nonce, now, window):
        raise Forged("nonce seen before: a replay")
