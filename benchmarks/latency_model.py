"""Validate the latency model against measured prefills (GPU; runs on the CPU at toy scale too).

What it does, in one process:

1. (``--profile`` or when no table exists for the present GPU and shape) measure the
   per-layer table with :func:`autoprune.profiler.layer_bench.profile_shape` and write it to
   ``$OUT/profiles/measured/<gpu>/<shape>.json`` (``benchmarks/results/...`` without ``$OUT``);
2. build the whole model (transformers ``NemotronHForCausalLM``, random bf16 weights,
   created directly on the GPU), then for each visual-token count ``V``:
   ``[prefix][V visual][query]`` random embeddings, the unreduced baseline, and
   ``--schedules`` random monotone schedules (``keep[0] = 1``, non-increasing, mean keep
   spread over ``--mean-keep``) run through the real :func:`autoprune.reduce` runtime with
   the real scores, each timed with CUDA events (median of ``--repeats``) and, with NVML,
   its energy per prefill;
3. compare with the latency model's predictions: from the table measured here
   (``table``), from a roofline calibrated on this GPU's own table (``roof-self``: how
   well the roofline form fits), and with ``--predict-from OTHER.json`` from a roofline
   calibrated on *another* GPU's table (the cross-GPU check, e.g. calibrate on H100,
   measure on H200; ``cross-sum`` is the same with the two roofline terms added instead
   of maxed). Reports median and p90 of |pred − meas| / meas for latency and
   for speedup over the baseline;
4. with ``--quick-from OTHER.json``: ``autoprune profile --quick`` on this GPU (12 layer
   timings, 3 whole prefills on the model already built, :func:`autoprune.profiler.quick.quick_profile`)
   and the predictions it gives (``few-shot``), beside the spec-only floor + throughput
   forms carried from OTHER's GPU (``roofline``) and the previous max roofline
   (``roofline-max``); every prediction's 90 % interval and whether it held the measurement.

The issue-19 check on the H200 (one device command, under 4 minutes)::

    bash benchmarks/device_latency.sh --visual 16384,65536 --no-energy --repeats 3 \
        --table autoprune/data/profiles/measured/h200-sxm-141gb/nemotron-h-8b.json \
        --quick-from autoprune/data/profiles/measured/h100-sxm5-80gb/nemotron-h-8b.json --budget 200

Prints a short table last and writes everything to
``$OUT/latency_model-<gpu>-<shape>-V<sizes>.json`` (or ``benchmarks/results/``).

Example (H100, one device command)::

    python benchmarks/latency_model.py --visual 16384 --profile --repeats 5

Toy run on the CPU (what the test-suite does)::

    python benchmarks/latency_model.py --shape tests/tiny_shape.json --device cpu --visual 256 \
        --schedules 3 --profile --grid-max 1024
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

# The mamba-ssm import shim must run before transformers imports NemotronH's modeling
# module (it picks its Mamba kernels once, at import).
from autoprune.compat import mamba_ssm_shim

mamba_ssm_shim.install()

import torch  # noqa: E402

from autoprune.schedule import Schedule, ScorerConfig  # noqa: E402


# ---------------------------------------------------------------- schedules
def random_schedules(num_layers: int, count: int, seed: int = 0, mean_keep=(0.15, 0.8),
                     vary_scorer: bool = True) -> list[Schedule]:
    """``count`` random low-to-high schedules whose mean keeps spread evenly over ``mean_keep``.

    Each starts at 1, drops multiplicatively at a few random layers (the first drop early
    enough that the target mean is reachable), and is then bent by an exponent ``α``
    (``keep ** α`` keeps monotonicity and ``keep[0] = 1``) so that ``mean(keep)`` hits its target.
    """
    rng = random.Random(seed)
    lo, hi = mean_keep
    targets = [lo + (hi - lo) * (i + 0.5) / count for i in range(count)]
    rng.shuffle(targets)
    out = []
    for m in targets:
        first = rng.randint(1, max(1, int(0.8 * m * num_layers)))
        drops = sorted({first} | {rng.randint(first, num_layers - 1) for _ in range(rng.choice([2, 4, 7]))})
        base, level = [], 1.0
        for i in range(num_layers):
            if i in drops:
                level *= rng.uniform(0.4, 0.9)
            base.append(level)
        a_lo, a_hi = 1e-3, 1e3
        for _ in range(100):  # mean(base ** a) decreases in a: bisection (in log a)
            a = math.sqrt(a_lo * a_hi)
            if statistics.fmean(b ** a for b in base) > m:
                a_lo = a
            else:
                a_hi = a
        keep = [1.0] + [max(0.02, b ** a) for b in base[1:]]
        for i in range(1, num_layers):
            keep[i] = min(keep[i], keep[i - 1])
        scorer = ScorerConfig()
        if vary_scorer:
            scorer = ScorerConfig(state_momentum=round(rng.uniform(0.0, 0.9), 2), evidence_window=rng.choice([1, 2, 3]),
                                  mamba_decay=rng.random() < 0.25)
        out.append(Schedule(keep=tuple(keep), scorer=scorer))
    return out


# ------------------------------------------------------------------- model
def build_model(shape, device, dtype, seed: int = 0):
    from autoprune.profiler.random_model import build_random_model

    return build_random_model(shape, device, dtype, seed)


def _q(values, q):
    s = sorted(values)
    if not s:
        return float("nan")
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize_errors(rows, key):
    lat = [abs(r[key]["latency_ms"] - r["measured_ms"]) / r["measured_ms"] for r in rows if r.get(key)]
    spd = [abs(r[key]["speedup"] - r["measured_speedup"]) / r["measured_speedup"] for r in rows if r.get(key)]
    signed = [r[key]["speedup"] / r["measured_speedup"] - 1 for r in rows if r.get(key)]
    xs = [r["measured_speedup"] for r in rows if r.get(key)]
    inside = [r[key]["inside"] for r in rows if r.get(key) and r[key].get("inside") is not None]
    slope = float("nan")
    if len(xs) > 1:
        mx, my = statistics.fmean(xs), statistics.fmean(signed)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, signed)) / sxx if sxx else 0.0
    return {"n": len(lat), "latency_rel_err_median": _q(lat, 0.5), "latency_rel_err_p90": _q(lat, 0.9),
            "speedup_rel_err_median": _q(spd, 0.5), "speedup_rel_err_p90": _q(spd, 0.9),
            "speedup_err_slope_per_x": slope,
            "interval_coverage": sum(inside) / len(inside) if inside else None}


def _out_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return Path(__file__).resolve().parent / "results"


# -------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="nemotron-h-8b", help="preset name or ModelShape/config JSON file")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--visual", default="16384", help="comma-separated visual-token counts (e.g. 16384,65536)")
    ap.add_argument("--prefix", type=int, default=32)
    ap.add_argument("--query", type=int, default=64)
    ap.add_argument("--schedules", type=int, default=20)
    ap.add_argument("--mean-keep", default="0.15,0.8", help="range of mean keep of the random schedules")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed prefills per schedule (median reported)")
    ap.add_argument("--retries", type=int, default=1, help="re-measurements of a noisy/slowed-down schedule")
    ap.add_argument("--max-spread", type=float, default=0.05)
    ap.add_argument("--no-energy", action="store_true", help="skip the NVML energy window per schedule")
    ap.add_argument("--energy-window", type=float, default=1.0, help="seconds of NVML energy window (>= ~1 s)")
    ap.add_argument("--table", help="use this measured table instead of profiling")
    ap.add_argument("--profile", action="store_true", help="measure the table first (default when none is found)")
    ap.add_argument("--grid-max", type=int, default=131072, help="largest token count of the profile grid")
    ap.add_argument("--grid-min", type=int, default=128)
    ap.add_argument("--profile-rep-ms", type=float, default=100.0)
    ap.add_argument("--profile-budget", type=float, default=None, help="time budget of the profile (s)")
    ap.add_argument("--predict-from", help="table measured on another GPU: predict this GPU by calibrated roofline")
    ap.add_argument("--quick-from", help="table measured on another GPU: measure the --quick points here and predict "
                                         "by few-shot transfer (and by the spec-only forms)")
    ap.add_argument("--as-gpu", help=argparse.SUPPRESS)  # tests: treat the CPU as this registry GPU
    ap.add_argument("--quick-visual", type=int, default=16384, help="visual tokens of the quick whole prefills")
    ap.add_argument("--quick-tokens", default=None, help="token counts of the quick layer timings (default: "
                                                         "autoprune.cost.transfer.QUICK_TOKENS)")
    ap.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                    help="stop timing schedules after this many seconds since start (the rest is recorded as "
                         "skipped); results are written after every size, so a killed run keeps what it measured")
    ap.add_argument("--out", help="output directory (default $OUT, else benchmarks/results)")
    args = ap.parse_args(argv)

    t_all = time.monotonic()
    from autoprune.commands.profile import load_shape
    from autoprune.cost.gpus import CPU, detect, load_registry
    from autoprune.cost.latency import LatencyModel
    from autoprune.cost.profile_table import ProfileTable, find_table, table_path
    from autoprune.cost.roofline import calibrate
    from autoprune.cost.shapes import TokenLayout
    from autoprune.profiler.environment import environment_info, scoring_kernels_available
    from autoprune.profiler.layer_bench import profile_shape, token_grid
    from autoprune.profiler.measured import MeasuredLatency
    from autoprune.profiler.monitor import GpuMonitor

    shape = load_shape(args.shape)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, shape.dtype)
    registry = load_registry()
    if dev.type == "cuda":
        try:
            spec = detect(registry)
        except Exception as e:
            print(f"error: the present GPU is not in the registry: {e}", file=sys.stderr)
            return 2
    else:
        spec = CPU
    if args.as_gpu:  # toy runs on the CPU: its wall-clock timings filed under a GPU id
        spec = registry.get(args.as_gpu)
    out = _out_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    use_kernels = dev.type == "cuda" and scoring_kernels_available()
    env = environment_info(dev)
    print(f"device {env.get('device_name')} -> {spec.id}; torch {env['torch']}, transformers {env['transformers']}, "
          f"triton {env['triton']}, mamba_ssm {env['mamba_ssm']}; scoring {'triton' if use_kernels else 'torch'}",
          flush=True)
    print(f"mamba kernels: {env['mamba_kernels']}", flush=True)
    if dev.type == "cuda":
        # The card's state before we start (clocks, reasons): a slowed-down card is visible here.
        env["gpu_state_at_start"] = GpuMonitor(energy=False).snapshot().to_dict()
        print(f"gpu state: {env['gpu_state_at_start']}", flush=True)
    phases = {}

    # 1. the measured table of this GPU --------------------------------------
    t0 = time.monotonic()
    table = None
    if args.table:
        table = ProfileTable.load(args.table)
    elif not args.profile:
        p = find_table(spec.id, shape.name)
        table = None if p is None else ProfileTable.load(p)
        if table is not None:
            print(f"using measured table {p}", flush=True)
    if table is None:
        grid = token_grid(args.grid_min, args.grid_max, 2)
        print(f"profiling {shape.name} on {spec.id}: {len(grid)} token counts {grid[0]}..{grid[-1]}", flush=True)
        monitor = GpuMonitor(energy=False) if dev.type == "cuda" else None
        table = profile_shape(shape, device=dev, gpu_id=spec.id, tokens=grid, prefix_tokens=args.prefix,
                              query_tokens=args.query, monitor=monitor, time_budget_s=args.profile_budget,
                              timer_kw={"rep_ms": args.profile_rep_ms}, use_kernels=use_kernels,
                              log=lambda s: print(s, flush=True))
        path = table.save(table_path(out / "profiles" / "measured", spec.id, shape.name))
        # The device tool returns files at most two folders below $OUT: also write a flat copy.
        flat = table.save(out / f"table-{spec.id}-{shape.name}.json")
        print(f"wrote {path} and {flat} ({len(table.skipped)} points skipped)", flush=True)
        for s in table.skipped:
            print(f"  skipped {s['what']} n={s['tokens']}: {s['reason']}", flush=True)
    phases["profile_s"] = round(time.monotonic() - t0, 1)
    if table.gpu != spec.id:
        print(f"error: table {table.origin} is for {table.gpu}, this is {spec.id}", file=sys.stderr)
        return 2
    if table.scoring_impl and table.scoring_impl != ("triton" if use_kernels else "torch"):
        print(f"warning: the table's scoring was measured with {table.scoring_impl}, this run uses "
              f"{'triton' if use_kernels else 'torch'}", flush=True)
    self_cal = None
    if not spec.is_cpu:
        try:
            self_cal = calibrate(table, spec)
            print(f"roofline fit on this GPU's table: median error per kind "
                  f"{ {k: round(v, 3) for k, v in self_cal.fit_error.items()} }; factors "
                  f"{ {k: v.to_dict() for k, v in self_cal.kinds.items()} }", flush=True)
        except Exception as e:  # an incomplete table still gives the table-based comparison
            print(f"warning: no roofline self-calibration: {e}", flush=True)
    cross_cal = cross_sum = None
    if args.predict_from:
        other = ProfileTable.load(args.predict_from)
        cross_cal = calibrate(other, registry.get(other.gpu))
        cross_sum = calibrate(other, registry.get(other.gpu), combine="sum")
        print(f"cross-GPU: roofline calibrated on {other.gpu} (fit error per kind "
              f"{ {k: round(v, 3) for k, v in cross_cal.fit_error.items()} }) predicts {spec.id}", flush=True)

    # 2. the model -----------------------------------------------------------
    t0 = time.monotonic()
    model = build_model(shape, dev, dtype, seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    phases["build_s"] = round(time.monotonic() - t0, 1)
    print(f"built {shape.name}: {n_params / 1e9:.2f} B parameters in {phases['build_s']} s", flush=True)

    few_shot = spec_forms = quick_cal = None
    quick_doc = None
    if args.quick_from:
        from autoprune.cost.latency import calibrate_prefills
        from autoprune.cost.transfer import fit_few_shot, fit_forms, spec_transfer
        from autoprune.profiler.quick import quick_profile

        t0 = time.monotonic()
        other = ProfileTable.load(args.quick_from)
        from autoprune.cost.transfer import QUICK_TOKENS

        qtok = QUICK_TOKENS if not args.quick_tokens else tuple(int(t) for t in args.quick_tokens.split(","))
        qp = quick_profile(shape, other, gpu_id=spec.id, device=dev, prefills=3, tokens=qtok,
                           visual=min(args.quick_visual, max(int(v) for v in args.visual.split(","))),
                           prefix_tokens=args.prefix, query_tokens=args.query, model=model,
                           log=lambda s: print(s, flush=True))
        phases["quick_s"] = round(time.monotonic() - t0, 1)
        qp.save(out / f"quick-{spec.id}-{shape.name}.json")
        src_spec = registry.get(other.gpu)
        few_shot = calibrate_prefills(fit_few_shot(other, src_spec, spec, qp.points), qp.prefills, shape,
                                      prefix=args.prefix, query=args.query)
        spec_forms = spec_transfer(fit_forms(other, src_spec), src_spec, spec, shape.dtype)
        quick_cal = calibrate(other, src_spec)
        quick_doc = {"quick_profile": qp.to_dict(), "few_shot": few_shot.describe(), "spec_forms": spec_forms.to_dict(),
                     "seconds": phases["quick_s"]}
        print(f"quick profile: {len(qp.points)} layer timings + {len(qp.prefills)} prefills in {phases['quick_s']} s; "
              f"gpu scale {few_shot.describe()['gpu_scale']}, prefill scale {few_shot.prefill_scale:.4f}, "
              f"{few_shot.prune_point_ms:.3f} host ms per prune point", flush=True)

    lo, hi = (float(x) for x in args.mean_keep.split(","))
    schedules = random_schedules(shape.num_layers, args.schedules, seed=args.seed, mean_keep=(lo, hi))
    results = {"gpu": spec.id, "device_name": env.get("device_name"), "shape": shape.name, "environment": env,
               "table": table.origin, "self_calibration": None if self_cal is None else self_cal.to_dict(),
               "cross_calibration": None if cross_cal is None else cross_cal.to_dict(),
               "cross_calibration_sum": None if cross_sum is None else cross_sum.to_dict(), "quick": quick_doc,
               "sizes": []}
    sizes = [int(v) for v in args.visual.split(",")]
    name = f"latency_model-{spec.id}-{shape.name}-V{'_'.join(str(v) for v in sizes)}.json"
    results["phases"] = phases
    timer_kw = {"min_reps": args.repeats, "max_reps": args.repeats, "rep_ms": 0.0, "warmup_ms": 0.0,
                "estimate_calls": 1, "retries": args.retries, "max_spread": args.max_spread}
    energy = dev.type == "cuda" and not args.no_energy

    # 3. measure and compare, per size --------------------------------------
    for V in sizes:
        t0 = time.monotonic()
        layout = TokenLayout(prefix=args.prefix, visual=V, query=args.query)
        L = layout.total
        x = torch.randn(1, L, shape.hidden_size, device=dev, dtype=dtype)
        mask = torch.zeros(1, L, dtype=torch.bool)
        mask[:, args.prefix:args.prefix + V] = True
        monitor = GpuMonitor(energy=True, min_window_s=args.energy_window) if energy else None
        ml = MeasuredLatency(model, x, mask, gpu=spec.id, monitor=monitor, energy=energy, timer_kw=timer_kw,
                             use_kernels=use_kernels)
        models = {"table": LatencyModel(shape, layout, spec, table=table)}
        if self_cal is not None:
            models["roof-self"] = LatencyModel(shape, layout, spec, calibration=self_cal)
        if cross_cal is not None:
            models["roof-cross"] = LatencyModel(shape, layout, spec, calibration=cross_cal)
            models["cross-sum"] = LatencyModel(shape, layout, spec, calibration=cross_sum)
        if few_shot is not None:
            models["few-shot"] = LatencyModel(shape, layout, spec, few_shot=few_shot)
            models["roofline"] = LatencyModel(shape, layout, spec, calibration=quick_cal, forms=spec_forms)
            models["roofline-max"] = LatencyModel(shape, layout, spec, calibration=quick_cal)
        base = ml.baseline()
        base_pred = {k: m.baseline_ms() for k, m in models.items()}
        print(f"\nV={V} (L={L}): baseline {base.median:.1f} ms (spread {base.spread:.1%}"
              + (f", {base.energy_per_call_j:.1f} J" if base.energy_per_call_j else "") + "); predicted "
              + ", ".join(f"{k} {v:.1f}" for k, v in base_pred.items()), flush=True)
        rows = []
        for i, s in enumerate(schedules):
            row = {"i": i, "mean_keep": s.mean_keep, "keep": list(s.keep), "scorer": s.scorer.to_dict()}
            if args.budget is not None and time.monotonic() - t_all > args.budget:
                row["error"] = "skipped: --budget exhausted"
                rows.append(row)
                continue
            try:
                st = ml.measure(s)
            except Exception as e:  # a failed schedule is recorded and the run goes on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if "error" in row:
                print(f"  #{i:02d} failed: {row['error']}", flush=True)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
                continue
            row.update(measured_ms=st.median, spread=st.spread, flags=list(st.flags), attempts=st.attempts,
                       energy_j=st.energy_per_call_j, measured_speedup=base.median / st.median)
            for k, m in models.items():
                e = m.estimate(s)
                b = m.breakdown(s)
                row[k] = {"latency_ms": e.latency_ms, "baseline_ms": e.baseline_ms, "speedup": e.speedup,
                          "scoring_ms": b.scoring_ms, "gather_ms": b.gather_ms, "flags": list(e.flags),
                          "low_ms": e.low_ms, "high_ms": e.high_ms, "source": e.source,
                          "inside": None if e.low_ms is None else bool(e.low_ms <= st.median <= e.high_ms)}
            rows.append(row)
            print(f"  #{i:02d} keep {s.mean_keep:.2f}  meas {st.median:8.1f} ms ({base.median / st.median:4.2f}x)"
                  + "".join(f"  {k} {row[k]['latency_ms']:8.1f} ({row[k]['speedup']:4.2f}x)" for k in models)
                  + (f"  [{','.join(st.flags)}]" if st.flags else ""), flush=True)
        ok = [r for r in rows if "measured_ms" in r]
        size = {"visual": V, "length": L, "baseline": base.to_dict(), "baseline_predicted_ms": base_pred,
                "rows": rows, "summary": {k: summarize_errors(ok, k) for k in models},
                "seconds": round(time.monotonic() - t0, 1)}
        results["sizes"].append(size)
        (out / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
        del x, ml
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    phases["total_s"] = round(time.monotonic() - t_all, 1)
    results["phases"] = phases
    (out / name).write_text(json.dumps(results, indent=2, default=str) + "\n")

    # 4. the short table, last ----------------------------------------------
    print(f"\n== latency model vs measurement on {spec.id} ({shape.name}); wrote {out / name}")
    print(f"{'V':>7} {'source':<12} {'n':>3} {'lat med':>8} {'lat p90':>8} {'spd med':>8} {'spd p90':>8} "
          f"{'slope/x':>8} {'cov90':>6} {'base meas':>10} {'base pred':>10}")
    for size in results["sizes"]:
        for k, s in size["summary"].items():
            cov = s.get("interval_coverage")
            print(f"{size['visual']:>7} {k:<12} {s['n']:>3} {s['latency_rel_err_median']:>8.1%} "
                  f"{s['latency_rel_err_p90']:>8.1%} {s['speedup_rel_err_median']:>8.1%} "
                  f"{s['speedup_rel_err_p90']:>8.1%} {s['speedup_err_slope_per_x']:>+8.4f} "
                  f"{'' if cov is None else f'{cov:6.0%}':>6} {size['baseline']['median_ms']:>10.1f} "
                  f"{size['baseline_predicted_ms'][k]:>10.1f}")
    print(f"phases: {phases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
