"""Prefill speedup vs FLOP-ideal under different execution stacks (NemotronH-8B shape).

Is the gap between measured and FLOP-ideal speedup (prefill_speed: ~0.93 of ideal at 16k
visual tokens) the stack rather than autoprune? The same model as
``benchmarks/prefill_speed.py`` (transformers NemotronH, random bf16 weights, mamba-ssm
Triton SSD kernels, sdpa attention; 32 prefix + V visual + 64 query tokens), the same three
configurations — unreduced, uniform 25% and the staged low-to-high mean-25% schedule of
``runtime_overhead.low_to_high`` — under these stacks:

- ``eager``: as prefill_speed does it (the baseline);
- ``triton-conv``: the Mamba2 mixer's ``causal_conv1d_fn`` (transformers' torch depthwise
  conv fallback: causal-conv1d is not installed) replaced, for this script only, by an
  adapter over autoprune's Triton ``causal_conv1d_act``; checked against the torch conv and
  the eager mixer output first;
- ``compiled-blocks``: ``torch.compile(dynamic=True)`` of the hook-free modules only —
  the RMSNorms (block norms, ``norm_f``), the Mamba gated RMSNorm ``mixer.norm`` and the
  MLP mixers — never a layer or mixer that carries autoprune hooks; dynamo counters
  before/after the reduced configurations show whether token counts recompile; the
  compile time is reported apart;
- ``compiled+triton-conv``;
- ``cuda-graph``: the whole prefill (and the reduced prefill, hooks active during capture)
  captured in one CUDA graph with static inputs (warm-up on a side stream), the replay
  timed; a capture failure is recorded with its message and traceback;
  (capturable since the runtime keeps a handle's masks on the GPU after its first prefill:
  the first H100 run of this script found the per-prefill host-to-device mask copy);
- ``combined``: every feature above that ran all configurations, with a CUDA graph.

Per variant and configuration: median ms (:func:`autoprune.profiler.timing.time_fn`, CUDA events),
speedup over the variant's own unreduced prefill, FLOP-ideal speedup
(``autoprune.cost.shapes.prefill_flops``), their ratio, NVML energy per prefill and its ratio,
and agreement with the eager run of the same configuration (last-position logits: max abs
difference, top-1 equal; kept positions: overlap). A variant or configuration that fails
is flagged with its error; the run goes on.

GPU: ``python3 benchmarks/prefill_stack.py [--visual 16384,65536] [--rep-ms 1000]``, run
from a directory where ``autoprune.kernels`` is the installed package (the repository
root's ``kernels/`` shadows it). ``--tiny`` runs a small float32 model on the CPU (Triton
under its interpreter) as a smoke test of the code paths. Prints a table last; writes
``$OUT/prefill_stack.json`` (else ``benchmarks/results/``), after every variant.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from runtime_overhead import low_to_high, prefill  # the same staged schedule and call as prefill_speed

import autoprune  # installs the mamba-ssm import shim before transformers' models are imported
from autoprune import Schedule
from autoprune.cost.shapes import NEMOTRON_H_8B, ModelShape, TokenLayout, prefill_flops
from autoprune.profiler.monitor import GpuMonitor
from autoprune.profiler.timing import time_fn

VARIANTS = ("eager", "triton-conv", "compiled-blocks", "compiled+triton-conv", "cuda-graph", "combined")
FEATURES = {"eager": (), "triton-conv": ("tconv",), "compiled-blocks": ("compile",),
            "compiled+triton-conv": ("compile", "tconv"), "cuda-graph": ("graph",)}
NO_MASKS = {"full_attention": None, "linear_attention": None}  # causal SDPA, no padding
TINY = ModelShape(name="tiny-cpu", family="nemotron_h", layer_kinds="M-*M-M*M-M*-", hidden_size=128,
                  num_attention_heads=4, num_kv_heads=2, head_dim=32, mamba_num_heads=8, mamba_head_dim=32,
                  n_groups=2, ssm_state_size=32, conv_kernel=4, mlp_intermediate_size=256, vocab_size=512,
                  chunk_size=64, dtype="float32")


# ------------------------------------------------------------------------ errors
def describe_error(e: BaseException) -> dict:
    """Message, exception chain and the innermost frames (where it was raised)."""
    chain, seen, cur = [], set(), e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        frames = traceback.extract_tb(cur.__traceback__)
        chain.append({"type": type(cur).__name__, "message": str(cur)[:2000],
                      "frames": [f"{f.filename}:{f.lineno} in {f.name}: {f.line}" for f in frames[-8:]]})
        cur = cur.__cause__ or cur.__context__
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return {"type": type(e).__name__, "message": str(e)[:2000], "chain": chain, "traceback_tail": text[-4000:]}


def cuda_healthy() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        torch.cuda.synchronize()
        torch.ones(1, device="cuda").add_(1).item()
        return None
    except Exception as e:  # noqa: BLE001  (a sticky CUDA error: nothing more can run on this context)
        return f"{type(e).__name__}: {e}"


# ------------------------------------------------------------- stack: compile
_COMPILED: dict = {}


def compile_targets(model, mn) -> list:
    """Hook-free modules: RMSNorms, the Mamba2 gated RMSNorm, the MLP mixers."""
    kinds = tuple(getattr(mn, n) for n in ("NemotronHRMSNorm", "NemotronHRMSNormGated", "NemotronHMLP")
                  if hasattr(mn, n))
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


@contextlib.contextmanager
def compiled_blocks(model, mn):
    """``forward`` of each target := one ``torch.compile(cls.forward, dynamic=True)`` per class."""
    targets = compile_targets(model, mn)
    for name, m in targets:
        if m._forward_hooks or m._forward_pre_hooks:
            raise RuntimeError(f"{name} carries hooks: it must not be compiled")
        fn = _COMPILED.get(type(m))
        if fn is None:
            fn = _COMPILED[type(m)] = torch.compile(type(m).forward, dynamic=True)
        m.forward = functools.partial(fn, m)
    try:
        yield [name for name, _ in targets]
    finally:
        for _, m in targets:
            m.__dict__.pop("forward", None)


def dynamo_counters() -> dict:
    from torch._dynamo.utils import counters

    return {k: dict(counters[k]) for k in ("frames", "stats", "recompiles", "graph_break") if k in counters}


def hooked_compiled(model, mn) -> list[str]:
    """Compile targets that carry a hook (must be none while a reduction handle is active)."""
    return [name for name, m in compile_targets(model, mn) if m._forward_hooks or m._forward_pre_hooks]


# --------------------------------------------------------- stack: triton conv
def make_triton_conv_fn(orig):
    """``causal_conv1d_fn(x (b, C, n), weight (C, K), bias, activation)`` as the mixer calls it,
    served by ``autoprune.kernels.causal_conv1d_act`` (which takes ``(b, n, C)``)."""
    from autoprune.kernels import causal_conv1d_act

    def triton_causal_conv1d_fn(hidden_states, weight, bias=None, activation=None, **kwargs):
        if (kwargs.get("seq_idx") is not None or kwargs.get("cu_seqlens") is not None
                or activation not in (None, "silu", "swish")):
            return orig(hidden_states, weight, bias, activation=activation, **kwargs)
        xt = hidden_states.transpose(1, 2)  # (b, n, C): a strided view of in_proj's output
        if xt.stride(-1) != 1:
            xt = xt.contiguous()
        y = causal_conv1d_act(xt, weight, bias, "silu" if activation else None)
        return y.transpose(1, 2).to(hidden_states.dtype)

    return triton_causal_conv1d_fn


@contextlib.contextmanager
def triton_conv(mn):
    orig = mn.causal_conv1d_fn
    mn.causal_conv1d_fn = make_triton_conv_fn(orig)
    try:
        yield
    finally:
        mn.causal_conv1d_fn = orig


def conv_check(model, mn, x, cuda: bool) -> dict:
    """Triton adapter vs transformers' torch conv on a real mixer input, and the whole mixer."""
    blk = next(b for b in model.model.layers if isinstance(b.mixer, mn.NemotronHMamba2Mixer))
    mix = blk.mixer
    orig = mn.causal_conv1d_fn
    fast = make_triton_conv_fn(orig)
    with torch.no_grad():
        h = blk.norm(x)
        y0 = mix(h)
        proj = mix.in_proj(h)
        _, bc, _ = proj.split([mix.intermediate_size, mix.conv_dim, mix.num_heads], dim=-1)
        bc = bc.transpose(1, 2)
        w, b = mix.conv1d.weight.squeeze(1), mix.conv1d.bias
        c0 = orig(bc, w, b, activation=mix.activation)
        c1 = fast(bc, w, b, activation=mix.activation)
        with triton_conv(mn):
            y1 = mix(h)
    out = {"layer": blk.layer_idx, "activation": mix.activation, "input_shape_b_C_n": list(bc.shape),
           "input_strides": list(bc.stride()),
           "conv_max_abs_diff": (c1.float() - c0.float()).abs().max().item(),
           "conv_max_abs_ref": c0.float().abs().max().item(),
           "mixer_max_abs_diff": (y1.float() - y0.float()).abs().max().item(),
           "mixer_max_abs_ref": y0.float().abs().max().item()}
    if cuda:
        with torch.no_grad():
            for key, f in (("conv_ms_torch", orig), ("conv_ms_triton", fast)):
                out[key] = time_fn(lambda f=f: f(bc, w, b, activation=mix.activation), warmup_ms=20,
                                   rep_ms=100).median
    return out


# ---------------------------------------------------------- stack: CUDA graph
def capture(body, warmup: int = 2):
    """Warm ``body`` up on a side stream, capture it in a CUDA graph, replay once."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            body()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    # Capture on the warmed-up stream: cuBLAS(Lt) caches its workspace per stream, and a
    # capture on a fresh stream may run GEMMs without one (slower algorithms).
    with torch.cuda.graph(g, stream=s):
        out = body()
    g.replay()
    torch.cuda.synchronize()
    return g, out


# ------------------------------------------------------------------- running
def last_logits(out) -> torch.Tensor:
    return out.logits[:, -1].float()


def agreement(check: dict, ref: dict | None) -> dict:
    if ref is None:
        return {}
    a, r = check["logits"], ref["logits"]
    top2 = r.topk(2, dim=-1).values
    res = {"logits_max_abs_diff": (a - r).abs().max().item(), "logits_max_abs_ref": r.abs().max().item(),
           "top1_equal": bool((a.argmax(-1) == r.argmax(-1)).all()),
           "ref_top1_top2_margin": (top2[..., 0] - top2[..., 1]).min().item()}
    if check.get("kept") is not None and ref.get("kept") is not None:
        k, kr = check["kept"], ref["kept"]
        if k.shape == kr.shape:
            same = sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(k.cpu(), kr.cpu()))
            res["kept_overlap"] = same / kr.numel()
        else:
            res["kept_overlap"] = 0.0
    return res


def run_variant(name, feats, *, model, mn, x, vm, configs, counts, base_flops, shape, layout, refs, args,
                cuda, size) -> dict:
    rec = {"variant": name, "features": list(feats), "failed": False, "error": None, "rows": []}
    n = shape.num_layers
    V = layout.visual

    def forward():
        # Masks given as transformers' per-pattern dict (as generate() does for compiled caches):
        # left to build them, transformers materialises a dense causal mask under capture (it
        # cannot skip it while the stream is capturing) and cuDNN's SDPA runs 4x slower with it
        # (graph_profile.py: 14 -> 64 ms at 16k). Eagerly the dict changes nothing (no mask either way).
        return model(inputs_embeds=x, attention_mask=NO_MASKS, logits_to_keep=1)

    with contextlib.ExitStack() as es:
        try:
            if "tconv" in feats:
                if "conv_check" not in size:
                    size["conv_check"] = conv_check(model, mn, x, cuda)
                    print(f"  conv check: {size['conv_check']}", flush=True)
                es.enter_context(triton_conv(mn))
            if "compile" in feats:
                names = es.enter_context(compiled_blocks(model, mn))
                info = {"modules": len(names), "counters_before": dynamo_counters()}
                with torch.no_grad():
                    t0 = time.perf_counter()
                    forward()
                    if cuda:
                        torch.cuda.synchronize()
                    info["first_unreduced_call_s"] = time.perf_counter() - t0
                    info["counters_after_unreduced"] = dynamo_counters()
                    for cname, sched in configs.items():
                        if sched is None:
                            continue
                        with autoprune.reduce(model, sched, visual_mask=vm):
                            hooked = hooked_compiled(model, mn)
                            t0 = time.perf_counter()
                            forward()
                            if cuda:
                                torch.cuda.synchronize()
                        info.setdefault("first_reduced_call_s", {})[cname] = time.perf_counter() - t0
                        if hooked:
                            raise RuntimeError(f"compiled modules carry autoprune hooks: {hooked}")
                info["counters_after_reduced"] = dynamo_counters()
                a, b = info["counters_after_unreduced"], info["counters_after_reduced"]
                info["recompiled_for_token_counts"] = (a.get("frames") != b.get("frames")
                                                       or a.get("stats") != b.get("stats"))
                rec["compile"] = info
        except Exception as e:  # noqa: BLE001  (any failure of a stack variant is a finding: record it, go on)
            rec["failed"], rec["error"] = True, describe_error(e)
            print(f"  {name}: setup failed: {rec['error']['type']}: {rec['error']['message'][:300]}", flush=True)
            return rec

        for cname, sched in configs.items():
            row = {"config": cname, "failed": False}
            rec["rows"].append(row)
            g = out = fn = None
            try:
                if "graph" in feats:
                    if not cuda:
                        raise RuntimeError("cuda-graph needs a CUDA GPU")
                    with torch.no_grad():
                        if sched is None:
                            g, out = capture(lambda: (last_logits(forward()), None))
                        else:
                            with autoprune.reduce(model, sched, visual_mask=vm) as h:
                                def body(h=h):
                                    logits = last_logits(forward())
                                    return logits, h.kept_positions
                                g, out = capture(body)
                    g.replay()
                    torch.cuda.synchronize()
                    check = {"logits": out[0].clone(), "kept": None if out[1] is None else out[1].clone()}
                    fn = g.replay
                else:
                    def fn(sched=sched):
                        prefill(model, x, vm, sched, call={"attention_mask": NO_MASKS})

                    def eager_check(sched=sched):
                        out, h = prefill(model, x, vm, sched, call={"attention_mask": NO_MASKS})
                        return {"logits": last_logits(out), "kept": None if h is None else h.kept_positions}

                    check = eager_check()
                if name == "eager" and cname not in refs:
                    refs[cname] = check
                    check = eager_check()  # run-to-run noise floor of eager itself
                row.update(agreement(check, refs.get(cname)))
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                mon = GpuMonitor(energy=True, min_window_s=1.0) if cuda else None
                stats = time_fn(fn, monitor=mon, energy=cuda, warmup_ms=500.0, rep_ms=args.rep_ms, min_reps=3,
                                max_reps=20, retries=1)
                c = [V] * n if sched is None else counts[cname]
                row.update({"median_ms": stats.median, "p20_ms": stats.p20, "p80_ms": stats.p80, "n": stats.n,
                            "method": stats.method, "flags": list(stats.flags),
                            "energy_j": stats.monitor.energy_per_call_j if stats.monitor else None,
                            "avg_power_w": stats.monitor.avg_power_w if stats.monitor else None,
                            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                            "mean_keep": sum(c) / (n * V),
                            "ideal_speedup": base_flops / prefill_flops(shape, layout, c)})
                print(f"  V={V} {name:26s} {cname:22s} {stats.median:9.1f} ms  "
                      f"energy {row['energy_j'] or float('nan'):7.1f} J  top1 {row.get('top1_equal')}  "
                      f"dlogit {row.get('logits_max_abs_diff', float('nan')):.3g}", flush=True)
            except Exception as e:  # noqa: BLE001  (a capture or run failure is recorded, the run goes on)
                row["failed"], row["error"] = True, describe_error(e)
                rec["failed"] = True
                print(f"  V={V} {name:26s} {cname:22s} FAILED: {row['error']['type']}: "
                      f"{row['error']['message'][:300]}", flush=True)
                broken = cuda_healthy()
                if broken:
                    row["cuda_broken_after"] = broken
                    rec["cuda_broken"] = True
                    return rec
            finally:
                del g, out, fn  # fn may be g.replay: let the graph's memory pool go
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
    base = next((r for r in rec["rows"] if r["config"] == "unreduced" and not r["failed"]), None)
    eager_base = size.get("eager_unreduced_ms")
    for r in rec["rows"]:
        if r["failed"]:
            continue
        if eager_base:
            r["speedup_vs_eager_unreduced"] = eager_base / r["median_ms"]
        if base is not None:
            r["speedup"] = base["median_ms"] / r["median_ms"]
            r["speedup_over_ideal"] = r["speedup"] / r["ideal_speedup"]
            if r["energy_j"] and base["energy_j"]:
                r["energy_ratio"] = base["energy_j"] / r["energy_j"]
    if name == "eager" and base is not None:
        size["eager_unreduced_ms"] = base["median_ms"]
    if rec.get("compile") and eager_base:  # first call = compile + one (eager-speed) prefill
        rec["compile"]["compile_s_estimate"] = rec["compile"]["first_unreduced_call_s"] - eager_base / 1e3
    return rec


def ok(rec: dict | None) -> bool:
    """Ran every configuration. Agreement is reported, not gated on: with random weights the top
    logits are near ties, and a graph replay of the eager kernels already flips top-1 (first H100
    run: max |dlogit| 0.08 on logits of max |5.6|)."""
    return bool(rec) and not rec["failed"] and bool(rec["rows"])


def combined_features(done: dict) -> tuple[str, ...] | None:
    feats = [f for f, v in (("compile", "compiled-blocks"), ("tconv", "triton-conv")) if ok(done.get(v))]
    if ok(done.get("compiled+triton-conv")):
        feats = ["compile", "tconv"]
    if ok(done.get("cuda-graph")):
        feats.append("graph")
    else:
        return None  # without a graph, compiled+triton-conv is already the combination
    return tuple(feats)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visual", default="16384", help="comma-separated visual-token counts, e.g. 16384,65536")
    ap.add_argument("--rep-ms", type=float, default=1000.0, help="timed milliseconds per configuration")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    ap.add_argument("--budget-s", type=float, default=520.0, help="skip remaining variants after this many seconds")
    ap.add_argument("--tiny", action="store_true", help="small float32 model on the CPU (smoke test)")
    ap.add_argument("--plan", action="store_true", help="print configurations and FLOP-ideal speedups, run nothing")
    args = ap.parse_args(argv)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    t_start = time.perf_counter()
    shape = TINY if args.tiny else NEMOTRON_H_8B
    sizes = [int(v) for v in args.visual.split(",")] if not args.tiny else [256]
    n, min_tokens = shape.num_layers, 16

    def layout_of(V):
        return TokenLayout(prefix=8, visual=V, query=32) if args.tiny else TokenLayout(prefix=32, visual=V, query=64)

    def schedules(V, sig=None):
        return {"unreduced": None,
                "uniform-25%": Schedule(keep=(1.0,) + (0.25,) * (n - 1), model=sig, min_tokens=min_tokens),
                "low-to-high mean-25%": Schedule(keep=low_to_high(n, 0.25, V, min_tokens), model=sig,
                                                 min_tokens=min_tokens)}

    if args.plan:
        for V in sizes:
            lay = layout_of(V)
            for cname, s in schedules(V).items():
                c = [V] * n if s is None else s.tokens_per_layer(V)
                print(f"V={V} {cname:22s} mean keep {sum(c) / (n * V):.3f}  FLOP-ideal "
                      f"{prefill_flops(shape, lay) / prefill_flops(shape, lay, c):.2f}x")
        print("variants:", ", ".join(wanted))
        return 0
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("prefill_stack needs a CUDA GPU (or --tiny for a CPU smoke test)", file=sys.stderr)
        return 2
    if args.tiny:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before autoprune.kernels is imported
    import transformers
    import triton
    from transformers import NemotronHForCausalLM
    from transformers.models.nemotron_h import modeling_nemotron_h as mn

    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    cfg = shape.to_nemotron_h_config(use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(dev):
        model = NemotronHForCausalLM(cfg).to(dtype).eval()
    sig = autoprune.model_signature(model)
    results = {"benchmark": "prefill_stack", "device": torch.cuda.get_device_name() if cuda else "cpu (--tiny)",
               "torch": torch.__version__, "transformers": transformers.__version__, "triton": triton.__version__,
               "shape": shape.name, "args": vars(args), "conv_impl": getattr(mn.causal_conv1d_fn, "__module__", None),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": []}
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)

    def save():
        (out_dir / "prefill_stack.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    for V in sizes:
        layout = layout_of(V)
        L = layout.total
        x = torch.randn(1, L, shape.hidden_size, device=dev, dtype=dtype) * 0.02
        vm = torch.zeros(1, L, dtype=torch.bool)
        vm[:, layout.prefix:layout.prefix + V] = True
        configs = schedules(V, sig)
        counts = {k: s.tokens_per_layer(V) for k, s in configs.items() if s is not None}
        size = {"visual": V, "length": L, "variants": []}
        results["sizes"].append(size)
        refs: dict = {}
        done: dict = {}
        for name in wanted:
            if time.perf_counter() - t_start > args.budget_s:
                size["variants"].append({"variant": name, "failed": True, "skipped": "time budget", "rows": []})
                continue
            if name == "combined":
                feats = combined_features(done)
                if feats is None:
                    size["variants"].append({"variant": name, "failed": False, "rows": [],
                                             "skipped": "no CUDA-graph variant worked: compiled+triton-conv is the "
                                                        "combination"})
                    continue
                label = "combined: " + "+".join(feats)
            else:
                feats, label = FEATURES[name], name
            print(f"variant {label} (t={time.perf_counter() - t_start:.0f} s)", flush=True)
            rec = run_variant(label, feats, model=model, mn=mn, x=x, vm=vm, configs=configs, counts=counts,
                              base_flops=prefill_flops(shape, layout), shape=shape, layout=layout, refs=refs,
                              args=args, cuda=cuda, size=size)
            done[name] = rec
            size["variants"].append(rec)
            save()
            if rec.get("cuda_broken"):
                print("CUDA context broken: stopping", flush=True)
                break
        del x
        if cuda:
            torch.cuda.empty_cache()
    results["elapsed_s"] = time.perf_counter() - t_start
    save()

    print(f"\nprefill stack variants on {results['device']} ({shape.name}, {layout.prefix} + V + {layout.query} tokens)")
    print(f"{'V':>6s} {'variant':28s} {'config':22s} {'ms':>8s} {'speedup':>8s} {'ideal':>6s} {'/ideal':>7s} "
          f"{'E ratio':>8s} {'dlogit':>8s} {'top1':>5s} {'kept':>5s}")
    nan = float("nan")
    for size in results["sizes"]:
        for rec in size["variants"]:
            if rec.get("skipped"):
                print(f"{size['visual']:6d} {rec['variant']:28s} skipped: {rec['skipped']}")
                continue
            if rec["failed"] and not rec["rows"]:
                print(f"{size['visual']:6d} {rec['variant']:28s} FAILED: {rec['error']['message'][:80]}")
            for r in rec["rows"]:
                if r["failed"]:
                    print(f"{size['visual']:6d} {rec['variant']:28s} {r['config']:22s} FAILED: "
                          f"{r['error']['type']}: {r['error']['message'][:70]}")
                    continue
                print(f"{size['visual']:6d} {rec['variant']:28s} {r['config']:22s} {r['median_ms']:8.1f} "
                      f"{r.get('speedup', nan):7.2f}x {r['ideal_speedup']:6.2f} {r.get('speedup_over_ideal', nan):7.3f} "
                      f"{r.get('energy_ratio', nan):8.2f} {r.get('logits_max_abs_diff', nan):8.2g} "
                      f"{r.get('top1_equal', '-')!s:>5s} {r.get('kept_overlap', nan):5.3f}")
            if rec.get("compile"):
                c = rec["compile"]
                print(f"{'':6s} {rec['variant']:28s} compile: {c['modules']} modules, first unreduced call "
                      f"{c['first_unreduced_call_s']:.1f} s, recompiled for token counts: "
                      f"{c['recompiled_for_token_counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
