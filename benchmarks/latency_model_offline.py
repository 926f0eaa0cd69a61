"""Re-score measured schedules against the latency model, offline (no GPU).

``benchmarks/latency_model.py`` records, for every schedule it times, its keep vector,
scorer and measured latency. This script predicts those schedules again from a measured
table with the current :class:`autoprune.cost.latency.LatencyModel` and reports the errors
(median, p90, max of |pred − meas| / meas, and of the speedup), so a change of the
model can be checked against every GPU measurement already made. Prints a table and
writes ``benchmarks/results/latency_model_offline.json``.

    python benchmarks/latency_model_offline.py --table profiles/measured/h100-sxm5-80gb/nemotron-h-8b.json \\
        benchmarks/results/latency_model-*.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from autoprune.cost.latency import LatencyModel
from autoprune.cost.profile_table import ProfileTable
from autoprune.cost.shapes import TokenLayout
from autoprune.schedule import Schedule, ScorerConfig


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("results", nargs="+", help="JSON files written by benchmarks/latency_model.py")
    ap.add_argument("--prefix", type=int, default=32)
    ap.add_argument("--query", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_model_offline.json"))
    args = ap.parse_args(argv)
    table = ProfileTable.load(args.table)
    out = {"table": args.table, "gpu": table.gpu, "shape": table.shape.name, "runs": []}
    print(f"{'run':48s} {'V':>6s} {'n':>3s} {'lat med':>8s} {'lat p90':>8s} {'lat max':>8s} {'spd med':>8s} "
          f"{'spd p90':>8s} {'base meas':>10s} {'base pred':>10s}")
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
            print(f"{row['run'][:48]:48s} {V:6d} {row['n']:3d} {100 * row['latency_median']:7.2f}% "
                  f"{100 * row['latency_p90']:7.2f}% {100 * row['latency_max']:7.2f}% {100 * row['speedup_median']:7.2f}% "
                  f"{100 * row['speedup_p90']:7.2f}% {base_meas:10.1f} {row['baseline_predicted_ms']:10.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
