"""Gated DeltaNet exact evidence ``e(v) = agg_h Σ_{t∈Q} |w^h[t, v]|`` (delta-rule products kept) in Triton.

Ladder (mamba_ssm style), all in this file: ``_deltanet_exact_chunk_inverse_kernel`` and
``_deltanet_exact_scan_kernel`` (``@triton.jit``) → ``_deltanet_exact_evidence`` (launcher) →
:func:`deltanet_exact_evidence` (public Triton op) → :func:`deltanet_exact_evidence_ref` (the torch
reference, the chunked scan :func:`autoprune.delta_rule.gated_deltanet_exact_evidence` runs).
:mod:`autoprune.kernels.dispatch` picks.

The function (derivation in :mod:`autoprune.delta_rule`): per value head ``h`` (key head
``h // (Hv/Hk)``), each query row ``t`` runs a backward scan ``u ← q_t·exp(λ_t)`` at ``t``, then at
every earlier position ``r``: ``w[t, r] = β_r (k_r·u)``, ``u ← u − k_r w[t, r]``; the evidence is
``Σ_t |w[t, s]| · exp(λ_s)`` (``λ``: the log-decay to ``q0 = min Q``; both factors dropped when
``lam`` is None). Query rows are independent, so their ``u`` stack into ``U (Q × dk)`` and blocks of
rows can run in separate programs.

Launches:

1. ``_deltanet_exact_chunk_inverse_kernel``, one program per (chunk of ``C`` positions, batch row,
   value head), chunks aligned to position 0. With ``K (C × dk)`` the chunk's keys,
   ``M[s, r] = β_r k_s·k_r`` for ``r > s`` (strict upper) is what the later positions of the chunk
   subtract from ``k_s·u``; the scan through the chunk is ``d = (I + M)^{-1} K u`` (the WY form).
   ``T = diag(β) (I + M)^{-1}`` is computed by back substitution over the ``C`` rows of a
   ``C × C`` register tile (``T[s] = e_s − Σ_{r>s} M[s, r] T[r]``, one row per step) and written
   ``(b, Hv, ⌈L/C⌉·C, C)`` fp32. It depends on ``k`` and ``β`` only, not on the query rows, so every
   chunk is solved in parallel and the sequential scan below does no per-row work.
2. ``_deltanet_exact_scan_kernel``, one program per (block of ``BLOCK_Q`` query rows, batch row,
   value head); ``U (BLOCK_Q × dk)`` fp32 stays in registers for the whole scan:

   - the query span, position by position from the block's last row down to the chunk boundary
     ``C·⌊lo/C⌋`` below its first row ``lo``: a row's ``u`` is set when the scan reaches its
     position (rows that have not joined are 0 and add nothing), ``w = β_r (U k_r)``,
     ``U ← U − w k_rᵀ``;
   - then chunk by chunk down to position 0 (every row has joined): ``W = T (K Uᵀ)`` (``C × BLOCK_Q``),
     ``U ← U − Wᵀ K``: three ``tl.dot`` per chunk.

   Each position's ``Σ_t |w[t, r]|`` over the block's rows goes to ``ev (b, Hv, n_qblocks, L)``.
3. torch: sum over row blocks, gather at the visual positions, ``× exp(λ_s)``, mean or max over
   value heads (:func:`~autoprune.kernels._common.aggregate_heads`).

Precision: ``U``, ``T`` and every accumulation are fp32. ``K Kᵀ`` is a dot of the input dtype
(bf16/fp16 products are exact in fp32). The three scan dots have fp32 operands (``k`` upcast):
``input_precision="ieee"`` for fp32 inputs, one-pass ``"tf32"`` for 16-bit inputs. The error in
``U`` is carried through every earlier chunk; on the H200 at Qwen3.5-9B widths and 16,480 tokens
(``benchmarks/results/kernels_gpu_h200.json``) tf32 gave 7.7e-4 relative error against the float64
reference — below the 16-bit inputs' own rounding (~4e-3) — at half the time of ``"tf32x3"``
(three passes, 2.5e-7; 4.65 vs 9.02 ms at 65,632 tokens), which stays a knob (``precision``).

Limits: ``U`` and a chunk's keys live in registers, ``(BLOCK_Q + C) × dk`` fp32 per program; the
op takes ``dk ≤ MAX_DK`` (256) and refuses wider heads, which dispatch sends to the reference.
``Q`` is tiled (``BLOCK_Q`` rows per program), so it has no limit. Every visual position must be
before every query row of its batch row (the decay factorisation at ``q0``). So far checked
under Triton's interpreter only; :mod:`benchmarks.kernels_gpu` compiles, checks and times it on a GPU.
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
    launch_buffers,
    pow2_at_least,
    upcast_dots,
)

__all__ = ["MAX_DK", "deltanet_exact_evidence", "deltanet_exact_evidence_ref"]

#: Widest key head the op takes: ``U`` (``BLOCK_Q × dk``) and a chunk's keys (``C × dk``) are fp32
#: register tiles, 128 registers a thread at dk = 256 with the default blocks and 4 warps, half
#: the per-thread limit before the dots' operands; wider heads would spill (an estimate: the
#: kernel has not been compiled at that width).
MAX_DK = 256


@triton.jit(do_not_specialize=["L", "HPG"])
def _deltanet_exact_chunk_inverse_kernel(
    k_ptr, beta_ptr, t_ptr,
    L, DK, HPG,
    s_kb, s_kl, s_kg, s_kn,
    s_bb, s_bl, s_bh,
    s_tb, s_th, s_tl, s_tc,
    C: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """``T = diag(β) (I + M)^{-1}`` of chunk ``j`` (positions ``j·C …``) for one (batch row, value head)."""
    j = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    h = tl.program_id(2).to(tl.int64)
    g = h // HPG
    rows = tl.arange(0, C)
    cols = tl.arange(0, C)
    pos = j * C + rows
    ok = pos < L
    offs_n = tl.arange(0, BLOCK_N)
    kc = tl.load(k_ptr + b * s_kb + pos[:, None] * s_kl + g * s_kg + offs_n[None, :] * s_kn,
                 mask=ok[:, None] & (offs_n < DK)[None, :], other=0.0)
    if UPCAST:
        kc = kc.to(tl.float32)
    # positions past L get β = 0: their rows of T are 0 and they touch no other row
    bc = tl.load(beta_ptr + b * s_bb + pos * s_bl + h * s_bh, mask=ok, other=0.0).to(tl.float32)
    A = tl.dot(kc, tl.trans(kc), input_precision=PREC)
    # Mᵀ (Mt[r, s] = M[s, r] = β_r k_r·k_s, s < r; K Kᵀ is symmetric) so that row s of M comes out
    # as a vector along T's row axis, which is the axis the update below broadcasts it on: no
    # layout conversion inside the loop.
    Mt = tl.where(cols[None, :] < rows[:, None], A * bc[:, None], 0.0)
    T = tl.zeros([C, C], tl.float32)
    for i in range(0, C):
        s = C - 1 - i
        m_s = tl.sum(tl.where(cols[None, :] == s, Mt, 0.0), axis=1)
        # rows r ≤ s of T are still 0, and M[s, r ≤ s] = 0: the full contraction is the triangular one
        t_s = tl.where(cols == s, 1.0, 0.0) - tl.sum(m_s[:, None] * T, axis=0)
        T = tl.where(rows[:, None] == s, t_s[None, :], T)
    T = T * bc[:, None]
    tl.store(t_ptr + b * s_tb + h * s_th + pos[:, None] * s_tl + cols[None, :] * s_tc, T)


@triton.jit(do_not_specialize=["Q", "HPG", "s_ib", "s_iq", "s_mb", "s_mq"])
def _deltanet_exact_scan_kernel(
    q_ptr, k_ptr, beta_ptr, lam_ptr, t_ptr, qidx_ptr, valid_ptr, ev_ptr,
    Q, DK, HPG,
    s_qb, s_ql, s_qg, s_qn,
    s_kb, s_kl, s_kg, s_kn,
    s_bb, s_bl, s_bh,
    s_gb, s_gl, s_gh,
    s_tb, s_th, s_tl, s_tc,
    s_ib, s_iq,
    s_mb, s_mq,
    s_eb, s_eh, s_eq, s_el,
    DECAY: tl.constexpr, HAS_VALID: tl.constexpr,
    C: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """``ev[b, h, pid, r] = Σ_{t ∈ block pid} |w^h[t, r]|`` for every ``r ≤`` the block's last row."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    h = tl.program_id(2).to(tl.int64)
    g = h // HPG

    qi = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = qi < Q
    qpos = tl.load(qidx_ptr + b * s_ib + qi * s_iq, mask=q_ok, other=0).to(tl.int64)
    use = q_ok
    if HAS_VALID:
        use = use & (tl.load(valid_ptr + b * s_mb + qi * s_mq, mask=q_ok, other=0) != 0)
    offs_n = tl.arange(0, BLOCK_N)
    n_ok = offs_n < DK
    # rows not used are all-zero: joining the scan changes nothing for them
    qrow = tl.load(q_ptr + b * s_qb + qpos[:, None] * s_ql + g * s_qg + offs_n[None, :] * s_qn,
                   mask=use[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
    if DECAY:
        lam_q = tl.load(lam_ptr + b * s_gb + qpos * s_gl + h * s_gh, mask=use, other=0.0)
        qrow = qrow * tl.exp(lam_q)[:, None]
    hi = tl.max(tl.where(q_ok, qpos, -1), axis=0)
    lo = tl.min(tl.where(q_ok, qpos, hi), axis=0)
    n_chunks = lo // C
    ev_row = ev_ptr + b * s_eb + h * s_eh + pid * s_eq

    U = tl.zeros([BLOCK_Q, BLOCK_N], tl.float32)
    # the query span (plus the part of lo's chunk below lo): rows join as the scan reaches them
    for i in range(0, hi - n_chunks * C + 1):
        r = hi - i
        U = tl.where((qpos == r)[:, None], qrow, U)
        kr = tl.load(k_ptr + b * s_kb + r * s_kl + g * s_kg + offs_n * s_kn, mask=n_ok, other=0.0).to(tl.float32)
        br = tl.load(beta_ptr + b * s_bb + r * s_bl + h * s_bh).to(tl.float32)
        w = br * tl.sum(U * kr[None, :], axis=1)
        tl.store(ev_row + r * s_el, tl.sum(tl.abs(w), axis=0))
        U = U - w[:, None] * kr[None, :]

    rows = tl.arange(0, C)
    cols = tl.arange(0, C)
    # every row has joined: whole chunks, all inside [0, L), the WY form with the precomputed T
    for jj in range(0, n_chunks):
        pos = (n_chunks - 1 - jj) * C + rows
        kc = tl.load(k_ptr + b * s_kb + pos[:, None] * s_kl + g * s_kg + offs_n[None, :] * s_kn,
                     mask=n_ok[None, :], other=0.0).to(tl.float32)
        tc = tl.load(t_ptr + b * s_tb + h * s_th + pos[:, None] * s_tl + cols[None, :] * s_tc)
        D = tl.dot(kc, tl.trans(U), input_precision=PREC)  # (C, BLOCK_Q): k_s·u arriving at the chunk's end
        W = tl.dot(tc, D, input_precision=PREC)  # w[t, s] of every (position, row)
        tl.store(ev_row + pos * s_el, tl.sum(tl.abs(W), axis=1))
        U = U - tl.dot(tl.trans(W), kc, input_precision=PREC)


def _finish(ev, lam, visual_index, head_agg):
    """``ev (b, H, L)`` (``Σ_t |w[t, s]|`` before ``exp(λ_s)``) → ``(b, V)`` at the visual positions."""
    H = ev.shape[1]
    idx = visual_index[:, None, :].expand(-1, H, -1)
    per_head = torch.gather(ev, 2, idx)
    if lam is not None:
        per_head = per_head * torch.exp(torch.gather(lam.to(ev.dtype).transpose(1, 2), 2, idx))
    return aggregate_heads(per_head, head_agg)


def _deltanet_exact_evidence(q, k, beta, lam, query_index, visual_index, *, head_agg="mean", query_valid=None,
                             out=None, chunk=None, block_q=None, precision=None, num_warps=None,
                             num_stages=None, num_warps_inv=None) -> torch.Tensor:
    """Launch the kernels; ``out (b, V)`` fp32, written in full (allocated if None).

    Knobs: ``chunk`` (``C``, a power of two ≥ 16), ``block_q`` (rows per program, ≥ 16),
    ``precision`` of the scan's dots (``"ieee"``, ``"tf32x3"``, ``"tf32"``), the scan's
    ``num_warps``/``num_stages`` and the chunk inverses' ``num_warps_inv``.
    """
    check_head_agg(head_agg)
    check_deltanet_inputs(q, k, beta, lam, query_index, visual_index)
    if q.dtype != k.dtype or q.dtype not in KERNEL_DTYPES:
        raise ReductionInputError(f"q and k must share a dtype in {KERNEL_DTYPES}, got {q.dtype}, {k.dtype}")
    b, L, G, DK = q.shape
    if DK > MAX_DK:
        raise ReductionInputError(f"dk={DK} is wider than the kernel's register tiles take (dk ≤ {MAX_DK}); "
                                  "dispatch.deltanet_exact_evidence sends such heads to the torch reference")
    H = beta.shape[2]
    device = q.device
    Qn, V = query_index.shape[1], visual_index.shape[1]
    valid, out, done = launch_buffers(query_valid, out, b, Qn, V, L, device)
    if done:
        return out
    C = chunk or 32
    if C < 16 or C & (C - 1):
        raise ReductionInputError(f"chunk must be a power of two ≥ 16 (tl.dot), got {C}")
    is16 = q.dtype != torch.float32
    prec = precision or ("tf32" if is16 else "ieee")
    block_q = block_q or min(32, pow2_at_least(Qn))
    block_n = pow2_at_least(DK)
    upcast = upcast_dots(q.dtype)
    n_chunks = triton.cdiv(L, C)
    tmat = torch.empty(b, H, n_chunks * C, C, dtype=torch.float32, device=device)
    _deltanet_exact_chunk_inverse_kernel[(n_chunks, b, H)](
        k, beta, tmat, L, DK, H // G,
        *k.stride(), *beta.stride(), *tmat.stride(),
        C=C, BLOCK_N=block_n, PREC="tf32" if is16 else "ieee", UPCAST=upcast,
        # few warps: each of the C sequential row steps reduces over a C × C tile, and the fewer
        # warps share it the less of that goes through shared memory; more programs fit an SM
        # (a guess for benchmarks/kernels_gpu.py's sweep to settle)
        num_warps=num_warps_inv or 2,
    )
    n_qb = triton.cdiv(Qn, block_q)
    # zeros: positions after a block's last row are never written (and never visual)
    ev = torch.zeros(b, H, n_qb, L, dtype=torch.float32, device=device)
    lam_t = lam.float().contiguous() if lam is not None else beta  # never read as λ without decay
    valid_arg = valid if valid is not None else query_index
    valid_strides = valid.stride() if valid is not None else (0, 0)
    _deltanet_exact_scan_kernel[(n_qb, b, H)](
        q, k, beta, lam_t, tmat, query_index, valid_arg, ev,
        Qn, DK, H // G,
        *q.stride(), *k.stride(), *beta.stride(), *lam_t.stride(), *tmat.stride(),
        *query_index.stride(), *valid_strides, *ev.stride(),
        DECAY=lam is not None, HAS_VALID=valid is not None,
        C=C, BLOCK_Q=block_q, BLOCK_N=block_n, PREC=prec, UPCAST=upcast,
        num_warps=num_warps or 4, num_stages=num_stages or 2,
    )
    out.copy_(_finish(ev.sum(dim=2), lam, visual_index, head_agg))
    return out


def deltanet_exact_evidence(q, k, beta, lam, query_index, visual_index, *, head_agg: str = "mean",
                            query_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Exact evidence ``(b, V)`` fp32 (see the module docstring).

    - ``q, k (b, L, Hk, dk)``: as the recurrence consumes them (L2-normalised, ``q`` scaled by
      ``dk^{-1/2}``), fp32/bf16/fp16, ``dk ≤ MAX_DK``;
    - ``beta (b, L, Hv)``: the delta rule's write strength; value head ``h`` reads key head
      ``h // (Hv/Hk)``;
    - ``lam (b, L, Hv)`` fp32 log-decay to ``q0`` (:func:`autoprune.delta_rule.log_decay_from_q0`),
      or None for the ungated delta rule (``α ≡ 1``);
    - ``query_index (b, Q)``, ``visual_index (b, V)``: current positions, every visual position
      before every query row of its batch row;
    - ``query_valid (b, Q)`` bool or None (rows marked False add nothing); ``head_agg``: mean or max.

    Same function as :func:`deltanet_exact_evidence_ref`; raises
    :class:`~autoprune.errors.ReductionInputError` on inconsistent inputs, a dtype it does not take
    or ``dk > MAX_DK``.
    """
    return _deltanet_exact_evidence(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                    query_valid=query_valid)


def deltanet_exact_evidence_ref(q, k, beta, lam, query_index, visual_index, *, head_agg: str = "mean",
                                query_valid: torch.Tensor | None = None, chunk: int = 64) -> torch.Tensor:
    """Pure torch, same arguments and function as :func:`deltanet_exact_evidence`: ``(b, V)`` fp32
    (float64 for float64 ``q``).

    The scan of the module docstring with torch ops: sequential over the query span (the span of
    every batch row at once), then ``chunk`` positions at a time below the first query row of the
    batch, each chunk a unit upper-triangular solve. Python loops, several launches per step.
    """
    check_deltanet_inputs(q, k, beta, lam, query_index, visual_index)
    b, L, Hk, dk = k.shape
    Hv = beta.shape[2]
    hpg = Hv // Hk
    f = torch.float64 if q.dtype == torch.float64 else torch.float32
    Qn = query_index.shape[1]
    if b == 0 or Qn == 0 or L == 0:
        return torch.zeros(b, visual_index.shape[1], dtype=f, device=q.device)
    kh = k.to(f).repeat_interleave(hpg, dim=2).transpose(1, 2)  # (b, Hv, L, dk)
    be = beta.to(f).transpose(1, 2)  # (b, Hv, L)
    qr = torch.gather(q.to(f).repeat_interleave(hpg, dim=2).transpose(1, 2), 2,
                      query_index[:, None, :, None].expand(-1, Hv, -1, dk))  # (b, Hv, Q, dk)
    lam_h = None
    if lam is not None:
        lam_h = lam.to(f).transpose(1, 2)  # (b, Hv, L)
        qr = qr * torch.exp(torch.gather(lam_h, 2, query_index[:, None, :].expand(-1, Hv, -1)))[..., None]
    if query_valid is not None:
        qr = qr * query_valid[:, None, :, None].to(f)
    ev = torch.zeros(b, Hv, L, dtype=f, device=q.device)  # Σ_t |w[t, s]| per head (before λ_s)
    U = torch.zeros_like(qr)
    lo = int(query_index.min())
    hi = int(query_index.max())
    for r in range(hi, lo - 1, -1):  # query span: rows join at their own position
        U = torch.where((query_index == r)[:, None, :, None], qr, U)
        kr = kh[:, :, r]
        d = be[:, :, r, None] * (U * kr[:, :, None, :]).sum(-1)  # (b, Hv, Q)
        ev[:, :, r] = d.abs().sum(-1)
        U = U - d[..., None] * kr[:, :, None, :]
    for c1 in range(lo, 0, -chunk):  # every row active: chunked backward scan
        c0 = max(0, c1 - chunk)
        K = kh[:, :, c0:c1]  # (b, Hv, C, dk)
        bc = be[:, :, c0:c1]
        C = c1 - c0
        M = (K @ K.transpose(-1, -2)) * bc[:, :, None, :]
        M = torch.triu(M, diagonal=1) + torch.eye(C, dtype=f, device=q.device)
        d = torch.linalg.solve_triangular(M, K @ U.transpose(-1, -2), upper=True, unitriangular=True)  # (b,Hv,C,Q)
        wc = bc[..., None] * d
        ev[:, :, c0:c1] = wc.abs().sum(-1)
        U = U - wc.transpose(-1, -2) @ K
    return _finish(ev, lam, visual_index, head_agg)
