"""Fail closed on real parts (issue 23): deploy data does not outlive the process
running its rollout, and a digest CI signed is what deploys, wherever the tag
points when the rollout runs."""

import contextlib
import fcntl
import os
import signal
import threading
import time

import salt.cache

from saltcd.queue import locking
from saltcd.rollout import deploy_pillar
from sandbox import processes

from .test_safe_rollouts import DEV, outcome

PILLAR_WAIT = 30


def _pillar_apps(lab, minion):
    """The apps in `minion`'s `saltcd_deploy` pillar, compiled now by the master."""
    ret = lab.master.salt_cli(timeout=60).run("pillar.items", minion_tgt=minion)
    assert ret.returncode == 0, ret
    return set((ret.data or {}).get(deploy_pillar.PILLAR_KEY) or {})


def _stored_entry(lab, minion, app):
    """The deploy-pillar entry the master's store holds for `minion` and `app`."""
    return salt.cache.factory(lab.master.config).fetch(f"{deploy_pillar.BANK}/{minion}", app) or None


@contextlib.contextmanager
def _next_in_line_for(path, timeout=10):
    """Hold the lock at `path` as soon as its holder lets go: a blocking flock queued
    now wins over a drain that a `saltcd/drain` event starts later (deploy.resume
    runs every 15 s in the lab). Raises if the lock is not ours within `timeout`
    once the caller's block is entered and the holder is gone."""
    handle = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (fcntl.flock(handle, fcntl.LOCK_EX), got.set()), daemon=True)
    waiter.start()
    try:
        yield got
    finally:
        if got.wait(timeout):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def test_a_drain_killed_mid_batch_leaves_no_deploy_data_served(lab):
    start = time.time()
    digest = lab.push("orphan", "dev", "1.0.0")
    lab.wait_for("saltcd/deploy/orphan/dev/started", start)
    record = lab.history("orphan", "dev", limit=1)[0]
    assert record["status"] == "running" and record["holder"]["pid"] != os.getpid()
    killed = record["holder"]["pid"]
    assert processes.start_time(killed) == record["holder"]["started"]
    # The one batch is in its 15 s settle: both minions are served the deploy data.
    deadline = time.time() + PILLAR_WAIT
    while "orphan" not in _pillar_apps(lab, "dev-2"):
        assert time.time() < deadline, "dev-2 never had orphan's deploy data in its pillar"
        time.sleep(0.5)
    lock = locking.lock_path(lab.master.config["cachedir"], "orphan", "dev")
    with _next_in_line_for(lock) as ours:
        time.sleep(0.2)                                        # queued behind the drain
        os.kill(killed, signal.SIGKILL)
        assert processes.wait_gone(killed, 30)
        assert ours.wait(10), "the killed drain's lock was not released (held by a child?)"
        # Nobody withdrew the entries: the process that would have is gone...
        assert all(_stored_entry(lab, m, "orphan")["rollout"] == record["id"] for m in DEV)
        # ...but they are no longer served, to the master's compile or the minion's.
        assert "orphan" not in _pillar_apps(lab, "dev-2")
        minion_view = lab.minions["dev-1"].salt_call_cli(timeout=60).run("pillar.items")
        assert "orphan" not in (minion_view.data.get(deploy_pillar.PILLAR_KEY) or {})
    # Released: the next drain marks the rollout interrupted, takes its entries
    # back and runs the push again (Salt restarted the killed engine); the
    # minions' own state runs went on, so it usually finds nothing left to do.
    data = outcome(lab, "orphan", start, timeout=300)
    assert data["status"] in ("succeeded", "unchanged"), data
    statuses = [r["status"] for r in lab.history("orphan", "dev")]
    assert statuses[:2] == [data["status"], "interrupted"], statuses
    assert {m: lab.running_digests("orphan")[m] for m in DEV} == {m: digest for m in DEV}
    assert all(_stored_entry(lab, m, "orphan") is None for m in DEV)


def test_a_signed_digest_deploys_while_the_tag_points_elsewhere(lab):
    start = time.time()
    signed = lab.push("pinned", "build-1", "1.0.0")     # tag maps to no environment
    moved = lab.push("pinned", "dev", "1.0.1")           # the tag holds another image
    assert outcome(lab, "pinned", start)["digest"] == moved
    start = time.time()
    lab.ci_push("ci-1", {"repository": lab.repositories["pinned"], "tag": "dev", "digest": signed})
    data = outcome(lab, "pinned", start)
    assert data["status"] == "succeeded" and data["digest"] == signed, data
    assert {m: lab.running_digests("pinned")[m] for m in DEV} == {m: signed for m in DEV}
    record = lab.history("pinned", "dev", limit=1)[0]
    assert record["trigger"] == {"kind": "ci", "origin": "ci-1"} and record["signed_digest"] is True
    assert record["to_digest"] == signed and "registry wins" not in (record.get("note") or "")
