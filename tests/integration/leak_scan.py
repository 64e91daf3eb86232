"""The leak scan: no configured secret and no push signature a test sent is in
the master's job cache, the events the lab saw, or the master's and minions'
log files. test_zz_no_secrets_leak runs it as a test; every lab runs it again
when it stops (tests/integration/conftest.py), so with two labs (pytest-xdist)
each is scanned after all of its tests, whichever worker ran which file.

Two kinds of events are left out of the scan, because they necessarily carry a
credential and are not saltcd's doing: the CI's own `saltcd/push` event (the
payload a CI job fires carries its signature; Salt puts it on the bus as
sent), with the minion's `fire_master` event and the jobs and returns of the
`event.send` that fired it, and salt-api's raw `salt/netapi/hook/...` events
(they carry the request's headers). What saltcd derives from them (the
reaction's `salt/run/<jid>/new`,
its job cache entry, `saltcd/rejected`, the logs) is scanned; in log files, only
Salt's own DEBUG lines about sending a `saltcd/push` (the CI minion logging the
event it fires) are left out, for the same reason. Signatures are
useless once seen (nonce, push_window), but they must not be handed on.
"""

import json
from pathlib import Path

import salt.payload

from .notify_receiver import Receivers

INGRESS_EVENTS = ("saltcd/push", "salt/netapi/hook/", "fire_master")
# The jobs that fire an ingress event (a minion's `event.send` / `event.fire_master`,
# the master's `runner.event.send`): their arguments and returns are the payload as sent.
FIRING_FUNCTIONS = ("event.send", "event.fire_master")
# Salt's atomic writes go through a temporary file of this name in the same folder.
ATOMIC_WRITE_PREFIX = ".___atomic_write"


def needles(lab, webhook_token, push_secret, registry_users):
    """{what: secret value} for every secret the lab holds and every signature a test made."""
    found = {"webhook token": webhook_token, "push secret": push_secret,
             "notification bearer secret": Receivers.SECRET}
    found.update({f"{app}'s own push secret": secret for app, secret in lab.app_push_secrets.items()})
    found.update({f"registry password of {user}": u["password"] for user, u in registry_users.items()})
    for i, signature in enumerate(lab.signatures):
        found[f"push signature #{i}"] = signature
        found[f"push signature #{i} (hex)"] = signature.split("=", 1)[1]
    return found


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
    return str(load.get("fun")).endswith(FIRING_FUNCTIONS)


def _log_text(path):
    """A log file without Salt's own DEBUG lines about sending the ingress event
    itself (a minion at log level debug logs the event it fires, as sent)."""
    lines = path.read_bytes().splitlines()
    return b"\n".join(line for line in lines
                      if not (b"saltcd/push" in line and b"[DEBUG" in line and b"event" in line.lower()))


def leaks(lab, secrets):
    """Where a secret or a push signature was found: ["<file or event>: <what>"]."""
    found = []
    logs = [Path(lab.master.config["log_file"])] + [Path(m.config["log_file"]) for m in lab.minions.values()]
    for path in logs:
        if path.exists():
            found += [f"{path}: {name}" for name in _found(_log_text(path), secrets)]
    for path in Path(lab.master.config["cachedir"], "jobs").rglob("*"):
        # The master keeps writing while we read (deploy.resume runs every few
        # seconds): its temporary files are renamed away, and are read under
        # their final names, now or in the scan the lab makes when it stops.
        if path.name.startswith(ATOMIC_WRITE_PREFIX):
            continue
        try:
            if path.is_file() and not _fires_an_ingress_event(path):
                found += [f"{path}: {name}" for name in _found(path.read_bytes(), secrets)]
        except FileNotFoundError:
            continue
    events = list(lab.listener.store)
    if not events:
        found.append("the event listener saw no events: nothing to scan")
    for event in events:
        # `fire_master`: the minion's own event that carries a fired payload to the master.
        if event.tag in (INGRESS_EVENTS[0], INGRESS_EVENTS[2]) or event.tag.startswith(INGRESS_EVENTS[1]) \
                or str(event.data.get("fun")).endswith(FIRING_FUNCTIONS):
            continue
        blob = json.dumps(event.full_data, default=repr).encode("utf-8")
        found += [f"event {event.tag}: {name}" for name in _found(blob, secrets)]
    return found


