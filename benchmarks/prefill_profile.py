"""Where prefill time goes: torch.profiler CUDA-kernel breakdown, unreduced vs reduced.

NemotronH-8B shape, random bf16 weights, 16,384 visual + 96 text tokens. For each
configuration prints the CUDA time per kernel family and how it scales with the token
count, to find what does not shrink with the tokens (launch gaps, fixed costs, kernels
that are inefficient at small sizes). Writes JSON to ``$OUT/prefill_profile.json`` (or
``benchmarks/results/``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import autoprune  # noqa: E402
from autoprune import Schedule, ScorerConfig  # noqa: E402
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout  # noqa: E402
from runtime_overhead import prefill  # noqa: E402  (the same call as prefill_speed)

FAMILIES = [
    ("ssd (mamba_ssm triton)", r"_chunk|_state_passing|_bmm_chunk|ssd"),
    ("gemm", r"gemm|sm90_xmma|cutlass|nvjet|gemv|matmul"),
    ("attention (sdpa)", r"flash|fmha|attention|efficient"),
    ("conv1d (torch)", r"conv|depthwise"),
    ("elementwise/norm", r"elementwise|vectorized|reduce|norm|softplus|silu|pow|mul|add|exp|copy|cat|fill"),
    ("gather/index/sort", r"gather|index|scatter|sort|radix|nonzero"),
]


def family(name: str) -> str:
    low = name.lower()
    for fam, pat in FAMILIES:
        if re.search(pat, low):
            return fam
    return "other"


def main() -> int:
    from torch.profiler import ProfilerActivity, profile

    from transformers import NemotronHForCausalLM

    shape, layout = NEMOTRON_H_8B, TokenLayout(prefix=32, visual=16384, query=64)
    cfg = shape.to_nemotron_h_config(use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = NemotronHForCausalLM(cfg).to(torch.bfloat16).eval()
    L, V, n = layout.total, layout.visual, shape.num_layers
    x = torch.randn(1, L, shape.hidden_size, device="cuda", dtype=torch.bfloat16) * 0.02
    vm = torch.zeros(1, L, dtype=torch.bool)
    vm[:, layout.prefix:layout.prefix + V] = True
    sig = autoprune.model_signature(model)
    configs = {
        "unreduced": None,
        "uniform-25% stride": Schedule(keep=(1.0,) + (0.25,) * (n - 1), model=sig,
                                       scorer=ScorerConfig(selector="uniform_stride")),
        "uniform-25% language": Schedule(keep=(1.0,) + (0.25,) * (n - 1), model=sig),
    }
    out = {}
    for name, sched in configs.items():
        def fn(sched=sched):
            prefill(model, x, vm, sched)
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
        fams = defaultdict(lambda: [0.0, 0])
        top = []
        for e in prof.key_averages():
            dev_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
            if dev_us <= 0 or e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            f = family(e.key)
            fams[f][0] += dev_us / 3 / 1e3
            fams[f][1] += e.count // 3
            top.append((dev_us / 3 / 1e3, e.count // 3, e.key[:90]))
        top.sort(reverse=True)
        total = sum(v[0] for v in fams.values())
        out[name] = {"gpu_ms_per_prefill": total, "families": {k: {"ms": v[0], "launches": v[1]} for k, v in fams.items()},
                     "top_kernels": [{"ms": a, "launches": b, "name": c} for a, b, c in top[:25]]}
        print(f"\n== {name}: GPU kernel time {total:.1f} ms per prefill")
        for k, v in sorted(fams.items(), key=lambda kv: -kv[1][0]):
            print(f"  {k:28s} {v[0]:8.2f} ms  {v[1]:6d} launches")
        for a, b, c in top[:12]:
            print(f"    {a:8.2f} ms {b:5d}x  {c}")
    base = out["unreduced"]["families"]
    print("\nper family: reduced/unreduced time (ideal ≈ token ratio 0.264 for linear kernels)")
    for k in base:
        r = out["uniform-25% stride"]["families"].get(k, {"ms": 0})["ms"] / max(base[k]["ms"], 1e-9)
        print(f"  {k:28s} {r:6.3f}")
    dest = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "prefill_profile.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
