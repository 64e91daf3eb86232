"""python -m bench [--runs N] [--posts 1000] [--only latency,...] [--keep]

Runs on the sandbox (starting it when it is not up, and stopping it afterwards
unless --keep), writes bench/results.json and prints a table. Every figure is
the median of --runs runs with min and max; ratios compare medians measured in
the same run, because the machine is small and shared.
"""

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from bench import model, real_apps, realistic, scenarios, throughput, zero_downtime
from bench.context import Context
from bench.stats import cell, table
from sandbox.cli import Sandbox, say

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("latency", "overhead", "noop", "throughput", "scale", "zero_downtime", "realistic", "salt_cost",
             "fleet", "real_apps")
# Run only with --full (or --only): `scale` (3, 6, 9 minions at batch 1 and
# 34 %) came before `fleet`, which now measures wall time against fleet size;
# the four minutes it took kept `make bench` over its 20.
FULL_ONLY = ("scale",)


def machine():
    """What the figures were measured on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "commit": commit or None,
            "note": "a 2-core shared machine: absolute figures are noisy, ratios are measured side by side"}


def chosen(only, full):
    """The scenarios to run: those named in `only` (a comma list), or else all
    but FULL_ONLY, which `full` adds."""
    if only is None:
        return {s for s in SCENARIOS if full or s not in FULL_ONLY}
    return {s.strip() for s in only.split(",") if s.strip()}


def targets(results):
    """The issue's targets, each with the measured figure and whether it holds."""
    out = []

    def check(name, value, limit, holds, **context):
        out.append({"target": name, "limit": limit, "measured": value,
                    "met": bool(holds) if value is not None else None, **context})

    for size, lat in (results.get("latency") or {}).items():
        value = lat["first_state_run_published"]["median"]
        check(f"push -> first state run starting, {size} env (median)", value, "< 1 s",
              value is not None and value < 1)
    over = (results.get("overhead") or {}).get("batch_1")
    if over:
        check("saltcd / ideal wall time, tiny image, batch 1 over 3 minions", over["saltcd_over_ideal"], "<= 1.35",
              over["saltcd_over_ideal"] is not None and over["saltcd_over_ideal"] <= 1.35,
              **realistic.floor_context(results))
    for label, over in (results.get("overhead") or {}).items():
        for key, what in (("saltcd_over_naive", "naive"), ("saltcd_over_naive_no_mine", "naive without mine refresh")):
            check(f"saltcd / {what} wall time, {label}", over[key], "<= 1.0",
                  over[key] is not None and over[key] <= 1.0)
    noop = results.get("noop")
    if noop:
        value = noop["to_unchanged"]["median"]
        check("no-op rollout of 3 minions (median)", value, "< 3 s, 0 restarts",
              value is not None and value < 3 and not noop["restarted"])
    for count, tput in (results.get("throughput") or {}).items():
        check(f"lost of {count} posts", tput["lost"], "0", tput["lost"] == 0)
    zero_downtime.targets(results.get("zero_downtime") or {}, check)
    realistic.targets(results, check)
    return out


def report(results):
    """The table printed at the end."""
    rows = [["measurement", "median (min-max)", "notes"]]
    for size, lat in (results.get("latency") or {}).items():
        for milestone in scenarios.MILESTONES:
            rows.append([f"latency {size}: push -> {milestone.replace('_', ' ')}", cell(lat[milestone]), ""])
    for label, over in (results.get("overhead") or {}).items():
        for way in ("saltcd", "saltcd_rollout_only", "ideal", "naive", "naive_no_mine"):
            rows.append([f"rollout {label}, 3 minions: {way.replace('_', ' ')}", cell(over[way]), ""])
        rows.append([f"rollout {label}: saltcd/ideal, saltcd/naive, saltcd/naive no mine",
                     f"{over['saltcd_over_ideal']} / {over['saltcd_over_naive']} / "
                     f"{over['saltcd_over_naive_no_mine']}", ""])
        for part, stat in over["saltcd_where"].items():
            rows.append([f"  saltcd {label}, where the time goes: {part.replace('_', ' ')}", cell(stat), ""])
    noop = results.get("noop")
    if noop:
        rows.append(["no-op push, 3 minions: push -> unchanged", cell(noop["to_unchanged"]),
                     f"{len(noop['restarted'])} restarted"])
    for count, tput in (results.get("throughput") or {}).items():
        rows.append([f"throughput {count} posts: posted/s, reacted/s",
                     f"{tput['posts_per_second']} / {tput['reactions_per_second']}",
                     f"lost {tput['lost']} ({tput['without_reaction_but_on_the_bus']} reached the bus "
                     f"but no reaction), settled in {tput['settled_seconds']} s"])
        rows.append([f"throughput {count} posts: CPU ms per post",
                     f"master {tput['cpu_ms_per_post']['master']}",
                     f"reactor {tput['cpu_ms_per_post']['reactor']}, "
                     f"drains {tput['cpu_ms_per_post']['drain_engine']}, "
                     f"webhook {tput['cpu_ms_per_post']['webhook_engine']}"])
    for sc in (results.get("scale") or {}).values():
        rows.append([f"scale {sc['minions']} minions, batch {sc['batch']} ({sc['batches']} batches)",
                     cell(sc["wall"]), f"master CPU/minion {cell(sc['master_cpu_per_minion'])}"])
    if results.get("zero_downtime"):
        rows.extend(zero_downtime.report_rows(results["zero_downtime"]))
    rows.extend(realistic.report_rows(results))
    rows.extend(real_apps.report_rows(results))
    rows.extend(model.report_rows(results.get("model")))
    lines = [table(rows), "", "targets:"]
    for target in results.get("targets", []):
        mark = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        lines.append(f"  [{mark}] {target['target']}: {target['measured']} (target {target['limit']})")
        if target.get("why"):
            lines.append(f"      {target['why']}")
    return "\n".join(lines)


def parser():
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; zero_downtime: 1)")
    top.add_argument("--posts", default="1000", help="webhook post counts, comma-separated (at most 5000 "
                     "each; default 1000, the 0-lost target)")
    top.add_argument("--only", default=None, help=f"comma list of {', '.join(SCENARIOS)} (default: all but "
                     f"{', '.join(FULL_ONLY)}, which --full adds)")
    top.add_argument("--keep", action="store_true", help="leave a sandbox the bench started running")
    top.add_argument("--quick", action="store_true", help="one round of each scenario (realistic: 3 minions "
                     "batch 1 at 50 MB only; overhead: batch 1 only), 200 posts")
    top.add_argument("--full", action="store_true", help="realistic images: 3 and 9 minions, batch 1 and 34 %%, "
                     "50 and 200 MB; fleet: batch 10 %% too; the scale scenario (about 50 min more)")
    top.add_argument("--model", action="store_true", help="the cost model's run (make bench-model): the fleet "
                     "scenario at batch 10 %% and 25 %% on every fleet size the sandbox has (SANDBOX_DEV=60: 1 "
                     "to 60 minions), fitted, checked and extrapolated (bench/model.py); puts only `model` into "
                     "the results file (a main run keeps it) and draws bench/model.svg")
    top.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    return top


def run(ctx, args, only):
    """Every selected scenario, in order; results as they come."""
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "runs": args.runs}
    say("building the two bench images and copying them to every bench repository")
    ctx.prepare_images()
    overhead_cases = scenarios.OVERHEAD_CASES[:1] if args.quick else scenarios.OVERHEAD_CASES
    # name -> (the tiny-image apps it rolls, the scenario)
    steps = {
        "latency": (scenarios.LATENCY_APPS, lambda: scenarios.latency(ctx, args.runs)),
        "overhead": ([case[1] for case in overhead_cases], lambda: scenarios.overhead(ctx, args.runs, overhead_cases)),
        "noop": ((scenarios.NOOP_APP,), lambda: scenarios.noop(ctx, args.runs)),
        "throughput": (throughput.APPS, lambda: {str(n): throughput.run(ctx, n) for n in args.post_counts}),
        "scale": (scenarios.SCALE_APPS, lambda: scenarios.scale(ctx, 1 if args.quick else max(3, args.runs // 2))),
        "zero_downtime": (zero_downtime.STRATEGIES.values(), lambda: zero_downtime.run(ctx, args.zero_downtime_runs)),
        "realistic": ((), lambda: realistic.realistic(
            ctx, realistic.QUICK_PLAN if args.quick else realistic.FULL_PLAN if args.full else realistic.PLAN,
            log_dir=ctx.state.get("logs"))),
        "salt_cost": ((realistic.SALT_COST_APP,), lambda: realistic.salt_cost(ctx, max(2, args.runs))),
        "fleet": (realistic.fleet_apps(ctx, every_batch=args.full),
                  lambda: realistic.fleet(ctx, max(1, args.runs // 2), every_batch=args.full,
                                          call_rounds=max(1, args.runs))),
        # Its apps' first rollout is its own (in-process, like its figures).
        "real_apps": ((), lambda: real_apps.run(ctx, args.runs)),
    }
    # Set-up, not timed: every app's first rollout at once, so that their settle
    # waits overlap (zero_downtime's alone is half a minute) instead of adding up.
    # Each scenario still converges what it needs: here, that finds it done.
    first = sorted({app for name in SCENARIOS if name in only for app in steps[name][0] if app in ctx.apps})
    if first:
        began = time.monotonic()
        say(f"bench: bringing {len(first)} apps to their first image at once ...")
        scenarios.converge_all(ctx, dict.fromkeys(first, ctx.images["a"]))
        say(f"bench: done in {time.monotonic() - began:.0f} s")
    for name in SCENARIOS:
        if name in only:
            began = time.monotonic()
            say(f"bench: {name} ...")
            results[name] = steps[name][1]()
            say(f"bench: {name} done in {time.monotonic() - began:.0f} s")
    if args.model:
        results["model"] = model.build(results["fleet"], os.cpu_count())
    results["targets"] = targets(results)
    return results


def merged(results, out, command):
    """The results file `out` with this run's cost model put in (a run of its own:
    its `measured` says which), or, for a main run, `results` keeping the model
    the file had."""
    old = json.loads(out.read_text()) if out.exists() else {}
    if command is None:
        return {**results, **({"model": old["model"]} if old.get("model") else {})}
    model_run = {**(results.get("model") or {}),
                 "measured": {"command": command, "started": results["started"], "machine": results["machine"],
                              "note": "the fleet scenario at every size of a 60-minion sandbox, a run of its own "
                                      "(same machine)"}}
    return {**old, "model": model_run}


def main(argv=None):
    args = parser().parse_args(argv)
    # zero_downtime is a few slow rollouts: one round unless --runs says otherwise.
    args.zero_downtime_runs = 1 if args.runs is None else args.runs
    args.runs = 3 if args.runs is None else args.runs  # 3, so that `make bench` stays under 20 minutes
    if args.quick:
        args.runs = args.zero_downtime_runs = 1
        args.posts = "200"
    if args.model:
        args.only, args.full = "fleet", True  # both shares at every size; nothing else
    only = chosen(args.only, args.full)
    unknown = only - set(SCENARIOS)
    args.post_counts = [int(n) for n in args.posts.split(",") if n.strip()]
    if unknown or args.runs < 1 or any(not 1 <= n <= 5000 for n in args.post_counts):
        say(f"bad arguments: scenarios {sorted(unknown) or 'ok'}, runs >= 1, posts 1-5000")
        return 2
    sandbox = Sandbox(REPO)
    started_here = False
    if sandbox.is_up():
        if "bench_apps" not in sandbox.read_state():
            say("the running sandbox predates the bench apps: `make sandbox-down`, then run again")
            return 1
        say("using the running sandbox")
    else:
        if sandbox.root.exists():
            sandbox.down()
        sandbox.up()
        started_here = True
    ctx = Context(sandbox.read_state())
    try:
        results = run(ctx, args, only)
    finally:
        ctx.close()
        if started_here and not args.keep:
            say("stopping the sandbox the bench started")
            sandbox.down()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged(results, out, "python -m bench --model" if args.model else None),
                              indent=2) + "\n")
    tmp.replace(out)
    print(report(results), flush=True)
    say(f"results in {out}")
    try:
        from bench import plot
        if args.model:
            say(f"picture: {plot.plot_model(results, out.with_name('model.svg'))}")
        else:
            say(f"picture: {plot.plot(results, out.with_suffix('.svg'))}")
    except ImportError:
        say("no picture: matplotlib is missing (pip install -e '.[bench]')")
    return 0
