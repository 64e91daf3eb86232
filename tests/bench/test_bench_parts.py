"""The benchmark's own arithmetic and bookkeeping, without a sandbox."""

import json

import pytest

from bench import cli as bench_cli
from bench import model, stats, throughput
from bench.cli import targets

DIGEST = "sha256:" + "a" * 64


def test_summary_and_ratio():
    assert stats.summary([3, 1, 2, None]) == {"median": 2, "min": 1, "max": 3, "runs": 3}
    assert stats.summary([]) == {"median": None, "min": None, "max": None, "runs": 0}
    assert stats.ratio({"median": 3.0}, {"median": 2.0}) == 1.5
    assert stats.ratio({"median": 3.0}, {"median": None}) is None


def test_post_mix_and_duplicates_are_byte_identical():
    plan = throughput.posts(20, "127.0.0.1:5000", DIGEST)
    kinds = [kind for kind, _ in plan]
    assert kinds.count("push") == 12 and kinds.count("duplicate") == 4
    assert kinds.count("pull") == 2 and kinds.count("blob") == 2
    for index, (kind, body) in enumerate(plan):
        if kind == "duplicate":
            previous_push = next(b for k, b in reversed(plan[:index]) if k == "push")
            assert body == previous_push
    event = json.loads(plan[0][1])["events"][0]
    assert event["target"]["tag"] == "dev" and event["request"]["host"] == "127.0.0.1:5000"


class _Records:
    def __init__(self, history):
        self.history = history

    def rollouts(self, app, env):
        return self.history.get(app, [])


def test_accounting_finds_a_post_that_never_reacted_and_a_request_that_never_ended():
    plan = throughput.posts(3, "127.0.0.1:5000", DIGEST)
    ids = [throughput._posted(body) for _, body in plan]  # pylint: disable=protected-access
    returns = [(0.0, ids[0], {"accepted": [{"id": "r1"}], "ignored": [], "rejected": ""}),
               (0.0, ids[1], {"accepted": [{"id": "r2"}], "ignored": [], "rejected": ""})]
    records = _Records({"m1b1": [{"request": "r1", "status": "unchanged"}]})
    hooks = throughput.collections.Counter(ids[0] + ids[1] + ids[2])  # all three reached the bus
    result = throughput._account(plan, [(200, False)] * 3, returns, records, hooks, {})  # pylint: disable=protected-access
    assert result["without_reaction"] == 1           # the third post
    assert result["without_reaction_but_on_the_bus"] == 1
    assert result["request_outcomes"] == {"unchanged": 1, "missing": 1}
    assert result["lost"] == 2


def test_accounting_counts_pulls_the_webhook_answered_and_a_push_it_answered_so_as_lost():
    plan = throughput.posts(10, "127.0.0.1:5000", DIGEST)
    at_door = [kind in ("pull", "blob") for kind, _ in plan]
    returns, history = [], {}
    for number, ((_, body), nothing) in enumerate(zip(plan, at_door)):
        if not nothing:
            request = f"r{number}"
            returns.append((0.0, throughput._posted(body), {"accepted": [{"id": request}]}))  # pylint: disable=protected-access
            history.setdefault("m1b1", []).append({"request": request, "status": "unchanged"})
    hooks = throughput.collections.Counter(eid for _, ids, _ in returns for eid in ids)

    def account(answers):
        return throughput._account(plan, answers, returns, _Records(history), hooks, {})  # pylint: disable=protected-access

    result = account([(200, nothing) for nothing in at_door])
    assert result["lost"] == 0 and result["nothing_to_deploy_at_the_webhook"] == {"pull": 1, "blob": 1}
    assert account([(200, nothing or kind == "push") for (kind, _), nothing in zip(plan, at_door)])["lost"] == 6
    assert account([(503 if kind == "duplicate" else 200, nothing) for (kind, _), nothing
                    in zip(plan, at_door)])["lost"] == 2


def test_targets_say_which_holds():
    results = {"noop": {"to_unchanged": {"median": 2.5}, "restarted": []},
               "throughput": {"1000": {"lost": 1}}}
    verdicts = {t["target"]: t["met"] for t in targets(results)}
    assert verdicts == {"no-op rollout of 3 minions (median)": True, "lost of 1000 posts": False}


def _zd_sample(status, failed, gaps):
    hosts = {f"dev-{n}": {"served": 100, "failed": f, "longest_gap": g,
                          "errors": ["ConnectionRefusedError"] if f else []}
             for n, (f, g) in enumerate(zip(failed, gaps), 1)}
    return {"status": status, "finished": 20.0, "hosts": hosts, "failed": sum(failed), "served": 300,
            "longest_gap": max(gaps)}


def test_zero_downtime_aggregates_per_host_and_judges_start_first_only():
    from bench import zero_downtime  # pylint: disable=import-outside-toplevel

    stop = zero_downtime.aggregate([_zd_sample("succeeded", [3, 5, 4], [1.2, 1.5, 1.3]),
                                    _zd_sample("succeeded", [1, 0, 2], [0.9, 0.03, 1.0])], "succeeded")
    assert stop["failed"]["median"] == 7.5 and stop["failed_max"] == 12
    assert stop["per_host"]["dev-2"]["failed"] == {"median": 2.5, "min": 0, "max": 5, "runs": 2}
    assert stop["longest_gap"]["max"] == 1.5 and stop["first_errors"] == ["ConnectionRefusedError"]
    start_good = zero_downtime.aggregate([_zd_sample("succeeded", [0, 0, 0], [0.05, 0.04, 0.06])], "succeeded")
    start_dies = zero_downtime.aggregate([_zd_sample("succeeded", [0, 0, 0], [0.05] * 3)], "rolled_back")
    start_crash = zero_downtime.aggregate([_zd_sample("rolled_back", [0, 1, 0], [0.05] * 3)], "rolled_back")
    result = {"settle": 5, "watch": 5, "drain_start_first": 10, "cases": {
        "good": {"stop-first": stop, "start-first": start_good},
        "dies": {"stop-first": stop, "start-first": start_dies},
        "crash": {"stop-first": stop, "start-first": start_crash}}}
    # 0 failed but not rolled back is missed too: the bad image must not stay.
    listed = [(t["measured"], t["met"]) for t in targets({"zero_downtime": result})]
    assert listed == [(0, True), (0, False), (1, False)]
    rows = zero_downtime.report_rows(result)
    assert rows[1][0] == "  good (succeeded), stop-first" and rows[1][1] == "7.5 / 1.250 s / 300"
    assert rows[2][2] == "dev-1 0/0.05 s, dev-2 0/0.04 s, dev-3 0/0.06 s"
    assert "NOT rolled_back" in rows[4][0]


def _stat(median, low=None, high=None):
    return {"median": median, "min": low if low is not None else median,
            "max": high if high is not None else median, "runs": 3}


def _realistic_results(saltcd, ideal, parallel):
    case = {"app": "r3b1", "size_mb": 50, "runs": 3, "minions": 3, "batch": 1, "batches": 3,
            "saltcd": _stat(saltcd), "ideal": _stat(ideal), "ideal_parallel_pull": _stat(parallel),
            "naive": _stat(30.0), "saltcd_where": {"pull": _stat(1.0)},
            "saltcd_over_ideal": stats.ratio(_stat(saltcd), _stat(ideal)),
            "saltcd_over_parallel_pull": stats.ratio(_stat(saltcd), _stat(parallel)),
            "saltcd_over_naive": stats.ratio(_stat(saltcd), _stat(30.0))}
    return {"realistic": {"cases": {"r3b1_50mb": case}, "proxy_cpu_share": 0.1,
                          "strategy": {"saltcd": "start-first", "ideals_and_naive": "stop-first"},
                          "stop_timeout": 2, "settle": 1,
                          "link": {"per_connection_mb_s": 25, "per_host_mb_s": 25}}}


def test_realistic_targets_compare_with_both_ideals():
    verdicts = {t["target"]: (t["measured"], t["met"]) for t in targets(_realistic_results(12.0, 13.0, 10.0))}
    assert verdicts["saltcd / sequential ideal, 50 MB image, batch 1 over 3 minions"] == (0.923, True)
    assert verdicts["saltcd / parallel-pull ideal, 50 MB image, batch 1 over 3 minions"] == (1.2, True)
    verdicts = {t["target"]: t["met"] for t in targets(_realistic_results(14.0, 13.0, 10.0))}
    assert verdicts["saltcd / sequential ideal, 50 MB image, batch 1 over 3 minions"] is False
    assert verdicts["saltcd / parallel-pull ideal, 50 MB image, batch 1 over 3 minions"] is False


def _tiny(saltcd, ideal, render_one=None):
    results = {"overhead": {"batch_1": {
        "minions": 3, "batch": 1, "saltcd": _stat(saltcd), "ideal": _stat(ideal),
        "saltcd_over_ideal": round(saltcd / ideal, 3), "saltcd_over_naive": 0.5, "saltcd_over_naive_no_mine": 0.8}}}
    if render_one is not None:
        cost = {key: _stat(0.1) for key in ("ping", "render", "apply_no_change")}
        results["salt_cost"] = {**cost, "one_minion": {**cost, "render": _stat(render_one)}}
    return results


def test_the_tiny_target_carries_the_floor_of_a_state_job_per_batch():
    """1.2 s of ideal and 3 batches of a 0.3 s render: no state-run-per-batch rollout
    can do better than (1.2 + 0.9) / 1.2 = 1.75, whatever saltcd measured."""
    tiny = "saltcd / ideal wall time, tiny image, batch 1 over 3 minions"
    found = {t["target"]: t for t in targets(_tiny(3.0, 1.2, render_one=0.3))}[tiny]
    assert (found["measured"], found["met"]) == (2.5, False)
    assert found["salt_floor"] == {"batches": 3, "render_one_minion": 0.3, "ideal": 1.2, "ratio": 1.75}
    assert "the least a Salt state job per batch allows, estimated from medians: 1.75" in bench_cli.report(
        {"targets": [found]})
    # Without salt_cost in the run (--only overhead) there is no floor to compare with.
    assert "salt_floor" not in {t["target"]: t for t in targets(_tiny(1.5, 1.2))}[tiny]


def _fleet(minions, batch, wall, batches, first_state=0.4, first_batch=1, ask=0.2, render=0.4):
    return {"minions": minions, "batch": batch, "batches": batches, "wall": _stat(wall),
            "wall_per_batch": _stat(wall / batches), "master_cpu_per_minion": _stat(0.2),
            "master_peak_pss_mb": _stat(400.0), "first_state_run_published": _stat(first_state),
            "first_batch": first_batch, "ask_first_batch": _stat(ask), "render_first_batch": _stat(render)}


def test_fleet_targets_flat_per_batch_and_first_state_run():
    results = {"fleet": {"f3b10": _fleet(3, "10%", 6.0, 3),
                         "f30b10": _fleet(30, "10%", 25.0, 10, 1.2, first_batch=3, ask=0.9, render=1.0)}}
    found = {t["target"]: t for t in targets(results)}
    verdicts = {name: (t["measured"], t["met"]) for name, t in found.items()}
    # 2.5 s a batch at 30 minions against 2.0 s at 3: 1.25, just flat enough.
    assert verdicts["wall per batch, 30 / 3 minions at batch 10%"] == (1.25, True)
    assert verdicts["push -> first state run, 30 minions batch 10% (median)"] == (1.2, False)
    assert verdicts["push -> first state run, 3 minions batch 10% (median)"] == (0.4, True)
    # What Salt alone takes for the first batch on this machine goes with each figure.
    assert found["wall per batch, 30 / 3 minions at batch 10%"]["why"].endswith(
        "rendered on its 3 minions against 1) grows 2.5 x on this machine")
    assert "first batch's 3 minion(s) what they run (saltcd.containers) alone takes 0.9 s" in found[
        "push -> first state run, 30 minions batch 10% (median)"]["why"]


def test_report_and_picture_from_results(tmp_path):
    from bench import plot
    from bench.cli import report

    results = {**_realistic_results(12.0, 13.0, 10.0), "fleet": {"f3b10": _fleet(3, "10%", 6.0, 3),
                                                                 "f9b10": _fleet(9, "10%", 18.0, 9)}}
    results["targets"] = targets(results)
    text = report(results)
    assert "realistic 50 MB, 3 minions, batch 1: ideal parallel pull" in text
    assert "fleet 9 minions, batch 10% (9 batches)" in text
    out = plot.plot(results, tmp_path / "results.svg")
    svg = out.read_text()
    assert svg.startswith("<?xml") and "parallel-pull ideal" in svg and "minions in the environment" in svg


def test_bench_apps_realistic_and_fleet_shapes():
    from sandbox import layout

    ids = [f"dev-{n}" for n in range(1, 31)]
    apps = layout.bench_apps("127.0.0.1:5000", ids)
    assert apps["r3b1"]["repository"] == "127.0.0.1:5055/bench/r3b1"
    assert apps["r3b1"]["stop_timeout"] == 2 and apps["r3b1"]["health"]["settle"] == 1
    assert apps["f30b25"]["environments"]["dev"]["target"] == ",".join(ids)
    assert "f30b10" not in layout.bench_apps("127.0.0.1:5000", ids[:9])
    published = [app["ports"] + [p for role in app.get("roles", {}).values() for p in role.get("ports", [])]
                 for app in apps.values()]
    ports = [int(binding.split(":")[0]) for bindings in published for binding in bindings]
    assert len(ports) == len(set(ports)) == len(apps)  # one port each, none shared
    assert apps["ra-two"]["ports"] == [] and list(apps["ra-two"]["roles"]) == ["web", "worker"]


def test_sandbox_dev_sets_the_dev_fleet_and_an_existing_sandbox_keeps_its_own(tmp_path, monkeypatch):
    from sandbox import cli as sandbox_cli

    monkeypatch.setenv("SANDBOX_DEV", "30")
    state = tmp_path / "sandbox.json"
    assert sandbox_cli.fleet_counts(state) == {"dev": 30, "qa": 3, "prod": 3}
    state.write_text(json.dumps({"minions": [{"id": "dev-1", "env": "dev"}, {"id": "qa-1", "env": "qa"}]}))
    assert sandbox_cli.fleet_counts(state) == {"dev": 1, "qa": 1, "prod": 0}
    state.unlink()
    monkeypatch.setenv("SANDBOX_DEV", "many")
    with pytest.raises(sandbox_cli.SandboxError):
        sandbox_cli.fleet_counts(state)


def test_make_bench_leaves_scale_to_full_unless_named():
    assert "scale" not in bench_cli.chosen(None, full=False)
    assert bench_cli.chosen(None, full=True) == set(bench_cli.SCENARIOS)
    assert bench_cli.chosen("scale, fleet", full=False) == {"scale", "fleet"}


def test_a_filler_layer_is_a_gzipped_tar_of_unique_random_bytes_with_its_diff_id():
    import gzip
    import hashlib
    import io
    import tarfile

    from bench.registry_http import filler_layer

    layer, diff_id = filler_layer(1)
    plain = gzip.decompress(layer)
    assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        [member] = tar.getmembers()
        body = tar.extractfile(member).read()
    assert (member.name, len(body)) == ("filler", 1 << 20)
    assert filler_layer(1)[1] != diff_id  # random: no two layers are shared


def test_the_ideal_waits_between_health_probes_as_saltcds_gate_does(monkeypatch, tmp_path):
    import itertools  # pylint: disable=import-outside-toplevel
    import urllib.error  # pylint: disable=import-outside-toplevel

    from bench import ideal  # pylint: disable=import-outside-toplevel
    from tests import salt_side  # pylint: disable=import-outside-toplevel

    waits = salt_side.minion(tmp_path).utils["saltcd_minion.waits_before_healthy"]
    slept, failures = [], iter(range(7))

    class Clock:
        @staticmethod
        def monotonic():
            return sum(slept)

        @staticmethod
        def sleep(seconds):
            slept.append(seconds)

    class Opener:
        @staticmethod
        def open(url, timeout):
            if next(failures, None) is not None:
                raise urllib.error.URLError("refused")
            raise AssertionError("not reached: the test stops at its 7th failed probe")

    monkeypatch.setattr(ideal, "time", Clock)
    monkeypatch.setattr(ideal.loopback, "OPENER", Opener)
    with pytest.raises(AssertionError, match="not reached"):
        ideal.healthy("http://127.0.0.1:1/health", timeout=30, interval=0.5)
    assert slept == list(itertools.islice(waits(0.5), 7))
    assert slept[:5] == [0.05, 0.1, 0.2, 0.4, 0.5]


# -- the cost model (bench/model.py) ---------------------------------------------


def _fleet_shape(minions, batch, wall, first, cpu_per_minion=0.3, pss=500.0):
    stat = lambda v: {"median": v, "min": v, "max": v, "runs": 1}  # noqa: E731
    return {"minions": minions, "batch": batch, "wall": stat(wall), "first_state_run_published": stat(first),
            "master_cpu_per_minion": stat(cpu_per_minion), "master_peak_pss_mb": stat(pss + minions)}


def test_the_model_fits_a_line_and_recovers_it():
    assert model.line([(1, 3), (2, 5), (3, 7)]) == (1.0, 2.0)
    assert model.line([(4, 1), (4, 3)]) == (2.0, 0.0)


def test_the_model_checks_its_points_and_flags_a_miss():
    # per batch 0.5 + 0.1 k, first state 0.2 + 0.05 k1: what the fleet would measure.
    fleet = {}
    for n in (1, 3, 9, 30):
        k1, k, count = model.shape(n, "25%")
        first = 0.2 + 0.05 * k1
        fleet[f"f{n}"] = _fleet_shape(n, "25%", first + count * (0.5 + 0.1 * k), first)
    fleet["f60"] = _fleet_shape(60, "25%", 99.0, 1.0)  # far off the line
    built = model.build(fleet, cores=2)
    assert built["misses"] and "f60" in built["misses"]
    assert [c["shape"] for c in built["holdout"]] == ["f60"] and built["holdout"][0]["miss"]
    clean = model.build({k: v for k, v in fleet.items() if k != "f60"}, cores=2)
    assert clean["misses"] == []
    assert clean["fit"]["per_batch"] == pytest.approx([0.5, 0.1], abs=1e-3)
    big = {(p["minions"], p["batch"]): p for p in clean["predictions"]}
    # 1,000 at 25 %: 4 batches of 250; one host each: W(1) + 249 * m1 / 2 per batch.
    k1, _, count = model.shape(1000, "25%")
    assert (k1, count) == (250, 4)
    per_batch = 0.6 + 249 * clean["fit"]["master_cpu"][1] / 2
    assert big[1000, "25%"]["wall_one_host_each"] == pytest.approx(0.2 + 0.05 * 250 + 4 * per_batch, abs=0.2)


def test_the_model_needs_two_fleet_sizes():
    assert model.build({"f3": _fleet_shape(3, "25%", 3.0, 0.3)}, cores=2) is None
