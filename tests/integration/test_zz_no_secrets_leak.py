"""Runs last (the name sorts last): after the ingress tests, no configured secret
and no push signature a test sent is in the master's job cache, the events the
lab saw, or the master's and minions' log files.

Two kinds of events are left out of the scan, because they necessarily carry a
credential and are not saltcd's doing: the CI's own `saltcd/push` event (the
payload a CI job fires carries its signature; Salt puts it on the bus as
sent) and salt-api's raw `salt/netapi/hook/...` events (they carry the request's
headers). What saltcd derives from them (the reaction's `salt/run/<jid>/new`,
its job cache entry, `saltcd/rejected`, the logs) is scanned; in log files, only
Salt's own DEBUG lines about sending a `saltcd/push` (the CI minion logging the
event it fires) are left out, for the same reason. Signatures are
useless once seen (nonce, push_window), but they must not be handed on.
"""

import hashlib
import json
from pathlib import Path

import pytest
import salt.payload

from .conftest import REGISTRY_USERS

pytestmark = pytest.mark.integration

INGRESS_EVENTS = ("saltcd/push", "salt/netapi/hook/")


def _needles(lab, webhook_token, push_secret):
    needles = {"webhook token": webhook_token, "push secret": push_secret}
    needles.update({f"registry password of {user}": u["password"] for user, u in REGISTRY_USERS.items()})
    for i, signature in enumerate(lab.signatures):
        needles[f"push signature #{i}"] = signature
        needles[f"push signature #{i} (hex)"] = signature.split("=", 1)[1]
    return needles


def _found(blob, needles):
    return sorted(name for name, value in needles.items() if value.encode("utf-8") in blob)


def _fires_an_ingress_event(path):
    """True for the files of a job that a test published to make a minion fire a
    `saltcd/push` (`event.send` / `event.fire_master`): like the ingress event
    itself, its arguments are the payload as sent, signature included."""
    jid_dir = next((p for p in path.parents if (p / ".load.p").is_file()), None)
    if jid_dir is None:
        return False
    load = salt.payload.loads((jid_dir / ".load.p").read_bytes())
    return load.get("fun") in ("event.send", "event.fire_master")


def _log_text(path):
    """A log file without Salt's own DEBUG lines about sending the ingress event
    itself (a minion at log level debug logs the event it fires, as sent)."""
    lines = path.read_bytes().splitlines()
    return b"\n".join(line for line in lines
                      if not (b"saltcd/push" in line and b"[DEBUG" in line and b"event" in line.lower()))


def test_no_secret_or_signature_in_job_cache_events_or_logs(lab, webhook_token, push_secret):
    needles = _needles(lab, webhook_token, push_secret)
    leaks = []
    logs = [Path(lab.master.config["log_file"])] + [Path(m.config["log_file"]) for m in lab.minions.values()]
    for path in logs:
        if path.exists():
            leaks += [f"{path}: {name}" for name in _found(_log_text(path), needles)]
    for path in Path(lab.master.config["cachedir"], "jobs").rglob("*"):
        if path.is_file() and not _fires_an_ingress_event(path):
            leaks += [f"{path}: {name}" for name in _found(path.read_bytes(), needles)]
    events = list(lab.listener.store)
    assert events, "the event listener saw no events"
    for event in events:
        if event.tag == INGRESS_EVENTS[0] or event.tag.startswith(INGRESS_EVENTS[1]):
            continue
        blob = json.dumps(event.full_data, default=repr).encode("utf-8")
        leaks += [f"event {event.tag}: {name}" for name in _found(blob, needles)]
    assert leaks == []


def test_the_reaction_hands_on_only_digests_of_signatures(lab):
    """The CI reaction's arguments (salt/run/<jid>/new, kept in the job cache)
    carry the SHA-256 of each signature, not the signature."""
    if not lab.signatures:
        pytest.skip("run after the ingress tests: no signed push was sent in this session")
    digests = {hashlib.sha256(s.encode()).hexdigest() for s in lab.signatures}
    handed = [e for e in lab.listener.store
              if e.tag.startswith("salt/run/") and e.tag.endswith("/new")
              and e.data.get("fun") == "runner.deploy.accept" and "signature_sha256" in json.dumps(e.data)]
    assert handed, "no CI reaction was seen"
    seen = {d for e in handed for d in json.dumps(e.data).split('"') if d in digests}
    assert seen, "no reaction carried the digest of a signature the tests sent"
