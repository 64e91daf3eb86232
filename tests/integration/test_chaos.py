"""The chaos suite: rollouts on the HA fleet with a fault injected into each.

Each round pushes a good or a bad image (a bad one never becomes healthy: its
rollout must roll back), waits a random time, injects one fault, heals it, and
waits for the rollout's record to close. Then it checks what a user would:

- no push lost: the round's push has a record, and the record is closed;
- every minion runs the environment's last good digest, and answers healthy;
- no two rollouts of the app/env overlapped (a takeover goes on with the
  same record);
- no secret in any master's or minion's log.

Faults: a master killed (-9, every process) and started again; a master
paused past its lease (SIGSTOP, then SIGCONT); a minion killed and started
again; a Docker host killed (-9: its minion, dockerd and containerd; the
engine's containers die with the restart, as in a reboot) and started again,
engine first; an etcd
member killed and started again; the registry stopped and started again; the
registry stalled (SIGSTOP for 5 to 15 s: pulls hang, then go on); the push's
notification dropped (the CI job's event never sent: `deploy.resume` must
find the moved tag and deploy it, the app's `drift`); none.

`make chaos` runs it with CHAOS_ROUNDS (100 there) and writes what it found
to bench/chaos.json (docs/ha.md shows it); CI runs a short mode (a few rounds).
It is not part of `make test` (marker `chaos`). CHAOS_SEED repeats a run.
"""

import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import time
from pathlib import Path

import psutil
import pytest

from sandbox import app_image
from tests.integration.ha_fleet import ENV, HOSTS, TTL

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "6"))
SEED = int(os.environ.get("CHAOS_SEED") or time.time_ns() % 1_000_000)
# CHAOS_FAULTS=a,b draws only those kinds (to repeat one), else every kind in FAULTS.
KINDS = [k for k in os.environ.get("CHAOS_FAULTS", "").split(",") if k]
RESULTS = os.environ.get("CHAOS_RESULTS")  # where to write the figures (make chaos: bench/chaos.json)
SETTLE = 2
BAD_SHARE = 0.3
CLOSE_TIMEOUT = 240  # seconds for a round's record to close after its fault is healed
HEALTHY_TIMEOUT = 60  # seconds for every minion to answer healthy afterwards

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (make chaos installs it)"),
]


# --- the faults: inject(fleet, rng, digest) -> heal() ---------------------------


def _target_master(fleet, rng, digest):
    """The master running the rollout, else one drawn at random (drawn always, so that
    a seed makes the same draws however the timing falls)."""
    drawn = rng.choice(sorted(fleet.masters))
    return fleet.holder(digest) or drawn


def kill_master(fleet, rng, digest):
    name = _target_master(fleet, rng, digest)
    fleet.kill(name)
    return lambda: fleet.revive(name)


def pause_master(fleet, rng, digest):
    name = _target_master(fleet, rng, digest)
    fleet.signal(name, signal.SIGSTOP)
    fleet.down.add(name)

    def heal():
        time.sleep(TTL + 2)  # past its lease: the other master may take over meanwhile
        fleet.signal(name, signal.SIGCONT)
        fleet.down.discard(name)
    return heal


def kill_minion(fleet, rng, digest):
    name = rng.choice(sorted(HOSTS))
    fleet.kill(name)

    def heal():
        time.sleep(3)
        fleet.revive(name)
    return heal


def kill_etcd_member(fleet, rng, digest):
    member = rng.choice(fleet.etcd.members)
    fleet.etcd.kill_member(member)

    def heal():
        time.sleep(3)
        fleet.etcd.start_member(member)
    return heal


def kill_docker_host(fleet, rng, digest):
    """The whole host crashes: its minion and its Docker engine (dockerd, containerd,
    docker-proxy; the containers die with the restart, as in a reboot). It comes
    back engine first, then the minion, as a booting host's services do. (Killing
    the engine alone while its minion went on replacing the container wedged
    Docker 20.10 in 3 of 5 tries: the restored daemon kept the app's published
    port allocated to a stale endpoint, and no container could publish it again
    until the engine restarted cleanly.)"""
    minion = rng.choice(sorted(HOSTS))
    host = fleet.hosts[HOSTS[minion]]
    fleet.kill(minion)
    dockerd = psutil.Process(host.pid)
    procs = [dockerd, *dockerd.children(recursive=True)]  # containerd, docker-proxy
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)

    def heal():
        time.sleep(3)
        host.start()  # its restart policy brings the app's container back
        fleet.revive(minion)
    return heal


def stall_registry(fleet, rng, digest):
    seconds = round(rng.uniform(5, 15), 1)
    os.kill(fleet.registry.pid, signal.SIGSTOP)

    def heal():
        time.sleep(seconds)
        os.kill(fleet.registry.pid, signal.SIGCONT)
    return heal


def stop_registry(fleet, rng, digest):
    fleet.registry.stop()

    def heal():
        time.sleep(3)
        fleet.registry.start()
    return heal


FAULTS = {"none": None, "master-kill": kill_master, "master-pause": pause_master, "minion-kill": kill_minion,
          "docker-host-kill": kill_docker_host, "etcd-member-kill": kill_etcd_member,
          "registry-down": stop_registry, "registry-stall": stall_registry, "notification-drop": None}
# Faults in the push itself rather than injected while its rollout runs.
DROPS_THE_PUSH = ("notification-drop",)


# --- the invariants --------------------------------------------------------


def overlapping(records):
    """Pairs of records of the app/env whose run times overlap."""
    spans = sorted((r["started"], r.get("ended") or float("inf"), r["id"]) for r in records
                   if r["status"] != "superseded")
    return [(a[2], b[2]) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def secrets_in_logs(fleet, secrets):
    found = []
    for name in [*fleet.masters, *fleet.minions]:
        path = Path(fleet.daemon(name).config["log_file"])
        text = path.read_text(errors="replace") if path.exists() else ""
        found += [f"{name}: {label}" for label, secret in secrets.items() if secret and secret in text]
    return found


# Faults that make a good image's batch fail, as they should: the registry down
# or stalled past the batch's deadline while the batch pulls (the pull's error), a
# minion dead while its batch runs (no answer: Salt does not hand a restarted
# minion the job it missed), a Docker host gone under its batch or its watch. The
# rollout is then rolled back, and says why.
FAILS_A_BATCH = ("registry-down", "registry-stall", "minion-kill", "docker-host-kill")
# Faults that can also fail a rollback (a Docker host still down when its minion
# is rolled back): the record ends `failed`, the minion is left behind, and
# `deploy.resume` brings it to the last good release once it can (the
# invariants below are checked after that).
FAILS_A_ROLLBACK = ("docker-host-kill",)


def expected_ends(bad, fault):
    """How a round's rollout may end: a bad image is rolled back; a good one
    succeeds, or is rolled back when its fault can fail a batch."""
    rollback = ("rolled_back", "failed") if fault in FAILS_A_ROLLBACK else ("rolled_back",)
    if bad:
        return rollback
    return ("succeeded", *rollback) if fault in FAILS_A_BATCH else ("succeeded",)


def healthy_on_last_good(fleet, last_good):
    """{minion: what is wrong} (empty when every minion runs `last_good`, healthy)."""
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    while True:
        try:
            seen = fleet.running()
        except Exception as exc:  # noqa: BLE001 - a Docker host still coming back
            seen = {m: (None, None, f"{type(exc).__name__}") for m in HOSTS}
        wrong = {m: f"runs {d[:19]}, health {h}" for m, (d, _, h) in seen.items() if d != last_good or h != 200}
        if not wrong or time.monotonic() > deadline:
            return wrong
        time.sleep(1)


def closed_history(fleet):
    """The history once no record runs (a converge of a minion left behind may
    still be closing), or as it is after CLOSE_TIMEOUT."""
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while True:
        history = fleet.history()
        if not any(r["status"] == "running" for r in history) or time.monotonic() > deadline:
            return history
        time.sleep(1)


@pytest.mark.timeout(ROUNDS * 400 + 300)
def test_rollouts_under_faults_keep_every_invariant(fleet, webhook_token, push_secret):
    assert set(KINDS) <= set(FAULTS), f"CHAOS_FAULTS names unknown kinds; known: {', '.join(sorted(FAULTS))}"
    rng = random.Random(SEED)
    print(f"\nchaos: {ROUNDS} rounds, seed {SEED}")
    last_good = fleet.push("0.0.0")
    first, _ = fleet.record_of(last_good, timeout=CLOSE_TIMEOUT)
    assert first["status"] == "succeeded", first
    rounds = []
    for number in range(1, ROUNDS + 1):
        fault = rng.choice(sorted(KINDS or FAULTS))
        bad = rng.random() < BAD_SHARE
        delay = round(rng.uniform(0, 8), 1)
        digest = app_image.build_and_push(fleet.hosts["builder"].url, fleet.repository, ENV, f"9.{number}.0",
                                          behaviour="unhealthy" if bad else "healthy")
        if fault not in DROPS_THE_PUSH:
            fleet.push_digest(digest)
        time.sleep(delay)
        injected = time.time()
        heal = FAULTS[fault](fleet, rng, digest) if FAULTS[fault] else None
        if heal is not None:
            heal()
        problems = []
        try:
            record, _ = fleet.record_of(digest, timeout=CLOSE_TIMEOUT)
        except AssertionError as exc:
            record, problems = None, [f"push lost or never closed: {exc}"[:300]]
        # From the fault to the record's end (its heal may still be under way then).
        recovered = round(max(record["ended"] - injected, 0), 1) if record and record.get("ended") else None
        if record is not None:
            expected = expected_ends(bad, fault)
            if record["status"] not in expected:
                problems.append(f"ended {record['status']} ({record.get('reason')}), expected {' or '.join(expected)}")
            if record["status"] == "succeeded":
                last_good = digest
        wrong = healthy_on_last_good(fleet, last_good)
        if wrong:
            problems.append(f"not on the last good digest, healthy: {wrong}")
        history = closed_history(fleet)
        problems += [f"overlapping rollouts {pair}" for pair in overlapping(history)]
        problems += [f"record {r['id']} still running" for r in history if r["status"] == "running"]
        problems += [f"secret in log: {where}" for where in
                     secrets_in_logs(fleet, {"push_secret": push_secret, "webhook_token": webhook_token})]
        rounds.append({"round": number, "fault": fault, "bad_image": bad, "delay": delay,
                       "status": record and record["status"], "takeovers": len((record or {}).get("takeovers", [])),
                       "recovery_seconds": recovered, "problems": problems})
        print(f"chaos round {number}: {fault} after {delay}s, {'bad' if bad else 'good'} image -> "
              f"{record and record['status']} in {recovered}s" + (f"; PROBLEMS: {problems}" if problems else ""))
    summary = summarize(rounds)
    print(json.dumps(summary, indent=1))
    if RESULTS:
        Path(RESULTS).write_text(json.dumps({"seed": SEED, "rounds": ROUNDS, "summary": summary,
                                             "detail": rounds}, indent=1) + "\n")
    assert not [r for r in rounds if r["problems"]], summary


def summarize(rounds):
    """Per fault kind: how many, how many kept every invariant, recovery times."""
    out = {}
    for fault in sorted({r["fault"] for r in rounds}):
        mine = [r for r in rounds if r["fault"] == fault]
        times = [r["recovery_seconds"] for r in mine if r["recovery_seconds"] is not None] or [0]
        out[fault] = {"injected": len(mine), "invariants_held": sum(not r["problems"] for r in mine),
                      "takeovers": sum(r["takeovers"] for r in mine),
                      "recovery_median_s": round(statistics.median(times), 1), "recovery_max_s": max(times)}
    return out
