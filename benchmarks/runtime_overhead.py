"""Cost of the reduction runtime, and prefill speedups of reduced schedules.

CPU (``--device cpu``): a small NemotronH (demo-sized) — plain model vs ``reduce`` with an
all-ones schedule (hook overhead, target ≤ 5%) and with a progressive schedule.

GPU (``--device cuda``): NemotronH-8B shape (transformers, random bf16 weights, mamba-ssm
Triton kernels where installed), 16,384 visual + 96 text tokens: unreduced prefill,
uniform 25% and low-to-high mean-25% schedules with the real language-aware scores, the
same schedules with a score-free selector (isolates the scoring cost), and the
FLOP-ideal speedup of each.

Prints a table; writes JSON to ``$OUT/runtime_overhead_<device>.json`` when ``$OUT`` is
set, else ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import autoprune
from autoprune import Schedule, ScorerConfig
from autoprune.cost.shapes import NEMOTRON_H_8B, ModelShape, TokenLayout, prefill_flops


def prefill(model, x, vm, schedule=None, *, use_kernels=None, call=None):
    """One prefill on ``inputs_embeds=x`` (logits of the last position only), reduced by
    ``schedule`` (``None``: the unreduced model, no hooks). Returns the model's output and the
    reduction handle (``None`` when unreduced). ``call``: more keyword arguments of the model."""
    kw = {"inputs_embeds": x, "logits_to_keep": 1, **(call or {})}
    with torch.no_grad():
        if schedule is None:
            return model(**kw), None
        with autoprune.reduce(model, schedule, visual_mask=vm, use_kernels=use_kernels) as h:
            return model(**kw), h


def timer(fn, *, device: str, warmup: int, repeats: int) -> dict:
    """Median (and p20/p80) of ``repeats`` calls after ``warmup``; CUDA events on a GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5) if len(times) > 1 else times * 4
    return {"median_ms": statistics.median(times), "p20_ms": q[0], "p80_ms": q[3], "n": len(times),
            "method": "cuda-events" if device == "cuda" else "wall-clock (CPU)"}


def interleaved(fa, fb, *, device: str, warmup: int, repeats: int) -> tuple[dict, dict]:
    """Time two callables alternately (ABAB…), so that machine drift hits both alike."""
    ta, tb = [], []
    for _ in range(warmup):
        fa(), fb()
    for _ in range(repeats):
        ta.append(timer(fa, device=device, warmup=0, repeats=1)["median_ms"])
        tb.append(timer(fb, device=device, warmup=0, repeats=1)["median_ms"])

    def stats(ts):
        q = statistics.quantiles(ts, n=5)
        return {"median_ms": statistics.median(ts), "p20_ms": q[0], "p80_ms": q[3], "n": len(ts),
                "method": "cuda-events" if device == "cuda" else "wall-clock (CPU)"}

    return stats(ta), stats(tb)


def _solve(make, target_mean: float, num_visual: int, min_tokens: int) -> tuple[float, ...]:
    """Bisection on the one parameter of ``make(p) -> keep`` (mean keep decreasing in p)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        p = (lo + hi) / 2
        keep = make(p)
        s = Schedule(keep=keep, min_tokens=min_tokens)
        mean = sum(s.tokens_per_layer(num_visual)) / (len(keep) * num_visual)
        lo, hi = (p, hi) if mean > target_mean else (lo, p)
    return make((lo + hi) / 2)


def low_to_high(num_layers: int, target_mean: float, num_visual: int, min_tokens: int,
                cuts=(0.1, 0.25, 0.45, 0.7)) -> tuple[float, ...]:
    """Staged low-to-high: keep 1 until the first cut, then r, r², r³, r⁴ (r solved for the mean)."""
    layers = [max(1, round(c * num_layers)) for c in cuts]

    def make(p):
        r = 1 - p
        return tuple(max(1e-6, r ** sum(i >= c for c in layers)) for i in range(num_layers))

    return _solve(make, target_mean, num_visual, min_tokens)


def per_layer_decay(num_layers: int, target_mean: float, num_visual: int, min_tokens: int) -> tuple[float, ...]:
    """keep_i = (1 − i/L)^γ: a prune point at nearly every layer (stresses the scoring cost)."""
    return _solve(lambda p: tuple(max(1e-6, (1 - i / num_layers) ** (p * 50)) for i in range(num_layers)),
                  target_mean, num_visual, min_tokens)


def build(device: str):
    if device == "cuda":
        shape = NEMOTRON_H_8B
        layout = TokenLayout(prefix=32, visual=16384, query=64)
        dtype = torch.bfloat16
    else:
        shape = ModelShape(name="demo-like", family="nemotron_h", layer_kinds="M-*M-M*M-M*-", hidden_size=128,
                           num_attention_heads=4, num_kv_heads=2, head_dim=32, mamba_num_heads=8, mamba_head_dim=32,
                           n_groups=2, ssm_state_size=32, conv_kernel=4, mlp_intermediate_size=256, vocab_size=512,
                           chunk_size=64, dtype="float32")
        layout = TokenLayout(prefix=8, visual=1024, query=32)
        dtype = torch.float32
    from transformers import NemotronHForCausalLM

    cfg = shape.to_nemotron_h_config(use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = NemotronHForCausalLM(cfg).to(dtype).eval()
    return shape, layout, model, dtype


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    dev = args.device
    repeats = args.repeats or (7 if dev == "cuda" else 15)
    shape, layout, model, dtype = build(dev)
    L, V = layout.total, layout.visual
    torch.manual_seed(1)
    x = torch.randn(1, L, shape.hidden_size, device=dev, dtype=dtype) * 0.02
    vm = torch.zeros(1, L, dtype=torch.bool)
    vm[:, layout.prefix:layout.prefix + V] = True
    sig = autoprune.model_signature(model)
    n = shape.num_layers
    min_tokens = 16
    schedules = {
        "identity": Schedule.identity(n, model=sig),
        "uniform-25%": Schedule(keep=(1.0,) + (0.25,) * (n - 1), model=sig, min_tokens=min_tokens),
        "low-to-high mean-25% (4 stages)": Schedule(keep=low_to_high(n, 0.25, V, min_tokens), model=sig,
                                                    min_tokens=min_tokens),
        "per-layer decay mean-25%": Schedule(keep=per_layer_decay(n, 0.25, V, min_tokens), model=sig,
                                             min_tokens=min_tokens),
    }
    base_flops = prefill_flops(shape, layout)

    def run_plain():
        prefill(model, x, vm)

    def run_with(sched, use_kernels=None):
        return lambda: prefill(model, x, vm, sched, use_kernels=use_kernels)

    rows = []
    warm = 2 if dev == "cuda" else 3
    # The hook overhead is a few percent at most: measure it interleaved with the plain model.
    plain, ident_t = interleaved(run_plain, run_with(schedules["identity"]), device=dev, warmup=warm,
                                 repeats=repeats * 2)
    rows.append({"config": "unreduced (no hooks)", **plain, "mean_keep": 1.0, "speedup": 1.0, "ideal_speedup": 1.0})
    peak = None
    for name, sched in schedules.items():
        variants = [(name, sched, None)]
        if not sched.is_identity:
            if dev == "cuda":
                variants[0] = (name + " [Triton scores]", sched, None)
                variants.append((name + " [torch scores]", sched, False))
            variants.append((name + " [stride, no scoring]",
                             sched.replace(scorer=ScorerConfig(selector="uniform_stride")), None))
        for label, s, kern in variants:
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t = ident_t if s is schedules["identity"] else timer(run_with(s, kern), device=dev, warmup=warm,
                                                                  repeats=repeats)
            counts = s.tokens_per_layer(V)
            ideal = base_flops / prefill_flops(shape, layout, counts)
            if dev == "cuda":
                peak = torch.cuda.max_memory_allocated() / 2**30
            rows.append({"config": label, **t, "mean_keep": sum(counts) / (n * V),
                         "speedup": plain["median_ms"] / t["median_ms"], "ideal_speedup": ideal,
                         "peak_mem_gib": peak})
    for r in rows:
        r["speedup_over_ideal"] = r["speedup"] / r["ideal_speedup"]
    ident = next(r for r in rows if r["config"] == "identity")
    overhead = ident["median_ms"] / plain["median_ms"] - 1
    env = {"device": torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or platform.machine(),
           "torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads()}
    try:
        import transformers

        env["transformers"] = transformers.__version__
        env["mamba_ssm"] = "mamba_ssm" in sys.modules
    except ImportError:
        pass
    result = {"benchmark": "runtime_overhead", "device": dev, "env": env, "shape": shape.to_dict(),
              "layout": vars(layout), "identity_overhead": overhead, "rows": rows,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"runtime_overhead_{dev}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nruntime overhead on {env['device']} ({shape.name}, {L} tokens, {V} visual) — medians of {repeats}")
    print(f"{'config':42s} {'median ms':>10s} {'p20-p80':>15s} {'mean keep':>9s} {'speedup':>8s} {'ideal':>6s} {'/ideal':>7s}")
    for r in rows:
        print(f"{r['config']:42s} {r['median_ms']:10.2f} {r['p20_ms']:7.2f}-{r['p80_ms']:<7.2f} {r['mean_keep']:9.3f} "
              f"{r['speedup']:8.2f} {r['ideal_speedup']:6.2f} {r['speedup_over_ideal']:7.3f}")
    print(f"all-ones reduce overhead: {overhead * 100:+.1f}%   -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
