"""Pulling ahead of the batches (saltcd.rollout.prepull) against a fake fleet whose pulls
take time, run side by side and serve their data through the real DeployPillar."""

import dataclasses
import threading
import time

from saltcd.rollout import Rollout, deploy_pillar, prepull

from .fakes import FakeFleet, MemoryCache, Recorder

OLD, NEW = ("sha256:" + c * 64 for c in "01")


class FakePuller:
    """Pulls that end `fleet.pull_seconds` after they start; `fleet.unpullable` fail."""

    def __init__(self, fleet, pillar):
        self.fleet = fleet
        self.data, _ = deploy_pillar.split(pillar)
        self.entries = deploy_pillar.DeployPillar(fleet.cache)
        self.jobs = {}  # jid -> (minion, ends)

    def publish(self, minion):
        with self.fleet.lock:
            self.entries.publish([minion], self.data)
            jid = f"j{len(self.fleet.published)}"
            self.fleet.published.append(minion)
            self.jobs[jid] = (minion, time.monotonic() + self.fleet.pull_seconds)
            self.fleet.most_at_once = max(self.fleet.most_at_once, len(self.jobs))
        return jid

    def returns(self, jobs, wait):
        time.sleep(min(wait, 0.01))
        out = []
        for jid, minion in jobs.items():
            if time.monotonic() >= self.jobs[jid][1]:
                del self.jobs[jid]
                # What the pull state sees: its data must still be served.
                served = minion in self.fleet.cache.list(deploy_pillar.BANK)
                ok = served and minion not in self.fleet.unpullable
                if ok:
                    self.fleet.images.setdefault(minion, set()).add(self.data["digest"])
                out.append((jid, minion, {"ok": ok, "changed": ok,
                                          "comment": "pulled" if ok else "pull failed: manifest unknown"}))
        return out

    def withdraw(self, minions):
        self.entries.withdraw(minions, self.data)

    def close(self):
        self.fleet.closed += 1


class PullingFleet(FakeFleet):
    """FakeFleet with pulls ahead; its batches note which minions had the image already."""

    def __init__(self, running, pull_seconds=0.02, unpullable=(), apply_seconds=0, **kwargs):
        super().__init__(running, **kwargs)
        self.apply_seconds = apply_seconds
        self.cache = MemoryCache()
        self.pull_seconds = pull_seconds
        self.unpullable = set(unpullable)
        self.images = {}  # minion -> digests on its engine
        self.published = []
        self.most_at_once = 0
        self.closed = 0
        self.had_image = {}  # minion -> image present when its batch started
        self.lock = threading.Lock()

    def puller(self, pillar):
        return FakePuller(self, pillar)

    def apply(self, minions, pillar, timeout, test=False, limit=None, published=None):
        digest = pillar["saltcd"]["digest"]
        time.sleep(self.apply_seconds)
        for minion in minions:
            self.had_image.setdefault(minion, digest in self.images.get(minion, set()))
        failing = [m for m in minions if m in self.unpullable]
        # As SaltFleet.apply: the batch serves its data for its own length.
        data, _ = deploy_pillar.split(pillar)
        entries = deploy_pillar.DeployPillar(self.cache)
        entries.publish(minions, data)
        try:
            out = super().apply([m for m in minions if m not in failing], pillar, timeout, test, limit,
                                published)
        finally:
            entries.withdraw(minions, data)
        # The deploy state pulls first: a failed pull leaves the container as it was.
        out.update({m: {"ok": False, "changed": False, "comment": "pull failed: manifest unknown"}
                    for m in failing})
        return out


def rollout(deployment, fleet, limit=10):
    reporter = Recorder()
    record = {"id": "r1", "app": deployment.app, "env": deployment.env}
    dep = dataclasses.replace(deployment, prepull=limit, watch=0)
    return Rollout(dep, NEW, fleet, reporter, record), record, reporter


def dev_fleet(count, **kwargs):
    return PullingFleet({f"dev-{n}": OLD for n in range(1, count + 1)}, **kwargs)


def pulled_events(reporter):
    return [(d["minion"], d["ok"]) for t, d in reporter.events if t.endswith("/pulled")]


def test_later_batches_find_their_image_pulled_with_bounded_concurrency(settings):
    fleet = dev_fleet(6, pull_seconds=0.05, apply_seconds=0.2)
    run, record, reporter = rollout(settings.deployment("web", "dev"), fleet, limit=2)
    result = run.run()
    assert result["status"] == "succeeded"
    assert fleet.published == ["dev-2", "dev-3", "dev-4", "dev-5", "dev-6"]  # batch order; batch 1 pulls itself
    assert fleet.most_at_once == 2
    assert fleet.had_image == {"dev-1": False, **{f"dev-{n}": True for n in range(2, 7)}}
    assert sorted(pulled_events(reporter)) == [(f"dev-{n}", True) for n in range(2, 7)]
    pulls = result["prepull"]["minions"]
    assert result["prepull"]["limit"] == 2 and sorted(pulls) == [f"dev-{n}" for n in range(2, 7)]
    assert all(p["ok"] and p["seconds"] >= 0.05 and p["ended"] >= p["started"] for p in pulls.values())
    assert fleet.cache.list(deploy_pillar.BANK) == []  # nothing left served
    assert fleet.closed == 1


def test_zero_turns_it_off_and_a_plan_pulls_nothing(settings):
    fleet = dev_fleet(3)
    run, _, reporter = rollout(settings.deployment("web", "dev"), fleet, limit=0)
    assert run.run()["status"] == "succeeded"
    assert fleet.published == [] and "prepull" not in run.record
    fleet = dev_fleet(3)
    run, _, reporter = rollout(settings.deployment("web", "dev"), fleet)
    assert run.run(test=True)["status"] == "planned"
    assert fleet.published == [] and fleet.images == {} and fleet.applied == []
    assert pulled_events(reporter) == []


def test_a_failed_pull_is_reported_and_counted_in_its_batch_without_stopping_anything(settings):
    fleet = dev_fleet(3, unpullable={"dev-2"}, apply_seconds=0.2)
    deployment = dataclasses.replace(settings.deployment("web", "dev"), on_failure="continue",
                                     max_failures=1)
    run, _, reporter = rollout(deployment, fleet)
    result = run.run()
    assert ("dev-2", False) in pulled_events(reporter)
    assert result["prepull"]["minions"]["dev-2"]["ok"] is False
    assert "manifest unknown" in result["prepull"]["minions"]["dev-2"]["comment"]
    assert result["status"] == "succeeded" and result["failed_minions"] == ["dev-2"]
    assert fleet.running == {"dev-1": NEW, "dev-2": OLD, "dev-3": NEW}  # dev-2 untouched


def test_a_batch_that_comes_first_takes_its_minions_over(settings):
    # One pull at a time, each slower than a batch: later minions are left to their batch.
    fleet = dev_fleet(4, pull_seconds=0.3)
    run, _, _ = rollout(settings.deployment("web", "dev"), fleet, limit=1)
    result = run.run()
    assert result["status"] == "succeeded"
    assert "dev-4" not in fleet.published
    assert fleet.running == {f"dev-{n}": NEW for n in range(1, 5)}
    assert fleet.cache.list(deploy_pillar.BANK) == []


def test_a_pull_ending_during_its_batch_leaves_the_batch_its_data(settings):
    fleet = dev_fleet(2, pull_seconds=0.2)
    record = {"id": "r1", "status": "running"}
    pulls = prepull.Prepull(lambda: fleet.puller(settings.deployment("web", "dev").pillar(NEW)),
                            ["dev-2"], 5, 60, record).start()
    deadline = time.monotonic() + 5
    while not fleet.published and time.monotonic() < deadline:
        time.sleep(0.01)
    pulls.claim(["dev-2"])  # its batch starts (and serves the same data) while it pulls
    pulls.thread.join(timeout=5)
    assert pulls.report()["minions"]["dev-2"]["ok"] is True
    assert fleet.cache.list(deploy_pillar.BANK) == ["dev-2"]  # the batch withdraws it, not the pull
    pulls.stop()
    assert fleet.cache.list(deploy_pillar.BANK) == ["dev-2"]


def test_the_end_of_a_rollout_takes_back_the_data_of_pulls_still_running(settings):
    fleet = dev_fleet(3, pull_seconds=30, bad={NEW})  # batch 1 fails at once
    run, _, _ = rollout(settings.deployment("web", "dev"), fleet)
    started = time.monotonic()
    result = run.run()
    assert time.monotonic() - started < 5  # no waiting for the pulls
    assert result["status"] == "rolled_back"
    assert {m: p["comment"] for m, p in result["prepull"]["minions"].items()} == {
        "dev-2": prepull.ENDED_FIRST, "dev-3": prepull.ENDED_FIRST}
    assert fleet.cache.list(deploy_pillar.BANK) == []


def test_a_crashed_rollout_stops_the_pulls_too(settings):
    fleet = dev_fleet(3, pull_seconds=30)
    record = {"id": "r1", "status": "running"}
    pulls = prepull.Prepull(lambda: fleet.puller(settings.deployment("web", "dev").pillar(NEW)),
                            ["dev-2", "dev-3"], 5, 60, record).start()
    deadline = time.monotonic() + 5
    while len(fleet.published) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(fleet.cache.list(deploy_pillar.BANK)) == ["dev-2", "dev-3"]
    record["status"] = "failed"  # what the controller writes when a rollout crashes
    pulls.thread.join(timeout=5)
    assert not pulls.thread.is_alive() and fleet.cache.list(deploy_pillar.BANK) == []


def test_a_pull_that_never_returns_times_out(settings):
    fleet = dev_fleet(2, pull_seconds=30)
    record = {"id": "r1", "status": "running"}
    reporter = []
    pulls = prepull.Prepull(lambda: fleet.puller(settings.deployment("web", "dev").pillar(NEW)),
                            ["dev-2"], 5, 0.2, record, notify=lambda m, r: reporter.append((m, r))).start()
    pulls.thread.join(timeout=5)
    assert reporter and reporter[0][0] == "dev-2" and reporter[0][1]["ok"] is False
    assert reporter[0][1]["comment"] == prepull.NO_ANSWER
    assert fleet.cache.list(deploy_pillar.BANK) == []


def test_salt_puller_reads_its_own_returns_from_the_job_cache():
    from saltcd.master.salt_fleet import SaltPuller  # noqa: PLC0415 - imports Salt's client

    ok = {"docker_image_|-saltcd-pull-docker_image-present_|-x_|-present": {"result": True, "changes": {}}}
    failed = {"docker_image_|-saltcd-pull-docker_image-present_|-x_|-present": {
        "result": False, "changes": {}, "comment": "Encountered error pulling x: manifest unknown"}}
    cache = {"111": {"dev-2": {"return": ok, "retcode": 0}},
             "222": {"dev-3": {"return": failed, "retcode": 2}},
             "333": {}}  # still pulling
    puller = SaltPuller.__new__(SaltPuller)
    puller.opts = {"master_job_cache": "local_cache"}
    puller.local = type("Local", (), {"returners": {"local_cache.get_jid": cache.get}})()
    out = puller.returns({"111": "dev-2", "222": "dev-3", "333": "dev-4"}, wait=0.5)
    assert [(jid, minion, outcome["ok"]) for jid, minion, outcome in sorted(out)] == [
        ("111", "dev-2", True), ("222", "dev-3", False)]
    assert "manifest unknown" in sorted(out)[1][2]["comment"]
    started = time.monotonic()
    assert puller.returns({"333": "dev-4"}, wait=0.3) == []
    assert time.monotonic() - started >= 0.3
