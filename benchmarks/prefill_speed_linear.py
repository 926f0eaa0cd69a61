"""Prefill speed of a linear-attention hybrid (Qwen3.5-9B shape by default) at mean keep 0.25.

transformers ``Qwen3_5ForCausalLM`` (or Qwen3-Next / LFM2 with ``--shape``) with random bf16
weights at the preset's published widths (:mod:`autoprune.cost.shapes`), 32 prefix + V visual +
64 query tokens, SDPA attention; the Gated DeltaNet runs flash-linear-attention's chunked kernel
where ``fla`` is installed (carried to the H200 in ``.whl/``), else transformers' torch chunked
delta rule; the conv is torch where causal-conv1d is absent (``delta_rule_kernel`` in the JSON
says which ran). Configurations:

- unreduced prefill;
- uniform 25% (keep 1 at layer 0, 0.25 after) and a staged low-to-high mean-25% schedule with
  the language-aware score (DeltaNet proxy: decay-free, Triton kernel on CUDA; attention rows);
- the low-to-high schedule with the decay proxy and with the exact form (gate decay + delta
  correction, the chunked torch scan);
- the low-to-high schedule with a score-free selector (uniform stride), for comparison.

The time spent in scoring and selection (target ≤ 2 % of the reduced prefill) is read off one
profiled prefill of each reduced configuration (:func:`autoprune.profiler.ranges.range_breakdown`:
the device time of the kernels launched inside the runtime's ``autoprune::evidence`` and
``autoprune::select`` ranges, over the device time of every kernel of the call); the gather that
compacts the hidden states is reported beside it. A difference of two timed runs is no
measure of it: two schedules' timings differ by more than the scoring costs.

Each row has its FLOP-ideal speedup (:func:`autoprune.cost.shapes.prefill_flops`), NVML energy
per prefill on a GPU, peak memory and clock-event flags. ``--tiny`` runs a tiny shape on the CPU
(a test of the script, numbers mean nothing). Prints a table; writes JSON to ``--out`` (default
``$OUT/prefill_speed_linear.json``, else ``benchmarks/results/``).
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
from autoprune.cost.shapes import ModelShape, TokenLayout, get_shape, prefill_flops  # noqa: E402
from autoprune.profiler.random_model import build_random_model  # noqa: E402
from autoprune.profiler.ranges import EVIDENCE, GATHER, SELECT, range_breakdown  # noqa: E402
from autoprune.profiler.timing import time_fn  # noqa: E402
from runtime_overhead import low_to_high, prefill  # noqa: E402  (the same staged schedule and call)

TINY = ModelShape(name="tiny-qwen3.5", family="qwen3_5_text", layer_kinds="LLL*" * 3, hidden_size=64,
                  num_attention_heads=4, num_kv_heads=2, head_dim=16, mamba_num_heads=0, mamba_head_dim=0, n_groups=0,
                  ssm_state_size=0, conv_kernel=4, mlp_intermediate_size=128, vocab_size=128, chunk_size=64,
                  linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
                  attn_output_gate=True, mixer_mlp=True, dtype="float32")


def configs(sig, n: int, V: int, min_tokens: int) -> dict:
    first = sig.layer_kinds.index("*") + 1 if sig.layer_kinds[0] == "C" else 1  # LFM2: no evidence before
    l2h = Schedule(keep=low_to_high(n, 0.25, V, min_tokens), model=sig, min_tokens=min_tokens)
    if first > 1:
        l2h = Schedule(keep=tuple(1.0 if i < first else k for i, k in enumerate(
            low_to_high(n, 0.25, V, min_tokens, cuts=(first / n + 0.01, 0.25, 0.45, 0.7)))), model=sig,
            min_tokens=min_tokens)
    return {
        "unreduced": None,
        "uniform-25%": Schedule(keep=(1.0,) * first + (0.25,) * (n - first), model=sig, min_tokens=min_tokens),
        "low-to-high mean-25%": l2h,
        "low-to-high mean-25% [decay proxy]": l2h.replace(scorer=ScorerConfig(mamba_decay=True)),
        "low-to-high mean-25% [exact form]": l2h.replace(scorer=ScorerConfig(mamba_decay=True,
                                                                            delta_correction=True)),
        "low-to-high mean-25% [stride, no scoring]": l2h.replace(scorer=ScorerConfig(selector="uniform_stride")),
    }


def delta_rule_kernel() -> str:
    """Which chunked gated delta rule transformers' Qwen3.5 layers call (fla's, or its torch one)."""
    from transformers.models.qwen3_5 import modeling_qwen3_5 as m

    import inspect

    fn = m.torch_chunk_gated_delta_rule  # transformers' wrapper: the implementation it picked is in its closure
    impl = inspect.getclosurevars(fn).nonlocals.get("implementation", fn) if callable(fn) else fn
    return f"{getattr(impl, '__module__', '?')}.{getattr(impl, '__name__', '?')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen3.5-9b", help="a preset of a linear/short-conv family (qwen3.5-9b)")
    ap.add_argument("--visual", default="16384", help="comma-separated visual-token counts")
    ap.add_argument("--rep-ms", type=float, default=1500.0, help="timed milliseconds per configuration")
    ap.add_argument("--tiny", action="store_true", help="a tiny shape on the CPU (tests the script)")
    ap.add_argument("--skip", default="", help="comma-separated config names to leave out")
    ap.add_argument("--out", default=None, help="JSON output file")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("prefill_speed_linear needs a CUDA GPU (or --tiny on the CPU)", file=sys.stderr)
        return 2
    shape = TINY if args.tiny else get_shape(args.shape)
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    visual = [96] if args.tiny and args.visual == "16384" else [int(v) for v in args.visual.split(",")]
    t0 = time.perf_counter()
    model = build_random_model(shape, dev, dtype, seed=0)
    build_s = time.perf_counter() - t0
    sig = autoprune.model_signature(model)
    n, min_tokens = shape.num_layers, 16 if not args.tiny else 2
    params = sum(p.numel() for p in model.parameters())
    results = {"benchmark": "prefill_speed_linear", "device": torch.cuda.get_device_name() if cuda else "cpu",
               "torch": torch.__version__, "shape": shape.name, "layer_kinds": shape.layer_kinds,
               "params_b": params / 1e9, "build_s": build_s, "sizes": [],
               "transformers": __import__("transformers").__version__,
               "delta_rule_kernel": delta_rule_kernel(),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"{shape.name}: {params / 1e9:.2f}B parameters built in {build_s:.1f}s on {results['device']}", flush=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for V in visual:
        layout = TokenLayout(prefix=32 if not args.tiny else 4, visual=V, query=64 if not args.tiny else 6)
        L = layout.total
        x = torch.randn(1, L, shape.hidden_size, device=dev, dtype=dtype) * 0.02
        vm = torch.zeros(1, L, dtype=torch.bool)
        vm[:, layout.prefix:layout.prefix + V] = True
        base_flops = prefill_flops(shape, layout)
        rows, failed = [], []
        for name, sched in configs(sig, n, V, min_tokens).items():
            if name in skip:
                continue

            def fn(sched=sched, x=x):  # bound now: x is deleted at the end of the loop
                prefill(model, x, vm, sched)
            mon = None
            if cuda:
                from autoprune.profiler.monitor import GpuMonitor

                torch.cuda.reset_peak_memory_stats()
                mon = GpuMonitor(energy=True, min_window_s=1.0)
            try:
                stats = time_fn(fn, monitor=mon, energy=cuda, warmup_ms=500.0 if cuda else 0.0, rep_ms=args.rep_ms,
                                min_reps=3, max_reps=20, retries=1, device=dev)
            except Exception as e:  # recorded with its reason; the other configurations go on
                if name == "unreduced":
                    raise
                failed.append({"config": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
                print(f"  V={V} {name:45s} FAILED {failed[-1]['error']}", flush=True)
                if cuda:
                    torch.cuda.empty_cache()
                continue
            counts = [V] * n if sched is None else sched.tokens_per_layer(V)
            ranges = None if sched is None else range_breakdown(fn, cuda=cuda)
            rows.append({"config": name, "median_ms": stats.median, "p20_ms": stats.p20, "p80_ms": stats.p80,
                         "n": stats.n, "flags": list(stats.flags),
                         "energy_j": stats.monitor.energy_per_call_j if stats.monitor else None,
                         "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                         "mean_keep": sum(counts) / (n * V),
                         "ideal_speedup": base_flops / prefill_flops(shape, layout, counts),
                         "ranges": None if ranges is None else ranges.to_dict()})
            if ranges is not None:
                rows[-1]["scoring_selection_share"] = ranges.share(EVIDENCE, SELECT)
                rows[-1]["gather_share"] = ranges.share(GATHER)
            extra = "" if ranges is None else (f"  scoring+selection {ranges.ms[EVIDENCE] + ranges.ms[SELECT]:7.2f} ms "
                                               f"({100 * ranges.share(EVIDENCE, SELECT):.2f}% of "
                                               f"{ranges.total_ms:.1f} ms of kernels)")
            print(f"  V={V} {name:45s} {stats.median:9.1f} ms{extra}", flush=True)
        base = rows[0]
        for r in rows:
            r["speedup"] = base["median_ms"] / r["median_ms"]
            r["speedup_over_ideal"] = r["speedup"] / r["ideal_speedup"]
            if r["energy_j"] and base["energy_j"]:
                r["energy_ratio"] = base["energy_j"] / r["energy_j"]
        by = {r["config"]: r for r in rows}
        size = {"visual": V, "length": L, "rows": rows, "failed": failed}
        for key, scored_name in (("", "low-to-high mean-25%"), ("_decay", "low-to-high mean-25% [decay proxy]"),
                                 ("_exact", "low-to-high mean-25% [exact form]")):
            scored = by.get(scored_name)
            if scored is not None and scored["ranges"] is not None:
                rg = scored["ranges"]["ms"]
                size[f"scoring_selection_ms{key}"] = rg[EVIDENCE] + rg[SELECT]
                size[f"scoring_selection_share{key}"] = scored["scoring_selection_share"]
                size[f"gather_ms{key}"] = rg[GATHER]
        results["sizes"].append(size)
        del x
        if cuda:
            torch.cuda.empty_cache()
    if args.out:
        path = Path(args.out)
    else:
        out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
        path = out / "prefill_speed_linear.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nprefill speed on {results['device']} ({shape.name}, {layout.prefix} + V + {layout.query} tokens)")
    print(f"{'V':>6s} {'config':45s} {'ms':>8s} {'speedup':>8s} {'ideal':>6s} {'/ideal':>7s} {'energy J':>9s}")
    for size in results["sizes"]:
        for r in size["rows"]:
            print(f"{size['visual']:6d} {r['config']:45s} {r['median_ms']:8.1f} {r['speedup']:7.2f}x "
                  f"{r['ideal_speedup']:6.2f} {r['speedup_over_ideal']:7.3f} {r['energy_j'] or float('nan'):9.1f}")
        for key, label in (("", "decay-free proxy"), ("_decay", "decay proxy"), ("_exact", "exact form")):
            if f"scoring_selection_ms{key}" in size:
                print(f"{size['visual']:6d} scoring + selection ({label}): {size[f'scoring_selection_ms{key}']:.2f} ms "
                      f"({100 * size[f'scoring_selection_share{key}']:.2f}% of the reduced prefill's kernel time; "
                      f"gather {size[f'gather_ms{key}']:.2f} ms)")
    print(f"gated delta rule: {results['delta_rule_kernel']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
