"""What real applications cost (issue 24), on the sandbox's first 3 minions, batch 1:

- a spec-only rollout (the same digest, one environment value changed: what a
  configuration change rolls out) against a digest rollout of the same app;
- a batch of a two-role app (web and worker of one image) against a batch of
  a one-role app.

Each rollout is saltcd's Rollout with the real SaltFleet, run in this process
against the sandbox master (as bench/pillar_cost.py does): a spec change needs
a configuration the master does not have, and a rollout started here rolls
it exactly as `deploy.rollout` would. Both apps have settle 0: the figures
compare the work of a batch (pull, replace, gate), not its waits; a role's own
settle adds on top, because the roles of a batch are gated one after another.
"""

import dataclasses
import time

import salt.config

from bench.context import BenchError
from bench.stats import cell, ratio, summary
from saltcd import rollout, store
from saltcd.master import salt_cache, salt_fleet, wiring
from saltcd.rollout import holder

ONE, TWO = "ra-one", "ra-two"
APPS = (ONE, TWO)


class _Quiet:
    """A reporter that keeps nothing: the figures come from the records."""

    def fire(self, tag, data):
        pass

    def progress(self, text):
        pass


def _with_environment(dep, name, value):
    """`dep` (an app without roles) with one more environment value."""
    return dataclasses.replace(dep, environment={**dep.environment, name: value})


def _rollout(records, fleet, dep, digest):
    """Roll `dep` to `digest`: (seconds, [seconds of each batch]); raise unless it succeeded."""
    record = {"id": store.new_id(), "app": dep.app, "env": dep.env, "status": "running",
              "holder": holder.current(), "trigger": {"kind": "operator", "origin": "bench.real_apps"}}
    records.save_rollout(record)
    began = time.perf_counter()
    try:
        result = rollout.Rollout(dep, digest, fleet, _Quiet(), record, save=records.save_rollout).run()
    finally:
        records.discard_rollout(dep.app, dep.env, record["id"])
    seconds = time.perf_counter() - began
    if result["status"] not in ("succeeded", "unchanged"):
        raise BenchError(f"{dep.app}: rollout of {digest[:19]} {result['status']}: {result.get('reason')}")
    return seconds, [b["ended"] - b["started"] for b in result["batches"]], result["status"]


def run(ctx, runs):
    """{"digest_rollout", "spec_only_rollout", "one_role_batch", "two_role_batch", ratios}."""
    opts = salt.config.master_config(ctx.state["master_config_file"])
    settings = wiring.settings(opts)
    one, two = (settings.deployment(app, "dev") for app in APPS)
    records = store.Store(salt_cache.cache_for(opts))
    fleet = salt_fleet.SaltFleet(opts)
    samples = {"digest_rollout": [], "spec_only_rollout": [], "one_role_batch": [], "two_role_batch": []}
    try:
        digest = ctx.images["a"]
        for dep in (one, two):  # set-up, not timed
            _rollout(records, fleet, dep, digest)
        for number in range(runs):
            digest = ctx.other(digest)
            seconds, batches, _ = _rollout(records, fleet, one, digest)
            samples["digest_rollout"].append(seconds)
            samples["one_role_batch"].extend(batches)
            changed = _with_environment(one, "BENCH_SPEC", f"{number}-{time.time()}")
            seconds, _, status = _rollout(records, fleet, changed, digest)
            if status != "succeeded":
                raise BenchError(f"the spec-only rollout changed nothing ({status})")
            samples["spec_only_rollout"].append(seconds)
            _, batches, _ = _rollout(records, fleet, two, digest)
            samples["two_role_batch"].extend(batches)
    finally:
        fleet.close()
    out = {name: summary(values) for name, values in samples.items()}
    out["spec_only_over_digest"] = ratio(out["spec_only_rollout"], out["digest_rollout"])
    out["two_role_over_one_role_batch"] = ratio(out["two_role_batch"], out["one_role_batch"])
    out["minions"], out["batch"] = len(settings.deployment(ONE, "dev").target.split(",")), 1
    return out


def report_rows(results):
    """Rows of the table `make bench` prints."""
    real = results.get("real_apps")
    if not real:
        return []
    return [
        ["real apps, 3 minions batch 1: digest rollout", cell(real["digest_rollout"]), ""],
        ["real apps: spec-only rollout (one environment value)", cell(real["spec_only_rollout"]),
         f"x{real['spec_only_over_digest']} the digest rollout"],
        ["real apps: one batch, one role", cell(real["one_role_batch"]), ""],
        ["real apps: one batch, two roles (web, worker)", cell(real["two_role_batch"]),
         f"x{real['two_role_over_one_role_batch']} one role"],
    ]
