"""Zero downtime, measured: what clients of every host saw during whole rollouts.

Two apps over the same 3 dev minions, batch 1, the same settle
(sandbox/layout.ZERO_DOWNTIME_APPS): one replaced stop-first (the old
container goes, then the new one starts on the published port), one
start-first (the new container starts beside the old one and the host's
HAProxy switches to it once it is healthy). Each goes through three
rollouts: a good image (succeeds), an image that answers /health for 4 s and
then exits (`dies`: rolled back) and one that exits at once (`crash`, never
healthy: rolled back). The two apps go through theirs at the same time
(separate ports and locks): the scenario counts what clients saw, not how
long it took, a rollout beside another is the harder test of that, and it
halves the scenario's time. The traffic generator (sandbox/traffic.py, a fresh
connection per request) sends GET /version to every minion's public address
from before the push until a second after saltcd's `finished` event, and
counts per host the requests served and failed and the longest gap between
two served ones.
"""

import time

from bench import registry_http
from bench.context import BASE_REPO, ROLLOUT_TIMEOUT, BenchError
from bench.scenarios import converge, converge_all
from bench.stats import summary
from saltcd import config
from sandbox import app_image, layout
from sandbox.cli import run_parallel, say
from sandbox.traffic import Traffic

# (case, image behaviour or None for the other good image, the status saltcd must end with)
CASES = (("good", None, "succeeded"), ("dies", "dies", "rolled_back"), ("crash", "crash", "rolled_back"))
STRATEGIES = {strategy: app for app, strategy in layout.ZERO_DOWNTIME_APPS.items()}
BEFORE_PUSH = 0.5      # traffic flowing (and its first answers in) before the push
AFTER_FINISHED = 1.0   # and for a second after `finished`: a late outage shows too
PAUSE = 0.02           # between two requests to one host
PATH = "/version"


def app_settings(ctx, app):
    """saltcd's resolved view of a bench app in dev (strategy, settle, drain as it runs them)."""
    return config.load({"apps": {app: ctx.apps[app]}}).deployment(app, "dev")


def prepare_bad_images(ctx):
    """Build the `dies` and `crash` images once; make them available in both apps' repositories."""
    base = f"{ctx.state['registry']}/{BASE_REPO}"
    images = {}
    for behaviour in ("dies", "crash"):
        digest = app_image.build_and_push(ctx.state["build_docker_host"], base, behaviour, f"bench-{behaviour}",
                                          behaviour=behaviour)
        for app in STRATEGIES.values():
            # A tag that maps to no environment: copying it deploys nothing.
            registry_http.copy_image(base, ctx.apps[app]["repository"], digest, behaviour)
        images[behaviour] = digest
    return images


def traffic_urls(ctx, app):
    """{minion: its public URL of the app}."""
    port = ctx.apps[app]["ports"][0].split(":")[0]
    return {m["id"]: f"http://{m['address']}:{port}{PATH}" for m in ctx.targets(app)}


def measured_rollout(ctx, app, digest):
    """Push app:dev = digest under traffic; the status and what each host's clients saw."""
    with Traffic(traffic_urls(ctx, app), pause=PAUSE, max_seconds=ROLLOUT_TIMEOUT + 30) as traffic:
        time.sleep(BEFORE_PUSH)
        try:
            sample = ctx.saltcd(app, digest)
        finally:
            time.sleep(AFTER_FINISHED)
    hosts = traffic.stop()
    return {"status": sample["status"], "finished": sample["finished"], "hosts": hosts,
            "failed": sum(h["failed"] for h in hosts.values()),
            "served": sum(h["served"] for h in hosts.values()),
            "longest_gap": max(h["longest_gap"] for h in hosts.values())}


def aggregate(samples, expected):
    """Runs of one case and strategy -> medians (min-max) over runs, in total and per host."""
    hosts = sorted({h for s in samples for h in s["hosts"]})
    return {
        "expected": expected,
        "statuses": [s["status"] for s in samples],
        "as_expected": all(s["status"] == expected for s in samples),
        "failed": summary([s["failed"] for s in samples]),
        "failed_max": max((s["failed"] for s in samples), default=None),
        "served": summary([s["served"] for s in samples]),
        "longest_gap": summary([s["longest_gap"] for s in samples]),
        "finished": summary([s["finished"] for s in samples]),
        "per_host": {h: {key: summary([s["hosts"][h][key] for s in samples if h in s["hosts"]])
                         for key in ("failed", "longest_gap", "served")} for h in hosts},
        "first_errors": next((s["hosts"][h]["errors"] for s in samples for h in hosts
                              if s["hosts"].get(h, {}).get("errors")), []),
        "samples": samples,
    }


def _rounds(ctx, strategy, runs, bad, samples):
    """One strategy's app through every case in turn, `runs` times (beside the other's)."""
    app, current = STRATEGIES[strategy], ctx.images["a"]
    for _ in range(runs):
        for case, behaviour, expected in CASES:
            digest = ctx.other(current) if behaviour is None else bad[behaviour]
            sample = measured_rollout(ctx, app, digest)
            samples[case][strategy].append(sample)
            say(f"  zero_downtime {case} {strategy}: {sample['status']}, {sample['served']} served, "
                f"{sample['failed']} failed, longest gap {sample['longest_gap']:.2f} s")
            # What must run afterwards: the new image, or the old one again. A
            # rollout that ended otherwise is recorded as it is; the next starts clean.
            if expected == "succeeded":
                current = digest
            if sample["status"] != expected:
                converge(ctx, app, current)
            ctx.verify(app, current)


def run(ctx, runs=1):
    """Every case for both strategies, `runs` times; results for bench/results.json."""
    missing = [app for app in STRATEGIES.values() if app not in ctx.apps]
    if missing:
        raise BenchError(f"the sandbox has no {', '.join(missing)}: `make sandbox-down`, then run again")
    settings = {strategy: app_settings(ctx, app) for strategy, app in STRATEGIES.items()}
    for strategy, dep in settings.items():
        if dep.strategy != strategy:
            raise BenchError(f"{STRATEGIES[strategy]} is configured {dep.strategy}, not {strategy}")
    bad = prepare_bad_images(ctx)
    # The first start-first deploy takes the port: not measured.
    converge_all(ctx, dict.fromkeys(STRATEGIES.values(), ctx.images["a"]))
    samples = {case: {strategy: [] for strategy in STRATEGIES} for case, _, _ in CASES}
    run_parallel(lambda strategy: _rounds(ctx, strategy, runs, bad, samples), STRATEGIES)
    any_dep = settings["start-first"]
    return {
        "apps": STRATEGIES,
        "side_by_side": True,  # both apps' rollouts at the same time (see the docstring)
        "minions": len(ctx.targets(STRATEGIES["start-first"])),
        "batch": any_dep.batch,
        "settle": any_dep.health.settle,
        "watch": any_dep.watch_seconds,
        "health_interval": any_dep.health.interval,
        "health_timeout": any_dep.health.timeout,
        "drain_start_first": settings["start-first"].drain,
        "traffic": {"path": PATH, "pause": PAUSE, "request_timeout": 2.0, "fresh_connection_per_request": True,
                    "from": f"{BEFORE_PUSH} s before the push", "until": f"{AFTER_FINISHED} s after `finished`"},
        "bad_images": bad,
        "cases": {case: {strategy: aggregate(samples[case][strategy], expected) for strategy in STRATEGIES}
                  for case, _, expected in CASES},
    }


def targets(result, check):
    """The issue's target: start-first, 0 failed requests in the good and in the rolled-back rollouts."""
    for case, _, expected in CASES:
        cell = (result.get("cases") or {}).get(case, {}).get("start-first")
        if not cell:
            continue
        value = cell["failed_max"]
        check(f"start-first failed requests, {case} rollout ({expected}), 3 minions batch 1 (worst run)",
              value, f"0, and {expected}", value == 0 and cell["as_expected"])


def report_rows(result):
    """Rows of the printed table: stop-first and start-first side by side per case."""
    rows = [[f"zero downtime: settle {result['settle']} s, watch {result['watch']} s, "
             f"start-first drain {result['drain_start_first']} s",
             "failed / longest gap / served", "per host (median): failed, longest gap"]]
    for case, _, expected in CASES:
        for strategy in STRATEGIES:
            cell = result["cases"][case][strategy]
            status = "" if cell["as_expected"] else f" NOT {expected}: {cell['statuses']}"
            per_host = ", ".join(f"{h} {v['failed']['median']:g}/{v['longest_gap']['median']:.2f} s"
                                 for h, v in cell["per_host"].items())
            rows.append([f"  {case} ({expected}), {strategy}{status}",
                         f"{cell['failed']['median']:g} / {cell['longest_gap']['median']:.3f} s / "
                         f"{cell['served']['median']:g}", per_host])
    return rows
