"""Attention evidence ``e(v) = agg_h Σ_{q∈Q} softmax_k(q_h·k_h · scaling)[q, v]`` in Triton.

Ladder (mamba_ssm style), all in this file: ``_attention_evidence_*_kernel`` (``@triton.jit``)
→ ``_attention_evidence`` (launcher) → :func:`attention_evidence` (public Triton op) →
:func:`attention_evidence_ref` (the torch reference, built on :func:`attention_query_probs`).
Which of the two runs for a call is decided in one place, :mod:`autoprune.kernels.dispatch`.

Nothing of shape ``(H × Q × L)`` is ever stored. Three launches:

1. ``_attention_evidence_lse_kernel`` — per (batch, kv head, block of query rows, key split):
   an online softmax over the split's keys (causal: row ``t`` sees keys ``0..t``) gives the
   row maximum ``m`` and the sum ``l = Σ exp2(s − m)``. The query rows of the ``H/Hkv`` heads
   that share a kv head are stacked into one block of rows (GQA packing), so each key tile is
   loaded once for all of them. The key axis is split so that long sequences (L = 65k) still
   give a few waves of programs when ``b · Hkv · row_blocks`` alone would leave the GPU idle.
2. ``_attention_evidence_lse_combine_kernel`` — merges the splits into ``lse`` (log2 units),
   ``(b, H, Q)`` fp32.
3. ``_attention_evidence_colsum_kernel`` — per (batch, block of visual columns): gathers the
   key rows at the visual positions, recomputes the logits of every query row against them
   and sums ``exp2(s − lse)`` over the valid query rows (causal mask kept), per head; heads
   are aggregated in registers (mean: running sum · 1/H; max: running maximum), so the
   output ``(b, V)`` is written once, with no atomics and no ``(b, H, V)`` buffer. Only when
   there are too few visual blocks to fill the device are the kv heads split over programs;
   then each split writes a partial ``(b, V)`` and torch sums (mean) or takes the max of them.

Precision: logits are ``tl.dot`` of the input dtype with fp32 accumulation. bf16/fp16
operands use the tensor cores (products exact in fp32); fp32 operands use
``input_precision="ieee"`` by default (no tf32: a logit error of 1e-3 moves a probability by
1e-3), overridable with ``precision=``. Softmax statistics, probabilities and sums are fp32;
exponentials are ``exp2`` of logits prescaled by ``scaling · log2(e)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoprune.errors import ReductionInputError

from ._common import (
    KERNEL_DTYPES,
    NEG_BIG,
    aggregate_heads,
    check_head_agg,
    check_index,
    combine_splits,
    largest_divisor_at_most,
    launch_buffers,
    num_programs_target,
    pow2_at_least,
    upcast_dots,
)

__all__ = ["attention_evidence", "attention_evidence_ref", "attention_query_probs"]

_LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------- kernels
# Sizes and index strides are not specialised (one compile serves every sequence length);
# the head dim and the activation strides are, so that loads along d stay vectorised.
@triton.jit(do_not_specialize=["Q", "L", "REP", "N_ROW_BLOCKS", "N_KV", "KEYS_PER_SPLIT", "N_SPLIT", "s_ib", "s_iq"])
def _attention_evidence_lse_kernel(
    q_ptr, k_ptr, qidx_ptr, m_ptr, l_ptr,
    Q, L, D, REP, N_ROW_BLOCKS, N_KV, KEYS_PER_SPLIT, N_SPLIT,
    s_qb, s_qh, s_qq, s_qd,
    s_kb, s_kh, s_kl, s_kd,
    s_ib, s_iq,
    qk_scale,
    NEG_INIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """Partial softmax statistics of one block of (head, query) rows over one key split.

    Rows are the ``REP · Q`` (head-in-group, query) pairs of kv head ``kvh``, row
    ``r → (h = kvh·REP + r // Q, q = r % Q)``. Writes ``m`` (running max of the log2-scaled
    logits, ``NEG_INIT`` if the split holds no visible key) and ``l = Σ exp2(s − m)`` at
    ``[(b·H + h)·Q + q, split]``.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    rb = pid % N_ROW_BLOCKS
    bk = (pid // N_ROW_BLOCKS).to(tl.int64)  # int64: b·stride overflows int32 at L = 65k, b ≥ 32
    kvh = bk % N_KV
    b = bk // N_KV

    rows = rb * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < REP * Q
    qi = rows % Q
    h = kvh * REP + rows // Q
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D

    qpos = tl.load(qidx_ptr + b * s_ib + qi * s_iq, mask=row_ok, other=-1)
    qt = tl.load(
        q_ptr + b * s_qb + h[:, None] * s_qh + qi[:, None] * s_qq + offs_d[None, :] * s_qd,
        mask=row_ok[:, None] & d_ok[None, :], other=0.0,
    )
    if UPCAST:
        qt = qt.to(tl.float32)

    k_lo = split * KEYS_PER_SPLIT
    # Causal: no row of this block sees a key past its largest position.
    k_hi = tl.minimum(tl.minimum(k_lo + KEYS_PER_SPLIT, L), tl.max(qpos, axis=0) + 1)
    k_base = k_ptr + b * s_kb + kvh * s_kh

    m_i = tl.full([BLOCK_M], NEG_INIT, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for start in range(k_lo, k_hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < k_hi
        kt = tl.load(k_base + cols[None, :] * s_kl + offs_d[:, None] * s_kd,
                     mask=col_ok[None, :] & d_ok[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        s = tl.dot(qt, kt, input_precision=PRECISION) * qk_scale
        visible = col_ok[None, :] & (cols[None, :] <= qpos[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(p, axis=1)
        m_i = m_new

    dst = ((b * N_KV * REP + h) * Q + qi) * N_SPLIT + split
    tl.store(m_ptr + dst, m_i, mask=row_ok)
    tl.store(l_ptr + dst, l_i, mask=row_ok)


@triton.jit(do_not_specialize=["N_ROWS", "N_SPLIT"])
def _attention_evidence_lse_combine_kernel(
    m_ptr, l_ptr, lse_ptr, N_ROWS, N_SPLIT,
    NEG_INIT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """``lse[r] = log2 Σ_split l · exp2(m)`` for ``BLOCK_R`` rows (``-inf`` if no key is visible)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N_ROWS
    m_run = tl.full([BLOCK_R], NEG_INIT, tl.float32)
    l_run = tl.zeros([BLOCK_R], tl.float32)
    for s0 in range(0, N_SPLIT, BLOCK_S):
        sp = s0 + tl.arange(0, BLOCK_S)
        ok = row_ok[:, None] & (sp[None, :] < N_SPLIT)
        src = rows[:, None] * N_SPLIT + sp[None, :]
        m = tl.load(m_ptr + src, mask=ok, other=NEG_INIT)
        l = tl.load(l_ptr + src, mask=ok, other=0.0)
        m_new = tl.maximum(m_run, tl.max(m, axis=1))
        l_run = l_run * tl.exp2(m_run - m_new) + tl.sum(l * tl.exp2(m - m_new[:, None]), axis=1)
        m_run = m_new
    seen = l_run > 0.0
    lse = tl.where(seen, m_run + tl.log2(tl.where(seen, l_run, 1.0)), float("-inf"))
    tl.store(lse_ptr + rows, lse, mask=row_ok)


@triton.jit(do_not_specialize=["H", "Q", "V", "REP", "KV_PER_SPLIT", "s_ib", "s_iq", "s_vb", "s_vv",
                               "s_mb", "s_mq", "s_os", "s_ob"])
def _attention_evidence_colsum_kernel(
    q_ptr, k_ptr, qidx_ptr, vidx_ptr, valid_ptr, lse_ptr, out_ptr,
    H, Q, V, D, REP, KV_PER_SPLIT,
    s_qb, s_qh, s_qq, s_qd,
    s_kb, s_kh, s_kl, s_kd,
    s_ib, s_iq,
    s_vb, s_vv,
    s_mb, s_mq,
    s_os, s_ob, s_ov,
    qk_scale, out_scale,
    HAS_VALID: tl.constexpr, AGG_MAX: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """Column mass of ``BLOCK_V`` visual tokens, aggregated over the heads of one kv-head split.

    For head ``h`` and visual column ``v`` at position ``p_v``:
    ``col_h(v) = Σ_{q valid, p_v ≤ t_q} exp2(s[h,q,v] − lse[h,q])``; the program writes
    ``out_scale · Σ_h col_h`` (mean; ``out_scale = 1/H``) or ``max_h col_h`` (max).
    """
    pid_v = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # int64: b·stride overflows int32 at L = 65k, b ≥ 32
    hsplit = tl.program_id(2)

    vcols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    v_ok = vcols < V
    vpos = tl.load(vidx_ptr + b * s_vb + vcols * s_vv, mask=v_ok, other=0)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D

    acc = tl.zeros([BLOCK_V], tl.float32)
    kv0 = hsplit * KV_PER_SPLIT
    for kvh in range(kv0, kv0 + KV_PER_SPLIT):
        kt = tl.load(k_ptr + b * s_kb + kvh * s_kh + vpos[None, :] * s_kl + offs_d[:, None] * s_kd,
                     mask=v_ok[None, :] & d_ok[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        for hl in range(0, REP):
            h = kvh * REP + hl
            col = tl.zeros([BLOCK_V], tl.float32)
            for q0 in range(0, Q, BLOCK_Q):
                qi = q0 + tl.arange(0, BLOCK_Q)
                q_ok = qi < Q
                qpos = tl.load(qidx_ptr + b * s_ib + qi * s_iq, mask=q_ok, other=-1)
                use = q_ok
                if HAS_VALID:
                    use = use & (tl.load(valid_ptr + b * s_mb + qi * s_mq, mask=q_ok, other=0) != 0)
                lse = tl.load(lse_ptr + (b * H + h) * Q + qi, mask=q_ok, other=0.0)
                qt = tl.load(q_ptr + b * s_qb + h * s_qh + qi[:, None] * s_qq + offs_d[None, :] * s_qd,
                             mask=q_ok[:, None] & d_ok[None, :], other=0.0)
                if UPCAST:
                    qt = qt.to(tl.float32)
                s = tl.dot(qt, kt, input_precision=PRECISION) * qk_scale
                keep = use[:, None] & (vpos[None, :] <= qpos[:, None])
                p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)
                col += tl.sum(p, axis=0)
            if AGG_MAX:
                acc = tl.maximum(acc, col)
            else:
                acc += col
    if not AGG_MAX:
        acc = acc * out_scale
    tl.store(out_ptr + hsplit * s_os + b * s_ob + vcols * s_ov, acc, mask=v_ok)


# ---------------------------------------------------------------------------- launcher
def _attention_evidence(
    q: torch.Tensor,
    k: torch.Tensor,
    query_index: torch.Tensor,
    visual_index: torch.Tensor,
    *,
    scaling: float,
    head_agg: str = "mean",
    query_valid: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    precision: str | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    block_q: int | None = None,
    block_v: int | None = None,
    key_splits: int | None = None,
    head_splits: int | None = None,
    num_warps_lse: int | None = None,
    num_warps_col: int | None = None,
    num_stages_lse: int | None = None,
    num_stages_col: int | None = None,
) -> torch.Tensor:
    """Launch the three kernels; ``out (b, V)`` fp32, written in full (allocated if None).

    Tuning knobs (None = default): block sizes, ``key_splits`` (splits of the key axis in
    pass 1), ``head_splits`` (kv-head splits in pass 3, must divide Hkv), warps, stages,
    ``precision`` of fp32 dots (``"ieee"``, ``"tf32x3"``, ``"tf32"``).

    Defaults were chosen from ptxas's resource report for sm_90a (Triton 3.9, no GPU run yet):
    the largest tiles that compile without register spills. fp32 "ieee" dots run on the FMA
    units and hold both operand tiles in registers, hence the small fp32 tiles.
    """
    agg_max = check_head_agg(head_agg)
    if q.dim() != 4 or k.dim() != 4:
        raise ReductionInputError(f"q must be (b, H, Q, d) and k (b, Hkv, L, d); got {tuple(q.shape)}, {tuple(k.shape)}")
    b, H, Qn, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    if k.shape[0] != b or k.shape[3] != D:
        raise ReductionInputError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head dim")
    if Hkv == 0 or H % Hkv:
        raise ReductionInputError(f"{H} query heads are not a multiple of {Hkv} key/value heads")
    if q.dtype != k.dtype or q.dtype not in KERNEL_DTYPES:
        raise ReductionInputError(f"q and k must share a dtype in {KERNEL_DTYPES}, got {q.dtype}, {k.dtype}")
    if k.device != q.device:
        raise ReductionInputError(f"q is on {q.device}, k on {k.device}")
    device = q.device
    check_index("query_index", query_index, b, device)
    check_index("visual_index", visual_index, b, device)
    if query_index.shape[1] != Qn:
        raise ReductionInputError(f"query_index has {query_index.shape[1]} rows, q has {Qn}")
    V = visual_index.shape[1]
    valid, out, done = launch_buffers(query_valid, out, b, Qn, V, L, device)
    if done:
        return out

    rep = H // Hkv
    is16 = q.dtype != torch.float32
    # input_precision only matters for fp32 operands; "tf32" (Triton's default) for 16-bit ones
    # keeps them on the tensor cores.
    precision = precision or ("tf32" if is16 else "ieee")
    upcast = upcast_dots(q.dtype)
    block_d = pow2_at_least(D)
    target = num_programs_target(device)
    qk_scale = float(scaling) * _LOG2E

    # Pass 1: softmax statistics with the key axis split.
    rows_per_kv = rep * Qn
    block_m = block_m or (128 if is16 else 32)
    block_m = min(block_m, pow2_at_least(rows_per_kv))
    block_n = block_n or 64
    n_row_blocks = triton.cdiv(rows_per_kv, block_m)
    base = b * Hkv * n_row_blocks
    n_key_blocks = triton.cdiv(L, block_n)
    n_split = key_splits or max(1, min(n_key_blocks, triton.cdiv(target, base)))
    n_split = max(1, min(int(n_split), n_key_blocks))
    keys_per_split = triton.cdiv(n_key_blocks, n_split) * block_n
    n_split = triton.cdiv(L, keys_per_split)
    m_part = torch.empty(b * H * Qn * n_split, dtype=torch.float32, device=device)
    l_part = torch.empty_like(m_part)
    _attention_evidence_lse_kernel[(base, n_split)](
        q, k, query_index, m_part, l_part,
        Qn, L, D, rep, n_row_blocks, Hkv, keys_per_split, n_split,
        *q.stride(), *k.stride(), *query_index.stride(),
        qk_scale,
        NEG_INIT=NEG_BIG, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        PRECISION=precision, UPCAST=upcast,
        num_warps=num_warps_lse or 8, num_stages=num_stages_lse or (3 if is16 else 2),
    )

    # Pass 2: merge the splits.
    n_rows = b * H * Qn
    lse = torch.empty(n_rows, dtype=torch.float32, device=device)
    block_r = 64
    _attention_evidence_lse_combine_kernel[(triton.cdiv(n_rows, block_r),)](
        m_part, l_part, lse, n_rows, n_split,
        NEG_INIT=NEG_BIG, BLOCK_R=block_r, BLOCK_S=16,  # fixed: one compile for every split count
        num_warps=4,
    )

    # Pass 3: column mass at the visual tokens, heads aggregated in registers.
    block_q = min(block_q or 64, pow2_at_least(Qn))
    # Every visual block re-reads all H·Q query rows (from L2): wider blocks, fewer re-reads.
    block_v = block_v or (128 if is16 else 32)
    n_vblocks = triton.cdiv(V, block_v)
    if head_splits is None:
        head_splits = largest_divisor_at_most(Hkv, triton.cdiv(target, b * n_vblocks))
    elif Hkv % head_splits:
        raise ReductionInputError(f"head_splits={head_splits} does not divide {Hkv} kv heads")
    dst = out[None] if head_splits == 1 else torch.empty(head_splits, b, V, dtype=torch.float32, device=device)
    valid_arg = valid if valid is not None else query_index  # never read when HAS_VALID is False
    valid_strides = valid.stride() if valid is not None else (0, 0)
    _attention_evidence_colsum_kernel[(n_vblocks, b, head_splits)](
        q, k, query_index, visual_index, valid_arg, lse, dst,
        H, Qn, V, D, rep, Hkv // head_splits,
        *q.stride(), *k.stride(), *query_index.stride(), *visual_index.stride(), *valid_strides,
        *dst.stride(),
        qk_scale, 1.0 / H,
        HAS_VALID=valid is not None, AGG_MAX=agg_max,
        BLOCK_Q=block_q, BLOCK_V=block_v, BLOCK_D=block_d,
        PRECISION=precision, UPCAST=upcast,
        num_warps=num_warps_col or 8, num_stages=num_stages_col or (3 if is16 else 1),
    )
    if head_splits > 1:
        combine_splits(dst, out, agg_max)
    return out


# ------------------------------------------------------------------------------ public
def attention_evidence(
    q: torch.Tensor,
    k: torch.Tensor,
    query_index: torch.Tensor,
    visual_index: torch.Tensor,
    *,
    scaling: float,
    head_agg: str = "mean",
    query_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``e(v) = agg_h Σ_{q∈Q} softmax_k(q_h·k_{h}·scaling)[q, v]``: ``(b, V)`` fp32.

    - ``q (b, H, Q, d)``: query rows after RoPE (any strides); ``k (b, Hkv, L, d)``: all keys,
      ``H`` a multiple of ``Hkv`` (GQA: head ``h`` reads kv head ``h // (H/Hkv)``);
    - ``query_index (b, Q)``: current positions of the query rows (row ``t`` sees keys ``0..t``);
    - ``visual_index (b, V)``: positions of the visual tokens;
    - ``query_valid (b, Q)`` bool or None: rows marked False add nothing;
    - ``head_agg``: ``"mean"`` or ``"max"`` over the ``H`` heads.

    Same function as :func:`attention_evidence_ref` without ``key_valid`` (every key is a real
    token). Raises :class:`~autoprune.errors.ReductionInputError` on inconsistent shapes or
    arguments, and for a dtype the kernels do not take (fp32/bf16/fp16 only: float64 is the
    reference's, see :func:`autoprune.kernels.dispatch.attention_evidence`).
    """
    return _attention_evidence(q, k, query_index, visual_index, scaling=scaling, head_agg=head_agg,
                               query_valid=query_valid)


# --------------------------------------------------------------------------- reference
def attention_query_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    query_index: torch.Tensor,
    *,
    scaling: float,
    key_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention rows of the query tokens over all keys: ``(b, H, Q, L)`` fp32.

    Causal: query at current index ``t`` sees keys ``0..t``. ``key_valid (b, L)`` masks
    padding. Equals what eager attention returns for those rows (tested).
    """
    b, H, Qn, d = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    if H % Hkv:
        raise ReductionInputError(f"{H} query heads are not a multiple of {Hkv} key/value heads")
    kk = k.float().repeat_interleave(H // Hkv, dim=1)
    logits = torch.matmul(q.float(), kk.transpose(-1, -2)) * scaling
    allowed = torch.arange(L, device=q.device)[None, None, :] <= query_index[:, :, None]
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, :].bool()
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    return torch.softmax(logits, dim=-1)


def attention_evidence_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    query_index: torch.Tensor,
    visual_index: torch.Tensor,
    *,
    scaling: float,
    head_agg: str = "mean",
    key_valid: torch.Tensor | None = None,
    query_valid: torch.Tensor | None = None,
    heads_per_chunk: int = 8,
) -> torch.Tensor:
    """``e(v) = agg_h Σ_{q∈Q} softmax(q·k/√d)[h, q, v]``: ``(b, V)`` fp32 (pure torch).

    Same arguments as :func:`attention_evidence`, plus ``key_valid (b, L)`` (padding keys);
    any floating dtype (logits and softmax in fp32). Heads are processed in chunks so that
    memory is ``O(b · chunk · Q · L)``.
    """
    b, H = q.shape[:2]
    Hkv = k.shape[1]
    rep = H // Hkv
    per_head = []
    for h0 in range(0, H, heads_per_chunk):
        h1 = min(H, h0 + heads_per_chunk)
        kv0, kv1 = h0 // rep, (h1 - 1) // rep + 1
        kk = k[:, kv0:kv1].repeat_interleave(rep, dim=1)[:, h0 - kv0 * rep : h1 - kv0 * rep]
        p = attention_query_probs(q[:, h0:h1], kk, query_index, scaling=scaling, key_valid=key_valid)
        if query_valid is not None:
            p = p * query_valid[:, None, :, None].to(p.dtype)
        cols = p.sum(dim=2)  # (b, h, L)
        per_head.append(torch.gather(cols, 2, visual_index[:, None, :].expand(-1, h1 - h0, -1)))
    ev = torch.cat(per_head, dim=1)  # (b, H, V)
    return aggregate_heads(ev, head_agg)
