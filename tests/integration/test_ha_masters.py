"""Two real salt-masters, one rollout: hot multi-master on a shared etcd store.

Three etcd members, two salt-masters (same saltcd configuration, same master
key, `saltcd:store` on the cluster; lease TTL 4 s), and minions connected to
both: two Docker hosts' minions (`ha-1`, `ha-2`) and a CI minion. Every push is
a signed `salt-call event.send saltcd/push` on the CI minion, which reaches
both masters. The tests run in file order on one fleet:

(a) one push heard by both masters -> one request, one rollout;
(d) an etcd member killed -> the rollout goes on;
(c) the master running a rollout SIGSTOPped past its TTL -> the other takes it
    over and finishes; SIGCONT -> the late master's next step is refused and
    nothing runs twice;
(b) the master running a rollout killed (-9, every process) mid-batch -> the
    other finishes it within the TTL and a few seconds;
(e) a push while that master is down -> deployed by the other.
"""

import shutil
import signal
import time

import pytest

from tests.integration.ha_fleet import APP, ENV, TTL

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (make test installs etcd-server)")

SETTLE = 6  # seconds each batch's gate holds: a batch is long enough to act in
# A takeover starts within the TTL and a few seconds; it stops the dead master's
# state run in flight (which would wait on that master for a minute or more, with
# the new step queued behind it), re-runs that batch and goes on. Its end comes
# within this, with room for a busy machine.
IN_FLIGHT = 120


def test_a_one_push_heard_by_both_masters_is_one_rollout(fleet, event_listener):
    pushed = time.time()
    digest = fleet.push("1.0.0")
    heard = event_listener.wait_for_events([(m, "saltcd/push") for m in fleet.masters], after_time=pushed,
                                           timeout=60)
    assert heard.found_all_events, "the push did not reach both masters"
    record, records = fleet.record_of(digest)
    assert record["status"] == "succeeded", record
    assert len(records) == 1
    time.sleep(3)  # a second rollout, if there were one, would be recorded by now
    assert len([r for r in fleet.history() if r.get("to_digest") == digest]) == 1
    assert {m: d for m, (d, _, _) in fleet.running().items()} == {"ha-1": digest, "ha-2": digest}
    assert {status for _, _, status in fleet.running().values()} == {200}


def test_d_a_dead_etcd_member_does_not_stop_rollouts(fleet):
    member = fleet.etcd.members[1]
    fleet.etcd.kill_member(member)
    try:
        digest = fleet.push("1.1.0")
        record, _ = fleet.record_of(digest)
        assert record["status"] == "succeeded", record
        assert {m: d for m, (d, _, _) in fleet.running().items()} == {"ha-1": digest, "ha-2": digest}
    finally:
        fleet.etcd.start_member(member)


def test_c_a_master_paused_past_its_lease_is_taken_over_and_refused_when_it_wakes(fleet):
    digest = fleet.push("1.2.0")
    record, _ = fleet.record_of(digest, done=False, batches=1)
    paused = record["holder"]["master"]
    fleet.signal(paused, signal.SIGSTOP)
    try:
        fleet.down.add(paused)
        done, _ = fleet.record_of(digest, timeout=TTL + IN_FLIGHT)
        before = fleet.running()
    finally:
        fleet.signal(paused, signal.SIGCONT)
        fleet.down.discard(paused)
    other = next(m for m in fleet.masters if m != paused)
    print(f"paused -> finished by {other} at {done['ended'] - done['takeovers'][0]['at']:.1f} s after the takeover")
    assert done["status"] == "succeeded", done
    assert [t["master"] for t in done["takeovers"]] == [other]
    assert done["takeovers"][0]["from"] == paused
    assert {m: d for m, (d, _, _) in before.items()} == {"ha-1": digest, "ha-2": digest}
    # The woken master's next step is refused (its log says so): nothing is
    # replaced again, and the record stands.
    assert fleet.logged(paused, f"saltcd: {APP}/{ENV}: fenced: ", timeout=90), "the woken master was not fenced"
    after = fleet.running()
    assert after == before
    kept, _ = fleet.record_of(digest)
    assert kept["status"] == "succeeded" and kept["takeovers"] == done["takeovers"]
    assert [b["number"] for b in kept["batches"]] == [1, 2]


def test_b_a_killed_master_s_rollout_is_finished_by_the_other(fleet):
    digest = fleet.push("1.3.0")
    record, _ = fleet.record_of(digest, done=False, batches=1)
    dead = record["holder"]["master"]
    fleet.signal(dead, signal.SIGKILL)
    fleet.down.add(dead)
    killed_at = time.time()
    done, _ = fleet.record_of(digest, timeout=TTL + IN_FLIGHT)
    finished_at = time.time()
    assert done["status"] == "succeeded", done
    (takeover,) = done["takeovers"]
    assert takeover["from"] == dead and takeover["master"] != dead
    # The other master takes the rollout over once the lease is out, and a few
    # seconds (its engine looks every `lease_renew`, and for a free lock).
    print(f"killed -> taken over {takeover['at'] - killed_at:.1f} s, -> finished {finished_at - killed_at:.1f} s")
    assert takeover["at"] - killed_at < TTL + 10
    assert list(takeover.get("stopped", {})) in ([], ["ha-2"])  # the dead master's batch 2, if still running
    running = fleet.running()
    assert {m: d for m, (d, _, _) in running.items()} == {"ha-1": digest, "ha-2": digest}
    assert {status for _, _, status in running.values()} == {200}


def test_e_a_push_while_one_master_is_down_is_deployed(fleet):
    assert fleet.down, "test_b leaves one master down"
    digest = fleet.push("1.4.0")
    record, records = fleet.record_of(digest)
    assert record["status"] == "succeeded" and len(records) == 1
    assert record["holder"]["master"] not in fleet.down
    assert {m: d for m, (d, _, _) in fleet.running().items()} == {"ha-1": digest, "ha-2": digest}
