"""Serving benchmark: ``autoprune.ReducedPrefill`` under batching, reduced vs unreduced, eager vs compiled+graphs.

Model: transformers NemotronH with the NemotronH-8B shape (random bf16 weights, sdpa attention,
mamba-ssm's Triton SSD kernels). Schedule: the staged low-to-high mean-keep-0.25 schedule of
``runtime_overhead.low_to_high`` (the one of ``prefill_speed.py``/``prefill_stack.py``). Four
runners: ``reduced``/``unreduced`` x ``eager`` (plain transformers kernels, torch conv) /
``graphs`` (``torch.compile`` of the hook-free blocks + the Triton causal conv + one CUDA graph per
prefill shape: ``ReducedPrefill``'s defaults on a GPU).

1. **Headline** (batch 1, 32 + V + 64 tokens, V = 16,384 and 65,536; no cache): median ms (CUDA
   events), the speedup of each runner over the eager unreduced prefill and over the unreduced
   prefill of its own stack, the FLOP-ideal speedup (``autoprune.cost.shapes.prefill_flops``) and
   the ratio; NVML energy per prefill and a power trace (below). Where compiled+graphs reduced at
   16k is below 0.97 of FLOP-ideal (or with ``--profile always``), a per-kernel profile of the
   graph replays (torch.profiler/CUPTI), by kernel family: the time the reduced prefill spends in
   each family beyond the unreduced time x the family's work share (token-linear for GEMMs, norms,
   scan and conv; quadratic for attention; zero for autoprune's scoring and gathers) is what is
   left to remove or fuse.
2. **Serving** (cache kept for decoding): requests with 32 prefix tokens, V visual tokens mixed
   over 16,384 / 4,096 / 12,288 / 8,192 (cycled) and queries of 64 / 48 / 96 / 80 tokens. Batch
   size 1 serves the four requests one after another; batch size b >= 4 serves b requests (the
   cycle repeated) as one ragged batch. Per batch size and runner: prefill latency of each batch,
   time to first token per request (all requests arrive at once and are served in order: a
   request's TTFT is the end of its batch), requests/s, prefill tokens/s (real tokens), peak GPU
   memory, energy per request; and agreement of the graph runner with the eager one (top-1 of
   the first token, max |logit| difference). Batch 16 where it fits: out of memory is recorded, and a
   padded batch whose Mamba2 scan tensors reach 2^31 elements (mamba-ssm indexes them in int32; 16 x
   16.5k tokens of the 8B shape) is skipped with that reason.

Power trace: NVML power, SM clock and clock-event reasons sampled every 10 ms during each timed
window, with the idle power measured before the runs: the energy/latency ratio of reduced vs
unreduced is ``E_u/E_r = (t_u/t_r) x (P_u/P_r)``, so the energy ratio falls short of the latency
ratio exactly when the reduced prefill draws more average power; the idle floor's share and the
clocks say why.

GPU: ``bash benchmarks/device_serving.sh`` (environment, the GPU tests of ``ReducedPrefill``, then
``python3 -P benchmarks/serving.py --out $OUT/serving.json``; about 3 minutes on an H200).
``--tiny``: a small float32 model on the CPU (eager runners only) — a smoke test of every code path.
Prints tables last; writes the JSON after every section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from runtime_overhead import low_to_high  # noqa: E402  (the staged schedule of prefill_speed/prefill_stack)

import autoprune  # noqa: E402  (installs the mamba-ssm import shim before transformers' models)
from autoprune import RaggedBatch, ReducedPrefill, Schedule  # noqa: E402
from autoprune.cost.shapes import NEMOTRON_H_8B, ModelShape, TokenLayout, prefill_flops  # noqa: E402
from autoprune.profiler.monitor import GpuMonitor  # noqa: E402
from autoprune.profiler.ranges import range_breakdown  # noqa: E402

TINY = ModelShape(name="tiny-cpu", family="nemotron_h", layer_kinds="M-*M-M*M-M*-", hidden_size=64,
                  num_attention_heads=4, num_kv_heads=2, head_dim=16, mamba_num_heads=4, mamba_head_dim=16,
                  n_groups=2, ssm_state_size=16, conv_kernel=4, mlp_intermediate_size=128, vocab_size=256,
                  chunk_size=32, dtype="float32")
RUNNERS = ("unreduced-eager", "reduced-eager", "unreduced-graphs", "reduced-graphs")
MIN_TOKENS = 16


# ------------------------------------------------------------------ power trace
class PowerTrace:
    """NVML power / SM clock / clock-event reasons sampled every ``period_s`` in a thread (a context)."""

    def __init__(self, period_s: float = 0.01):
        self.period_s = period_s
        self.samples: list[tuple[float, float, int, int]] = []  # (t, W, SM MHz, reasons mask)
        self._stop = threading.Event()
        self._nvml = self._h = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device() if torch.cuda.is_available() else 0)
        except Exception:  # noqa: BLE001  (no NVML: an empty trace)
            self._nvml = None

    def _sample(self):
        n, h = self._nvml, self._h
        try:
            w = n.nvmlDeviceGetPowerUsage(h) / 1e3
            sm = n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)
            fn = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
            reasons = int(fn(h))
        except Exception:  # noqa: BLE001
            return
        self.samples.append((time.perf_counter(), w, sm, reasons))

    def _loop(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.period_s)

    def __enter__(self):
        if self._nvml is not None:
            self._t = threading.Thread(target=self._loop, daemon=True)
            self._t.start()
        return self

    def __exit__(self, *exc):
        if self._nvml is not None:
            self._stop.set()
            self._t.join()
        return False

    def summary(self, idle_w: float | None = None) -> dict | None:
        if not self.samples:
            return None
        w = sorted(s[1] for s in self.samples)
        sm = [s[2] for s in self.samples]
        q = (lambda p: w[min(len(w) - 1, int(p * len(w)))])
        out = {"samples": len(w), "mean_w": statistics.fmean(w), "p10_w": q(0.1), "p50_w": q(0.5), "p90_w": q(0.9),
               "max_w": w[-1], "mean_sm_mhz": statistics.fmean(sm), "min_sm_mhz": min(sm), "max_sm_mhz": max(sm),
               "power_capped_share": sum(1 for s in self.samples if s[3] & 0x4) / len(w),
               "idle_reason_share": sum(1 for s in self.samples if s[3] & 0x1) / len(w)}
        if idle_w:
            out["near_idle_share"] = sum(1 for x in w if x < 1.25 * idle_w) / len(w)
        return out


def idle_power(seconds: float = 0.6) -> float | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    time.sleep(0.2)
    with PowerTrace() as tr:
        time.sleep(seconds)
    s = tr.summary()
    return None if s is None else s["p50_w"]


# ------------------------------------------------------------------- timing
def timed(fn, *, cuda: bool, reps: int, min_window_s: float = 1.0, max_calls: int = 60, idle_w=None) -> dict:
    """``fn()`` once (warm-up; compile; graph capture), then ``reps`` timed calls (more until the energy
    window reaches ``min_window_s``): CUDA events per call, NVML energy over the window, the power trace."""
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    mon = GpuMonitor(energy=True, min_window_s=min_window_s) if cuda else None
    trace = PowerTrace() if cuda else None
    with (trace or contextlib.nullcontext()), (mon or contextlib.nullcontext()):
        w0 = time.perf_counter()
        while len(times) < reps or (cuda and time.perf_counter() - w0 < min_window_s and len(times) < max_calls):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                out = fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                out = fn()
                times.append((time.perf_counter() - t) * 1e3)
        if mon is not None:
            mon.add_calls(len(times))
    res = {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "n": len(times),
           "first_call_s": first_s, "method": "cuda-events" if cuda else "wall-clock (CPU)"}
    if mon is not None and mon.result is not None:
        r = mon.result
        res.update({"energy_per_call_j": r.energy_per_call_j, "avg_power_w": r.avg_power_w,
                    "sm_clock_mhz": r.sm_clock_mhz, "clock_event_reasons": list(r.clock_event_reasons),
                    "energy_note": r.note})
    if trace is not None:
        res["power_trace"] = trace.summary(idle_w)
    if cuda:
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res, out


def describe_error(e: BaseException) -> dict:
    return {"type": type(e).__name__, "message": str(e)[:1500],
            "traceback_tail": "".join(traceback.format_exception(type(e), e, e.__traceback__))[-2500:]}


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


# ------------------------------------------------------------------ runners
def make_runner(name: str, model, schedule: Schedule, *, cuda: bool, use_cache: bool) -> ReducedPrefill:
    reduced, stack = name.split("-")
    fast = stack == "graphs" and cuda
    return ReducedPrefill(model, schedule if reduced == "reduced" else None, compile=fast, triton_conv=fast,
                          graphs=fast, use_cache=use_cache)


def request(shape, V: int, Q: int, *, prefix: int, dev, dtype, seed: int):
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = prefix + V + Q
    x = (torch.randn(n, shape.hidden_size, generator=g) * 0.02).to(dev, dtype)
    vm = torch.zeros(n, dtype=torch.bool)
    vm[prefix:prefix + V] = True
    return x, vm


def agreement(a: torch.Tensor, ref: torch.Tensor) -> dict:
    return {"top1_equal_share": (a.argmax(-1) == ref.argmax(-1)).float().mean().item(),
            "max_abs_logit_diff": (a - ref).abs().max().item(), "max_abs_logit": ref.abs().max().item()}


# ----------------------------------------------------------------- profile
def kernel_profile(fn, reps: int = 2) -> dict[str, list]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    out: dict[str, list] = {}
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if us > 0 and e.device_type == torch.autograd.DeviceType.CUDA:
            out[e.key] = [us / reps / 1e3, e.count // reps]
    return out


# autoprune's own kernels first: their names would match prefill_profile's "attention", "_chunk", "conv"
OWN_FAMILIES = (("autoprune scoring (triton)", r"_evidence"), ("causal conv (autoprune triton)", r"_causal_conv1d_act"))


def kernel_family(name: str) -> str:
    from prefill_profile import family

    low = name.lower()
    return next((f for f, pat in OWN_FAMILIES if re.search(pat, low)), None) or family(name)


def ideal_shares(shape, layout, counts) -> dict:
    """What share of its unreduced time each kernel family would keep if it scaled with its work:
    token-linear work (GEMMs, norms, the scan, the conv) by the tokens entering its layers, attention
    by (tokens)^2 over the attention layers; the reduction's own kernels are pure overhead (0)."""
    T, L = layout.text, layout.total
    lin = sum(T + c for c in counts) / (len(counts) * L)
    att = [T + c for c, k in zip(counts, shape.layer_kinds) if k == "*"]
    quad = sum(n * n for n in att) / (len(att) * L * L) if att else lin
    return {"linear": lin, "attention": quad}


def family_share(fam: str, shares: dict) -> float:
    if fam.startswith("autoprune scoring") or fam.startswith("gather"):
        return 0.0
    return shares["attention"] if fam.startswith("attention") else shares["linear"]


def what_is_left(ku: dict, kr: dict, shares: dict) -> dict:
    """Per kernel family: unreduced ms, reduced ms, the reduced ms it would take if it scaled with its
    work (:func:`ideal_shares`), and the excess: what is left to remove or fuse."""
    fam = defaultdict(lambda: [0.0, 0.0])
    rows = []
    for k in set(ku) | set(kr):
        u, r = ku.get(k, [0.0, 0])[0], kr.get(k, [0.0, 0])[0]
        f = kernel_family(k)
        fam[f][0] += u
        fam[f][1] += r
        rows.append((r - u * family_share(f, shares), u, r, kr.get(k, [0, 0])[1], k[:110]))
    rows.sort(reverse=True)
    return {"kernel_sum_ms": {"unreduced": sum(v[0] for v in ku.values()), "reduced": sum(v[0] for v in kr.values())},
            "ideal_shares": shares,
            "families": {f: {"unreduced_ms": u, "reduced_ms": r, "ideal_reduced_ms": u * family_share(f, shares),
                             "excess_ms": r - u * family_share(f, shares)} for f, (u, r) in fam.items()},
            "largest_excess": [{"excess_ms": d, "unreduced_ms": u, "reduced_ms": r, "reduced_launches": c, "kernel": k}
                               for d, u, r, c, k in rows[:15]]}


# ------------------------------------------------------------------ sections
def headline(model, shape, V: int, args, cuda, dev, dtype, idle_w) -> dict:
    n = shape.num_layers
    layout = TokenLayout(prefix=8, visual=V, query=32) if args.tiny else TokenLayout(prefix=32, visual=V, query=64)
    sig = autoprune.model_signature(model)
    sched = Schedule(keep=low_to_high(n, 0.25, V, MIN_TOKENS), model=sig, min_tokens=MIN_TOKENS)
    counts = sched.tokens_per_layer(V)
    ideal = prefill_flops(shape, layout) / prefill_flops(shape, layout, counts)
    x, vm = request(shape, V, layout.query, prefix=layout.prefix, dev=dev, dtype=dtype, seed=V)
    batch = RaggedBatch.from_rows([x], [vm])
    sec = {"visual": V, "length": layout.total, "mean_keep": sum(counts) / (n * V), "ideal_speedup": ideal,
           "runners": {}}
    reps = 3 if V > 20000 else 5
    outs = {}
    for name in RUNNERS:
        row = sec["runners"][name] = {}
        try:
            runner = make_runner(name, model, sched, cuda=cuda, use_cache=False)
            stats, out = timed(lambda: runner(batch), cuda=cuda, reps=reps, idle_w=idle_w)
            row.update(stats)
            row["graphed"] = out.graphed
            row["stats"] = dict(runner.stats)
            outs[name] = (runner, out.logits.clone())
            print(f"  V={V:6d} {name:18s} {stats['median_ms']:9.1f} ms  energy "
                  f"{stats.get('energy_per_call_j') or float('nan'):7.1f} J  graphed {out.graphed}", flush=True)
        except Exception as e:  # noqa: BLE001  (recorded; the run goes on)
            row["error"] = describe_error(e)
            print(f"  V={V:6d} {name:18s} FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
        if cuda:
            torch.cuda.synchronize()
    R = sec["runners"]
    base = R.get("unreduced-eager", {}).get("median_ms")
    for name, row in R.items():
        if "median_ms" not in row:
            continue
        own = R.get(f"unreduced-{name.split('-')[1]}", {}).get("median_ms")
        if base:
            row["speedup_vs_eager_unreduced"] = base / row["median_ms"]
        if own:
            row["speedup_vs_own_unreduced"] = own / row["median_ms"]
            if name.startswith("reduced"):
                row["over_ideal"] = row["speedup_vs_own_unreduced"] / ideal
    for stack in ("eager", "graphs"):
        u, r = R.get(f"unreduced-{stack}", {}), R.get(f"reduced-{stack}", {})
        if "median_ms" in u and "median_ms" in r:
            sec[f"energy_{stack}"] = energy_explanation(u, r, idle_w)
    for stack in ("graphs",):
        if f"reduced-{stack}" in outs and "reduced-eager" in outs:
            R[f"reduced-{stack}"]["agreement_with_eager"] = agreement(outs[f"reduced-{stack}"][1], outs["reduced-eager"][1])
        if f"unreduced-{stack}" in outs and "unreduced-eager" in outs:
            R[f"unreduced-{stack}"]["agreement_with_eager"] = agreement(outs[f"unreduced-{stack}"][1],
                                                                        outs["unreduced-eager"][1])
    over = R.get("reduced-graphs", {}).get("over_ideal")
    want_profile = cuda and (args.profile == "always" or (args.profile == "auto" and V == 16384 and over is not None
                                                          and over < 0.97))
    if want_profile and "reduced-graphs" in outs and "unreduced-graphs" in outs:
        try:
            ku = kernel_profile(lambda: outs["unreduced-graphs"][0](batch))
            kr = kernel_profile(lambda: outs["reduced-graphs"][0](batch))
            sec["profile"] = what_is_left(ku, kr, ideal_shares(shape, layout, counts))
        except Exception as e:  # noqa: BLE001
            sec["profile"] = {"error": describe_error(e)}
    for name in list(outs):
        outs[name][0].clear()
    outs.clear()
    if cuda:
        torch.cuda.empty_cache()
    return sec


def energy_explanation(u: dict, r: dict, idle_w) -> dict:
    """``E_u/E_r = (t_u/t_r) x (P_u/P_r)``: the power ratio is what separates the two ratios."""
    out = {"latency_ratio": u["median_ms"] / r["median_ms"]}
    eu, er = u.get("energy_per_call_j"), r.get("energy_per_call_j")
    if eu and er:
        out["energy_ratio"] = eu / er
        # average power over the call itself (energy per call / time per call), not over the window's gaps
        pu, pr = eu / (u["median_ms"] / 1e3), er / (r["median_ms"] / 1e3)
        out.update({"power_per_call_w": {"unreduced": pu, "reduced": pr}, "power_ratio_u_over_r": pu / pr})
        if idle_w:
            out["idle_w"] = idle_w
            out["idle_floor_share"] = {"unreduced": idle_w * u["median_ms"] / 1e3 / eu,
                                       "reduced": idle_w * r["median_ms"] / 1e3 / er}
            out["dynamic_energy_ratio"] = (eu - idle_w * u["median_ms"] / 1e3) / max(1e-9, er - idle_w * r["median_ms"] / 1e3)
    tu, tr = u.get("power_trace") or {}, r.get("power_trace") or {}
    for k in ("mean_w", "mean_sm_mhz", "min_sm_mhz", "power_capped_share", "near_idle_share"):
        if k in tu and k in tr:
            out[f"trace_{k}"] = {"unreduced": tu[k], "reduced": tr[k]}
    if "energy_ratio" in out:
        more = "more" if out["power_ratio_u_over_r"] < 1 else "less"
        out["summary"] = (f"energy fell {out['energy_ratio']:.2f}x vs latency {out['latency_ratio']:.2f}x: the reduced "
                          f"prefill draws {more} average power ({pr:.0f} W vs {pu:.0f} W unreduced)")
        if "trace_mean_sm_mhz" in out:
            c = out["trace_mean_sm_mhz"]
            out["summary"] += f", SM clock {c['reduced']:.0f} vs {c['unreduced']:.0f} MHz"
        if "trace_power_capped_share" in out:
            c = out["trace_power_capped_share"]
            out["summary"] += f", power-capped {c['reduced']:.0%} vs {c['unreduced']:.0%} of samples"
        if "idle_floor_share" in out:
            c = out["idle_floor_share"]
            out["summary"] += (f", idle floor {idle_w:.0f} W = {c['reduced']:.0%} vs {c['unreduced']:.0%} of the energy "
                               f"(dynamic-energy ratio {out['dynamic_energy_ratio']:.2f}x)")
    return out


def serving(model, shape, b: int, args, cuda, dev, dtype, idle_w) -> dict:
    n = shape.num_layers
    mix, queries = args.mix, args.queries
    prefix = 8 if args.tiny else 32
    sig = autoprune.model_signature(model)
    sched = Schedule(keep=low_to_high(n, 0.25, max(mix), MIN_TOKENS), model=sig, min_tokens=MIN_TOKENS)
    reqs = [request(shape, mix[i % len(mix)], queries[i % len(queries)], prefix=prefix, dev=dev, dtype=dtype,
                    seed=1000 + i) for i in range(max(b, len(mix)))]
    batches = ([RaggedBatch.from_rows([x], [vm]) for x, vm in reqs[:len(mix)]] if b == 1
               else [RaggedBatch.from_rows([x for x, _ in reqs[:b]], [vm for _, vm in reqs[:b]])])
    probe = ReducedPrefill(model, None, compile=False, triton_conv=False, graphs=False)
    try:  # mamba-ssm's int32 indexing: ReducedPrefill refuses such a batch; say why here, once
        for bt in batches:
            probe.check_size(bt.batch_size, bt.length)
    except autoprune.ConfigError as e:
        return {"batch_size": b, "skipped": str(e), "runners": {}}
    n_req = sum(bt.batch_size for bt in batches)
    real_tokens = sum(sum(bt.lengths) for bt in batches)
    sec = {"batch_size": b, "requests": n_req, "visual": [bt.row_visual for bt in batches],
           "padded_length": [bt.length for bt in batches], "real_tokens": real_tokens, "runners": {}}
    first, kernels = {}, {}
    want_profile = cuda and b in args.profile_batches
    for name in RUNNERS:
        row = sec["runners"][name] = {}
        runner = None
        try:
            runner = make_runner(name, model, sched, cuda=cuda, use_cache=True)
            lat, energy, peaks, graphed, logits = [], [], [], [], []
            traces = []
            for bt in batches:
                stats, out = timed(lambda bt=bt: runner(bt), cuda=cuda, reps=2, idle_w=idle_w)
                lat.append(stats["median_ms"])
                energy.append(stats.get("energy_per_call_j"))
                peaks.append(stats.get("peak_mem_gib"))
                traces.append(stats.get("power_trace"))
                graphed.append(out.graphed)
                logits.append(out.logits.clone())
                del out
            done, ttft = 0.0, []
            for bt, t in zip(batches, lat):  # served in order, all arrived at t = 0
                done += t
                ttft += [done] * bt.batch_size
            total_s = sum(lat) / 1e3
            row.update({"batch_latency_ms": lat, "ttft_ms_mean": statistics.fmean(ttft), "ttft_ms_max": max(ttft),
                        "ttft_ms": ttft, "requests_per_s": n_req / total_s, "tokens_per_s": real_tokens / total_s,
                        "peak_mem_gib": max((p for p in peaks if p is not None), default=None), "graphed": graphed,
                        "power_trace": traces, "stats": dict(runner.stats)})
            if all(e is not None for e in energy):
                row["energy_per_request_j"] = sum(energy) / n_req
            first[name] = torch.cat(logits)
            if want_profile and name.endswith("-eager"):
                kernels[name] = kernel_profile(lambda: runner(batches[0]), reps=1)
                if name.startswith("reduced"):
                    row["ranges"] = range_breakdown(lambda: runner(batches[0]), cuda=True).to_dict()
            print(f"  b={b:2d} {name:18s} TTFT mean {row['ttft_ms_mean']:9.1f} ms  {row['requests_per_s']:7.2f} req/s  "
                  f"{row['tokens_per_s']:10.0f} tok/s  E/req {row.get('energy_per_request_j') or float('nan'):7.1f} J  "
                  f"mem {row['peak_mem_gib'] or float('nan'):6.1f} GiB  graphed {all(graphed)}", flush=True)
        except Exception as e:  # noqa: BLE001  (out of memory at large batches is a finding: recorded)
            row["error"] = describe_error(e)
            row["oom"] = is_oom(e)
            print(f"  b={b:2d} {name:18s} FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
        finally:
            if runner is not None:
                runner.clear()
            del runner
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
    for stack in ("graphs",):
        for kind in ("reduced", "unreduced"):
            a, ref = first.get(f"{kind}-{stack}"), first.get(f"{kind}-eager")
            if a is not None and ref is not None:
                sec["runners"][f"{kind}-{stack}"]["agreement_with_eager"] = agreement(a, ref)
    if "unreduced-eager" in kernels and "reduced-eager" in kernels:
        # padded to the widest row after each cut: its plan gives the work the batch keeps
        layout = TokenLayout(prefix=prefix, visual=max(mix[:b] if b > 1 else mix),
                             query=max(queries[:b] if b > 1 else queries))
        sec["profile"] = what_is_left(kernels["unreduced-eager"], kernels["reduced-eager"],
                                      ideal_shares(shape, layout, sched.tokens_per_layer(layout.visual)))
    R = sec["runners"]
    for kind in ("eager", "graphs"):
        u, r = R.get(f"unreduced-{kind}", {}), R.get(f"reduced-{kind}", {})
        if "requests_per_s" in u and "requests_per_s" in r:
            sec[f"throughput_gain_{kind}"] = r["requests_per_s"] / u["requests_per_s"]
            if r.get("energy_per_request_j") and u.get("energy_per_request_j"):
                sec[f"energy_gain_{kind}"] = u["energy_per_request_j"] / r["energy_per_request_j"]
    return sec


# --------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write (e.g. $OUT/serving.json)")
    ap.add_argument("--tiny", action="store_true", help="small float32 model on the CPU, eager runners (smoke test)")
    ap.add_argument("--headline", default=None, help="comma-separated visual counts of the batch-1 headline "
                                                     "(default 16384,65536; --tiny 256)")
    ap.add_argument("--batches", default="1,4,8,16", help="serving batch sizes (default 1,4,8,16)")
    ap.add_argument("--mix", default=None, help="visual counts cycled over the requests (default "
                                                "16384,4096,12288,8192; --tiny 64,16,48,32)")
    ap.add_argument("--queries", default=None, help="query lengths cycled over the requests (default 64,48,96,80)")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="per-kernel profile of the 16k headline (auto: when below 0.97 of FLOP-ideal)")
    ap.add_argument("--profile-batches", default="", help="comma-separated batch sizes whose eager runs get a "
                                                          "per-kernel profile (reduced vs unreduced)")
    ap.add_argument("--budget-s", type=float, default=200.0, help="skip what is left after this many seconds")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("serving.py needs a CUDA GPU (or --tiny for a CPU smoke test)", file=sys.stderr)
        return 2
    ints = (lambda s: [int(v) for v in s.split(",") if v.strip()])
    args.headline = ints(args.headline or ("256" if args.tiny else "16384,65536"))
    args.mix = ints(args.mix or ("64,16,48,32" if args.tiny else "16384,4096,12288,8192"))
    args.queries = ints(args.queries or ("8,6,12,10" if args.tiny else "64,48,96,80"))
    batches = ints(args.batches)
    args.profile_batches = ints(args.profile_batches)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    import transformers
    from transformers import NemotronHForCausalLM

    shape = TINY if args.tiny else NEMOTRON_H_8B
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    cfg = shape.to_nemotron_h_config(use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(dev):
        model = NemotronHForCausalLM(cfg).to(dtype).eval()
    model.generation_config.eos_token_id = None
    idle_w = idle_power() if cuda else None
    res = {"benchmark": "serving", "device": torch.cuda.get_device_name() if cuda else "cpu (--tiny)",
           "torch": torch.__version__, "transformers": transformers.__version__, "shape": shape.name,
           "args": {k: v for k, v in vars(args).items()}, "idle_power_w": idle_w,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "headline": [], "serving": [], "skipped": []}

    def save():
        res["elapsed_s"] = time.perf_counter() - t_start
        tmp = out_path.with_suffix(out_path.suffix + ".tmp")
        tmp.write_text(json.dumps(res, indent=2, default=str) + "\n")
        os.replace(tmp, out_path)

    plan = [("headline", V) for V in args.headline] + [("serving", b) for b in batches]
    for what, v in plan:
        if time.perf_counter() - t_start > args.budget_s:
            res["skipped"].append(f"{what} {v}: time budget ({args.budget_s:.0f} s)")
            continue
        print(f"{what} {v} (t={time.perf_counter() - t_start:.0f} s)", flush=True)
        with torch.no_grad():
            if what == "headline":
                res["headline"].append(headline(model, shape, v, args, cuda, dev, dtype, idle_w))
            else:
                res["serving"].append(serving(model, shape, v, args, cuda, dev, dtype, idle_w))
        save()
    save()
    print_tables(res)
    return 0


def print_tables(res: dict) -> None:
    nan = float("nan")
    print(f"\nheadline on {res['device']} ({res['shape']}, batch 1, low-to-high mean keep 0.25)")
    print(f"{'V':>6s} {'runner':18s} {'ms':>8s} {'vs eager-u':>10s} {'vs own-u':>9s} {'ideal':>6s} {'/ideal':>7s} "
          f"{'J':>7s} {'W':>6s} {'SM MHz':>7s}")
    for sec in res["headline"]:
        for name, r in sec["runners"].items():
            if "median_ms" not in r:
                print(f"{sec['visual']:6d} {name:18s} FAILED {r.get('error', {}).get('message', '')[:60]}")
                continue
            tr = r.get("power_trace") or {}
            print(f"{sec['visual']:6d} {name:18s} {r['median_ms']:8.1f} {r.get('speedup_vs_eager_unreduced', nan):9.2f}x "
                  f"{r.get('speedup_vs_own_unreduced', nan):8.2f}x {sec['ideal_speedup']:6.2f} {r.get('over_ideal', nan):7.3f} "
                  f"{r.get('energy_per_call_j') or nan:7.1f} {tr.get('mean_w', nan):6.0f} {tr.get('mean_sm_mhz', nan):7.0f}")
        for stack in ("eager", "graphs"):
            e = sec.get(f"energy_{stack}", {})
            if e.get("summary"):
                print(f"{'':6s} energy ({stack}): {e['summary']}")
        print_profile(sec.get("profile"), "graph replays")
    print(f"\nserving on {res['device']}: visual counts mixed {res['args']['mix']}, queries {res['args']['queries']}")
    print(f"{'b':>3s} {'runner':18s} {'TTFT mean':>10s} {'TTFT max':>9s} {'req/s':>7s} {'tok/s':>9s} {'J/req':>7s} "
          f"{'GiB':>6s} {'graphed':>7s} {'top1=':>6s}")
    for sec in res["serving"]:
        if sec.get("skipped"):
            print(f"{sec['batch_size']:3d} skipped: {sec['skipped']}")
        for name, r in sec["runners"].items():
            if "ttft_ms_mean" not in r:
                why = "out of memory" if r.get("oom") else r.get("error", {}).get("message", "")[:60]
                print(f"{sec['batch_size']:3d} {name:18s} FAILED {why}")
                continue
            ag = r.get("agreement_with_eager", {})
            print(f"{sec['batch_size']:3d} {name:18s} {r['ttft_ms_mean']:10.1f} {r['ttft_ms_max']:9.1f} "
                  f"{r['requests_per_s']:7.2f} {r['tokens_per_s']:9.0f} {r.get('energy_per_request_j') or nan:7.1f} "
                  f"{r['peak_mem_gib'] or nan:6.1f} {str(all(r['graphed'])):>7s} {ag.get('top1_equal_share', nan):6.2f}")
        print_profile(sec.get("profile"), f"eager, batch {sec['batch_size']}")
        rg = sec["runners"].get("reduced-eager", {}).get("ranges")
        if rg:
            print(f"{'':3s} reduced-eager autoprune ranges: " + ", ".join(f"{k} {v:.2f} ms" for k, v in rg["ms"].items())
                  + f" of {rg['total_ms']:.1f} ms of kernels")
        gains = [f"{k.replace('_', ' ')} {sec[k]:.2f}x" for k in ("throughput_gain_eager", "throughput_gain_graphs",
                                                                  "energy_gain_eager", "energy_gain_graphs") if k in sec]
        if gains:
            print(f"{'':3s} reduced/unreduced: {', '.join(gains)}")
    for s in res["skipped"]:
        print(f"skipped: {s}")
    print("\nREADME rows:\n" + "\n".join(markdown_rows(res)))


def print_profile(prof: dict | None, what: str) -> None:
    if not prof or "families" not in prof:
        return
    print(f"{'':6s} per-kernel profile ({what}): kernel time unreduced "
          f"{prof['kernel_sum_ms']['unreduced']:.1f} ms, reduced {prof['kernel_sum_ms']['reduced']:.1f} ms; "
          f"by family, excess = reduced - unreduced x its work share (token-linear "
          f"{prof['ideal_shares']['linear']:.3f}, attention {prof['ideal_shares']['attention']:.3f}, "
          f"scoring/gather 0):")
    for f, v in sorted(prof["families"].items(), key=lambda kv: -kv[1]["excess_ms"]):
        print(f"{'':8s} {f:28s} unreduced {v['unreduced_ms']:8.2f}  reduced {v['reduced_ms']:7.2f}  "
              f"ideal {v['ideal_reduced_ms']:7.2f}  excess {v['excess_ms']:+7.2f} ms")
    print(f"{'':6s} largest excess kernels:")
    for k in prof["largest_excess"][:8]:
        print(f"{'':8s} {k['excess_ms']:+7.2f} ms ({k['reduced_launches']}x) {k['kernel']}")


def markdown_rows(res: dict) -> list[str]:
    """The README's serving tables, as markdown rows (headline, then serving)."""
    out = ["| V | runner | ms | vs eager unreduced | vs own unreduced | / FLOP-ideal | J |", "|---|---|---|---|---|---|---|"]
    f = (lambda v, spec: "–" if v is None else format(v, spec))
    for sec in res["headline"]:
        for name, r in sec["runners"].items():
            if "median_ms" in r:
                out.append(f"| {sec['visual']:,} | {name} | {r['median_ms']:.1f} | {f(r.get('speedup_vs_eager_unreduced'), '.2f')}x"
                           f" | {f(r.get('speedup_vs_own_unreduced'), '.2f')}x | {f(r.get('over_ideal'), '.3f')}"
                           f" | {f(r.get('energy_per_call_j'), '.1f')} |")
    out += ["", "| batch | runner | TTFT mean ms | TTFT max ms | req/s | tok/s | J/request | GiB |",
            "|---|---|---|---|---|---|---|---|"]
    for sec in res["serving"]:
        if sec.get("skipped"):
            out.append(f"| {sec['batch_size']} | skipped: {sec['skipped'][:90]} | | | | | | |")
        for name, r in sec["runners"].items():
            if "ttft_ms_mean" in r:
                out.append(f"| {sec['batch_size']} | {name} | {r['ttft_ms_mean']:.1f} | {r['ttft_ms_max']:.1f} | "
                           f"{r['requests_per_s']:.2f} | {r['tokens_per_s']:,.0f} | {f(r.get('energy_per_request_j'), '.1f')}"
                           f" | {f(r.get('peak_mem_gib'), '.1f')} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
