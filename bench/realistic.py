"""Issue 12's measurements: realistic images over a limited link, Salt's cost per
batch, and a larger fleet. Each returns a JSON-able dict.

Realistic: images with a unique 50 / 200 MB layer of random data, whose PID 1
ignores SIGTERM (each old container takes its whole stop_timeout), pulled
through bench/throttle.py (25 MB/s a connection, 25 MB/s = 200 Mbit/s a
host). Before each timed rollout the image it rolls to is removed from every
target engine, so every rollout pulls every byte of it. Four ways, in turn:
saltcd from the push, start-first (on the app's twin, layout.realistic_twin:
same minions and batch, its own port and its own two images, so that no
image one path runs is ever removed for the other), the sequential
bare-Docker ideal, the parallel-pull ideal (pull everywhere at once, then
replace batch by batch), and the naive Salt orchestrate, stop-first. saltcd
waits the app's settle after each batch's health and the watch (= the settle)
after the last; both ideals wait the same, the naive orchestrate does not (it
has no such step).
"""

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import docker

from bench import cpu, ideal
from bench.context import BenchError
from bench.scenarios import converge, converge_all, where
from bench.stats import cell, ratio, summary
from bench.throttle import ThrottleProcess
from saltcd.config.batches import plan_batches
from sandbox import layout

WAYS = ("saltcd", "ideal", "ideal_parallel_pull", "naive")
# The images of the stop-first apps and of their start-first twins (saltcd's way).
VERSIONS = ("a", "b")
TWIN_VERSIONS = ("c", "d")
PER_CONNECTION_MB = 25
PER_HOST_MB = 25  # 200 Mbit/s
# (app, image MB, runs). Every case costs four rollouts a run that each pull
# the image on every target over the limited link (one round of 3 minions at
# batch 1: ~90 s at 50 MB, ~160 s at 200 MB on the 2-core sandbox), so
# `make bench` (20 minutes in all) measures the targets' case (200 MB: one
# round), `--full` the whole matrix (3 and 9 minions, batch 1 and 34 %, two
# rounds: about 45 minutes more), and `make bench QUICK=1` one round at 50 MB.
PLAN = (("r3b1", 50, 2), ("r3b1", 200, 1))
FULL_PLAN = tuple((app, size, 2) for size in (50, 200) for app in ("r3b1", "r3b34", "r9b1", "r9b34"))
QUICK_PLAN = (("r3b1", 50, 1),)


def _forget(ctx, app, digest):
    """Remove every image holding `digest` (under any repository) from app's target
    engines, so that the next pull of it fetches every byte through the proxy."""
    for minion in ctx.targets(app):
        with closing(docker.DockerClient(base_url=minion["docker_host"], timeout=120)) as client:
            for image in client.images.list():
                if any(ref.endswith(f"@{digest}") for ref in image.attrs.get("RepoDigests") or []):
                    try:
                        client.images.remove(image.id, force=True)
                    except docker.errors.APIError as exc:
                        raise BenchError(f"cannot remove {digest[:19]} from {minion['id']}: {exc}") from None


def _preload(ctx, wanted):
    """Pull each app's image of {app: digest} on its targets straight from the
    registry, all at once (set-up, not timed): the converge that follows then
    finds every layer and moves nothing through the throttle."""
    jobs = [(minion["docker_host"], {"repository": ctx.in_registry(ctx.apps[app])}, digest)
            for app, digest in wanted.items() for minion in ctx.targets(app)]
    with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
        list(pool.map(lambda job: ideal.pull(*job), jobs))


def _clear(ctx, app, images):
    """Remove app's containers (a start-first app's retired ones included) and both
    its big images from its targets (after its runs)."""
    name = ctx.apps[app]["container"]
    for minion in ctx.targets(app):
        with closing(docker.DockerClient(base_url=minion["docker_host"], timeout=120)) as client:
            for container in client.containers.list(all=True):
                if container.name == name or container.name.startswith(f"{name}-"):
                    container.remove(force=True)
    for digest in images.values():
        _forget(ctx, app, digest)


def _first_batch(ctx, app):
    """The minions of saltcd's first batch of `app`."""
    return plan_batches([m["id"] for m in ctx.targets(app)], ctx.apps[app]["batch"])[0]


def _naive_batch(ctx, app):
    """Salt's batch for the naive orchestrate: the size of saltcd's first batch."""
    return len(_first_batch(ctx, app))


def realistic(ctx, plan=PLAN, log_dir=None, ways=WAYS):
    """Push -> environment healthy, four ways, for each (app, image MB, runs) of plan."""
    plan = [case for case in plan if case[0] in ctx.apps]
    if not plan:
        raise BenchError("the sandbox has no realistic bench apps (it predates them: restart it)")
    versions_of = {}
    for app, _, _ in plan:
        versions_of.update({app: VERSIONS, layout.realistic_twin(app): TWIN_VERSIONS})
    ctx.prepare_big_images(sorted({size for _, size, _ in plan}), versions_of)
    proxy = ThrottleProcess(layout.THROTTLED_REGISTRY, ctx.state["registry"], PER_CONNECTION_MB, PER_HOST_MB,
                            hosts=ctx.dockerd_pids(),
                            log_file=str(Path(log_dir) / "throttle.log") if log_dir else None).start()
    out = {"link": {"per_connection_mb_s": PER_CONNECTION_MB, "per_host_mb_s": PER_HOST_MB,
                    "proxy": layout.THROTTLED_REGISTRY},
           "strategy": {"saltcd": "start-first", "ideals_and_naive": "stop-first"},
           "stop_timeout": layout.REALISTIC_STOP_TIMEOUT,
           "settle": layout.REALISTIC_SETTLE, "cases": {}}
    meter = {"proxy_cpu": 0.0, "busy": 0.0}
    try:
        for app, size, runs in plan:
            out["cases"][f"{app}_{size}mb"] = _case(ctx, app, size, runs, ways, proxy, meter)
    finally:
        proxy.stop()
    # The proxy's CPU over the time it was moving images: it must not be the bottleneck.
    out["proxy_cpu_share"] = round(meter["proxy_cpu"] / meter["busy"], 3) if meter["busy"] else None
    return out


def _case(ctx, app, size, runs, ways, proxy, meter):
    """One app at one image size: `runs` rounds of every way, in rotating order
    (saltcd's way on the app's start-first twin, with images of its own)."""
    twin = layout.realistic_twin(app)
    images = {app: {v: ctx.big_images[size][v] for v in VERSIONS},
              twin: {v: ctx.big_images[size][v] for v in TWIN_VERSIONS}}
    running = {name: next(iter(versions.values())) for name, versions in images.items()}
    _preload(ctx, running)
    converge_all(ctx, running)
    walls = {way: [] for way in ways}
    samples = []
    for run in range(runs):
        for way in ways[run % len(ways):] + ways[:run % len(ways)]:
            name = twin if way == "saltcd" else app
            digest = running[name] = ctx.other(running[name], images[name])
            _forget(ctx, name, digest)
            before, began = proxy.cpu_seconds(), time.monotonic()
            walls[way].append(_one(ctx, name, digest, way, samples))
            meter["proxy_cpu"] += proxy.cpu_seconds() - before
            meter["busy"] += time.monotonic() - began
            ctx.verify(name, digest)
    for name in images:
        _clear(ctx, name, images[name])
    stats = {way: summary(values) for way, values in walls.items()}
    return {"app": app, "saltcd_app": twin, "size_mb": size, "runs": runs, "minions": len(ctx.targets(app)),
            "batch": ctx.apps[app]["batch"], "batches": samples[-1]["batches"] if samples else None,
            **stats, "saltcd_where": where(samples),
            "saltcd_prepull_last_returned": summary([s["prepull"]["last_returned"] for s in samples]),
            "saltcd_over_ideal": ratio(stats.get("saltcd", {}), stats.get("ideal", {})),
            "saltcd_over_parallel_pull": ratio(stats.get("saltcd", {}), stats.get("ideal_parallel_pull", {})),
            "saltcd_over_naive": ratio(stats.get("saltcd", {}), stats.get("naive", {}))}


def _one(ctx, app, digest, way, samples):
    if way == "saltcd":
        sample = ctx.saltcd(app, digest)
        if sample["status"] != "succeeded":
            raise BenchError(f"saltcd rollout of {app} ended {sample['status']}")
        samples.append(sample)
        return sample["finished"]
    if way == "ideal":
        return ctx.ideal(app, digest)
    if way == "ideal_parallel_pull":
        return ctx.ideal(app, digest, prepull=True)
    return ctx.naive(app, digest, _naive_batch(ctx, app), update_mine=False)


SALT_COST_APP = "m3b1"


# What salt_cost times, from the bare job round trip to the whole no-change state run.
SALT_CALLS = ("ping", "render", "apply_no_change")
# And on one minion only (issue 28's first candidate cut): the same no-change
# run from the high data saltcd.deploy compiles to, published as `state.high`
# (no render, no file-server round trips on the minion).
ONE_MINION_CALLS = ("apply_high_no_change",)


class SaltTimer:
    """Salt calls timed from the master as a rollout makes them, through saltcd's
    own fleet (salt_fleet.SaltFleet): its LocalClient, and its `inspect` for the
    question saltcd asks before the first state run. A state call carries the
    app's deploy data in the job's pillar (as salt_cost has always done; saltcd
    itself serves it through its ext_pillar)."""

    # The state functions timed, by name (each applies or renders saltcd.deploy).
    STATE_CALLS = {"render": "state.show_sls", "apply_no_change": "state.apply"}

    def __init__(self, ctx):
        import salt.config

        from saltcd.master import salt_fleet, wiring

        self.opts = salt.config.master_config(str(Path(ctx.conf_dir) / "master"))
        self.settings = wiring.settings(self.opts)
        self.digest = ctx.images["a"]
        self.fleet = salt_fleet.SaltFleet(self.opts)
        self.sls = salt_fleet.DEPLOY_SLS
        self.highs = {}  # (app, minion) -> the high data saltcd.deploy renders to there

    def pillar(self, app):
        """The deploy data of `app` on dev, for the digest every timed app runs first."""
        return self.settings.deployment(app, "dev").pillar(self.digest)

    def seconds(self, name, app, minions):
        """One call of `name` (ping, render, apply_no_change, ask) to `minions`,
        timed until every one has answered."""
        state = {"pillar": self.pillar(app), "queue": True}
        container = self.settings.deployment(app, "dev").container
        began = time.perf_counter()
        if name == "ask":
            returns = self.fleet.inspect(minions, [container])
        elif name == "apply_high_no_change":
            (minion,) = minions  # the high data is the minion's own (its health address)
            returns = self.fleet.local.cmd(minions, "state.high", [self.high(app, minion, state)], tgt_type="list",
                                           timeout=60, kwarg=state)
        elif name == "ping":
            returns = self.fleet.local.cmd(minions, "test.ping", [], tgt_type="list", timeout=60)
        else:
            returns = self.fleet.local.cmd(minions, self.STATE_CALLS[name], [self.sls], tgt_type="list",
                                           timeout=60, kwarg=state)
        took = time.perf_counter() - began
        answered = sorted(m for m, ret in returns.items() if ret is not None)
        if answered != sorted(minions):
            raise BenchError(f"{name} on {minions}: only {answered} answered")
        return took

    def high(self, app, minion, state):
        """saltcd.deploy's high data on `minion` (state.show_sls, once: not timed)."""
        if (app, minion) not in self.highs:
            shown = self.fleet.local.cmd([minion], "state.show_sls", [self.sls], tgt_type="list", timeout=60,
                                         kwarg=state).get(minion)
            if not isinstance(shown, dict):
                raise BenchError(f"state.show_sls {self.sls} on {minion}: {shown!r}"[:300])
            self.highs[app, minion] = shown
        return self.highs[app, minion]

    def close(self):
        self.fleet.close()


def salt_cost(ctx, rounds):
    """What a batch costs in Salt itself on the 3 minions of SALT_COST_APP, which
    already run the digest: a job round trip (test.ping), rendering saltcd.deploy
    (state.show_sls), a whole no-change state.apply, each to all 3 and to one
    (`one_minion`: the batch of the tiny-image target), and one pillar compile
    on the master (in-process)."""
    from bench import pillar_cost

    app = SALT_COST_APP
    converge(ctx, app, ctx.images["a"])
    minions = [m["id"] for m in ctx.targets(app)]
    timer = SaltTimer(ctx)
    shapes = {"all": minions, "one": minions[:1]}
    times = {(key, shape): [] for key in SALT_CALLS + ONE_MINION_CALLS for shape in shapes}
    try:
        for _ in range(rounds):
            for shape, batch in shapes.items():
                for key in SALT_CALLS + (ONE_MINION_CALLS if shape == "one" else ()):
                    times[key, shape].append(timer.seconds(key, app, batch))
    finally:
        timer.close()
    out = {key: summary(times[key, "all"]) for key in SALT_CALLS}
    out["one_minion"] = {key: summary(times[key, "one"]) for key in SALT_CALLS + ONE_MINION_CALLS}
    out["high_saving_one_minion"] = round(statistics.median(times["apply_no_change", "one"])
                                          - statistics.median(times["apply_high_no_change", "one"]), 3)
    median = {key: statistics.median(times[key, "all"]) for key in SALT_CALLS}
    out["render_over_ping"] = round(median["render"] - median["ping"], 3)
    out["apply_over_render"] = round(median["apply_no_change"] - median["render"], 3)
    _, override = pillar_cost.deploy_pillar.split(timer.pillar(app))
    out["pillar_compile_ms"] = pillar_cost._compile_ms(timer.opts, minions[0], override)  # pylint: disable=protected-access
    return out


def salt_floor(results):
    """An estimate, from the same run's medians, of the least saltcd / ideal a
    rollout that runs the deploy SLS as one Salt job per batch can reach on the
    tiny-image target's case (batch 1 over 3 minions): the ideal's time, plus
    per batch a rendered saltcd.deploy on one minion (a job, the pillar, the
    loaders and the render, with no Docker work: what a state job pays before
    its states run). It assumes the batches' Salt work does not overlap (each
    batch's job starts when the one before has ended, as saltcd's do) and that
    the SLS's Docker work is no quicker than the ideal's. None unless both
    `overhead` and `salt_cost` ran."""
    over = (results.get("overhead") or {}).get("batch_1")
    render = (((results.get("salt_cost") or {}).get("one_minion") or {}).get("render") or {}).get("median")
    if not over or render is None or not over["ideal"]["median"]:
        return None
    batches = len(plan_batches(range(over["minions"]), over["batch"]))
    ideal_s = over["ideal"]["median"]
    return {"batches": batches, "render_one_minion": render, "ideal": ideal_s,
            "ratio": round((ideal_s + batches * render) / ideal_s, 3)}


def floor_context(results):
    """What the tiny-image target carries: the floor (salt_floor) and a line that
    says it, or nothing when the run has no floor."""
    floor = salt_floor(results)
    if not floor:
        return {}
    return {"salt_floor": floor, "why": (
        f"the least a Salt state job per batch allows, estimated from medians: {floor['ratio']} (the ideal's "
        f"{floor['ideal']} s + {floor['batches']} x {floor['render_one_minion']} s, saltcd.deploy rendered on "
        "one minion)")}


def fleet_apps(ctx, every_batch):
    """The fleet shapes this sandbox has, at batch 25 % (and 10 % with every_batch)."""
    return [app for app, (_, batch) in layout.FLEET_SHAPES.items()
            if app in ctx.apps and (every_batch or batch == "25%")]


def fleet(ctx, runs, every_batch=True, call_rounds=3):
    """Tiny-image rollouts over the dev fleet at batch 25 % (and 10 % with
    every_batch): wall time per batch, master CPU per minion, the master's peak
    memory, push -> first state run. Then, on each shape's first batch, what
    Salt alone takes for it on this machine, `call_rounds` times each: the
    question saltcd asks before the first state run (SaltFleet.inspect) and a
    state job's part before its states run (saltcd.deploy rendered)."""
    out = {}
    apps = fleet_apps(ctx, every_batch)
    converge_all(ctx, dict.fromkeys(apps, ctx.images["a"]))
    for app in apps:
        digest = ctx.images["a"]
        minions = len(ctx.targets(app))
        walls, per_batch, cpu_per_minion, drain_cpu, first_state, peaks, batches, samples = \
            [], [], [], [], [], [], None, []
        for _ in range(runs):
            digest = ctx.other(digest)
            before = cpu.master_cpu(ctx.conf_dir)
            with cpu.PeakMemory(ctx.conf_dir) as memory:
                sample = ctx.saltcd(app, digest)
            used = cpu.delta(before, cpu.master_cpu(ctx.conf_dir))
            if sample["status"] != "succeeded":
                raise BenchError(f"{app} rollout ended {sample['status']}")
            ctx.verify(app, digest)
            batches = sample["batches"]
            walls.append(sample["finished"])
            per_batch.append(sample["finished"] / max(1, batches))
            cpu_per_minion.append(used["master"] / minions)
            drain_cpu.append(used["drain_engine"])
            first_state.append(sample["first_state_run_published"])
            peaks.append(memory.peak)
            samples.append(sample)
        out[app] = {"minions": minions, "batch": ctx.apps[app]["batch"], "batches": batches,
                    "wall": summary(walls), "wall_per_batch": summary(per_batch),
                    "master_cpu_per_minion": summary(cpu_per_minion), "drain_cpu": summary(drain_cpu),
                    "master_peak_pss_mb": summary(peaks),
                    "first_state_run_published": summary(first_state), "saltcd_where": where(samples)}
    timer = SaltTimer(ctx)
    try:
        for app in apps:
            first = _first_batch(ctx, app)
            out[app]["first_batch"] = len(first)
            for name in ("ask", "render"):
                out[app][f"{name}_first_batch"] = summary(
                    [timer.seconds(name, app, first) for _ in range(call_rounds)])
    finally:
        timer.close()
    return out


# -- targets and the printed table (bench/cli.py calls these) -------------------

FLAT = 1.25  # "wall time per batch stays flat": the largest fleet within 1.25 x the 3-minion one


def targets(results, check):
    """Issue 12's targets for what these scenarios measured."""
    for case in ((results.get("realistic") or {}).get("cases") or {}).values():
        if case["app"] != "r3b1":
            continue
        for key, limit, what in (("saltcd_over_ideal", 1.0, "sequential ideal"),
                                 ("saltcd_over_parallel_pull", 1.2, "parallel-pull ideal")):
            value = case.get(key)
            check(f"saltcd / {what}, {case['size_mb']} MB image, batch 1 over 3 minions", value,
                  f"<= {limit}", value is not None and value <= limit)
    fleet_results = results.get("fleet") or {}
    for sc in fleet_results.values():
        value = sc["first_state_run_published"]["median"]
        asked = (sc.get("ask_first_batch") or {}).get("median")
        context = {"why": f"asking the first batch's {sc['first_batch']} minion(s) what they run "
                          f"(saltcd.containers) alone takes {asked} s here"} if asked is not None else {}
        check(f"push -> first state run, {sc['minions']} minions batch {sc['batch']} (median)", value,
              "< 1 s", value is not None and value < 1, **context)
    for batch in sorted({sc["batch"] for sc in fleet_results.values()}):
        same = sorted((sc for sc in fleet_results.values() if sc["batch"] == batch), key=lambda sc: sc["minions"])
        if len(same) > 1:
            small, large = same[0], same[-1]
            value = ratio(large["wall_per_batch"], small["wall_per_batch"])
            render = ratio(large.get("render_first_batch") or {}, small.get("render_first_batch") or {})
            context = {"why": f"Salt's own state job part for a batch (saltcd.deploy rendered on its "
                              f"{large['first_batch']} minions against {small['first_batch']}) grows "
                              f"{render} x on this machine"} if render is not None else {}
            check(f"wall per batch, {large['minions']} / {small['minions']} minions at batch {batch}",
                  value, f"<= {FLAT}", value is not None and value <= FLAT, **context)


def report_rows(results):
    """Rows for the table `make bench` prints."""
    rows = []
    real = results.get("realistic")
    if real:
        for label, case in real["cases"].items():
            head = f"realistic {case['size_mb']} MB, {case['minions']} minions, batch {case['batch']}"
            for way in WAYS:
                if way in case:
                    rows.append([f"{head}: {way.replace('_', ' ')}", cell(case[way]), ""])
            rows.append([f"{head}: saltcd / ideal, / parallel pull, / naive",
                         f"{case['saltcd_over_ideal']} / {case['saltcd_over_parallel_pull']} / "
                         f"{case['saltcd_over_naive']}", f"{case['runs']} run(s)"])
            rows.append([f"  saltcd {label}: push -> last pull ahead returned",
                         cell(case.get("saltcd_prepull_last_returned") or {}), "overlaps the batches"])
            for part, stat in case["saltcd_where"].items():
                rows.append([f"  saltcd {label}, where the time goes: {part.replace('_', ' ')}", cell(stat), ""])
        rows.append(["realistic: the proxy's CPU while images moved", f"{real['proxy_cpu_share']} of a core",
                     f"{real['link']['per_connection_mb_s']} MB/s a connection, "
                     f"{real['link']['per_host_mb_s']} MB/s a host; saltcd {real['strategy']['saltcd']}, the others "
                     f"{real['strategy']['ideals_and_naive']}, "
                     f"stop_timeout {real['stop_timeout']} s (PID 1 ignores SIGTERM), settle {real['settle']} s"])
    cost = results.get("salt_cost")
    if cost:
        shapes = [("3 minions", cost)] + ([("1 minion", cost["one_minion"])] if "one_minion" in cost else [])
        for label, figures in shapes:
            for key in (k for k in SALT_CALLS + ONE_MINION_CALLS if k in figures):
                rows.append([f"Salt per batch, {label}: {key.replace('_', ' ')}", cell(figures[key]), ""])
        rows.append(["Salt per batch: render - ping, no-change apply - render, pillar compile",
                     f"{cost['render_over_ping']} s / {cost['apply_over_render']} s / {cost['pillar_compile_ms']} ms",
                     ""])
    for sc in (results.get("fleet") or {}).values():
        rows.append([f"fleet {sc['minions']} minions, batch {sc['batch']} ({sc['batches']} batches)",
                     cell(sc["wall"]),
                     f"per batch {cell(sc['wall_per_batch'])}; master CPU/minion "
                     f"{cell(sc['master_cpu_per_minion'])}; peak memory (PSS) {cell(sc['master_peak_pss_mb'], 'MB')}; "
                     f"first state run {cell(sc['first_state_run_published'])}"])
        if "first_batch" in sc:
            rows.append([f"fleet {sc['minions']} minions, batch {sc['batch']}: Salt alone, first batch "
                         f"of {sc['first_batch']}: asked, rendered", f"{cell(sc['ask_first_batch'])} / "
                         f"{cell(sc['render_first_batch'])}", "saltcd.containers / state.show_sls saltcd.deploy"])
    return rows
