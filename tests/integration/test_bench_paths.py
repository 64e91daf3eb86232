"""The benchmark's measuring instruments on real parts: a timed manifest PUT,
the timeline read from the master's bus, and the direct-Docker yardstick.
(`make bench` runs them all on the sandbox; this keeps them honest in CI.)"""

import time

from bench import ideal, registry_http
from bench.context import timeline
from bench.observe import BusRecorder

MILESTONES = ("reaction", "handoff", "first_state_run_published", "first_state_executing", "finished")


def test_a_timed_push_yields_an_ordered_timeline_that_adds_up(lab):
    built = lab.push("timed", "build", "9.0.0")
    bus = BusRecorder(str(lab.master.config_file))
    try:
        mark = bus.mark()
        manifest, media_type, digest = registry_http.get_manifest(lab.repositories["timed"], built)
        pushed = time.time()
        registry_http.put_manifest(lab.repositories["timed"], "dev", manifest, media_type)
        finished = bus.wait_for(lambda e: e.tag == "saltcd/deploy/timed/dev/finished", since=mark, timeout=180)
        assert finished is not None and finished.data["status"] == "succeeded"
        line = timeline("timed", pushed, bus.between(mark), finished)
    finally:
        bus.close()
    assert digest == built
    values = [line[m] for m in MILESTONES]
    assert None not in values and values == sorted(values) and values[0] > 0, line
    assert line["batches"] == len(lab.env_minions("dev"))
    assert abs(sum(line["where"].values()) - line["finished"]) < 0.25, line
    assert set(lab.running_digests("timed").values()) == {built, None}  # dev only


def test_the_ideal_rollout_runs_the_digest_healthy_and_restarts_nothing_when_run_again(lab):
    digest = lab.push("ideal", "build", "9.1.0")
    spec = lab.master.config["saltcd"]["apps"]["ideal"]
    minions = [{"id": m["id"], "address": m["address"], "docker_host": lab.hosts[m["id"]].url}
               for m in lab.fleet if m["env"] == "dev"]
    ideal.rollout(minions, spec, digest, 1)
    first = {m["id"]: lab.container(m["id"], "ideal") for m in minions}
    assert all(c["running"] and c["image"].endswith(digest) for c in first.values()), first
    assert all(lab.health(m["id"], "ideal") == 200 for m in minions)
    ideal.rollout(minions, spec, digest, 1)
    assert {m["id"]: lab.container(m["id"], "ideal") for m in minions} == first
