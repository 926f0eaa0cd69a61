"""Paper-scale prefill speed: NemotronH-8B shape at 16k and 64k visual tokens (or another preset, --shape).

transformers NemotronH, random bf16 weights, mamba-ssm Triton kernels (install them and
let autoprune's import shim run, see scripts/device_env.sh), 32 prefix + 64 query text
tokens. ``--shape falcon-h1-7b`` / ``zamba2-7b`` (any preset of ``autoprune.cost.shapes``) runs
that family's own transformers model at the preset's widths instead (Falcon-H1: attention and
Mamba2 in parallel in every layer; Zamba2: Mamba2 layers and shared-attention hybrid layers; both
on mamba-ssm's Triton SSD kernels). ``--tiny`` runs a few-layer, narrow model of the shape's
family on the CPU in float32 (a check that the script works, not a measurement). Per
visual-token count:

- unreduced prefill;
- uniform 25% (keep 1 at layer 0, 0.25 after) and a staged low-to-high mean-25%
  schedule, both with the real language-aware scores (Triton kernels);
- the same low-to-high schedule with a score-free selector: the difference is the time
  spent in scoring and selection;
- FLOP-ideal speedup of each (``autoprune.cost.shapes.prefill_flops``, which leaves out the
  MLP inside a Falcon-H1 layer: ``ideal_speedup_with_mlp`` adds it), NVML energy per
  prefill (counter delta over a window of >= 1 s), peak memory, clock-event flags.

Timing with :func:`autoprune.profiler.timing.time_fn` (CUDA events, warm-up, median, re-measure
on spread or slowdown). Prints a table; writes ``--output`` (default ``$OUT/prefill_speed.json``,
else ``benchmarks/results/prefill_speed.json``; ``prefill_speed-<shape>.json`` for another shape).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from runtime_overhead import low_to_high, prefill  # noqa: E402  (the same staged schedule and call)

import autoprune  # noqa: E402
from autoprune import Schedule, ScorerConfig  # noqa: E402
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout, get_shape, prefill_flops  # noqa: E402
from autoprune.profiler.monitor import GpuMonitor  # noqa: E402
from autoprune.profiler.timing import time_fn  # noqa: E402


def tiny_of(shape):
    """A narrow model of ``shape``'s family and layer-kind mix (CPU check of the script)."""
    kinds = {"falcon_h1": "PPPP", "zamba2": "MMSMMS", "granitemoehybrid": "MM*MM*", "jamba": "A*AA*A",
             "nemotron_h": "M-M*M-M*"}.get(shape.family, shape.layer_kinds[:8])
    small = dict(hidden_size=64, num_attention_heads=4, num_kv_heads=2, head_dim=16, mamba_num_heads=4,
                 mamba_head_dim=32, n_groups=1, ssm_state_size=16, mlp_intermediate_size=96, vocab_size=128,
                 chunk_size=32, moe_intermediate_size=32 if shape.moe_top_k else 0,
                 moe_shared_intermediate_size=64 if shape.moe_shared_intermediate_size else 0)
    if shape.family == "zamba2":  # shared attention on the 2h-wide input: head_dim = 2h / heads
        small.update(num_kv_heads=4, head_dim=32)
    if shape.family == "jamba":  # Mamba1: channels = heads × head_dim = expand · hidden
        small.update(mamba_num_heads=128, mamba_head_dim=1, mamba_dt_rank=8)
    return dataclasses.replace(shape, name=f"{shape.name}-tiny", layer_kinds=kinds, **small)


def build_model(shape, device, dtype):
    """Random weights of ``shape``: NemotronH, or the family's own transformers model."""
    torch.manual_seed(0)
    if shape.family == "nemotron_h":
        from transformers import NemotronHForCausalLM

        cfg = shape.to_nemotron_h_config(use_cache=False, attn_implementation="sdpa")
        with torch.device(device):
            return NemotronHForCausalLM(cfg).to(dtype).eval()
    from transformers import AutoModelForCausalLM

    cfg = shape.to_family_config(use_cache=False)
    cfg._attn_implementation = "sdpa"
    prev = torch.get_default_dtype()
    try:  # created in the target dtype directly on the device: seconds, not minutes, at 7B
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(prev)
    return model.to(device=device, dtype=dtype).eval()


def mlp_flops(shape, layout, counts) -> float:
    """FLOPs of the gated MLP inside every Falcon-H1 layer (3 matrices), which ``prefill_flops`` leaves out."""
    if shape.family != "falcon_h1":
        return 0.0
    return sum(3 * 2 * (layout.text + v) * shape.hidden_size * shape.mlp_intermediate_size for v in counts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default=NEMOTRON_H_8B.name,
                    help="a preset of autoprune.cost.shapes, e.g. falcon-h1-7b or zamba2-7b (default nemotron-h-8b)")
    ap.add_argument("--visual", default=None, help="visual-token counts (default 16384,65536; --tiny: 192)")
    ap.add_argument("--rep-ms", type=float, default=None, help="timed milliseconds per configuration (default 1500)")
    ap.add_argument("--tiny", action="store_true", help="a small model of the shape's family on the CPU (fp32)")
    ap.add_argument("--output", default=None, help="JSON file to write")
    args = ap.parse_args(argv)
    shape = get_shape(args.shape)
    if args.tiny:
        shape, device, dtype = tiny_of(shape), "cpu", torch.float32
        visual, rep_ms, warmup_ms, min_tokens = args.visual or "192", args.rep_ms or 50.0, 10.0, 4
    else:
        if not torch.cuda.is_available():
            print("prefill_speed needs a CUDA GPU (or --tiny on the CPU)", file=sys.stderr)
            return 2
        device, dtype = "cuda", torch.bfloat16
        visual, rep_ms, warmup_ms, min_tokens = args.visual or "16384,65536", args.rep_ms or 1500.0, 500.0, 16
    model = build_model(shape, device, dtype)
    sig = autoprune.model_signature(model)
    if sig.layer_kinds != shape.layer_kinds:
        raise SystemExit(f"the model's layer kinds {sig.layer_kinds!r} differ from the shape's {shape.layer_kinds!r}")
    n = shape.num_layers
    gpu = device == "cuda"
    results = {"benchmark": "prefill_speed", "device": torch.cuda.get_device_name() if gpu else "cpu",
               "torch": torch.__version__, "shape": shape.name, "family": shape.family,
               "layer_kinds": shape.layer_kinds, "tiny": bool(args.tiny), "sizes": [],
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for V in [int(v) for v in visual.split(",")]:
        layout = TokenLayout(prefix=32, visual=V, query=64)
        L = layout.total
        x = torch.randn(1, L, shape.hidden_size, device=device, dtype=dtype) * 0.02
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
        base_mlp = mlp_flops(shape, layout, [V] * n)
        rows = []
        for name, sched in configs.items():
            def fn(sched=sched, x=x):  # bound now: x is deleted at the end of the loop
                prefill(model, x, vm, sched)
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            mon = GpuMonitor(energy=True, min_window_s=1.0) if gpu else None
            stats = time_fn(fn, monitor=mon, energy=gpu, warmup_ms=warmup_ms, rep_ms=rep_ms, min_reps=3,
                            max_reps=20, retries=1)
            counts = [V] * n if sched is None else sched.tokens_per_layer(V)
            rows.append({"config": name, "median_ms": stats.median, "p20_ms": stats.p20, "p80_ms": stats.p80,
                         "n": stats.n, "flags": list(stats.flags),
                         "energy_j": stats.monitor.energy_per_call_j if stats.monitor else None,
                         "avg_power_w": stats.monitor.avg_power_w if stats.monitor else None,
                         "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan"),
                         "mean_keep": sum(counts) / (n * V),
                         "ideal_speedup": base_flops / prefill_flops(shape, layout, counts),
                         "ideal_speedup_with_mlp": (base_flops + base_mlp)
                         / (prefill_flops(shape, layout, counts) + mlp_flops(shape, layout, counts))})
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
    if args.output:
        path = Path(args.output)
    else:
        out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
        path = out / ("prefill_speed.json" if args.shape == NEMOTRON_H_8B.name and not args.tiny
                      else f"prefill_speed-{shape.name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nprefill speed on {results['device']} ({shape.name}, 32 + V + 64 tokens); JSON in {path}")
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
