"""Why is a CUDA-graph replay of the unreduced prefill slower than eager? Kernel by kernel.

``prefill_stack.py`` found the graph replay of the unreduced NemotronH-8B-shape prefill
(16k visual tokens) ~9% slower than the same prefill run eagerly, with the same kernels
and lower power. This profiles both with torch.profiler (CUDA kernel times inside the
graph are reported by CUPTI) and prints the kernels whose time differs most, per family
(the families of ``prefill_profile.py``). Writes ``$OUT/graph_profile.json`` (else
``benchmarks/results/``). GPU only; run from a directory where ``autoprune.kernels`` is the
installed package.

Found (H100, ``results/graph_profile.json``): all of the difference is attention — cuDNN
SDPA 14 ms eager vs 64 ms in the graph — plus the kernels that build a dense causal mask:
under capture transformers cannot skip the mask (it may not inspect tensors while the
stream is capturing), so SDPA runs with an explicit mask instead of ``is_causal``.
Passing the masks as transformers' per-pattern dict (``prefill_stack.py`` does) removes it:
graph replay 603 ms vs eager 602 ms. This script keeps the plain call to show the cause.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import autoprune  # noqa: F401,E402  (mamba-ssm import shim before transformers' models)
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout  # noqa: E402
from autoprune.profiler.timing import time_fn  # noqa: E402
from prefill_profile import family  # noqa: E402
from prefill_stack import capture  # noqa: E402


def kernel_times(fn, reps: int = 3) -> dict[str, list]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    out: dict[str, list] = {}
    for e in prof.key_averages():
        dev_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if dev_us <= 0 or e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        out[e.key] = [dev_us / reps / 1e3, e.count // reps]
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print("graph_profile needs a CUDA GPU", file=sys.stderr)
        return 2
    from transformers import NemotronHForCausalLM

    shape, layout = NEMOTRON_H_8B, TokenLayout(prefix=32, visual=16384, query=64)
    cfg = shape.to_nemotron_h_config(use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = NemotronHForCausalLM(cfg).to(torch.bfloat16).eval()
    x = torch.randn(1, layout.total, shape.hidden_size, device="cuda", dtype=torch.bfloat16) * 0.02

    def eager():
        with torch.no_grad():
            return model(inputs_embeds=x, logits_to_keep=1).logits

    with torch.no_grad():
        g, _ = capture(eager)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, fn in (("eager", eager), ("graph", g.replay), ("eager again", eager)):
        st = time_fn(fn, warmup_ms=300.0, rep_ms=1500.0, min_reps=3, max_reps=10)
        res[f"{name}_median_ms"] = st.median
        print(f"{name:12s} {st.median:8.1f} ms  {list(st.flags)}", flush=True)
    ke, kg = kernel_times(eager), kernel_times(g.replay)
    fam = defaultdict(lambda: [0.0, 0.0])
    rows = []
    for k in set(ke) | set(kg):
        a, b = ke.get(k, [0.0, 0])[0], kg.get(k, [0.0, 0])[0]
        fam[family(k)][0] += a
        fam[family(k)][1] += b
        rows.append((b - a, a, b, ke.get(k, [0, 0])[1], kg.get(k, [0, 0])[1], k[:100]))
    rows.sort(reverse=True)
    res["kernel_sum_ms"] = {"eager": sum(v[0] for v in ke.values()), "graph": sum(v[0] for v in kg.values())}
    res["families"] = {f: {"eager_ms": v[0], "graph_ms": v[1]} for f, v in fam.items()}
    res["largest_differences"] = [{"graph_minus_eager_ms": d, "eager_ms": a, "graph_ms": b, "eager_launches": ca,
                                   "graph_launches": cb, "kernel": k} for d, a, b, ca, cb, k in rows[:15]]
    print(f"\nkernel time per prefill: eager {res['kernel_sum_ms']['eager']:.1f} ms, "
          f"graph {res['kernel_sum_ms']['graph']:.1f} ms")
    for f, v in sorted(res["families"].items(), key=lambda kv: -kv[1]["eager_ms"]):
        print(f"  {f:28s} eager {v['eager_ms']:8.2f}  graph {v['graph_ms']:8.2f}")
    print("largest differences (graph - eager):")
    for d, a, b, ca, cb, k in rows[:10]:
        print(f"  {d:+8.2f} ms  eager {a:7.2f} ({ca}x)  graph {b:7.2f} ({cb}x)  {k}")
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "graph_profile.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
