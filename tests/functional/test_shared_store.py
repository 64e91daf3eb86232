"""Two masters, one store: saltcd's records on a real three-member etcd cluster.

The store's contract runs against both backends (Salt's localfs cache, as one
master has it, and etcd); then what only a shared store must do: one request
for a push both masters hear, one holder per app/env with a token that only
grows, writes and steps refused once the lease is lost, a dead master's
rollout taken over from its journal, and a dead etcd member passed over.
The controllers are saltcd's own, two of them ("master-a", "master-b"); the
fleet is the unit tests' fake, behind the minions' real fence check
(salt/_utils/saltcd_minion.py, through Salt's loader). The same path with
real salt-masters is the HA integration test's.
"""

import contextlib
import copy
import shutil
import threading
import time
import uuid

import pytest
import salt.cache
import salt.config

from saltcd import compat, config, store
from saltcd.errors import Fenced
from saltcd.ha import etcd_cache, etcd_cluster
from saltcd.ingress import nonces
from saltcd.queue import locking
from saltcd.queue.controller import Controller
from saltcd.rollout import deploy_pillar
from sandbox.etcd_cluster import EtcdCluster
from tests import salt_side, stale_runs
from tests.unit.conftest import RAW
from tests.unit.fakes import FakeClock, FakeFleet, Recorder
from tests.unit.test_controller import NEW, OLD, PUSH_SECRET, FakeRegistry, from_ci, signed

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (make bootstrap installs etcd-server)")
TTL, RENEW = 3, 1


@pytest.fixture(scope="module")
def etcd():
    folder = stale_runs.session_folder("scd-it-")
    cluster = EtcdCluster(folder / "etcd", size=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def store_conf(etcd, **more):
    raw = {"driver": "etcd", "endpoints": etcd.endpoints, "prefix": f"/t{uuid.uuid4().hex[:8]}",
           "lease_ttl": TTL, "lease_renew": RENEW, **more}
    return config.store_config({"store": raw})


def shared_cache(etcd, conf=None):
    conf = conf or store_conf(etcd)
    return etcd_cache.EtcdCache(etcd_cluster.EtcdCluster(conf), conf.prefix)


@pytest.fixture(params=["localfs", "etcd"])
def cache(request, tmp_path):
    """One store of each kind, empty."""
    if request.param == "etcd":
        return shared_cache(request.getfixturevalue("etcd"))
    opts = salt.config.master_config(None)
    opts.update(cachedir=str(tmp_path / "cache"), cache="localfs")
    return compat.cache(salt.cache.factory(opts))


# --- the contract both backends keep ---------------------------------------


def test_records_banks_and_listing_behave_alike(cache):
    assert cache.fetch("saltcd/requests/web/dev", "nothing") == {}
    cache.store("saltcd/requests/web/dev", "r1", {"id": "r1", "n": [1, 2], "t": 1.5})
    cache.store("saltcd/requests/web/qa", "r2", {"id": "r2"})
    cache.store("saltcd/requests/shop", "x", {"id": "x"})
    assert cache.fetch("saltcd/requests/web/dev", "r1") == {"id": "r1", "n": [1, 2], "t": 1.5}
    assert sorted(cache.list("saltcd/requests")) == ["shop", "web"]
    assert sorted(cache.list("saltcd/requests/web")) == ["dev", "qa"]
    assert sorted(cache.list("saltcd/requests/shop")) == ["x"]
    cache.flush("saltcd/requests/web/dev", "r1")
    assert cache.list("saltcd/requests/web/dev") == []
    cache.flush("saltcd/requests/web")
    assert sorted(cache.list("saltcd/requests")) == ["shop"]


def test_the_store_queues_and_keeps_history_alike(cache):
    records = store.Store(cache)
    request = store.new_request("web", "dev", "127.0.0.1:5000/saltcd/web", "dev", {"kind": "ci", "origin": "ci-1"})
    records.add_request(request)
    assert [r["id"] for r in records.pending("web", "dev")] == [request["id"]]
    assert records.app_envs_with_requests() == [("web", "dev")]
    record = store.new_record(request)
    record["status"] = "running"
    records.save_rollout(record)
    assert [r["id"] for r in records.running_rollouts("web", "dev")] == [record["id"]]
    record["status"] = "succeeded"
    records.save_rollout(record)
    assert records.running_rollouts("web", "dev") == []
    assert records.rollout("web", "dev", record["id"])["status"] == "succeeded"


def test_a_nonce_is_new_once_and_another_masters_sighting_is_not_a_replay(cache):
    first = nonces.NonceCache(cache, master="master-a")
    second = nonces.NonceCache(cache, master="master-b")
    now = time.time()
    assert first.first_sighting("n1", now) is True
    assert first.first_sighting("n1", now) is False  # a replay at the same master
    with pytest.raises(nonces.SeenElsewhere, match="master-a"):
        second.first_sighting("n1", now)


# --- what only a shared store does -----------------------------------------


def test_of_masters_racing_to_create_one_record_exactly_one_wins(etcd):
    cache = shared_cache(etcd)
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(cache.create("saltcd/seen/1", "push", {"n": n})))
               for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [False] * 11 + [True]


def test_one_holder_per_app_env_and_each_new_holder_a_larger_token(etcd):
    conf = store_conf(etcd)
    cache = shared_cache(etcd, conf)
    a = locking.SharedLocks(cache, conf, "master-a")
    b = locking.SharedLocks(cache, conf, "master-b")
    with a.hold("web", "dev") as held_a:
        assert held_a is not None and held_a.stamp()["master"] == "master-a"
        assert b.taken("web", "dev")
        with b.hold("web", "dev") as busy:
            assert busy is None
        with b.hold("web", "qa") as other:
            assert other is not None  # another app/env is not held up
        first = held_a.token
        time.sleep(TTL + 1)  # renewed: still held past one TTL
        assert held_a.valid()
    assert not b.taken("web", "dev")
    with b.hold("web", "dev") as held_b:
        assert held_b.token > first


def test_a_master_paused_past_its_lease_can_neither_write_nor_act(etcd):
    conf = store_conf(etcd)
    cache, cache_b = shared_cache(etcd, conf), shared_cache(etcd, conf)  # two masters, two processes
    records = store.Store(cache)
    a = locking.SharedLocks(cache, conf, "master-a")
    b = locking.SharedLocks(cache_b, conf, "master-b")
    with a.hold("web", "dev") as held_a:
        records.set_env_state("web", "dev", {"last_good": OLD})  # a write while held
        held_a._stop.set()  # noqa: SLF001 - SIGSTOP in all but name: no more renewals
        deadline = time.monotonic() + TTL + 5
        while time.monotonic() < deadline:
            with b.hold("web", "dev") as held_b:
                if held_b is not None:
                    records_b = store.Store(cache_b)
                    records_b.set_env_state("web", "dev", {"last_good": NEW})
                    # Master A wakes up: its own deadline has passed, and the key is B's.
                    assert not held_a.valid()
                    with pytest.raises(Fenced):
                        records.set_env_state("web", "dev", {"last_good": "sha256:" + "0" * 64})
                    with pytest.raises(Fenced):
                        locking.Guarded(FakeFleet({}), held_a).apply([], {}, 1)
                    break
            time.sleep(0.3)
        else:
            pytest.fail("master B never got the lock after A's lease lapsed")
    assert records.env_state("web", "dev") == {"last_good": NEW}


def test_deploy_data_is_served_only_while_its_lock_is_held_at_its_token(etcd):
    conf = store_conf(etcd)
    cache = shared_cache(etcd, conf)
    pillar = deploy_pillar.DeployPillar(cache)
    records = store.Store(cache)
    with locking.SharedLocks(cache, conf, "master-a").hold("web", "dev") as held:
        record = {"id": store.new_id(), "app": "web", "env": "dev", "status": "running"}
        records.save_rollout(record)
        pillar.publish(["dev-1"], {"app": "web", "env": "dev", "digest": NEW, "rollout": record["id"],
                                   "holder": held.stamp(), "fence": held.token})
        assert list(pillar.entries("dev-1")) == ["web"]
    # Released (as when its master died and its lease ran out): no longer served.
    assert pillar.entries("dev-1") == {}


def test_calls_pass_over_a_dead_member(etcd):
    cache = shared_cache(etcd)
    cache.store("b", "k", {"v": 1})
    dead = etcd.members[0]
    etcd.kill_member(dead)
    try:
        assert cache.fetch("b", "k") == {"v": 1}
        cache.store("b", "k", {"v": 2})
        assert cache.create("b", "new", {"v": 3}) is True
        assert cache.fetch("b", "k") == {"v": 2}
    finally:
        etcd.start_member(dead)


# --- two controllers, as two masters run them ------------------------------


class Minions(FakeFleet):
    """The fake fleet, each minion behind the real fence check of saltcd's
    minion module (its own cachedir): a step with an older token is refused."""

    def __init__(self, running, root):
        super().__init__(running)
        self.fence = {m: salt_side.minion(root / m).functions["saltcd.fence"] for m in running}
        self.specs = dict.fromkeys(running)  # no spec label yet (a record must be JSON, not AnySpec)
        self.refused = []

    def apply(self, minions, pillar, timeout, test=False, limit=None, published=None):
        given = pillar["saltcd"]
        allowed, out = [], {}
        for minion in minions:
            refusal = self.fence[minion](given["app"], given["env"], given["fence"])
            if refusal:
                self.refused.append((minion, given["fence"]))
                out[minion] = {"ok": False, "changed": False, "comment": refusal}
            else:
                allowed.append(minion)
        out.update(super().apply(allowed, pillar, timeout, test, limit, published) if allowed else {})
        return out


class Frozen:
    """Master A's view of the fleet: its second batch freezes in flight (the
    master is paused: its lease renewals stop too) until `thaw`."""

    def __init__(self, fleet, locks):
        self.fleet, self.locks = fleet, locks
        self.frozen, self.thawed = threading.Event(), threading.Event()
        self.applies = 0

    def __getattr__(self, name):
        return getattr(self.fleet, name)

    def apply(self, *args, **kwargs):
        self.applies += 1
        if self.applies == 2:
            self.locks.held._stop.set()  # noqa: SLF001 - the paused process renews nothing
            self.frozen.set()
            self.thawed.wait(60)
        return self.fleet.apply(*args, **kwargs)


class RecordingLocks(locking.SharedLocks):
    """SharedLocks that remembers the lock it holds (the test pauses its renewals)."""

    held = None

    @contextlib.contextmanager
    def hold(self, app, env=None):
        with super().hold(app, env) as held:
            self.held = held
            yield held


def masters(etcd, tmp_path, running):
    raw = copy.deepcopy(RAW)
    raw["push_secret"] = PUSH_SECRET
    raw["store"] = {"driver": "etcd", "endpoints": etcd.endpoints, "prefix": f"/t{uuid.uuid4().hex[:8]}",
                    "lease_ttl": TTL, "lease_renew": RENEW}
    settings = config.load(raw)
    cache = shared_cache(etcd, settings.store)
    fleet = Minions(running, tmp_path)
    out = {}
    for name in ("master-a", "master-b"):
        locks = RecordingLocks(cache, settings.store, name)
        out[name] = Controller(settings, store.Store(cache), fleet, Recorder(), str(tmp_path / name),
                               resolve=FakeRegistry(NEW), clock=FakeClock(), locks=locks, master=name)
    return out["master-a"], out["master-b"], fleet


def test_one_push_heard_by_both_masters_queues_one_request(etcd, tmp_path):
    a, b, _ = masters(etcd, tmp_path, {"dev-1": OLD})
    event = from_ci(signed(digest=NEW))
    took = a.accept("saltcd/push", event)
    again = b.accept("saltcd/push", copy.deepcopy(event))
    assert [r["env"] for r in took["accepted"]] == ["dev"]
    assert again["accepted"] == [] and not again["rejected"]
    assert any("master-a" in reason for reason in again["ignored"])
    assert len(a.records.pending("web", "dev")) == 1


def test_a_dead_masters_rollout_is_finished_by_the_other_and_the_late_one_is_refused(etcd, tmp_path):
    a, b, minions = masters(etcd, tmp_path, {"dev-1": OLD, "dev-2": OLD, "dev-3": OLD})
    a.accept("saltcd/push", from_ci(signed(digest=NEW)))
    frozen = Frozen(minions, a.locks)
    a.fleet = frozen
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(a.run_queue("web", "dev")), daemon=True)
    runner.start()
    assert frozen.frozen.wait(30), "master A never reached its second batch"
    assert b.run_queue("web", "dev")["status"] == "busy"  # A's lease still runs

    deadline = time.monotonic() + TTL + 10
    while (done := b.run_queue("web", "dev"))["status"] == "busy":
        assert time.monotonic() < deadline, "master B never took the rollout over"
        time.sleep(0.3)
    record = done["rollouts"][0]
    assert record["status"] == "succeeded"
    assert minions.running == {"dev-1": NEW, "dev-2": NEW, "dev-3": NEW}
    assert [t["master"] for t in record["takeovers"]] == ["master-b"]
    assert record["takeovers"][0]["from"] == "master-a" and record["takeovers"][0]["batches_done"] == 1
    assert [b_["number"] for b_ in record["batches"]] == [1, 2, 3]  # batch 2 re-run once, by B
    assert record["holder"]["master"] == "master-b"

    # Master A wakes: the step it had in flight carries its old token, which the
    # minions refuse, and its next write is fenced; B's record stands.
    frozen.thawed.set()
    runner.join(30)
    assert outcome["status"] == "fenced"
    assert minions.refused and all(token < record["holder"]["token"] for _, token in minions.refused)
    kept = b.records.rollout("web", "dev", record["id"])
    assert kept["status"] == "succeeded" and kept["takeovers"] == record["takeovers"]
    assert b.records.pending("web", "dev") == []
    assert b.records.env_state("web", "dev")["last_good"] == NEW


def journal(ctl, request, batches, failed, status="running"):
    """A record as master A left it: `batches` done (dev-1 first), `failed` minions."""
    minions = ["dev-1", "dev-2", "dev-3"]
    record = store.new_record(request)
    record.update(status=status, to_digest=NEW, minions=minions, from_digests=dict.fromkeys(minions, OLD),
                  from_specs=dict.fromkeys(minions), holder={"master": "master-a", "token": 1},
                  plan=[{"number": n, "minions": {m: {"from": OLD, "to": NEW, "answered": True, "change": True}}}
                        for n, m in enumerate(minions, 1)],
                  batches=[{"kind": "batch", "number": n, "minions": {m: {
                      "from": OLD, "to": NEW, "answered": True, "ok": m not in failed, "changed": True,
                      "comment": "Unhealthy: 404" if m in failed else "Healthy"}},
                            "failed": [m] if m in failed else []} for n, m in enumerate(minions[:batches], 1)],
                  failed_minions=list(failed))
    if status != "running":
        record["ended"] = time.time()
    ctl.records.save_rollout(record)
    return record


def test_a_takeover_after_the_failure_budget_was_spent_rolls_back_at_once(etcd, tmp_path):
    a, b, minions = masters(etcd, tmp_path, {"dev-1": OLD, "dev-2": OLD, "dev-3": OLD})
    a.accept("saltcd/push", from_ci(signed(digest=NEW)))
    (request,) = a.records.pending("web", "dev")
    minions.running["dev-1"] = NEW  # batch 1 replaced it, and its gate failed
    journal(a, request, batches=1, failed=["dev-1"])
    done = b.run_queue("web", "dev")
    (record,) = done["rollouts"]
    assert record["status"] == "rolled_back", record
    assert minions.running == {"dev-1": OLD, "dev-2": OLD, "dev-3": OLD}
    assert [(e["kind"], sorted(e["minions"])) for e in record["batches"]] == [("batch", ["dev-1"]),
                                                                           ("rollback", ["dev-1"])]
    assert record["takeovers"][0]["master"] == "master-b"


def test_a_request_whose_rollout_had_ended_is_not_run_again(etcd, tmp_path):
    a, b, minions = masters(etcd, tmp_path, {"dev-1": NEW, "dev-2": NEW, "dev-3": NEW})
    a.accept("saltcd/push", from_ci(signed(digest=NEW)))
    (request,) = a.records.pending("web", "dev")
    ended = journal(a, request, batches=3, failed=[], status="succeeded")
    done = b.run_queue("web", "dev")
    assert done["rollouts"] == [] and b.records.pending("web", "dev") == []
    assert minions.applied == []
    assert b.records.env_state("web", "dev") == {"last_good": NEW, "last_good_rollout": ended["id"]}
