"""Validate the latency model's sources offline (no GPU) against measured whole prefills.

``benchmarks/latency_model.py`` records, for every schedule it times on a GPU, its keep vector,
scorer and measured latency. This script predicts those schedules again with the current
:class:`autoprune.cost.latency.LatencyModel` and reports median / p90 of |pred − meas| / meas for
latency and speedup, per source:

``table``
    the target GPU's own committed table;
``few-shot``
    another GPU's table plus ``--quick`` points of the target: 12 layer timings read off the
    target's committed table at :func:`autoprune.cost.transfer.quick_plan`'s token counts (what
    ``autoprune profile --quick`` measures; nothing else of the target table is used);
``few-shot+prefill``
    the same, and the measured unreduced prefill of the run as one quick whole prefill
    (:func:`autoprune.cost.latency.calibrate_prefills`). A result file of a GPU run with
    ``--quick-from`` carries the points and prefills ``--quick`` measured there: they are used
    instead (the row says which, ``quick_points``);
``roofline``
    spec only: the other GPU's table fitted with the floor + throughput forms and carried by
    the target's spec sheet (:func:`autoprune.cost.transfer.spec_transfer`);
``roofline-max``
    the previous roofline (max form, overhead fitted, host floor apart) for comparison;
``prior``
    no table anywhere (``roofline-uncalibrated``): the registered kinds' prior forms (their
    host floors were rounded from these GPUs' tables: not an independent check).

For each it states the slope of the signed speedup error against the measured speedup (does
the error grow with reduction?), and the coverage of the 90 % interval built from the
residuals of the *other* runs (leave-one-run-out). ``--residuals`` writes the pooled residuals
the package ships (``autoprune/data/profiles/residuals.json``).

    python benchmarks/latency_model_offline.py \\
        --pair h100-sxm5-80gb:h200-sxm-141gb:benchmarks/results/latency_model-h200-V16384-cross-from-h100.json \\
        --pair h200-sxm-141gb:h100-sxm5-80gb:benchmarks/results/latency_model-h100-run1-V16384_65536.json \\
        --out benchmarks/results/latency_transfer_offline.json

(``--table T results...`` keeps the old mode: one table against result files.)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from autoprune.cost.gpus import load_registry
from autoprune.cost.latency import LatencyModel, calibrate_prefills
from autoprune.cost.profile_table import ProfileTable, find_table
from autoprune.cost.quick import QuickProfile
from autoprune.cost.roofline import calibrate
from autoprune.cost.shapes import TokenLayout
from autoprune.cost.transfer import QuickPoint, QuickPrefill, fit_few_shot, fit_forms, quick_plan, spec_transfer
from autoprune.cost.uncertainty import LEVEL, ResidualSet, conformal_bounds
from autoprune.schedule import Schedule, ScorerConfig

SOURCES = ("table", "few-shot", "few-shot+prefill", "roofline", "roofline-max", "prior")
# Which LatencyEstimate source each variant's residuals describe (for the shipped residuals).
RESIDUAL_SOURCE = {"table": "table", "few-shot+prefill": "few-shot", "roofline": "roofline"}


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def slope(xs, ys) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def quick_points(target: ProfileTable) -> list[QuickPoint]:
    """The ``--quick`` layer timings, read off the target's table (log-log interpolation)."""
    return [QuickPoint(k, n, target.layer(k).at(n)[0]) for k, n in quick_plan(target.shape)]


def models_for(src: ProfileTable, dst: ProfileTable, reg, layout: TokenLayout, baseline_ms: float,
               quick: QuickProfile | None = None) -> dict:
    """The models compared; ``quick``: the points measured on the target by the GPU run (else read
    off the target's table, and the run's unreduced prefill as the one quick prefill)."""
    s_spec, d_spec = reg.get(src.gpu), reg.get(dst.gpu)
    shape = dst.shape
    none = ResidualSet(residuals={})
    fs = fit_few_shot(src, s_spec, d_spec, quick.points if quick else quick_points(dst))
    prefills = quick.prefills if quick else [QuickPrefill(keep=(1.0,) * shape.num_layers, visual=layout.visual,
                                                          ms=baseline_ms)]
    fsp = calibrate_prefills(fs, prefills, shape, prefix=layout.prefix, query=layout.query)
    forms = spec_transfer(fit_forms(src, s_spec), s_spec, d_spec, shape.dtype)
    cal = calibrate(src, s_spec)
    kw = {"residuals": none}
    return {"table": LatencyModel(shape, layout, d_spec, table=dst, **kw),
            "few-shot": LatencyModel(shape, layout, d_spec, few_shot=fs, **kw),
            "few-shot+prefill": LatencyModel(shape, layout, d_spec, few_shot=fsp, **kw),
            "roofline": LatencyModel(shape, layout, d_spec, calibration=cal, forms=forms, **kw),
            "roofline-max": LatencyModel(shape, layout, d_spec, calibration=cal, **kw),
            "prior": LatencyModel(shape, layout, d_spec, search_dirs=[], **kw)}, fs, forms


def summarize(rows, key):
    lat = [abs(r[key]["latency_ms"] / r["measured_ms"] - 1) for r in rows]
    spd = [abs(r[key]["speedup"] / r["measured_speedup"] - 1) for r in rows]
    signed = [r[key]["speedup"] / r["measured_speedup"] - 1 for r in rows]
    return {"n": len(rows), "latency_median": statistics.median(lat), "latency_p90": quantile(lat, 0.9),
            "latency_max": max(lat), "speedup_median": statistics.median(spd), "speedup_p90": quantile(spd, 0.9),
            "speedup_max": max(spd),
            "speedup_err_slope_per_x": slope([r["measured_speedup"] for r in rows], signed),
            "speedup_err_slope_per_keep": slope([r["mean_keep"] for r in rows], signed)}


def run_pairs(pairs, prefix, query) -> dict:
    reg = load_registry()
    runs = []
    for src_id, dst_id, path in pairs:
        data = json.loads(Path(path).read_text())
        found = {g: find_table(g, data["shape"]) for g in (src_id, dst_id)}
        missing = [g for g, p in found.items() if p is None]
        if missing:
            raise SystemExit(f"error: no measured table of {data['shape']!r} for {missing} (needed for {path})")
        src, dst = ProfileTable.load(found[src_id]), ProfileTable.load(found[dst_id])
        if data["gpu"] != dst_id:
            raise SystemExit(f"error: {path} was measured on {data['gpu']}, not {dst_id}")
        for size in data["sizes"]:
            V = size["visual"]
            layout = TokenLayout(prefix, V, query)
            base = size["baseline"]["median_ms"]
            quick = None
            if (data.get("quick") or {}).get("quick_profile"):  # a --quick-from GPU run: its own points
                quick = QuickProfile.from_dict(data["quick"]["quick_profile"], origin=f"{path}: quick")
            models, fs, forms = models_for(src, dst, reg, layout, base, quick)
            rows = []
            for r in size["rows"]:
                if "measured_ms" not in r:
                    continue
                sched = Schedule(keep=tuple(r["keep"]), scorer=ScorerConfig(**r["scorer"]))
                row = {"mean_keep": r["mean_keep"], "measured_ms": r["measured_ms"],
                       "measured_speedup": base / r["measured_ms"]}
                for k, m in models.items():
                    e = m.estimate(sched)
                    row[k] = {"latency_ms": e.latency_ms, "speedup": e.speedup}
                rows.append(row)
            runs.append({"run": Path(path).name, "source_gpu": src_id, "target_gpu": dst_id, "visual": V,
                         "quick_points": "measured on the target" if quick else "read off the target's table",
                         "baseline_measured_ms": base,
                         "baseline_predicted_ms": {k: m.baseline_ms() for k, m in models.items()},
                         "summary": {k: summarize(rows, k) for k in models}, "rows": rows,
                         "few_shot": fs.describe(), "spec_forms": forms.to_dict(),
                         "source_forms": fs.source_forms.to_dict()})
    # Coverage of the 90 % interval, leave-one-run-out: residuals of the other runs, this run's rows.
    for i, run in enumerate(runs):
        cov = {}
        for k in SOURCES:
            others = [math.log(r["measured_ms"] / r[k]["latency_ms"]) for j, o in enumerate(runs) if j != i
                      for r in o["rows"]]
            if not others:
                continue
            lo, hi = conformal_bounds(others, LEVEL)
            inside = [lo <= math.log(r["measured_ms"] / r[k]["latency_ms"]) <= hi for r in run["rows"]]
            cov[k] = {"coverage": sum(inside) / len(inside), "low_rel": math.exp(lo) - 1, "high_rel": math.exp(hi) - 1}
        run["interval_leave_one_run_out"] = cov
    return {"level": LEVEL, "runs": runs}


def residual_set(result: dict) -> ResidualSet:
    res = {}
    for k, src in RESIDUAL_SOURCE.items():
        res[src] = [math.log(r["measured_ms"] / r[k]["latency_ms"]) for run in result["runs"] for r in run["rows"]]
    notes = {"from": "benchmarks/latency_model_offline.py over "
                     + ", ".join(f"{r['run']} (V={r['visual']}, {r['source_gpu']} -> {r['target_gpu']})"
                                 for r in result["runs"]),
             "few-shot": "variant few-shot+prefill (12 layer timings + the unreduced prefill)",
             "roofline": "spec-only floor + throughput forms"}
    return ResidualSet(residuals=res, notes=notes)


def print_table(result: dict) -> None:
    print(f"{'run':44s} {'V':>6s} {'src->dst':>10s} {'source':<17s} {'lat med':>8s} {'lat p90':>8s} {'spd med':>8s} "
          f"{'spd p90':>8s} {'slope/x':>8s} {'cov90':>6s}")
    for run in result["runs"]:
        pair = f"{run['source_gpu'][:4]}->{run['target_gpu'][:4]}"
        for k, s in run["summary"].items():
            cov = run["interval_leave_one_run_out"].get(k, {}).get("coverage")
            print(f"{run['run'][:44]:44s} {run['visual']:6d} {pair:>10s} {k:<17s} {s['latency_median']:8.2%} "
                  f"{s['latency_p90']:8.2%} {s['speedup_median']:8.2%} {s['speedup_p90']:8.2%} "
                  f"{s['speedup_err_slope_per_x']:+8.4f} {'' if cov is None else f'{cov:6.0%}'}")


def old_mode(args) -> int:
    table = ProfileTable.load(args.table)
    out = {"table": args.table, "gpu": table.gpu, "shape": table.shape.name, "runs": []}
    for path in args.results:
        data = json.loads(Path(path).read_text())
        for size in data["sizes"]:
            V = size["visual"]
            model = LatencyModel(table.shape, TokenLayout(args.prefix, V, args.query), table.gpu, table=table)
            base_meas = size["baseline"]["median_ms"]
            lat, spd = [], []
            for r in size["rows"]:
                est = model.estimate(Schedule(keep=tuple(r["keep"]), scorer=ScorerConfig(**r["scorer"])))
                lat.append(abs(est.latency_ms - r["measured_ms"]) / r["measured_ms"])
                spd.append(abs(est.speedup - base_meas / r["measured_ms"]) / (base_meas / r["measured_ms"]))
            row = {"run": Path(path).name, "visual": V, "n": len(lat), "latency_median": statistics.median(lat),
                   "latency_p90": quantile(lat, 0.9), "latency_max": max(lat), "speedup_median": statistics.median(spd),
                   "speedup_p90": quantile(spd, 0.9), "baseline_measured_ms": base_meas,
                   "baseline_predicted_ms": model.baseline_ms()}
            out["runs"].append(row)
            print(f"{row['run'][:48]:48s} {V:6d} {row['n']:3d} {row['latency_median']:8.2%} {row['latency_p90']:8.2%} "
                  f"{row['speedup_median']:8.2%} {row['speedup_p90']:8.2%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", action="append", default=[], metavar="SRC:DST:RESULTS.json",
                    help="predict the prefills of RESULTS.json (measured on DST) from SRC's table")
    ap.add_argument("--table", help="old mode: one table against the result files")
    ap.add_argument("results", nargs="*", help="old mode: JSON files written by benchmarks/latency_model.py")
    ap.add_argument("--prefix", type=int, default=32)
    ap.add_argument("--query", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_transfer_offline.json"))
    ap.add_argument("--residuals", help="also write the pooled residuals (autoprune.residuals/v1) here")
    args = ap.parse_args(argv)
    if args.table:
        return old_mode(args)
    if not args.pair:
        ap.error("give --pair SRC:DST:RESULTS.json (one or more), or --table T RESULTS...")
    pairs = []
    for p in args.pair:
        parts = p.split(":", 2)
        if len(parts) != 3:
            ap.error(f"--pair must be SRC:DST:RESULTS.json, got {p!r}")
        pairs.append(tuple(parts))
    result = run_pairs(pairs, args.prefix, args.query)
    result["machine"] = "CPU re-scoring of GPU measurements (the result files name their GPUs)"
    result["data"] = {"tables": "autoprune/data/profiles/measured/<gpu>/nemotron-h-8b.json",
                      "measured": [p[2] for p in pairs],
                      "quick_points": "12 layer timings read off the target's table at quick_plan's token counts"}
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.residuals:
        residual_set(result).save(args.residuals)
        print(f"wrote {args.residuals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
