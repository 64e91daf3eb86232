"""The cost model: a rollout's parts fitted to the fleet scenario's measured
points (1 to 60 minions on this machine), checked against them, and used to
predict 100 and 1,000 minions.

Each part is a straight line in the one quantity it grows with, fitted by least
squares:

- push -> first state run published: F(k1) = f0 + f1 * k1, k1 the first batch
  (saltcd asks the first batch what it runs before the job goes out);
- the question before the first batch (SaltFleet.inspect): Q(k1) = q0 + q1 * k1;
- a batch, from the first state run to the end over the number of batches:
  W(k) = w0 + w1 * k, k the mean batch size;
- the master's CPU seconds per rollout: M(N) = m0 + m1 * N; the drain
  engine's: D(N) = d0 + d1 * N;
- the master's peak memory (PSS, MB) during a rollout: P(N) = p0 + p1 * N.

A rollout's wall time is then T(N, b) = F(k1) + B * W(k), with B batches of k.
On this machine every minion and its Docker engine share the 2 cores with the
master, so W's slope is mostly the minions' own work; with one host per minion
a batch costs W(1) plus the master's CPU for the other k - 1 minion jobs, spread
over the master's cores: W_host(k) = W(1) + (k - 1) * m1 / cores (m1 counts
all the master's work for a minion in a rollout, the question and the pull ahead
included, so it is an upper bound for the batch alone).
"""

from saltcd.config import batches

PREDICT_MINIONS = (100, 1000)
PREDICT_BATCHES = ("10%", "25%")
MISS = 0.25  # a measured point the model misses by more than this share is reported


def line(points):
    """(intercept, slope) of the least-squares line through [(x, y)]; a flat line
    through the mean when every x is the same."""
    n = len(points)
    if n == 0:
        raise ValueError("no points to fit")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return my, 0.0
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - slope * mx, slope


def at(fit, x):
    return fit[0] + fit[1] * x


def shape(minions, batch):
    """(first batch size, mean batch size, number of batches) of `minions` at `batch`."""
    sizes = [len(b) for b in batches.plan_batches(list(range(minions)), batch)]
    return sizes[0], minions / len(sizes), len(sizes)


def points(fleet):
    """The measured points of the fleet scenario, one per shape, in the model's terms."""
    out = []
    for name, m in sorted(fleet.items(), key=lambda item: (item[1]["minions"], str(item[1]["batch"]))):
        k1, k, count = shape(m["minions"], m["batch"])
        first = m["first_state_run_published"]["median"]
        wall = m["wall"]["median"]
        out.append({"shape": name, "minions": m["minions"], "batch": m["batch"], "k1": k1, "k": round(k, 2),
                    "batches": count, "wall": wall, "first_state": first,
                    "per_batch": (wall - first) / count,
                    "ask": (m.get("ask_first_batch") or {}).get("median"),
                    "master_cpu": m["master_cpu_per_minion"]["median"] * m["minions"],
                    "drain_cpu": (m.get("drain_cpu") or {}).get("median"),
                    "pss": m["master_peak_pss_mb"]["median"]})
    return out


def fit(pts):
    """The model's lines from `pts` (see points)."""
    def through(x, y):
        pairs = [(p[x], p[y]) for p in pts if p.get(y) is not None]
        return [round(v, 5) for v in line(pairs)] if pairs else None
    return {"first_state": through("k1", "first_state"), "ask": through("k1", "ask"),
            "per_batch": through("k", "per_batch"), "master_cpu": through("minions", "master_cpu"),
            "drain_cpu": through("minions", "drain_cpu"), "pss": through("minions", "pss")}


def wall(model, minions, batch):
    """T(N, b) on this machine."""
    k1, k, count = shape(minions, batch)
    return at(model["first_state"], k1) + count * at(model["per_batch"], k)


def wall_one_host_each(model, minions, batch, cores):
    """T(N, b) with one host per minion and a master of `cores` cores."""
    k1, k, count = shape(minions, batch)
    per_batch = at(model["per_batch"], 1) + (k - 1) * model["master_cpu"][1] / cores
    return at(model["first_state"], k1) + count * per_batch


def check(model, pts):
    """Each measured point's wall time against the model's; misses over MISS flagged."""
    out = []
    for p in pts:
        predicted = wall(model, p["minions"], p["batch"])
        error = (predicted - p["wall"]) / p["wall"] if p["wall"] else None
        out.append({"shape": p["shape"], "measured": p["wall"], "predicted": round(predicted, 2),
                    "error": round(error, 3) if error is not None else None,
                    "miss": error is not None and abs(error) > MISS})
    return out


def predict(model, cores):
    """Push -> first state run and the whole rollout at PREDICT_MINIONS x PREDICT_BATCHES."""
    out = []
    for minions in PREDICT_MINIONS:
        for batch in PREDICT_BATCHES:
            k1, _, count = shape(minions, batch)
            out.append({"minions": minions, "batch": batch, "batches": count,
                        "first_state": round(at(model["first_state"], k1), 1),
                        "wall_this_machine": round(wall(model, minions, batch), 1),
                        "wall_one_host_each": round(wall_one_host_each(model, minions, batch, cores), 1),
                        "master_cpu": round(at(model["master_cpu"], minions), 1),
                        "master_pss_mb": round(at(model["pss"], minions)) if model["pss"] else None})
    return out


def build(fleet, cores):
    """results["model"] from results["fleet"]: the fit on every point, its check,
    a holdout (the largest fleet predicted from a fit on the smaller ones), and the
    predictions; None with fewer than two fleet sizes."""
    pts = points(fleet)
    sizes = sorted({p["minions"] for p in pts})
    if len(sizes) < 2:
        return None
    model = fit(pts)
    smaller = [p for p in pts if p["minions"] < sizes[-1]]
    holdout = check(fit(smaller), [p for p in pts if p["minions"] == sizes[-1]]) \
        if len({p["minions"] for p in smaller}) >= 2 else []
    checked = check(model, pts)
    return {"points": pts, "fit": model, "check": checked, "holdout": holdout,
            "misses": [c["shape"] for c in checked + holdout if c["miss"]],
            "master_cores": cores, "predictions": predict(model, cores),
            "assumptions": ("tiny image (a real image adds its pull per batch), every batch healthy, batches in "
                            f"sequence; the master has {cores} cores and Salt's default worker_threads; "
                            "loopback latency; `this machine`: all minions and their Docker engines share its "
                            "cores with the master, as measured; `one host per minion`: a batch costs a "
                            "one-minion batch plus the master's CPU for the other minions' jobs")}



def report_rows(built):
    """The bench's printed rows: each point against the model, then the predictions."""
    if not built:
        return []
    rows = [[f"model: {c['shape']} measured vs predicted", f"{c['measured']} / {c['predicted']} s",
             f"{c['error']:+.0%}" + (" MISSED" if c["miss"] else "")] for c in built["check"]]
    rows += [[f"model holdout: {c['shape']} from the smaller fleets", f"{c['measured']} / {c['predicted']} s",
              f"{c['error']:+.0%}" + (" MISSED" if c["miss"] else "")] for c in built["holdout"]]
    rows += [[f"model: {p['minions']} minions, batch {p['batch']}: first state, wall (this machine / one host "
              "each)", f"{p['first_state']} s; {p['wall_this_machine']} / {p['wall_one_host_each']} s",
              f"master CPU {p['master_cpu']} s"] for p in built["predictions"]]
    return rows
