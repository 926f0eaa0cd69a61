"""Mamba2/SSD implicit-attention evidence ``e(v) = agg_h Σ_{t∈Q} |α^h[t, v]|`` in Triton.

Ladder (mamba_ssm style), all in this file: ``_mamba2_evidence_*_kernel`` (``@triton.jit``) →
``_mamba2_evidence`` (launcher) → :func:`mamba2_evidence` (public Triton op) →
:func:`mamba2_evidence_ref` (the torch reference). Which of the two runs for a call is
decided in one place, :mod:`autoprune.kernels.dispatch`.

With ``q0 = min Q`` and every visual position ``s < q0``, per head ``h`` of group ``g``:

    Σ_t |α^h[t, s]| = Δ^h_s · exp(λ^h_s) · Σ_t |C_t·B_s| · exp(λ^h_t)        (decay)
    Σ_t |α̃^h[t, s]| = Δ^h_s · Σ_t |C_t·B_s|                                  (decay-free)

where ``λ^h_x ≤ 0`` is the log-decay between position ``x`` and ``q0``:
``λ_s = Σ_{k=s+1..q0} Δ_k A_h`` (``s ≤ q0``) and ``λ_t = Σ_{k=q0+1..t} Δ_k A_h`` (``t ≥ q0``).
The ``|·|`` is taken per query term exactly, as the reference does.

Launches:

- decay only, ``_mamba2_evidence_chunk_sum_kernel`` then ``_mamba2_evidence_logdecay_kernel``:
  a two-level parallel scan of ``Δ·A`` that writes ``λ (b, L, H)`` fp32. Chunks are laid out
  from ``q0`` outwards (backwards for ``s ≤ q0``, forwards for ``t > q0``), so every value is a
  sum of terms of one sign that starts at ``q0``: it carries fp32 *relative* precision. (The
  reference's ``cum_{q0} − cum_s`` from one forward fp32 cumsum loses absolute precision as
  ``|cum|`` grows; this scan does not, see ``test_decay_keeps_precision_far_from_the_sequence_start``.)
  A scan cannot be fused into the main kernel: a
  visual block needs the sum over everything between it and ``q0``, which other programs
  compute; two extra cheap launches (about 3 × ``b·L·H`` fp32 of traffic) are the price.
- ``_mamba2_evidence_kernel``, one pass over the visual span: per (batch, block of visual
  tokens) it loops over the groups; per group it gathers ``B`` at the visual positions
  (``N × BLOCK_V``), loops over blocks of query rows, forms ``P = |C_q·B_v|`` in registers
  (fp32) and either sums ``P`` over query rows (decay-free) or contracts it with the per-head
  weights ``W[h, t] = exp(λ^h_t)`` by a second ``tl.dot`` (``BLOCK_H × BLOCK_Q`` ·
  ``BLOCK_Q × BLOCK_V``); then multiplies by ``Δ^h_s·exp(λ^h_s)`` (or ``Δ^h_s``) and folds the
  heads into a running sum (mean) or maximum (max). Groups are folded the same way, so
  ``(b, V)`` is written once. When there are too few visual blocks to fill the device, the
  groups are split over programs and torch reduces the partial ``(b, V)`` results.

Precision: ``C·B`` is a ``tl.dot`` of the input dtype with fp32 accumulation (bf16/fp16 on the
tensor cores, exact products; fp32 with ``input_precision="ieee"``). ``W·P`` has fp32
operands: ``"ieee"`` for fp32 inputs, ``"tf32"`` for bf16/fp16 inputs (all terms are
non-negative, so the relative error stays ~1e-3, under what the bf16 inputs already carry).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoprune.errors import ReductionInputError

from ._common import (
    KERNEL_DTYPES,
    aggregate_heads,
    check_head_agg,
    check_index,
    combine_splits,
    heads_per_group,
    largest_divisor_at_most,
    launch_buffers,
    num_programs_target,
    pow2_at_least,
    upcast_dots,
)

__all__ = ["mamba2_evidence", "mamba2_evidence_ref"]


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _q0_of_batch(qidx_ptr, b, s_ib, s_iq, Q, L, BLOCK_QI: tl.constexpr):
    """``q0 = min_q query_index[b, q]`` (same rows as the reference: padding rows included)."""
    run = tl.zeros([BLOCK_QI], tl.int64) + L
    for i0 in range(0, Q, BLOCK_QI):
        qi = i0 + tl.arange(0, BLOCK_QI)
        run = tl.minimum(run, tl.load(qidx_ptr + b * s_ib + qi * s_iq, mask=qi < Q, other=L).to(tl.int64))
    return tl.min(run, axis=0)


@triton.jit
def _chunk_positions(q0, c, L, N_CHUNKS, CHUNK: tl.constexpr):
    """Positions of chunk ``c``: ``c < N_CHUNKS`` walks back from ``q0`` (``q0 − c·CHUNK − r``),
    ``c ≥ N_CHUNKS`` forwards from ``q0 + 1``; returns (positions, in-range mask)."""
    r = tl.arange(0, CHUNK)
    back = c < N_CHUNKS
    fwd_c = c - N_CHUNKS
    pos = tl.where(back, q0 - c * CHUNK - r, q0 + 1 + fwd_c * CHUNK + r)
    ok = (pos >= 0) & (pos < L)
    return pos, ok


# Sizes and index strides are not specialised (one compile serves every sequence length);
# N, H and the activation strides are, so that loads along them stay vectorised.
@triton.jit(do_not_specialize=["Q", "L", "N_CHUNKS", "s_ib", "s_iq"])
def _mamba2_evidence_chunk_sum_kernel(
    dt_ptr, A_ptr, qidx_ptr, sums_ptr,
    Q, L, H, N_CHUNKS,
    s_db, s_dl, s_dh,
    s_ib, s_iq,
    CHUNK: tl.constexpr, BLOCK_HS: tl.constexpr, BLOCK_QI: tl.constexpr,
):
    """``sums[b, c, h] = Σ_{x ∈ chunk c} Δ^h_x A_h`` for the chunks laid out from ``q0``."""
    c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # b·stride can overflow int32 at L = 65k
    hh = tl.program_id(2) * BLOCK_HS + tl.arange(0, BLOCK_HS)
    h_ok = hh < H
    q0 = _q0_of_batch(qidx_ptr, b, s_ib, s_iq, Q, L, BLOCK_QI)
    pos, ok = _chunk_positions(q0, c, L, N_CHUNKS, CHUNK)
    a = tl.load(A_ptr + hh, mask=h_ok, other=0.0).to(tl.float32)
    x = tl.load(dt_ptr + b * s_db + pos[:, None] * s_dl + hh[None, :] * s_dh,
                mask=ok[:, None] & h_ok[None, :], other=0.0).to(tl.float32) * a[None, :]
    tl.store(sums_ptr + (b * 2 * N_CHUNKS + c) * H + hh, tl.sum(x, axis=0), mask=h_ok)


@triton.jit(do_not_specialize=["Q", "L", "N_CHUNKS", "s_ib", "s_iq"])
def _mamba2_evidence_logdecay_kernel(
    dt_ptr, A_ptr, qidx_ptr, sums_ptr, lg_ptr,
    Q, L, H, N_CHUNKS,
    s_db, s_dl, s_dh,
    s_ib, s_iq,
    s_gb, s_gl, s_gh,
    CHUNK: tl.constexpr, BLOCK_HS: tl.constexpr, BLOCK_QI: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """``λ[b, x, h]``: log-decay between ``x`` and ``q0`` (≤ 0), for the positions of chunk ``c``."""
    c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # b·stride can overflow int32 at L = 65k
    hh = tl.program_id(2) * BLOCK_HS + tl.arange(0, BLOCK_HS)
    h_ok = hh < H
    q0 = _q0_of_batch(qidx_ptr, b, s_ib, s_iq, Q, L, BLOCK_QI)
    pos, ok = _chunk_positions(q0, c, L, N_CHUNKS, CHUNK)
    back = c < N_CHUNKS

    # Sum of the chunks between this one and q0 (same direction).
    first = tl.where(back, 0, N_CHUNKS)
    carry = tl.zeros([BLOCK_HS], tl.float32)
    for c0 in range(first, c, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        part = tl.load(sums_ptr + (b * 2 * N_CHUNKS + cc[:, None]) * H + hh[None, :],
                       mask=(cc[:, None] < c) & h_ok[None, :], other=0.0)
        carry += tl.sum(part, axis=0)

    a = tl.load(A_ptr + hh, mask=h_ok, other=0.0).to(tl.float32)
    x = tl.load(dt_ptr + b * s_db + pos[:, None] * s_dl + hh[None, :] * s_dh,
                mask=ok[:, None] & h_ok[None, :], other=0.0).to(tl.float32) * a[None, :]
    cs = tl.cumsum(x, axis=0)
    # Backwards, position x = q0 − c·CHUNK − r needs the terms strictly after it: exclusive sum.
    lam = carry[None, :] + tl.where(back, cs - x, cs)
    # λ ≤ 0 exactly; the exclusive sum ``cs − x`` of a tree scan can round to +1 ulp.
    lam = tl.minimum(lam, 0.0)
    tl.store(lg_ptr + b * s_gb + pos[:, None] * s_gl + hh[None, :] * s_gh, lam,
             mask=ok[:, None] & h_ok[None, :])


@triton.jit(do_not_specialize=["Q", "V", "HPG", "G_PER_SPLIT", "s_ib", "s_iq", "s_vb", "s_vv", "s_mb", "s_mq",
                               "s_os", "s_ob"])
def _mamba2_evidence_kernel(
    B_ptr, C_ptr, dt_ptr, lg_ptr, qidx_ptr, vidx_ptr, valid_ptr, out_ptr,
    Q, V, N, HPG, G_PER_SPLIT,
    s_Bb, s_Bl, s_Bg, s_Bn,
    s_Cb, s_Cl, s_Cg, s_Cn,
    s_db, s_dl, s_dh,
    s_gb, s_gl, s_gh,
    s_ib, s_iq,
    s_vb, s_vv,
    s_mb, s_mq,
    s_os, s_ob, s_ov,
    out_scale,
    DECAY: tl.constexpr, HAS_VALID: tl.constexpr, AGG_MAX: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    PREC_CB: tl.constexpr, PREC_WP: tl.constexpr, UPCAST: tl.constexpr,
):
    """Evidence of ``BLOCK_V`` visual tokens, aggregated over the heads of ``G_PER_SPLIT`` groups."""
    pid_v = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # b·stride can overflow int32 at L = 65k
    gsplit = tl.program_id(2)

    vcols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    v_ok = vcols < V
    vpos = tl.load(vidx_ptr + b * s_vb + vcols * s_vv, mask=v_ok, other=0)
    offs_n = tl.arange(0, BLOCK_N)
    n_ok = offs_n < N

    tot = tl.zeros([BLOCK_V], tl.float32)
    g0 = gsplit * G_PER_SPLIT
    for g in range(g0, g0 + G_PER_SPLIT):
        bt = tl.load(B_ptr + b * s_Bb + vpos[None, :] * s_Bl + g * s_Bg + offs_n[:, None] * s_Bn,
                     mask=v_ok[None, :] & n_ok[:, None], other=0.0)
        if UPCAST:
            bt = bt.to(tl.float32)
        if DECAY:
            for h0 in range(0, HPG, BLOCK_H):
                hh = h0 + tl.arange(0, BLOCK_H)
                h_ok = hh < HPG
                head = g * HPG + hh
                acc = tl.zeros([BLOCK_H, BLOCK_V], tl.float32)
                for q0 in range(0, Q, BLOCK_Q):
                    qi = q0 + tl.arange(0, BLOCK_Q)
                    q_ok = qi < Q
                    use = q_ok
                    if HAS_VALID:
                        use = use & (tl.load(valid_ptr + b * s_mb + qi * s_mq, mask=q_ok, other=0) != 0)
                    qpos = tl.load(qidx_ptr + b * s_ib + qi * s_iq, mask=q_ok, other=0)
                    ct = tl.load(C_ptr + b * s_Cb + qpos[:, None] * s_Cl + g * s_Cg + offs_n[None, :] * s_Cn,
                                 mask=q_ok[:, None] & n_ok[None, :], other=0.0)
                    if UPCAST:
                        ct = ct.to(tl.float32)
                    p = tl.abs(tl.dot(ct, bt, input_precision=PREC_CB))  # (BLOCK_Q, BLOCK_V)
                    p = tl.where(use[:, None], p, 0.0)
                    lam_q = tl.load(lg_ptr + b * s_gb + qpos[None, :] * s_gl + head[:, None] * s_gh,
                                    mask=h_ok[:, None] & use[None, :], other=float("-inf"))
                    w = tl.exp(lam_q)  # (BLOCK_H, BLOCK_Q), 0 where masked
                    acc = tl.dot(w, p, acc, input_precision=PREC_WP)
                hv_ok = h_ok[:, None] & v_ok[None, :]
                dtv = tl.load(dt_ptr + b * s_db + vpos[None, :] * s_dl + head[:, None] * s_dh,
                              mask=hv_ok, other=0.0).to(tl.float32)
                lam_v = tl.load(lg_ptr + b * s_gb + vpos[None, :] * s_gl + head[:, None] * s_gh,
                                mask=hv_ok, other=0.0)
                val = acc * dtv * tl.exp(lam_v)
                if AGG_MAX:
                    tot = tl.maximum(tot, tl.max(val, axis=0))
                else:
                    tot += tl.sum(val, axis=0)
        else:
            colsum = tl.zeros([BLOCK_V], tl.float32)
            for q0 in range(0, Q, BLOCK_Q):
                qi = q0 + tl.arange(0, BLOCK_Q)
                q_ok = qi < Q
                use = q_ok
                if HAS_VALID:
                    use = use & (tl.load(valid_ptr + b * s_mb + qi * s_mq, mask=q_ok, other=0) != 0)
                qpos = tl.load(qidx_ptr + b * s_ib + qi * s_iq, mask=q_ok, other=0)
                ct = tl.load(C_ptr + b * s_Cb + qpos[:, None] * s_Cl + g * s_Cg + offs_n[None, :] * s_Cn,
                             mask=q_ok[:, None] & n_ok[None, :], other=0.0)
                if UPCAST:
                    ct = ct.to(tl.float32)
                p = tl.abs(tl.dot(ct, bt, input_precision=PREC_CB))
                colsum += tl.sum(tl.where(use[:, None], p, 0.0), axis=0)
            for h0 in range(0, HPG, BLOCK_H):
                hh = h0 + tl.arange(0, BLOCK_H)
                head = g * HPG + hh
                dtv = tl.load(dt_ptr + b * s_db + vpos[None, :] * s_dl + head[:, None] * s_dh,
                              mask=(hh < HPG)[:, None] & v_ok[None, :], other=0.0).to(tl.float32)
                val = colsum[None, :] * dtv
                if AGG_MAX:
                    tot = tl.maximum(tot, tl.max(val, axis=0))
                else:
                    tot += tl.sum(val, axis=0)
    if not AGG_MAX:
        tot = tot * out_scale
    tl.store(out_ptr + gsplit * s_os + b * s_ob + vcols * s_ov, tot, mask=v_ok)


# ---------------------------------------------------------------------------- launcher
def _mamba2_logdecay(dt, A, query_index, *, chunk: int | None = None, out: torch.Tensor | None = None):
    """``λ (b, L, H)`` fp32: log-decay between each position and ``q0 = min Q`` (see module doc).

    Written into ``out`` (contiguous ``(b, L, H)`` fp32) when given, else into a new tensor.
    """
    b, L, H = dt.shape
    Qn = query_index.shape[1]
    chunk = min(chunk or 256, pow2_at_least(L, 16))
    n_chunks = triton.cdiv(L, chunk)
    block_hs = min(pow2_at_least(H, 1), 16)
    block_qi = 64  # fixed (loops over longer Q): one compile for every Q
    grid = (2 * n_chunks, b, triton.cdiv(H, block_hs))
    sums = torch.empty(b, 2 * n_chunks, H, dtype=torch.float32, device=dt.device)
    _mamba2_evidence_chunk_sum_kernel[grid](
        dt, A, query_index, sums, Qn, L, H, n_chunks,
        *dt.stride(), *query_index.stride(),
        CHUNK=chunk, BLOCK_HS=block_hs, BLOCK_QI=block_qi, num_warps=4,
    )
    lg = torch.empty(b, L, H, dtype=torch.float32, device=dt.device) if out is None else out
    _mamba2_evidence_logdecay_kernel[grid](
        dt, A, query_index, sums, lg, Qn, L, H, n_chunks,
        *dt.stride(), *query_index.stride(), *lg.stride(),
        CHUNK=chunk, BLOCK_HS=block_hs, BLOCK_QI=block_qi, BLOCK_C=32,
        num_warps=4,
    )
    return lg


def _mamba2_evidence(
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    query_index: torch.Tensor,
    visual_index: torch.Tensor,
    *,
    decay: bool = False,
    head_agg: str = "mean",
    query_valid: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    precision: str | None = None,
    wp_precision: str | None = None,
    block_q: int | None = None,
    block_v: int | None = None,
    block_h: int | None = None,
    chunk: int | None = None,
    group_splits: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Launch the kernels; ``out (b, V)`` fp32, written in full (allocated if None).

    Tuning knobs (None = default): ``precision`` of fp32 ``C·B`` dots, ``wp_precision`` of the
    ``W·P`` dot, block sizes, ``chunk`` of the decay scan, ``group_splits`` (must divide G),
    warps, stages.

    Defaults were chosen from ptxas's resource report for sm_90a (Triton 3.9, no GPU run yet):
    the largest tiles that compile without register spills. fp32 "ieee" dots run on the FMA
    units and hold both operand tiles in registers, hence the small fp32 tiles.
    """
    agg_max = check_head_agg(head_agg)
    if B.dim() != 4 or C.shape != B.shape:
        raise ReductionInputError(f"B and C must both be (b, L, G, N); got {tuple(B.shape)}, {tuple(C.shape)}")
    b, L, G, N = B.shape
    if dt.dim() != 3 or dt.shape[:2] != (b, L):
        raise ReductionInputError(f"dt must be (b={b}, L={L}, H), got {tuple(dt.shape)}")
    H = dt.shape[2]
    if G == 0 or H % G:
        raise ReductionInputError(f"{H} Mamba heads are not a multiple of {G} groups")
    if A.shape != (H,):
        raise ReductionInputError(f"A must be (H={H},), got {tuple(A.shape)}")
    if B.dtype != C.dtype or B.dtype not in KERNEL_DTYPES:
        raise ReductionInputError(f"B and C must share a dtype in {KERNEL_DTYPES}, got {B.dtype}, {C.dtype}")
    if not (dt.dtype.is_floating_point and A.dtype.is_floating_point):
        raise ReductionInputError(f"dt and A must be floating point, got {dt.dtype}, {A.dtype}")
    device = B.device
    for name, t in (("C", C), ("dt", dt), ("A", A)):
        if t.device != device:
            raise ReductionInputError(f"{name} is on {t.device}, B on {device}")
    check_index("query_index", query_index, b, device)
    check_index("visual_index", visual_index, b, device)
    Qn, V = query_index.shape[1], visual_index.shape[1]
    valid, out, done = launch_buffers(query_valid, out, b, Qn, V, L, device)
    if done:
        return out

    hpg = H // G
    is16 = B.dtype != torch.float32
    # input_precision only matters for fp32 operands; "tf32" (Triton's default) for 16-bit ones
    # keeps C·B on the tensor cores.
    precision = precision or ("tf32" if is16 else "ieee")
    wp_precision = wp_precision or ("tf32" if is16 else "ieee")
    upcast = upcast_dots(B.dtype)
    lg = _mamba2_logdecay(dt, A, query_index, chunk=chunk) if decay else dt  # dt: never read as λ

    block_q = min(block_q or (64 if is16 else 32), pow2_at_least(Qn))
    block_v = block_v or (64 if is16 else 32)
    block_h = min(block_h or 64, pow2_at_least(hpg))
    block_n = pow2_at_least(N)
    n_vblocks = triton.cdiv(V, block_v)
    if group_splits is None:
        group_splits = largest_divisor_at_most(G, triton.cdiv(num_programs_target(device), b * n_vblocks))
    elif G % group_splits:
        raise ReductionInputError(f"group_splits={group_splits} does not divide {G} groups")
    dst = out[None] if group_splits == 1 else torch.empty(group_splits, b, V, dtype=torch.float32, device=device)
    valid_arg = valid if valid is not None else query_index  # never read when HAS_VALID is False
    valid_strides = valid.stride() if valid is not None else (0, 0)
    _mamba2_evidence_kernel[(n_vblocks, b, group_splits)](
        B, C, dt, lg, query_index, visual_index, valid_arg, dst,
        Qn, V, N, hpg, G // group_splits,
        *B.stride(), *C.stride(), *dt.stride(), *lg.stride(),
        *query_index.stride(), *visual_index.stride(), *valid_strides, *dst.stride(),
        1.0 / H,
        DECAY=bool(decay), HAS_VALID=valid is not None, AGG_MAX=agg_max,
        BLOCK_Q=block_q, BLOCK_V=block_v, BLOCK_N=block_n, BLOCK_H=block_h,
        PREC_CB=precision, PREC_WP=wp_precision, UPCAST=upcast,
        num_warps=num_warps or 8, num_stages=num_stages or 2,
    )
    if group_splits > 1:
        combine_splits(dst, out, agg_max)
    return out


# ------------------------------------------------------------------------------ public
def mamba2_evidence(
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    query_index: torch.Tensor,
    visual_index: torch.Tensor,
    *,
    decay: bool = False,
    head_agg: str = "mean",
    query_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``e(v) = agg_h Σ_{t∈Q} |α^h[t, v]|`` (``|α̃|`` without decay): ``(b, V)`` fp32.

    - ``B, C (b, L, G, N)``: after the causal conv and its activation; head ``h`` reads group
      ``h // (H/G)``;
    - ``dt (b, L, H)``: after softplus and the mixer's clipping (positive); ``A (H,)`` negative;
    - ``query_index (b, Q)``, ``visual_index (b, V)``: current positions; every visual position
      must precede every query row (as for the reference, nothing is masked causally);
    - ``query_valid (b, Q)`` bool or None: rows marked False add nothing;
    - ``decay``: keep the position-dependent decay ``exp(Σ Δ A)``; ``head_agg``: mean or max.

    Same function as :func:`mamba2_evidence_ref`. Raises
    :class:`~autoprune.errors.ReductionInputError` on inconsistent shapes or arguments, and for
    a dtype of ``B``/``C`` the kernels do not take (fp32/bf16/fp16 only: float64 is the
    reference's, see :func:`autoprune.kernels.dispatch.mamba2_evidence`).
    """
    return _mamba2_evidence(B, C, dt, A, query_index, visual_index, decay=decay, head_agg=head_agg,
                            query_valid=query_valid)


# --------------------------------------------------------------------------- reference
def mamba2_evidence_ref(
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    query_index: torch.Tensor,
    visual_index: torch.Tensor,
    *,
    decay: bool = False,
    head_agg: str = "mean",
    query_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``e(v) = agg_h Σ_{t∈Q} |α^h[t, v]|`` for visual tokens before every query row: ``(b, V)``.

    Pure torch, same arguments as :func:`mamba2_evidence`; fp32 (float64 in, float64 out).
    Exact, per query row (the ``|·|`` is taken per term), in ``O(G·Q·V·N + H·Q·V)``:
    for ``s < q0 = min Q ≤ t`` the decay factorises,
    ``exp(cum_t − cum_s) = exp(cum_t − cum_q0) · exp(cum_q0 − cum_s)`` (both exponents ≤ 0),
    so ``Σ_t |α[t,s]| = Δ_s e^{cum_q0 − cum_s} Σ_t |C_t·B_s| e^{cum_t − cum_q0}``.
    """
    b, L, G, N = B.shape
    H = dt.shape[2]
    hpg = heads_per_group(B, dt)
    f32 = torch.float64 if B.dtype == torch.float64 else torch.float32
    Qn, V = query_index.shape[1], visual_index.shape[1]
    Cq = torch.gather(C, 1, query_index[:, :, None, None].expand(-1, -1, G, N)).to(f32)
    Bv = torch.gather(B, 1, visual_index[:, :, None, None].expand(-1, -1, G, N)).to(f32)
    P = torch.einsum("bqgn,bvgn->bgqv", Cq, Bv).abs_()  # (b, G, Q, V)
    if query_valid is not None:
        P = P * query_valid[:, None, :, None].to(f32)
    dts = dt.to(f32).permute(0, 2, 1)  # (b, H, L)
    dt_v = torch.gather(dts, 2, visual_index[:, None, :].expand(-1, H, -1))  # (b, H, V)
    if decay:
        cum = torch.cumsum(dts * A.to(f32)[None, :, None], dim=-1)  # (b, H, L)
        q0 = query_index.min(dim=1, keepdim=True).values  # (b, 1)
        cum_q0 = torch.gather(cum, 2, q0[:, None, :].expand(-1, H, -1))  # (b, H, 1)
        w = torch.exp(torch.gather(cum, 2, query_index[:, None, :].expand(-1, H, -1)) - cum_q0)  # (b,H,Q)
        s_fac = dt_v * torch.exp(cum_q0 - torch.gather(cum, 2, visual_index[:, None, :].expand(-1, H, -1)))
        per_head = torch.einsum("bgqv,bghq->bghv", P, w.view(b, G, hpg, Qn)).reshape(b, H, V) * s_fac
    else:
        per_head = (P.sum(dim=2)[:, :, None, :] * dt_v.view(b, G, hpg, V)).reshape(b, H, V)
    return aggregate_heads(per_head.float() if f32 != torch.float64 else per_head, head_agg)
