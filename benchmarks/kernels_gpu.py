#!/usr/bin/env python3
"""Check and time the evidence kernels on a GPU, in one command from the repository root:

    python3 benchmarks/kernels_gpu.py

1. Ceilings: device-to-device copy bandwidth, bf16 / tf32 / fp32 matrix-product rates.
2. Checks: each kernel against its torch reference on several shapes (odd sizes, GQA, groups,
   padding, mean/max, decay on/off, small V that splits heads/groups over programs, paper
   scale), fp32 and bf16; Mamba2 and Gated DeltaNet exact-form references in float64 on upcast
   inputs, attention's in fp32 (the reference computes attention in fp32 whatever it gets), with
   TF32 off. Outputs are
   poisoned with NaN before each call. Tolerances (‖out − ref‖/‖ref‖): fp32 1e-4
   (fp32 dots use input_precision="ieee"), bf16 5e-3.
3. Timing (triton.testing.do_bench, median with 20/80 % quantiles; it flushes L2 before every
   call) of kernel vs torch reference at NemotronH-8B sizes: L = 16384+96 and 65536+96,
   V = L − 96, Q = 64; attention H=32, Hkv=8, d=128; Mamba2 H=128, G=8, N=128; and the Gated
   DeltaNet exact form (``delta_correction``) at Qwen3.5-9B widths, Hk=16, Hv=32, dk=128, Q=96,
   V = L − 96, against the torch scan it replaces. Floors from
   bytes (each input read once) / measured copy bandwidth, FLOPs / measured matmul rate, and
   exponentials / the spec rate of the special-function units; achieved fraction = floor / time
   (the DeltaNet scan is sequential over L/C chunks per program, which no floor here models).
4. A small sweep of launch configurations at L = 65k, bf16.

Prints a short table last; writes JSON to $OUT/kernels_gpu.json if $OUT is set, else to
benchmarks/results/kernels_gpu.json. Exits 1 if any check failed (after timing, so one run
still gives every number). ``--smoke`` runs a tiny version on the CPU under Triton's
interpreter (plumbing only; no meaningful times).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOL = {"float32": 1e-4, "bfloat16": 5e-3}


def _import_kernels():
    """``autoprune.kernels`` from this checkout, installed or not (setuptools maps kernels/ there)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import autoprune

    try:
        import autoprune.kernels as K
    except ModuleNotFoundError as e:
        if e.name != "autoprune.kernels":
            raise
        spec = importlib.util.spec_from_file_location(
            "autoprune.kernels", ROOT / "kernels" / "__init__.py", submodule_search_locations=[str(ROOT / "kernels")]
        )
        K = importlib.util.module_from_spec(spec)
        sys.modules["autoprune.kernels"] = K
        spec.loader.exec_module(K)
        autoprune.kernels = K
    return K


# --------------------------------------------------------------------------- helpers
class Bench:
    def __init__(self, device, smoke):
        import torch

        self.torch = torch
        self.device = device
        self.smoke = smoke
        self.checks = []
        self.times = []
        self.sweep = []
        self.ceil = {}

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def time(self, fn, rep_ms=100):
        """(median, p20, p80) in ms; inf if the call fails (recorded, the run goes on)."""
        try:
            if self.smoke:
                t = time.perf_counter()
                fn()
                self.sync()
                ms = (time.perf_counter() - t) * 1e3
                return ms, ms, ms
            from triton.testing import do_bench

            p20, p50, p80 = do_bench(fn, warmup=25, rep=rep_ms, quantiles=[0.2, 0.5, 0.8])
            return p50, p20, p80
        except Exception as e:  # a failing variant scores inf, the run goes on
            print(f"  timing failed: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            return math.inf, math.inf, math.inf

    def randn(self, *shape, gen, scale=1.0, dtype=None):
        t = self.torch.randn(*shape, generator=gen, device=self.device) * scale
        return t if dtype is None else t.to(dtype)

    def gen(self, seed):
        return self.torch.Generator(device=self.device).manual_seed(seed)


def clock_event_reasons():
    """NVML clock-event reasons bitmask (thermal/power slowdowns show here), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(fn(h))
    except Exception:
        return None


def max_sm_clock_hz():
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM) * 1e6
    except Exception:
        return 1.98e9  # H100 SXM boost clock, spec


def rel_err(out, ref):
    import torch

    if not torch.isfinite(out).all():
        return math.inf  # NaN never passes (also catches unwritten poisoned elements)
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300)).item()


# -------------------------------------------------------------------------- ceilings
def measure_ceilings(B: Bench):
    torch = B.torch
    if B.smoke:
        B.ceil = dict(copy_GBps=1.0, bf16_TFLOPs=1.0, tf32_TFLOPs=1.0, fp32_TFLOPs=1.0, exp_Gps=1.0)
        return
    n = 1 << 28  # 1 GiB of fp32 each way: far outside L2
    a = torch.empty(n, device="cuda").uniform_()
    c = torch.empty_like(a)
    ms, _, _ = B.time(lambda: c.copy_(a))
    B.ceil["copy_GBps"] = 2 * 4 * n / (ms * 1e-3) / 1e9
    del a, c
    m = 8192
    x = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    ms, _, _ = B.time(lambda: x @ y)
    B.ceil["bf16_TFLOPs"] = 2 * m**3 / (ms * 1e-3) / 1e12
    x, y = x.float(), y.float()
    torch.backends.cuda.matmul.allow_tf32 = True
    ms, _, _ = B.time(lambda: x @ y)
    B.ceil["tf32_TFLOPs"] = 2 * m**3 / (ms * 1e-3) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    m = 4096
    x, y = x[:m, :m].contiguous(), y[:m, :m].contiguous()
    ms, _, _ = B.time(lambda: x @ y)
    B.ceil["fp32_TFLOPs"] = 2 * m**3 / (ms * 1e-3) / 1e12  # non-tensor-core fp32 (FMA) rate
    del x, y
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    # Hopper: 16 special-function-unit results (ex2) per SM per clock (spec, not measured).
    B.ceil["exp_Gps"] = 16 * sms * max_sm_clock_hz() / 1e9


# ------------------------------------------------------------------------- attention
def attention_inputs(B: Bench, *, b, H, Hkv, d, Q, L, V, dtype, pad, seed, q_view=True):
    torch = B.torch
    g = B.gen(seed)
    if q_view:  # as the adapter hands it: a (b, Q, H, d) projection viewed as (b, H, Q, d)
        q = B.randn(b, Q, H, d, gen=g, dtype=dtype).transpose(1, 2)
    else:
        q = B.randn(b, H, Q, d, gen=g, dtype=dtype)
    k = B.randn(b, Hkv, L, d, gen=g, dtype=dtype)
    prefix = L - V - Q
    if prefix < 0:
        raise ValueError("L must be at least V + Q")
    qi = torch.arange(L - Q, L, device=B.device)[None].repeat(b, 1)
    vi = torch.arange(prefix, prefix + V, device=B.device)[None].repeat(b, 1)
    valid = None
    if pad:
        valid = torch.ones(b, Q, dtype=torch.bool, device=B.device)
        valid[0, : max(1, Q // 4)] = False
    return q, k, qi, vi, valid


def check_attention(B: Bench, K, name, *, head_agg="mean", pad=False, knobs=None, info=False, **shape):
    from autoprune.kernels.attention_evidence import _attention_evidence

    torch = B.torch
    q, k, qi, vi, valid = attention_inputs(B, pad=pad, seed=len(B.checks) + 1, **shape)
    scaling = shape["d"] ** -0.5
    out = torch.full((shape["b"], shape["V"]), float("nan"), device=B.device)
    err, msg = math.inf, ""
    try:
        _attention_evidence(q, k, qi, vi, scaling=scaling, head_agg=head_agg, query_valid=valid, out=out,
                            **(knobs or {}))
        ref = K.attention_evidence_ref(q, k, qi, vi, scaling=scaling, head_agg=head_agg, query_valid=valid)
        err = rel_err(out, ref)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    _record_check(B, "attention", name, shape, dict(head_agg=head_agg, pad=pad, **(knobs or {})), err, msg, info)


def _record_check(B, kernel, name, shape, opts, err, msg, info):
    dtype = str(shape["dtype"]).replace("torch.", "")
    tol = TOL[dtype]
    ok = err < tol
    row = dict(kernel=kernel, name=name, dtype=dtype, shape={k: v for k, v in shape.items() if k != "dtype"},
               opts=opts, rel_err=err, tol=tol, ok=ok, informational=info, error=msg)
    B.checks.append(row)
    flag = "ok " if ok else ("info" if info else "FAIL")
    print(f"[check {flag}] {kernel:14s} {name:28s} {dtype:8s} rel_err={err:.2e} (tol {tol:.0e}) {msg}", flush=True)


# ---------------------------------------------------------------------------- mamba2
def mamba_inputs(B: Bench, *, b, L, G, H, N, Q, V, dtype, pad, seed):
    """NemotronH-like magnitudes: Δ = softplus(·) clipped to [1e-3, 0.1]-ish, A = −U(1, 16)."""
    torch = B.torch
    g = B.gen(seed)
    Bm = B.randn(b, L, G, N, gen=g, dtype=dtype)
    Cm = B.randn(b, L, G, N, gen=g, dtype=dtype)
    dt = torch.nn.functional.softplus(B.randn(b, L, H, gen=g) * 0.5 - 3.5).clamp(1e-3, 0.1).to(dtype)
    A = -(torch.rand(H, generator=g, device=B.device) * 15 + 1)
    prefix = L - V - Q
    qi = torch.arange(L - Q, L, device=B.device)[None].repeat(b, 1)
    vi = torch.arange(prefix, prefix + V, device=B.device)[None].repeat(b, 1)
    valid = None
    if pad:
        valid = torch.ones(b, Q, dtype=torch.bool, device=B.device)
        valid[0, : max(1, Q // 4)] = False
    return Bm, Cm, dt, A, qi, vi, valid


def check_mamba(B: Bench, K, name, *, decay, head_agg="mean", pad=False, knobs=None, info=False, **shape):
    from autoprune.kernels.mamba2_evidence import _mamba2_evidence

    torch = B.torch
    Bm, Cm, dt, A, qi, vi, valid = mamba_inputs(B, pad=pad, seed=len(B.checks) + 1, **shape)
    out = torch.full((shape["b"], shape["V"]), float("nan"), device=B.device)
    err, msg = math.inf, ""
    try:
        _mamba2_evidence(Bm, Cm, dt, A, qi, vi, decay=decay, head_agg=head_agg, query_valid=valid, out=out,
                         **(knobs or {}))
        ref = K.mamba2_evidence_ref(Bm.double(), Cm.double(), dt.double(), A.double(), qi, vi, decay=decay,
                                    head_agg=head_agg, query_valid=valid)
        err = rel_err(out, ref)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    _record_check(B, "mamba2", name, shape, dict(decay=decay, head_agg=head_agg, pad=pad, **(knobs or {})),
                  err, msg, info)


# ------------------------------------------------------------------- deltanet exact
def deltanet_inputs(B: Bench, *, b, L, Hk, Hv, dk, Q, V, dtype, pad, seed, decay=True, correlated=False):
    """Qwen3.5-like inputs: q, k L2-normalised (q times dk^-1/2), β = sigmoid(·), per-head log-decay
    rates from 1e-4 to 1e-1 per token. ``correlated``: keys near one shared direction per head and
    β near 1 (strong overwrites: the chunk solves' hard case)."""
    torch = B.torch
    from autoprune import delta_rule

    g = B.gen(seed)
    q = B.randn(b, L, Hk, dk, gen=g)
    k = B.randn(b, L, Hk, dk, gen=g)
    if correlated:
        k = 0.3 * k + B.randn(1, 1, Hk, dk, gen=g)
    q = (delta_rule.l2norm(q) * dk ** -0.5).to(dtype)
    k = delta_rule.l2norm(k).to(dtype)
    beta = torch.sigmoid(B.randn(b, L, Hv, gen=g) + (3.0 if correlated else 0.0))
    rate = torch.logspace(-4, -1, Hv, device=B.device)
    gate = -torch.rand(b, L, Hv, generator=g, device=B.device) * rate
    prefix = L - V - Q
    if prefix < 0:
        raise ValueError("L must be at least V + Q")
    qi = torch.arange(L - Q, L, device=B.device)[None].repeat(b, 1)
    vi = torch.arange(prefix, prefix + V, device=B.device)[None].repeat(b, 1)
    lam = delta_rule.log_decay_from_q0(gate, qi) if decay else None
    valid = None
    if pad:
        valid = torch.ones(b, Q, dtype=torch.bool, device=B.device)
        valid[0, : max(1, Q // 4)] = False
    return q, k, beta, lam, qi, vi, valid


def check_deltanet_exact(B: Bench, K, name, *, decay, head_agg="mean", pad=False, correlated=False, knobs=None,
                         info=False, **shape):
    from autoprune.kernels.deltanet_exact_evidence import _deltanet_exact_evidence

    torch = B.torch
    q, k, beta, lam, qi, vi, valid = deltanet_inputs(B, pad=pad, seed=len(B.checks) + 1, decay=decay,
                                                     correlated=correlated, **shape)
    out = torch.full((shape["b"], shape["V"]), float("nan"), device=B.device)
    err, msg = math.inf, ""
    try:
        _deltanet_exact_evidence(q, k, beta, lam, qi, vi, head_agg=head_agg, query_valid=valid, out=out,
                                 **(knobs or {}))
        ref = K.deltanet_exact_evidence_ref(q.double(), k.double(), beta.double(),
                                            None if lam is None else lam.double(), qi, vi, head_agg=head_agg,
                                            query_valid=valid)
        err = rel_err(out, ref)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    _record_check(B, "deltanet_exact", name, shape, dict(decay=decay, head_agg=head_agg, pad=pad,
                                                           correlated=correlated, **(knobs or {})), err, msg, info)


def deltanet_exact_floor(B: Bench, *, b, L, Hk, Hv, dk, Q, V, dtype, chunk=32, block_q=32, precision=None):
    """Bytes: k once, T written and read, the per-position sums written and read; FLOPs: K·Kᵀ and
    the three scan dots per chunk, at the rate of the scan dots' precision."""
    es = 2 if dtype != B.torch.float32 else 4
    n_qb = -(-Q // block_q)
    nbytes = b * L * Hk * dk * es + 2 * b * Hv * L * chunk * 4 + 2 * b * Hv * n_qb * L * 4 + b * L * Hv * 8
    nbytes += b * (Q + V) * 8 + b * V * 4
    f_t = 2 * b * Hv * L * chunk * dk
    f_scan = b * Hv * L * (4 * Q * dk + 2 * chunk * Q)
    prec = precision or ("tf32" if es == 2 else "ieee")
    rate = {"ieee": B.ceil["fp32_TFLOPs"], "tf32": B.ceil["tf32_TFLOPs"],
            "tf32x3": B.ceil["tf32_TFLOPs"] / 3}[prec]
    t_flops = f_t / ((B.ceil["bf16_TFLOPs"] if es == 2 else B.ceil["fp32_TFLOPs"]) * 1e12) + f_scan / (rate * 1e12)
    t = dict(bytes=nbytes / (B.ceil["copy_GBps"] * 1e9) * 1e3, flops=t_flops * 1e3, exp=0.0)
    return t, dict(bytes=nbytes, flops=f_t + f_scan, exps=b * Hv * (Q + V))


def time_deltanet_exact(B: Bench, K, name, *, decay=True, with_ref=True, knobs=None, **shape):
    from autoprune.kernels.deltanet_exact_evidence import _deltanet_exact_evidence

    q, k, beta, lam, qi, vi, _ = deltanet_inputs(B, pad=False, seed=3000 + len(B.times), decay=decay, **shape)
    out = B.torch.empty(shape["b"], shape["V"], device=B.device)
    kn = knobs or {}
    tk = B.time(lambda: _deltanet_exact_evidence(q, k, beta, lam, qi, vi, out=out, **kn))
    tr = B.time(lambda: K.deltanet_exact_evidence_ref(q, k, beta, lam, qi, vi)) if with_ref else None
    floor, counts = deltanet_exact_floor(B, **{x: kn[x] for x in ("chunk", "block_q", "precision") if x in kn},
                                         **shape)
    return _record_time(B, "deltanet_exact", name, shape, dict(decay=decay, **kn), tk, tr, floor, counts)


def deltanet_proxy_floor(B: Bench, *, b, L, Hk, Hv, dk, Q, V, dtype, decay):
    """Bytes: k and β (and λ) at the visual tokens, q at the query rows; FLOPs: one q·k per (row,
    token, key head), and with decay the λ-weighted contraction per value head."""
    es = 2 if dtype != B.torch.float32 else 4
    nbytes = b * (V * Hk * dk + Q * Hk * dk) * es + b * V * Hv * 4 * (2 if decay else 1) + b * V * 4
    flops = 2 * b * Q * V * Hk * dk + (2 * b * Q * V * Hv if decay else 0)
    rate = B.ceil["bf16_TFLOPs"] if es == 2 else B.ceil["fp32_TFLOPs"]
    t = dict(bytes=nbytes / (B.ceil["copy_GBps"] * 1e9) * 1e3, flops=flops / (rate * 1e12) * 1e3, exp=0.0)
    return t, dict(bytes=nbytes, flops=flops, exps=b * Hv * (Q + V) if decay else 0)


def time_deltanet_proxy(B: Bench, K, name, *, decay, with_ref=True, knobs=None, **shape):
    """The proxy kernel (no delta correction) with and without the gate decay."""
    from autoprune.kernels.deltanet_evidence import _deltanet_evidence

    q, k, beta, lam, qi, vi, _ = deltanet_inputs(B, pad=False, seed=4000 + len(B.times), decay=decay, **shape)
    out = B.torch.empty(shape["b"], shape["V"], device=B.device)
    kn = knobs or {}
    tk = B.time(lambda: _deltanet_evidence(q, k, beta, lam, qi, vi, out=out, **kn))
    tr = B.time(lambda: K.deltanet_evidence_ref(q, k, beta, lam, qi, vi)) if with_ref else None
    floor, counts = deltanet_proxy_floor(B, decay=decay, **shape)
    return _record_time(B, "deltanet_proxy", name, shape, dict(decay=decay, **kn), tk, tr, floor, counts)


#: Qwen3.5-9B's Gated DeltaNet layers.
QWEN35_9B = dict(Hk=16, Hv=32, dk=128)


def _dn_widths(B: Bench):
    # under the interpreter the scan is a Python loop per program and position: Qwen widths take minutes
    return dict(Hk=2, Hv=4, dk=32) if B.smoke else QWEN35_9B


def _dn_tag(B: Bench):
    return "narrow" if B.smoke else "Qwen3.5-9B"


def check_dispatch(B: Bench):
    """scoring.* on CUDA tensors goes through the kernels and agrees with the torch path."""
    import torch

    from autoprune import scoring

    shape = dict(b=2, H=8, Hkv=2, d=128, Q=16, L=600, V=500, dtype=torch.bfloat16)
    q, k, qi, vi, valid = attention_inputs(B, pad=True, seed=97, **shape)
    sc = 128 ** -0.5
    a = scoring.attention_evidence(q, k, qi, vi, scaling=sc, head_agg="max", query_valid=valid)
    r = scoring.attention_evidence(q, k, qi, vi, scaling=sc, head_agg="max", query_valid=valid, use_kernels=False)
    _record_check(B, "attention", "scoring dispatch", shape, {}, rel_err(a, r), "", False)
    shape = dict(b=2, L=600, G=2, H=8, N=128, Q=16, V=500, dtype=torch.bfloat16)
    Bm, Cm, dt, A, qi, vi, valid = mamba_inputs(B, pad=True, seed=98, **shape)
    a = scoring.mamba2_evidence(Bm, Cm, dt, A, qi, vi, decay=True, head_agg="mean", query_valid=valid)
    r = scoring.mamba2_evidence(Bm.double(), Cm.double(), dt.double(), A.double(), qi, vi, decay=True,
                                head_agg="mean", query_valid=valid, use_kernels=False)
    _record_check(B, "mamba2", "scoring dispatch", shape, {}, rel_err(a, r), "", False)


def run_checks(B: Bench, K, paper_L):
    torch = B.torch
    f32, bf16 = torch.float32, torch.bfloat16
    att_small = dict(b=2, H=8, Hkv=2, d=128, Q=37, L=3001, V=2500)
    att_odd = dict(b=1, H=6, Hkv=3, d=64, Q=1, L=257, V=1)
    att_mqa = dict(b=2, H=4, Hkv=1, d=96, Q=70, L=1000, V=777)
    att_smallV = dict(b=1, H=32, Hkv=8, d=128, Q=64, L=5000, V=200)  # head splits > 1
    att_paper = dict(b=1, H=32, Hkv=8, d=128, Q=64, L=paper_L, V=paper_L - 96)
    for dtype in (f32, bf16):
        check_attention(B, K, "odd GQA2 mean", dtype=dtype, **att_small)
        check_attention(B, K, "odd GQA2 max pad", dtype=dtype, head_agg="max", pad=True, **att_small)
        check_attention(B, K, "Q=1 V=1", dtype=dtype, **att_odd)
        check_attention(B, K, "MQA d=96 pad", dtype=dtype, pad=True, **att_mqa)
        check_attention(B, K, "small V (head splits) max", dtype=dtype, head_agg="max", **att_smallV)
        check_attention(B, K, f"paper L={paper_L} mean", dtype=dtype, **att_paper)
    check_attention(B, K, "fp32 tf32x3 dots", dtype=f32, knobs=dict(precision="tf32x3"), info=True, **att_small)
    check_attention(B, K, "fp32 tf32 dots", dtype=f32, knobs=dict(precision="tf32"), info=True, **att_small)

    m_small = dict(b=2, L=3001, G=2, H=16, N=64, Q=37, V=2500)
    m_odd = dict(b=1, L=257, G=1, H=4, N=48, Q=1, V=1)
    m_GH = dict(b=1, L=1000, G=4, H=4, N=128, Q=70, V=777)
    m_smallV = dict(b=1, L=5000, G=8, H=128, N=128, Q=64, V=200)  # group splits > 1
    m_paper = dict(b=1, L=paper_L, G=8, H=128, N=128, Q=64, V=paper_L - 96)
    for dtype in (f32, bf16):
        for decay in (False, True):
            tag = "decay" if decay else "nodecay"
            check_mamba(B, K, f"odd hpg8 mean {tag}", decay=decay, dtype=dtype, **m_small)
            check_mamba(B, K, f"odd hpg8 max pad {tag}", decay=decay, head_agg="max", pad=True, dtype=dtype,
                        **m_small)
            check_mamba(B, K, f"paper L={paper_L} mean {tag}", decay=decay, dtype=dtype, **m_paper)
        check_mamba(B, K, "Q=1 V=1 G=1 decay", decay=True, dtype=dtype, **m_odd)
        check_mamba(B, K, "G=H pad decay", decay=True, pad=True, dtype=dtype, **m_GH)
        check_mamba(B, K, "small V (group splits) max", decay=True, head_agg="max", dtype=dtype, **m_smallV)
    check_mamba(B, K, "bf16 W.P ieee", decay=True, dtype=bf16, knobs=dict(wp_precision="ieee"), info=True,
                **m_small)
    check_mamba(B, K, "fp32 C.B tf32x3", decay=True, dtype=f32, knobs=dict(precision="tf32x3"), info=True,
                **m_small)
    d_small = dict(b=2, L=3001, Hk=2, Hv=4, dk=96, Q=37, V=2500)
    d_odd = dict(b=1, L=257, Hk=1, Hv=1, dk=48, Q=1, V=1)
    d_paper = dict(b=1, L=16384 + 96, Q=96, V=16384, **QWEN35_9B)
    for dtype in (f32, bf16):
        for decay in (False, True):
            tag = "decay" if decay else "nodecay"
            check_deltanet_exact(B, K, f"dk96 hpg2 mean {tag}", decay=decay, dtype=dtype, **d_small)
            check_deltanet_exact(B, K, f"dk96 hpg2 max pad {tag}", decay=decay, head_agg="max", pad=True,
                                 dtype=dtype, **d_small)
        check_deltanet_exact(B, K, "correlated keys beta~1", decay=True, correlated=True, dtype=dtype, **d_small)
        check_deltanet_exact(B, K, "Q=1 V=1", decay=True, dtype=dtype, **d_odd)
        check_deltanet_exact(B, K, "Qwen3.5-9B L=16480 decay", decay=True, dtype=dtype, **d_paper)
    check_deltanet_exact(B, K, "bf16 scan dots tf32x3", decay=True, dtype=bf16, knobs=dict(precision="tf32x3"),
                         info=True, **d_small)
    check_dispatch(B)


# -------------------------------------------------------------------------- timing
def _fmt_bytes(n):
    return f"{n / 1e6:.0f} MB"


def attention_floor(B: Bench, *, b, H, Hkv, d, Q, L, V, dtype, precision=None):
    es = 2 if dtype != B.torch.float32 else 4
    nbytes = (b * Hkv * L * d + b * H * Q * d) * es + b * (Q + V) * 8 + b * V * 4
    flops = 2 * b * H * Q * d * (L + V)
    exps = b * H * Q * (L + V)
    if es == 2:
        rate = B.ceil["bf16_TFLOPs"]
    else:
        rate = {"ieee": B.ceil["fp32_TFLOPs"], "tf32": B.ceil["tf32_TFLOPs"]}.get(precision or "ieee",
                                                                                   B.ceil["tf32_TFLOPs"] / 3)
    t = dict(bytes=nbytes / (B.ceil["copy_GBps"] * 1e9) * 1e3, flops=flops / (rate * 1e12) * 1e3,
             exp=exps / (B.ceil["exp_Gps"] * 1e9) * 1e3)
    return t, dict(bytes=nbytes, flops=flops, exps=exps)


def mamba_floor(B: Bench, *, b, L, G, H, N, Q, V, dtype, decay):
    es = 2 if dtype != B.torch.float32 else 4
    span = L  # the decay needs Δ at every position between the first visual token and the queries
    nbytes = b * V * G * N * es + b * Q * G * N * es + (b * span * H if decay else b * V * H) * es
    nbytes += b * (Q + V) * 8 + b * V * 4
    f_cb = 2 * b * G * Q * V * N
    f_wp = 2 * b * H * Q * V if decay else 0
    if es == 2:
        t_flops = f_cb / (B.ceil["bf16_TFLOPs"] * 1e12) + f_wp / (B.ceil["tf32_TFLOPs"] * 1e12)
    else:
        t_flops = (f_cb + f_wp) / (B.ceil["fp32_TFLOPs"] * 1e12)
    t = dict(bytes=nbytes / (B.ceil["copy_GBps"] * 1e9) * 1e3, flops=t_flops * 1e3, exp=0.0)
    return t, dict(bytes=nbytes, flops=f_cb + f_wp, exps=b * H * (Q + V))


def _record_time(B, kernel, name, shape, opts, t_kernel, t_ref, floor, counts):
    fl = max(floor.values())
    bound = max(floor, key=floor.get)
    row = dict(kernel=kernel, name=name, dtype=str(shape["dtype"]).replace("torch.", ""),
               shape={k: v for k, v in shape.items() if k != "dtype"}, opts=opts,
               kernel_ms=t_kernel[0], kernel_p20_ms=t_kernel[1], kernel_p80_ms=t_kernel[2],
               ref_ms=None if t_ref is None else t_ref[0],
               floor_ms=fl, floor_by=bound, floors_ms=floor, counts=counts,
               fraction_of_floor=fl / t_kernel[0] if t_kernel[0] and math.isfinite(t_kernel[0]) else 0.0,
               clock_event_reasons=clock_event_reasons())
    B.times.append(row)
    ref = "" if t_ref is None else f" ref {t_ref[0]:8.3f} ms ({t_ref[0] / t_kernel[0]:6.1f}x)"
    print(f"[time] {kernel:14s} {name:34s} kernel {t_kernel[0]:7.3f} ms [{t_kernel[1]:.3f}, {t_kernel[2]:.3f}]"
          f"{ref} floor {fl:.3f} ms ({bound}) -> {row['fraction_of_floor']:.0%}", flush=True)
    return row


def time_attention(B: Bench, K, name, *, with_ref=True, knobs=None, **shape):
    from autoprune.kernels.attention_evidence import _attention_evidence

    q, k, qi, vi, _ = attention_inputs(B, pad=False, seed=1000 + len(B.times), **shape)
    scaling = shape["d"] ** -0.5
    out = B.torch.empty(shape["b"], shape["V"], device=B.device)
    kn = knobs or {}
    tk = B.time(lambda: _attention_evidence(q, k, qi, vi, scaling=scaling, out=out, **kn))
    tr = B.time(lambda: K.attention_evidence_ref(q, k, qi, vi, scaling=scaling)) if with_ref else None
    floor, counts = attention_floor(B, precision=kn.get("precision"), **shape)
    return _record_time(B, "attention", name, shape, kn, tk, tr, floor, counts)


def time_mamba(B: Bench, K, name, *, decay, with_ref=True, knobs=None, **shape):
    from autoprune.kernels.mamba2_evidence import _mamba2_evidence

    Bm, Cm, dt, A, qi, vi, _ = mamba_inputs(B, pad=False, seed=2000 + len(B.times), **shape)
    out = B.torch.empty(shape["b"], shape["V"], device=B.device)
    kn = knobs or {}
    tk = B.time(lambda: _mamba2_evidence(Bm, Cm, dt, A, qi, vi, decay=decay, out=out, **kn))
    tr = B.time(lambda: K.mamba2_evidence_ref(Bm, Cm, dt, A, qi, vi, decay=decay)) if with_ref else None
    floor, counts = mamba_floor(B, decay=decay, **shape)
    return _record_time(B, "mamba2", name, shape, dict(decay=decay, **kn), tk, tr, floor, counts)


def run_timing(B: Bench, K, lengths):
    torch = B.torch
    for L in lengths:
        V = L - 96
        for dtype in (torch.bfloat16, torch.float32):
            dn = "bf16" if dtype == torch.bfloat16 else "fp32"
            time_attention(B, K, f"L={L} {dn}", b=1, H=32, Hkv=8, d=128, Q=64, L=L, V=V, dtype=dtype)
            for decay in (False, True):
                tag = "decay" if decay else "nodecay"
                time_mamba(B, K, f"L={L} {dn} {tag}", decay=decay, b=1, L=L, G=8, H=128, N=128, Q=64, V=V,
                           dtype=dtype)
    for L in lengths:
        time_deltanet_exact(B, K, f"{_dn_tag(B)} L={L} bf16 decay", b=1, L=L, Q=96, V=L - 96, dtype=torch.bfloat16,
                            **_dn_widths(B))
        for decay in (False, True):
            time_deltanet_proxy(B, K, f"{_dn_tag(B)} L={L} bf16 {'decay' if decay else 'nodecay'}", decay=decay, b=1,
                                L=L, Q=96, V=L - 96, dtype=torch.bfloat16, **_dn_widths(B))
    # Attention pass-1 share: the same keys with 64 visual tokens leaves pass 3 almost empty.
    L = lengths[-1]
    time_attention(B, K, f"L={L} bf16 V=64 (~pass 1 only)", with_ref=False, b=1, H=32, Hkv=8, d=128, Q=64, L=L,
                   V=64, dtype=torch.bfloat16)


def run_sweep(B: Bench, K, L):
    torch = B.torch
    att = dict(b=1, H=32, Hkv=8, d=128, Q=64, L=L, V=L - 96, dtype=torch.bfloat16)
    att_cfgs = [
        {},
        dict(block_v=64),
        dict(block_v=256),
        dict(block_v=64, num_warps_col=4),
        dict(block_m=64, num_warps_lse=4),
        dict(block_m=128, block_n=128),
        dict(num_stages_lse=2, num_stages_col=2),
    ]
    for cfg in att_cfgs:
        B.sweep.append(time_attention(B, K, f"sweep {cfg or 'default'}", with_ref=False, knobs=cfg, **att))
    mam = dict(b=1, L=L, G=8, H=128, N=128, Q=64, V=L - 96, dtype=torch.bfloat16)
    mam_cfgs = [
        {},
        dict(block_v=128),
        dict(block_v=32, num_warps=4),
        dict(num_warps=4),
        dict(block_q=32),
        dict(num_stages=3),
        dict(chunk=512),
        dict(wp_precision="ieee"),
    ]
    for decay in (True, False):
        for cfg in mam_cfgs:
            if not decay and ("chunk" in cfg or "wp_precision" in cfg):
                continue
            B.sweep.append(time_mamba(B, K, f"sweep {cfg or 'default'}", decay=decay, with_ref=False, knobs=cfg,
                                      **mam))
    dn = dict(b=1, L=L, Q=96, V=L - 96, dtype=torch.bfloat16, **_dn_widths(B))
    dn_cfgs = [{}, dict(chunk=16), dict(chunk=64), dict(block_q=16), dict(block_q=64), dict(num_warps=8),
               dict(num_warps=2), dict(num_stages=3), dict(num_warps_inv=1), dict(num_warps_inv=4),
               dict(chunk=64, num_warps_inv=4), dict(precision="tf32"), dict(precision="ieee")]
    for cfg in dn_cfgs:
        B.sweep.append(time_deltanet_exact(B, K, f"sweep {cfg or 'default'}", with_ref=False, knobs=cfg, **dn))
    for cfg in ({}, dict(num_warps=4), dict(block_v=128), dict(block_v=32, num_warps=4), dict(block_q=32),
                dict(group_splits=1), dict(group_splits=4), dict(num_stages=3)):
        B.sweep.append(time_deltanet_proxy(B, K, f"sweep proxy {cfg or 'default'}", decay=True, with_ref=False,
                                           knobs=cfg, **dn))
    # fp32 inputs: exact FMA dots ("ieee", the default) against 3-pass tf32 on the tensor cores.
    att32, mam32 = {**att, "dtype": torch.float32}, {**mam, "dtype": torch.float32}
    B.sweep.append(time_attention(B, K, "sweep fp32 tf32x3", with_ref=False, knobs=dict(precision="tf32x3"),
                                  **att32))
    B.sweep.append(time_mamba(B, K, "sweep fp32 tf32x3", decay=True, with_ref=False, knobs=dict(precision="tf32x3"),
                              **mam32))


# ---------------------------------------------------------------------------- report
def summary_table(B: Bench) -> str:
    lines = []
    c = B.ceil
    lines.append(f"ceilings: copy {c['copy_GBps']:.0f} GB/s | bf16 {c['bf16_TFLOPs']:.0f} TFLOP/s | "
                 f"tf32 {c['tf32_TFLOPs']:.0f} | fp32 {c['fp32_TFLOPs']:.1f} | ex2 {c['exp_Gps']:.0f} G/s (spec)")
    fails = [r for r in B.checks if not r["ok"] and not r["informational"]]
    worst = {}
    for r in B.checks:
        if r["informational"]:
            continue
        key = (r["kernel"], r["dtype"])
        worst[key] = max(worst.get(key, 0.0), r["rel_err"])
    lines.append(f"checks: {len(B.checks) - len(fails)}/{len(B.checks)} pass; worst rel err: "
                 + ", ".join(f"{k[0]} {k[1]} {v:.1e}" for k, v in sorted(worst.items())))
    for r in B.checks:
        if r["informational"]:
            lines.append(f"  info: {r['kernel']} {r['name']}: rel err {r['rel_err']:.1e}")
    for r in fails:
        lines.append(f"  FAIL: {r['kernel']} {r['name']} {r['dtype']}: rel err {r['rel_err']:.2e} > {r['tol']:.0e} "
                     f"{r['error']}")
    lines.append("")
    lines.append(f"{'kernel':14s} {'case':24s} {'kernel ms':>9s} {'ref ms':>9s} {'speedup':>7s} "
                 f"{'floor ms':>8s} {'by':5s} {'of floor':>8s}")
    for r in B.times:
        if r in B.sweep:
            continue
        ref = f"{r['ref_ms']:9.3f}" if r["ref_ms"] is not None else f"{'-':>9s}"
        sp = f"{r['ref_ms'] / r['kernel_ms']:6.1f}x" if r["ref_ms"] is not None else f"{'-':>7s}"
        lines.append(f"{r['kernel']:14s} {r['name']:24.24s} {r['kernel_ms']:9.3f} {ref} {sp} "
                     f"{r['floor_ms']:8.3f} {r['floor_by']:5s} {r['fraction_of_floor']:8.0%}")
    if B.sweep:
        lines.append("")
        lines.append("sweep at the largest L, bf16 (best first within each kernel; fp32 rows: see JSON):")
        for kern in ("attention", "mamba2", "deltanet_exact"):
            for decay in ((True, False) if kern == "mamba2" else (None,)):
                rows = [r for r in B.sweep if r["kernel"] == kern and r["dtype"] == "bfloat16"
                        and (decay is None or r["opts"]["decay"] == decay)]
                rows.sort(key=lambda r: r["kernel_ms"])
                tag = kern if decay is None else f"{kern} {'decay' if decay else 'nodecay'}"
                lines.append(f"  {tag}: " + " | ".join(
                    f"{_opts(r['opts'])} {r['kernel_ms']:.3f}" for r in rows))
    reasons = {r["clock_event_reasons"] for r in B.times if r["clock_event_reasons"]}
    # bits 0x20 SW thermal, 0x40 HW slowdown, 0x4 SW power cap, 0x80 HW thermal, 0x100 HW power brake
    if any(x & (0x4 | 0x20 | 0x40 | 0x80 | 0x100) for x in reasons):
        lines.append(f"WARNING: clock-event reasons seen during timing: {sorted(hex(x) for x in reasons)}")
    return "\n".join(lines)


def _opts(o):
    o = {k: v for k, v in o.items() if k != "decay"}
    return ",".join(f"{k}={v}" for k, v in o.items()) or "default"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run under TRITON_INTERPRET=1 (plumbing only)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the launch-configuration sweep")
    ap.add_argument("--sweep-after-s", type=float, default=120.0,
                    help="skip the sweep if checks and timing already took longer than this")
    args = ap.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    t0 = time.time()
    import torch
    import triton

    if not args.smoke and not torch.cuda.is_available():
        sys.exit("kernels_gpu.py needs a CUDA device (or --smoke for a CPU plumbing run)")
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 references stay fp32
    K = _import_kernels()
    B = Bench("cpu" if args.smoke else "cuda", args.smoke)
    meta = dict(python=platform.python_version(), torch=torch.__version__, triton=triton.__version__,
                device=torch.cuda.get_device_name(0) if not args.smoke else "cpu (interpreter)",
                started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    print(json.dumps(meta), flush=True)

    measure_ceilings(B)
    print(f"ceilings: {json.dumps({k: round(v, 1) for k, v in B.ceil.items()})}", flush=True)
    paper = [16384 + 96, 65536 + 96] if not args.smoke else [300, 500]
    if args.smoke:
        _smoke_checks(B, K)
    else:
        run_checks(B, K, paper[-1])
    print(f"checks done at {time.time() - t0:.0f} s", flush=True)
    run_timing(B, K, paper)
    elapsed = time.time() - t0
    if args.no_sweep:
        pass
    elif elapsed > args.sweep_after_s:
        print(f"skipping the sweep: {elapsed:.0f} s already spent (limit {args.sweep_after_s} s)", flush=True)
    else:
        run_sweep(B, K, paper[-1])
    print(f"timing done at {time.time() - t0:.0f} s", flush=True)

    if os.environ.get("OUT"):
        out_dir = Path(os.environ["OUT"])
    elif args.smoke:  # a plumbing run leaves nothing in the repository
        import tempfile

        out_dir = Path(tempfile.gettempdir()) / "autoprune-kernels-smoke"
    else:
        out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "kernels_gpu.json"
    meta["seconds"] = time.time() - t0
    path.write_text(json.dumps(dict(meta=meta, ceilings=B.ceil, checks=B.checks, times=B.times,
                                    tolerances=TOL), indent=1, default=str))
    table = summary_table(B)
    print(f"\nwrote {path}\n")
    print(table)
    fails = [r for r in B.checks if not r["ok"] and not r["informational"]]
    if fails:
        print(f"\n!!! {len(fails)} CHECK(S) FAILED: the kernels do not match their references (see FAIL lines) !!!")
        return 1
    return 0


def _smoke_checks(B: Bench, K):
    torch = B.torch
    for dtype in (torch.float32, torch.bfloat16):
        check_attention(B, K, "smoke", dtype=dtype, head_agg="max", pad=True, b=2, H=4, Hkv=2, d=32, Q=9, L=200,
                        V=150)
        check_mamba(B, K, "smoke", decay=True, dtype=dtype, pad=True, b=2, L=200, G=2, H=8, N=32, Q=9, V=150)
        check_deltanet_exact(B, K, "smoke", decay=True, dtype=dtype, pad=True, b=2, L=200, Hk=2, Hv=4, dk=32, Q=9,
                             V=150)
    # (no dispatch check: scoring dispatches to the kernels for CUDA tensors only)


if __name__ == "__main__":
    sys.exit(main())
