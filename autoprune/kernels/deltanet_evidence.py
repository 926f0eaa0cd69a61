"""Gated DeltaNet proxy evidence ``e(v) = agg_h Σ_{t∈Q} |β_v (q_t·k_v)| · exp(λ_t + λ_v)`` in Triton.

Ladder (mamba_ssm style), all in this file: ``_deltanet_evidence_kernel`` (``@triton.jit``) →
``_deltanet_evidence`` (launcher) → :func:`deltanet_evidence` (public Triton op) →
:func:`deltanet_evidence_ref` (the torch reference). :mod:`autoprune.kernels.dispatch` picks.

The proxy is the delta rule without its ``I − βkkᵀ`` products (see :mod:`autoprune.delta_rule`
for the derivation): gated linear attention, one dot per (query row, visual token). With
``q0 = min Q`` and every visual position before every query row, ``λ (b, L, Hv)`` is the
log-decay between a position and ``q0`` (``≤ 0``, :func:`autoprune.delta_rule.log_decay_from_q0`,
a cumulative sum computed once in torch) and the decay factorises::

    Σ_t |w̃^h[t, s]| = β^h_s · exp(λ^h_s) · Σ_t |q_t·k_s| · exp(λ^h_t)       (decay)
    Σ_t |w̃^h[t, s]| = β^h_s · Σ_t |q_t·k_s|                                 (decay-free: λ is None)

The kernel is the Mamba2 evidence kernel's structure (:mod:`autoprune.kernels.mamba2_evidence`)
with ``B → k``, ``C → q``, ``Δ → β`` and the decay read from ``λ`` instead of scanned from
``Δ·A`` (the gate ``g`` is not ``Δ·A``: its multiplier ``β`` is a separate projection). Per
(batch, block of visual tokens, split of key heads): gather ``k`` at the visual positions
(``dk × BLOCK_V``), loop over blocks of query rows, ``P = |q·k|`` in fp32 registers, either sum
``P`` over rows or contract it with ``W[h, t] = exp(λ^h_t)`` for the value heads of this key
head by a second ``tl.dot``; multiply by ``β^h_s exp(λ^h_s)`` and fold heads (mean or max).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoprune.errors import ReductionInputError

from ._common import (
    KERNEL_DTYPES,
    aggregate_heads,
    check_deltanet_inputs,
    check_head_agg,
    combine_splits,
    largest_divisor_at_most,
    launch_buffers,
    num_programs_target,
    pow2_at_least,
    upcast_dots,
)

__all__ = ["deltanet_evidence", "deltanet_evidence_ref"]


@triton.jit(do_not_specialize=["Q", "V", "HPG", "G_PER_SPLIT", "s_ib", "s_iq", "s_vb", "s_vv", "s_mb", "s_mq",
                               "s_os", "s_ob"])
def _deltanet_evidence_kernel(
    k_ptr, q_ptr, beta_ptr, lam_ptr, qidx_ptr, vidx_ptr, valid_ptr, out_ptr,
    Q, V, DK, HPG, G_PER_SPLIT,
    s_kb, s_kl, s_kg, s_kn,
    s_qb, s_ql, s_qg, s_qn,
    s_bb, s_bl, s_bh,
    s_gb, s_gl, s_gh,
    s_ib, s_iq,
    s_vb, s_vv,
    s_mb, s_mq,
    s_os, s_ob, s_ov,
    out_scale,
    DECAY: tl.constexpr, HAS_VALID: tl.constexpr, AGG_MAX: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    PREC_QK: tl.constexpr, PREC_WP: tl.constexpr, UPCAST: tl.constexpr,
):
    """Evidence of ``BLOCK_V`` visual tokens, aggregated over the value heads of ``G_PER_SPLIT`` key heads."""
    pid_v = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    gsplit = tl.program_id(2)

    vcols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    v_ok = vcols < V
    vpos = tl.load(vidx_ptr + b * s_vb + vcols * s_vv, mask=v_ok, other=0)
    offs_n = tl.arange(0, BLOCK_N)
    n_ok = offs_n < DK

    tot = tl.zeros([BLOCK_V], tl.float32)
    g0 = gsplit * G_PER_SPLIT
    for g in range(g0, g0 + G_PER_SPLIT):
        kt = tl.load(k_ptr + b * s_kb + vpos[None, :] * s_kl + g * s_kg + offs_n[:, None] * s_kn,
                     mask=v_ok[None, :] & n_ok[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
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
                    qt = tl.load(q_ptr + b * s_qb + qpos[:, None] * s_ql + g * s_qg + offs_n[None, :] * s_qn,
                                 mask=q_ok[:, None] & n_ok[None, :], other=0.0)
                    if UPCAST:
                        qt = qt.to(tl.float32)
                    p = tl.abs(tl.dot(qt, kt, input_precision=PREC_QK))  # (BLOCK_Q, BLOCK_V)
                    p = tl.where(use[:, None], p, 0.0)
                    lam_q = tl.load(lam_ptr + b * s_gb + qpos[None, :] * s_gl + head[:, None] * s_gh,
                                    mask=h_ok[:, None] & use[None, :], other=float("-inf"))
                    acc = tl.dot(tl.exp(lam_q), p, acc, input_precision=PREC_WP)
                hv_ok = h_ok[:, None] & v_ok[None, :]
                bv = tl.load(beta_ptr + b * s_bb + vpos[None, :] * s_bl + head[:, None] * s_bh,
                             mask=hv_ok, other=0.0).to(tl.float32)
                lam_v = tl.load(lam_ptr + b * s_gb + vpos[None, :] * s_gl + head[:, None] * s_gh,
                                mask=hv_ok, other=0.0)
                val = acc * bv * tl.exp(lam_v)
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
                qt = tl.load(q_ptr + b * s_qb + qpos[:, None] * s_ql + g * s_qg + offs_n[None, :] * s_qn,
                             mask=q_ok[:, None] & n_ok[None, :], other=0.0)
                if UPCAST:
                    qt = qt.to(tl.float32)
                p = tl.abs(tl.dot(qt, kt, input_precision=PREC_QK))
                colsum += tl.sum(tl.where(use[:, None], p, 0.0), axis=0)
            for h0 in range(0, HPG, BLOCK_H):
                hh = h0 + tl.arange(0, BLOCK_H)
                head = g * HPG + hh
                bv = tl.load(beta_ptr + b * s_bb + vpos[None, :] * s_bl + head[:, None] * s_bh,
                             mask=(hh < HPG)[:, None] & v_ok[None, :], other=0.0).to(tl.float32)
                val = colsum[None, :] * bv
                if AGG_MAX:
                    tot = tl.maximum(tot, tl.max(val, axis=0))
                else:
                    tot += tl.sum(val, axis=0)
    if not AGG_MAX:
        tot = tot * out_scale
    tl.store(out_ptr + gsplit * s_os + b * s_ob + vcols * s_ov, tot, mask=v_ok)


def _deltanet_evidence(q, k, beta, lam, query_index, visual_index, *, head_agg="mean", query_valid=None,
                       out=None, block_q=None, block_v=None, block_h=None, group_splits=None,
                       num_warps=None, num_stages=None) -> torch.Tensor:
    """Launch the kernel; ``out (b, V)`` fp32, written in full (allocated if None)."""
    agg_max = check_head_agg(head_agg)
    check_deltanet_inputs(q, k, beta, lam, query_index, visual_index)
    if q.dtype != k.dtype or q.dtype not in KERNEL_DTYPES:
        raise ReductionInputError(f"q and k must share a dtype in {KERNEL_DTYPES}, got {q.dtype}, {k.dtype}")
    b, L, G, DK = q.shape
    H = beta.shape[2]
    device = q.device
    Qn, V = query_index.shape[1], visual_index.shape[1]
    valid, out, done = launch_buffers(query_valid, out, b, Qn, V, L, device)
    if done:
        return out
    hpg = H // G
    is16 = q.dtype != torch.float32
    prec = "tf32" if is16 else "ieee"
    lam_t = lam.float().contiguous() if lam is not None else beta  # never read as λ without decay
    block_q = min(block_q or (64 if is16 else 32), pow2_at_least(Qn))
    block_v = block_v or (64 if is16 else 32)
    block_h = min(block_h or 64, pow2_at_least(hpg))
    n_vblocks = triton.cdiv(V, block_v)
    if group_splits is None:
        group_splits = largest_divisor_at_most(G, triton.cdiv(num_programs_target(device), b * n_vblocks))
    elif G % group_splits:
        raise ReductionInputError(f"group_splits={group_splits} does not divide {G} key heads")
    dst = out[None] if group_splits == 1 else torch.empty(group_splits, b, V, dtype=torch.float32, device=device)
    valid_arg = valid if valid is not None else query_index
    valid_strides = valid.stride() if valid is not None else (0, 0)
    _deltanet_evidence_kernel[(n_vblocks, b, group_splits)](
        k, q, beta, lam_t, query_index, visual_index, valid_arg, dst,
        Qn, V, DK, hpg, G // group_splits,
        *k.stride(), *q.stride(), *beta.stride(), *lam_t.stride(),
        *query_index.stride(), *visual_index.stride(), *valid_strides, *dst.stride(),
        1.0 / H,
        DECAY=lam is not None, HAS_VALID=valid is not None, AGG_MAX=agg_max,
        BLOCK_Q=block_q, BLOCK_V=block_v, BLOCK_N=pow2_at_least(DK), BLOCK_H=block_h,
        PREC_QK=prec, PREC_WP=prec, UPCAST=upcast_dots(q.dtype),
        num_warps=num_warps or 8, num_stages=num_stages or 2,
    )
    if group_splits > 1:
        combine_splits(dst, out, agg_max)
    return out


def deltanet_evidence(q, k, beta, lam, query_index, visual_index, *, head_agg: str = "mean",
                      query_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Proxy evidence ``(b, V)`` fp32 (see the module docstring).

    - ``q, k (b, L, Hk, dk)``: L2-normalised (``q`` scaled by ``dk^{-1/2}``), fp32/bf16/fp16;
    - ``beta (b, L, Hv)``: the delta rule's write strength; value head ``h`` reads key head
      ``h // (Hv/Hk)``;
    - ``lam (b, L, Hv)`` fp32 log-decay to ``q0`` (≤ 0), or None for the decay-free proxy;
    - ``query_index (b, Q)``, ``visual_index (b, V)``: current positions, visual before query;
    - ``query_valid (b, Q)`` bool or None; ``head_agg``: mean or max.

    Same function as :func:`deltanet_evidence_ref`; raises
    :class:`~autoprune.errors.ReductionInputError` on inconsistent inputs or a dtype it does not take.
    """
    return _deltanet_evidence(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                              query_valid=query_valid)


def deltanet_evidence_ref(q, k, beta, lam, query_index, visual_index, *, head_agg: str = "mean",
                          query_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Pure torch, same arguments and function as :func:`deltanet_evidence`; fp32 (float64 stays float64)."""
    check_deltanet_inputs(q, k, beta, lam, query_index, visual_index)
    b, L, G, DK = q.shape
    H = beta.shape[2]
    hpg = H // G
    f = torch.float64 if q.dtype == torch.float64 else torch.float32
    Qn, V = query_index.shape[1], visual_index.shape[1]
    qq = torch.gather(q, 1, query_index[:, :, None, None].expand(-1, -1, G, DK)).to(f)
    kv = torch.gather(k, 1, visual_index[:, :, None, None].expand(-1, -1, G, DK)).to(f)
    P = torch.einsum("bqgn,bvgn->bgqv", qq, kv).abs_()  # (b, G, Q, V)
    if query_valid is not None:
        P = P * query_valid[:, None, :, None].to(f)
    bh = beta.to(f).permute(0, 2, 1)  # (b, H, L)
    b_v = torch.gather(bh, 2, visual_index[:, None, :].expand(-1, H, -1))  # (b, H, V)
    if lam is not None:
        lh = lam.to(f).permute(0, 2, 1)
        w = torch.exp(torch.gather(lh, 2, query_index[:, None, :].expand(-1, H, -1)))  # (b, H, Q)
        s_fac = b_v * torch.exp(torch.gather(lh, 2, visual_index[:, None, :].expand(-1, H, -1)))
        per_head = torch.einsum("bgqv,bghq->bghv", P, w.view(b, G, hpg, Qn)).reshape(b, H, V) * s_fac
    else:
        per_head = (P.sum(dim=2)[:, :, None, :] * b_v.view(b, G, hpg, V)).reshape(b, H, V)
    return aggregate_heads(per_head.float() if f != torch.float64 else per_head, head_agg)
