"""bench/results.svg from bench/results.json (matplotlib: `pip install -e '.[bench]'`).

    python -m bench.plot [results.json] [results.svg]

Left: time to healthy per scenario, saltcd beside its comparisons (medians,
min-max as error bars). Right: rollout wall time against fleet size.
"""

import json
import sys
from pathlib import Path

WAYS = (("saltcd", "saltcd"), ("ideal", "sequential ideal"), ("ideal_parallel_pull", "parallel-pull ideal"),
        ("naive", "naive orchestrate"), ("naive_no_mine", "naive, no mine refresh"))


def comparisons(results):
    """[(scenario label, {way: summary})] of every side-by-side measurement."""
    out = []
    for label, over in (results.get("overhead") or {}).items():
        out.append((f"1 MB, 3 min., {label.replace('batch_', 'b ').replace('pct', ' %')}", over))
    for case in ((results.get("realistic") or {}).get("cases") or {}).values():
        out.append((f"{case['size_mb']} MB, {case['minions']} min., b {case['batch']}", case))
    return out


def fleet_series(results):
    """{series label: [(minions, wall summary)]}, from the scale and fleet scenarios."""
    series = {}
    for source in ("scale", "fleet"):
        for sc in (results.get(source) or {}).values():
            series.setdefault(f"batch {sc['batch']}", []).append((sc["minions"], sc["wall"]))
    return {label: sorted(points, key=lambda p: p[0]) for label, points in series.items()}


def _bars(axis, groups):
    width = 0.8 / len(WAYS)
    for number, (way, name) in enumerate(WAYS):
        xs, heights, low, high = [], [], [], []
        for index, (_, stats) in enumerate(groups):
            stat = stats.get(way) or {}
            if stat.get("median") is None:
                continue
            xs.append(index + (number - len(WAYS) / 2 + 0.5) * width)
            heights.append(stat["median"])
            low.append(stat["median"] - stat["min"])
            high.append(stat["max"] - stat["median"])
        if xs:
            axis.bar(xs, heights, width, yerr=[low, high], capsize=2, label=name)
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels([label for label, _ in groups], rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("push -> environment healthy (s)")
    axis.set_title("time to healthy: saltcd and its comparisons")
    axis.legend(fontsize=7)


def _lines(axis, series):
    for label, points in series.items():
        xs = [n for n, _ in points]
        medians = [s["median"] for _, s in points]
        errors = [[s["median"] - s["min"] for _, s in points], [s["max"] - s["median"] for _, s in points]]
        axis.errorbar(xs, medians, yerr=errors, marker="o", capsize=2, label=label)
    axis.set_xlabel("minions in the environment")
    axis.set_ylabel("saltcd rollout wall time (s)")
    axis.set_title("wall time against fleet size (tiny image)")
    axis.legend(fontsize=7)


def plot(results, out):
    """Write the picture; returns its path (None when there is nothing to draw)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, series = comparisons(results), fleet_series(results)
    if not groups and not series:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [2, 1]})
    if groups:
        _bars(left, groups)
    if series:
        _lines(right, series)
    return _save(plt, figure, "saltcd bench", results, out)


def _save(plt, figure, title, results, out):
    """Title `figure` with the run's time, machine and commit, write it to `out`; `out`."""
    machine = results.get("machine") or {}
    figure.suptitle(f"{title}, {results.get('started', '')}: {machine.get('cpus', '?')} CPUs, "
                    f"commit {machine.get('commit') or '?'}", fontsize=9)
    figure.tight_layout()
    figure.savefig(out, format="svg")
    plt.close(figure)
    return out


def plot_model(results, out):
    """The cost model's picture (bench/model.svg): each fleet shape's measured wall
    time against minions, the model's line through them, and its extrapolation
    to 1,000 minions with one host per minion; misses over 25 % in red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench import model as cost

    fitted = results.get("model")
    if not fitted:
        return None
    figure, axis = plt.subplots(figsize=(9, 5.5))
    misses = set(fitted["misses"])
    for batch in cost.PREDICT_BATCHES:
        mine = [p for p in fitted["points"] if p["batch"] == batch or p["minions"] == 1]
        if not mine:
            continue
        axis.scatter([p["minions"] for p in mine], [p["wall"] for p in mine],
                     c=["red" if p["shape"] in misses else "black" for p in mine], zorder=3, s=18)
        sizes = sorted({1, *(p["minions"] for p in mine)})
        xs = list(range(1, sizes[-1] + 1))
        axis.plot(xs, [cost.wall(fitted["fit"], n, batch) for n in xs],
                  label=f"batch {batch}: fit, this machine")
        far = list(range(1, 1001))
        axis.plot(far, [cost.wall_one_host_each(fitted["fit"], n, batch, fitted["master_cores"]) for n in far],
                  linestyle="--", label=f"batch {batch}: one host per minion, {fitted['master_cores']}-core master")
    for p in fitted["predictions"]:
        axis.annotate(f"{p['wall_one_host_each']:g} s", (p["minions"], p["wall_one_host_each"]), fontsize=7)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("minions in the environment")
    axis.set_ylabel("push -> rollout finished (s), tiny image")
    axis.set_title("the cost model: measured (dots; red: missed by > 25 %), fitted, extrapolated", fontsize=9)
    axis.legend(fontsize=7)
    return _save(plt, figure, "saltcd cost model", results, out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    source = Path(argv[0]) if argv else Path(__file__).with_name("results.json")
    out = Path(argv[1]) if len(argv) > 1 else source.with_suffix(".svg")
    written = plot(json.loads(source.read_text()), out)
    print(f"wrote {written}" if written else "nothing to plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
