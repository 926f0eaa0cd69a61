"""Paper-scale prefill speed: NemotronH-8B shape at 16k and 64k visual tokens.

transformers NemotronH, random bf16 weights, mamba-ssm Triton kernels (install them and
let autoprune's import shim run, see scripts/device_env.sh), 32 prefix + 64 query text
tokens. Per visual-token count:

- unreduced prefill;
- uniform 25% (keep 1 at layer 0, 0.25 after) and a staged low-to-high mean-25%
  schedule, both with the real language-aware scores (Triton kernels);
- the same low-to-high schedule with a score-free selector: the difference is the time
  spent in scoring and selection;
- FLOP-ideal speedup of each (``autoprune.cost.shapes.prefill_flops``), NVML energy per
  prefill (counter delta over a window of >= 1 s), peak memory, clock-event flags.

Timing with :func:`autoprune.profiler.timing.time_fn` (CUDA events, warm-up, median, re-measure
on spread or slowdown). Prints a table; writes ``$OUT/prefill_speed.json`` (else
``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import autoprune  # noqa: E402
from autoprune import Schedule, ScorerConfig  # noqa: E402
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout, prefill_flops  # noqa: E402
from autoprune.profiler.monitor import GpuMonitor  # noqa: E402
from autoprune.profiler.timing import time_fn  # noqa: E402
from runtime_overhead import low_to_high, prefill  # noqa: E402  (the same staged schedule and call)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visual", default="16384,65536")
    ap.add_argument("--rep-ms", type=float, default=1500.0, help="timed milliseconds per configuration")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("prefill_speed needs a CUDA GPU", file=sys.stderr)
        return 2
    from transformers import NemotronHForCausalLM

    shape = NEMOTRON_H_8B
    cfg = shape.to_nemotron_h_config(use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = NemotronHForCausalLM(cfg).to(torch.bfloat16).eval()
    sig = autoprune.model_signature(model)
    n, min_tokens = shape.num_layers, 16
    results = {"benchmark": "prefill_speed", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "shape": shape.name, "sizes": [], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for V in [int(v) for v in args.visual.split(",")]:
        layout = TokenLayout(prefix=32, visual=V, query=64)
        L = layout.total
        x = torch.randn(1, L, shape.hidden_size, device="cuda", dtype=torch.bfloat16) * 0.02
        vm = torch.zeros(1, L, dtype=torch.bool)
        vm[:, layout.prefix:layout.prefix + V] = True
        l2h = Schedule(keep=low_to_high(n, 0.25, V, min_tokens), model=sig, min_tokens=min_tokens)
        configs = {
            "unreduced": None,
            "uniform-25%": Schedule(keep=(1.0,) + (0.25,) * (n - 1), model=sig, min_tokens=min_tokens),
            "low-to-high mean-25%": l2h,
            "low-to-high mean-25% [stride, no scoring]": l2h.replace(scorer=ScorerConfig(selector="uniform_stride")),
        }
        base_flops = prefill_flops(shape, layout)
        rows = []
        for name, sched in configs.items():
            def fn(sched=sched, x=x):  # bound now: x is deleted at the end of the loop
                prefill(model, x, vm, sched)
            torch.cuda.reset_peak_memory_stats()
            mon = GpuMonitor(energy=True, min_window_s=1.0)
            stats = time_fn(fn, monitor=mon, energy=True, warmup_ms=500.0, rep_ms=args.rep_ms, min_reps=3,
                            max_reps=20, retries=1)
            counts = [V] * n if sched is None else sched.tokens_per_layer(V)
            rows.append({"config": name, "median_ms": stats.median, "p20_ms": stats.p20, "p80_ms": stats.p80,
                         "n": stats.n, "flags": list(stats.flags),
                         "energy_j": stats.monitor.energy_per_call_j if stats.monitor else None,
                         "avg_power_w": stats.monitor.avg_power_w if stats.monitor else None,
                         "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                         "mean_keep": sum(counts) / (n * V),
                         "ideal_speedup": base_flops / prefill_flops(shape, layout, counts)})
            print(f"  V={V} {name:45s} {stats.median:9.1f} ms  energy {rows[-1]['energy_j'] or float('nan'):7.1f} J",
                  flush=True)
        base = rows[0]
        for r in rows:
            r["speedup"] = base["median_ms"] / r["median_ms"]
            r["speedup_over_ideal"] = r["speedup"] / r["ideal_speedup"]
            if r["energy_j"] and base["energy_j"]:
                r["energy_ratio"] = base["energy_j"] / r["energy_j"]
        scored = next(r for r in rows if r["config"] == "low-to-high mean-25%")
        free = next(r for r in rows if r["config"].endswith("[stride, no scoring]"))
        results["sizes"].append({"visual": V, "length": L, "rows": rows,
                                 "scoring_selection_ms": scored["median_ms"] - free["median_ms"],
                                 "scoring_selection_share": (scored["median_ms"] - free["median_ms"])
                                 / scored["median_ms"]})
        del x
        torch.cuda.empty_cache()
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "prefill_speed.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nprefill speed on {results['device']} ({shape.name}, 32 + V + 64 tokens)")
    print(f"{'V':>6s} {'config':45s} {'ms':>8s} {'speedup':>8s} {'ideal':>6s} {'/ideal':>7s} {'energy J':>9s} "
          f"{'E ratio':>8s} {'peak GiB':>9s}")
    for size in results["sizes"]:
        for r in size["rows"]:
            print(f"{size['visual']:6d} {r['config']:45s} {r['median_ms']:8.1f} {r['speedup']:7.2f}x "
                  f"{r['ideal_speedup']:6.2f} {r['speedup_over_ideal']:7.3f} {r['energy_j'] or float('nan'):9.1f} "
                  f"{r.get('energy_ratio', float('nan')):8.2f} {r['peak_mem_gib']:9.1f}")
        print(f"{size['visual']:6d} scoring + selection: {size['scoring_selection_ms']:.2f} ms "
              f"({100 * size['scoring_selection_share']:.1f}% of the reduced prefill)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
