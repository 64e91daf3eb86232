"""The five measurements of `make bench`. Each returns a JSON-able dict."""

from bench import cpu
from bench.context import BenchError
from bench.stats import ratio, summary

MILESTONES = ("reaction", "handoff", "first_state_run_published", "first_state_executing", "finished")
# The tiny-image apps each scenario rolls (bench/cli.py converges them all at once first).
LATENCY_APPS = ("m1b1", "m3b1")
NOOP_APP = "m3b1"
SCALE_APPS = ("m3b1", "m3b34", "m6b1", "m6b34", "m9b1", "m9b34")


def where(samples):
    """Median (min-max) of each part of where_the_time_goes over saltcd samples."""
    if not samples:
        return {}
    return {part: summary([s["where"][part] for s in samples]) for part in samples[0]["where"]}


def converge(ctx, app, digest):
    """Bring app to digest through saltcd (not timed); verify it."""
    converge_all(ctx, {app: digest})


def converge_all(ctx, wanted):
    """Bring each app of {app: digest} to its digest through saltcd, all at once
    (set-up, not timed: saltcd runs different apps side by side); verify them."""
    pushed = {app: digest for app, digest in wanted.items() if _running_digest(ctx, app) != digest}
    for app, status in ctx.saltcd_all(pushed).items():
        if status not in ("succeeded", "unchanged"):
            raise BenchError(f"converging {app} to {pushed[app][:19]}: {status}")
    for app, digest in wanted.items():
        ctx.verify(app, digest)


def _running_digest(ctx, app):
    infos = ctx.containers(app).values()
    common = set.intersection(*(set(i["digests"]) if i and i["running"] else set() for i in infos))
    return next(iter(common), None) if len(common) == 1 else None


def latency(ctx, runs):
    """Push -> reaction, hand-off, first state run, environment healthy; 1 and 3 minions."""
    out = {}
    converge_all(ctx, dict.fromkeys(LATENCY_APPS, ctx.images["a"]))
    for app in LATENCY_APPS:
        samples = []
        digest = ctx.images["a"]
        for _ in range(runs):
            digest = ctx.other(digest)
            sample = ctx.saltcd(app, digest)
            if sample["status"] != "succeeded":
                raise BenchError(f"{app} rollout ended {sample['status']}")
            ctx.verify(app, digest)
            samples.append(sample)
        out[f"{len(ctx.targets(app))}_minion"] = {
            "app": app, "samples": samples, "where": where(samples),
            **{m: summary([s[m] for s in samples]) for m in MILESTONES}}
    return out


# (label, app, the naive orchestrate's batch, at most this many runs or None).
# Salt's own batch rounds 50% of 3 down to 1 and is a sliding window: the naive
# way gets the count saltcd's plan uses (2) to do the same work. The first is
# the tiny-image target's case (`--quick` runs only that one); the second,
# which no issue-12 target reads, runs twice at most (half a minute a run, and
# `make bench` must fit its 20 minutes).
OVERHEAD_CASES = (("batch_1", "m3b1", 1, None), ("batch_50pct", "m3b50", 2, 2))


def overhead(ctx, runs, cases=OVERHEAD_CASES):
    """The same rollout done by saltcd, the ideal Docker script and the naive orchestrate."""
    out = {}
    converge_all(ctx, {case[1]: ctx.images["a"] for case in cases})
    for label, app, naive_batch, most in cases:
        runs_here = runs if most is None else min(runs, most)
        digest = ctx.images["a"]
        walls = {"saltcd": [], "saltcd_rollout_only": [], "ideal": [], "naive": [], "naive_no_mine": []}
        saltcd_samples = []
        ways = ["saltcd", "ideal", "naive", "naive_no_mine"]
        for run in range(runs_here):
            for way in ways[run % 4:] + ways[:run % 4]:  # rotate, so no way always goes first
                digest = ctx.other(digest)
                if way == "saltcd":
                    sample = ctx.saltcd(app, digest)
                    if sample["status"] != "succeeded":
                        raise BenchError(f"saltcd rollout of {app} ended {sample['status']}")
                    saltcd_samples.append(sample)
                    walls["saltcd"].append(sample["finished"])
                    walls["saltcd_rollout_only"].append(sample["finished"] - sample["handoff"])
                elif way == "ideal":
                    walls["ideal"].append(ctx.ideal(app, digest))
                else:
                    walls[way].append(ctx.naive(app, digest, naive_batch, update_mine=way == "naive"))
                ctx.verify(app, digest)
        stats = {way: summary(values) for way, values in walls.items()}
        out[label] = {"app": app, "runs": runs_here, "minions": len(ctx.targets(app)), "batch": ctx.apps[app]["batch"],
                      "naive_batch": naive_batch, **stats, "saltcd_where": where(saltcd_samples),
                      "saltcd_over_ideal": ratio(stats["saltcd"], stats["ideal"]),
                      "saltcd_over_naive": ratio(stats["saltcd"], stats["naive"]),
                      "saltcd_over_naive_no_mine": ratio(stats["saltcd"], stats["naive_no_mine"])}
    return out


def noop(ctx, runs):
    """The digest already running pushed again: time to "unchanged", and no restart."""
    app = NOOP_APP
    digest = ctx.images["a"]
    converge(ctx, app, digest)
    before = ctx.containers(app)
    samples = []
    for _ in range(runs):
        sample = ctx.saltcd(app, digest)
        if sample["status"] != "unchanged":
            raise BenchError(f"re-pushing the running digest ended {sample['status']}, not unchanged")
        samples.append(sample["finished"])
    after = ctx.containers(app)
    restarted = [m for m in before if (before[m]["id"], before[m]["started"]) != (after[m]["id"], after[m]["started"])]
    return {"app": app, "minions": len(before), "to_unchanged": summary(samples), "restarted": restarted}


def scale(ctx, runs):
    """Rollout wall time for 3, 6 and 9 minions at batch 1 and 34 %; master CPU per minion."""
    out = {}
    for app in SCALE_APPS:
        if app not in ctx.apps:
            continue
        digest = ctx.images["a"]
        converge(ctx, app, digest)
        walls, cpu_per_minion, batches = [], [], None
        minions = len(ctx.targets(app))
        for _ in range(runs):
            digest = ctx.other(digest)
            before = cpu.master_cpu(ctx.conf_dir)
            sample = ctx.saltcd(app, digest)
            used = cpu.delta(before, cpu.master_cpu(ctx.conf_dir))
            if sample["status"] != "succeeded":
                raise BenchError(f"{app} rollout ended {sample['status']}")
            ctx.verify(app, digest)
            walls.append(sample["finished"])
            cpu_per_minion.append(used["master"] / minions)
            batches = sample["batches"]
        out[app] = {"minions": minions, "batch": ctx.apps[app]["batch"], "batches": batches,
                    "wall": summary(walls), "master_cpu_per_minion": summary(cpu_per_minion)}
    return out
