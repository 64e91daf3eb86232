"""What targeted pillar costs a batch: the deploy data in the job's pillar override
(before) against the `saltcd` ext_pillar plus a selector override (now).

Each round applies saltcd.deploy to the same minions, the same digest they
already run, both ways in turn (so Docker does the same little work each time:
no replace, one health probe), and times the whole LocalClient call as the
rollout does. Also timed: `saltutil.refresh_pillar` (what a design without any
override would add before each batch: the minion's in-memory pillar lacks the
entry) and the ext_pillar itself, in-process, for a minion with and without
an entry.

    python -m bench.pillar_cost -c /path/to/master/conf_dir --app web --env dev --rounds 5

The master must be running and the app must already run its current digest on
the environment's minions (deploy it once first).
"""

import argparse
import contextlib
import json
import statistics
import sys
import time

import salt.client
import salt.config
import salt.pillar

from saltcd import rollout, store
from saltcd.master import salt_cache, salt_fleet, wiring
from saltcd.rollout import deploy_pillar, holder


def _timed(call):
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _ok(returns, minions):
    outcomes = {m: salt_fleet.state_outcome(returns.get(m)) for m in minions}
    bad = {m: o for m, o in outcomes.items() if not (o and o["ok"])}
    if bad:
        raise RuntimeError(f"state.apply failed: {bad}")


@contextlib.contextmanager
def _as_a_rollout(opts, dep, digest):
    """dep's deploy pillar for `digest` as a rollout of this process publishes it:
    the ext_pillar serves an entry only while its rollout is recorded as running
    and its process lives. The stand-in record is gone again after the block."""
    records = store.Store(salt_cache.cache_for(opts))
    record = {"id": store.new_id(), "app": dep.app, "env": dep.env, "status": "running",
              "trigger": {"kind": "operator", "origin": "bench.pillar_cost"}}
    records.save_rollout(record)
    try:
        yield holder.tie(dep.pillar(digest), record["id"], holder.current())
    finally:
        records.discard_rollout(dep.app, dep.env, record["id"])


def _compile_ms(opts, minion, override, rounds=20):
    times = []
    for _ in range(rounds):
        pillar = salt.pillar.get_pillar(opts, {"id": minion}, minion, saltenv="base",
                                        pillar_override=override)
        elapsed, _ = _timed(pillar.compile_pillar)
        times.append(elapsed * 1000)
    return round(statistics.median(times), 2)


def _measure_rounds(opts, fleet, minions, pillar, rounds, timeout):
    """The rounds of `measure`, with `pillar` served as a rollout's."""
    local = fleet.local
    out = {"minions": minions, "rounds": rounds,
           "override_s": [], "ext_pillar_s": [], "refresh_pillar_s": []}
    for _ in range(rounds):
        # Before: everything in the published job.
        elapsed, returns = _timed(lambda: local.cmd(
            minions, "state.apply", [salt_fleet.DEPLOY_SLS], tgt_type="list", timeout=timeout,
            full_return=True, kwarg={"pillar": pillar, "queue": True, "test": False}))
        _ok(returns, minions)
        out["override_s"].append(round(elapsed, 3))
        # Now: the entry in the store, the selector in the job.
        elapsed, outcomes = _timed(lambda: fleet.apply(minions, pillar, timeout))
        if not all(o and o["ok"] for o in outcomes.values()):
            raise RuntimeError(f"state.apply failed: {outcomes}")
        out["ext_pillar_s"].append(round(elapsed, 3))
        elapsed, _ = _timed(lambda: local.cmd(minions, "saltutil.refresh_pillar", [], tgt_type="list",
                                              timeout=timeout, kwarg={"wait": True}))
        out["refresh_pillar_s"].append(round(elapsed, 3))
    for key in ("override_s", "ext_pillar_s", "refresh_pillar_s"):
        out[key.replace("_s", "_median_s")] = round(statistics.median(out[key]), 3)
    # The ext_pillar's own share: a pillar compile on the master, in-process.
    data, override = deploy_pillar.split(pillar)
    entries = deploy_pillar.DeployPillar(salt_cache.cache_for(opts))
    out["compile_without_entry_ms"] = _compile_ms(opts, minions[0], override)
    entries.publish(minions[:1], data)
    try:
        out["compile_with_entry_ms"] = _compile_ms(opts, minions[0], override)
    finally:
        entries.withdraw(minions[:1], data)
    return out


def measure(opts, app, env, rounds=5, timeout=120):
    """{"override_s": [...], "ext_pillar_s": [...], "refresh_pillar_s": [...], medians, ...}."""
    dep = wiring.settings(opts).deployment(app, env)
    fleet = salt_fleet.SaltFleet(opts)
    try:
        minions = fleet.targets(dep.target, dep.tgt_type)
        if not minions:
            raise RuntimeError(f"{app}/{env}: target {dep.target!r} matches no minion")
        running = rollout.observe(fleet, dep, minions, rollout.placement(fleet, dep.roles, minions))
        digest = next(iter({i["digest"] for i in running.values() if i and i["digest"]}), None)
        if not digest:
            raise RuntimeError(f"{app}/{env} runs nothing yet: deploy it once first")
        with _as_a_rollout(opts, dep, digest) as pillar:
            out = _measure_rounds(opts, fleet, minions, pillar, rounds, timeout)
        out.update({"app": app, "env": env})
        return out
    finally:
        fleet.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config-dir", required=True, help="the master's configuration directory")
    parser.add_argument("--app", required=True)
    parser.add_argument("--env", default="dev")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    opts = salt.config.master_config(f"{args.config_dir.rstrip('/')}/master")
    json.dump(measure(opts, args.app, args.env, args.rounds), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
