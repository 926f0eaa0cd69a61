"""Gated DeltaNet evidence: what a gated delta-rule layer's query rows draw from each visual token.

The layer (Qwen3.5, Qwen3-Next; transformers ``*GatedDeltaNet``) runs, per value head ``h``
(key head ``h // (Hv/Hk)``), with a state ``S_t ∈ R^{dk×dv}``::

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,        o_t = S_tᵀ q_t

where ``q_t, k_t`` are the conv + SiLU outputs, L2-normalised, ``q_t`` also scaled by
``dk^{-1/2}``; ``β_t = sigmoid(b_t)``; ``α_t = exp(g_t)``, ``g_t = −exp(A_log)·softplus(a_t + dt_bias)``.
(transformers writes the same update as ``S ← α S; δ = β(v − Sᵀk); S ← S + k δᵀ``; the brief's
``S_{t-1}·α_t(I − β_t k_t k_tᵀ)`` is the transposed ``dv×dk`` state.)

**Exact form.** Write ``A_r = α_r (I − β_r k_r k_rᵀ)``. Unrolling from ``S_0 = 0``,
``S_t = Σ_{s≤t} A_t ⋯ A_{s+1} β_s k_s v_sᵀ``, so ``o_t = Σ_{s≤t} w[t,s] v_s`` with the scalar

    w[t, s] = β_s · exp(G_t − G_s) · k_sᵀ P_{s+1..t} q_t,     P_{s+1..t} = (I − β_{s+1} k_{s+1} k_{s+1}ᵀ) ⋯ (I − β_t k_t k_tᵀ)

(``G_t = Σ_{r≤t} g_r``; each ``I − βkkᵀ`` is symmetric, so the transposed product is the same
product in reverse order; the scalar gates commute out of it). ``w[t, s]`` is what the
recurrence attributes to source token ``s`` at row ``t``, exactly: the oracle test rebuilds the
layer's own output from it (``Σ_s w[t,s] v_s``). Evidence is ``e(v) = agg_h Σ_{t∈Q} |w^h[t, v]|``.

**Computing it for query rows.** Backwards from each query row ``t``: ``u ← q_t``; at each
earlier position ``r``: ``d_r = k_r·u``, ``w[t, r] = β_r d_r`` (before decay), ``u ← u − β_r k_r d_r``.
Rows join the scan at their own position (a row with ``u = 0`` contributes nothing), the decay
factorises at ``q0 = min Q`` as ``exp(G_t − G_s) = exp(λ_t)·exp(λ_s)`` (both ≤ 0) and scales
``u`` at injection. Over the span before every query row the scan runs by chunks of ``C``:
with ``u`` arriving at the chunk's end, ``d = (I + M)^{-1} K u`` with ``M[s, r] = β_r k_s·k_r`` for
``r > s`` (a unit upper-triangular solve) and ``u ← u − Kᵀ(β ⊙ d)`` — the WY form of the chunk's
product, the same solve transformers' chunked kernel does forwards. Cost: ``O(L·Q·dk)`` per head
and ``L/C`` sequential chunk steps (``delta_correction=True``): the torch scan
:func:`gated_deltanet_exact_evidence`, and on CUDA :mod:`autoprune.kernels.deltanet_exact_evidence`
(Triton: every chunk's solve in parallel, then the scan in one launch).

**Proxies** (switches the search tunes, :class:`~autoprune.schedule.ScorerConfig`):

- ``delta_correction=False``: every ``I − βkkᵀ`` replaced by ``I`` — gated linear attention,
  ``w̃[t, s] = β_s (q_t·k_s)`` times ``exp(G_t − G_s)`` when ``mamba_decay`` is on (the
  recurrent-mixer decay switch, shared with Mamba), decay-free otherwise. One dot per (query,
  visual) pair: :mod:`autoprune.kernels.deltanet_evidence` (Triton, beside its torch reference).
- ``delta_correction=True``: the products kept; with decay this is the exact form, without it the
  exact form of the ungated delta rule (``α ≡ 1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ReductionInputError
from .kernels import dispatch
from .kernels.deltanet_exact_evidence import deltanet_exact_evidence_ref

__all__ = [
    "gated_deltanet_alpha",
    "gated_deltanet_evidence",
    "gated_deltanet_exact_evidence",
    "gated_deltanet_inputs",
    "l2norm",
    "log_decay_from_q0",
]


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(Σ x² + eps)`` over the last axis (transformers' and FLA's ``l2norm``)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def _rsqrt_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``rsqrt(Σ x² + eps)`` over the last axis in fp32, read from 16-bit ``x`` without an fp32 copy."""
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    return torch.rsqrt(n * n + eps)


def _heads(q: torch.Tensor, beta: torch.Tensor) -> int:
    Hk, Hv = q.shape[2], beta.shape[2]
    if Hv % Hk:
        raise ReductionInputError(f"{Hv} value heads are not a multiple of {Hk} key heads")
    return Hv // Hk


def gated_deltanet_inputs(parts, captured: tuple, valid: torch.Tensor | None = None,
                          use_kernels: bool | None = None, rows: torch.Tensor | None = None):
    """``q, k (b, L, Hk, dk)`` as the recurrence consumes them, ``beta, g (b, L, Hv)``.

    ``captured``: the outputs of ``parts.projections`` in order; ``parts.split(captured)``
    gives the pre-conv ``[q | k]`` channels ``(b, L, 2·Hk·dk)`` and the raw ``b``, ``a``. The conv
    is recomputed on those channels only. ``q`` and ``k`` keep the conv weight's dtype before the
    L2 norm, as in the layer, which normalises in fp32 (float64 stays float64); they are returned in
    the activations' dtype when that is 16-bit, else fp32. ``q`` carries ``dk^{-1/2}``; ``beta``, ``g`` fp32.

    ``rows (b, R)``: the only positions where ``q`` is read (the query rows); ``q`` is then
    computed there alone and is 0 elsewhere. The evidence reads ``q`` at the query rows only, so
    this skips normalising ``q`` over the whole sequence.
    """
    qk, b_raw, a_raw = parts.split(captured)
    Hk, dk = parts.num_k_heads, parts.head_k_dim
    w = parts.conv_weight[: 2 * Hk * dk]
    bias = None if parts.conv_bias is None else parts.conv_bias[: 2 * Hk * dk]
    out = dispatch.causal_conv1d_act(qk, w, bias, "silu", use_kernels=use_kernels)
    f = torch.float64 if qk.dtype == torch.float64 else torch.float32
    if valid is not None:
        out = out * valid[..., None].to(out.dtype)
    bsz, n, _ = out.shape
    sixteen = qk.dtype in (torch.bfloat16, torch.float16)
    kx = out[..., Hk * dk:].reshape(bsz, n, Hk, dk)
    if sixteen:
        # normalised in fp32 as the layer does, stored in the activations' dtype (the proxy
        # kernel's dots run on the tensor cores; a ranking needs no more precision) — in one
        # pass: the product is computed in fp32 and rounded as it is written.
        k = torch.empty_like(kx)
        torch.mul(kx, _rsqrt_norm(kx), out=k)
    else:
        k = l2norm(kx.to(f))
    if rows is None:
        q = l2norm(out[..., : Hk * dk].reshape(bsz, n, Hk, dk).to(f)) * dk ** -0.5
        if sixteen:
            q = q.to(qk.dtype)
    else:
        qr = torch.gather(out[..., : Hk * dk], 1, rows[..., None].expand(-1, -1, Hk * dk))
        qr = (l2norm(qr.reshape(bsz, -1, Hk, dk).to(f)) * dk ** -0.5).to(k.dtype)
        q = torch.zeros_like(k)
        q.scatter_(1, rows[:, :, None, None].expand(-1, -1, Hk, dk), qr)
    beta = torch.sigmoid(b_raw.to(f))
    g = -torch.exp(parts.A_log.to(f)) * F.softplus(a_raw.to(f) + parts.dt_bias.to(f))
    return q, k, beta, g


def log_decay_from_q0(g: torch.Tensor, query_index: torch.Tensor) -> torch.Tensor:
    """``λ (b, L, H)``: log-decay between each position and ``q0 = min Q`` of its row, ≤ 0.

    ``λ_s = Σ_{r=s+1..q0} g_r`` (``s ≤ q0``) and ``λ_t = Σ_{r=q0+1..t} g_r`` (``t > q0``), each a
    cumulative sum that starts at ``q0`` (so it keeps relative precision far from the start),
    and ``exp(G_t − G_s) = exp(λ_t + λ_s)`` for ``s ≤ q0 ≤ t``.
    """
    b, L, H = g.shape
    # The sums run along the last axis, (b, H, L): on CUDA a cumulative sum over a middle axis of
    # few columns is one thread per column stepping through L (milliseconds at 16k tokens).
    gt = g.transpose(1, 2)
    q0 = query_index.min(dim=1).values  # (b,)
    pos = torch.arange(L, device=g.device)[None, None, :]
    after = pos > q0[:, None, None]
    fwd = torch.cumsum(torch.where(after, gt, torch.zeros_like(gt)), dim=-1)
    # backwards: terms strictly after s up to q0 inclusive
    upto = (pos <= q0[:, None, None]) & (pos > 0)
    gb = torch.where(upto, gt, torch.zeros_like(gt))
    rev = torch.flip(torch.cumsum(torch.flip(gb, [-1]), dim=-1), [-1])  # Σ_{r ≥ s} gb_r
    back = rev - gb  # Σ_{r > s}
    return torch.where(after, fwd, back).clamp_max(0.0).transpose(1, 2).contiguous()


def gated_deltanet_alpha(q, k, beta, g, rows: torch.Tensor, *, decay: bool = True,
                         correction: bool = True) -> torch.Tensor:
    """``w^h[t, s]`` for ``t`` in ``rows (b, R)`` and every ``s``: ``(b, Hv, R, L)`` (0 for ``s > t``).

    The exact form (``decay``, ``correction``) or a proxy (see the module docstring), by a plain
    backward scan over every position: a reference for tests (materialises ``R × L``).
    """
    b, L, Hk, dk = k.shape
    hpg = _heads(q, beta)
    Hv = beta.shape[2]
    qh = q.repeat_interleave(hpg, dim=2).transpose(1, 2)  # (b, Hv, L, dk)
    kh = k.repeat_interleave(hpg, dim=2).transpose(1, 2)
    be = beta.transpose(1, 2)  # (b, Hv, L)
    R = rows.shape[1]
    qr = torch.gather(qh, 2, rows[:, None, :, None].expand(-1, Hv, -1, dk))  # (b, Hv, R, dk)
    w = torch.zeros(b, Hv, R, L, dtype=qh.dtype, device=qh.device)
    U = torch.zeros_like(qr)
    for r in range(L - 1, -1, -1):
        start = (rows == r)[:, None, :, None]
        U = torch.where(start, qr, U)
        kr = kh[:, :, r]  # (b, Hv, dk)
        d = (U * kr[:, :, None, :]).sum(-1)  # (b, Hv, R)
        w[..., r] = be[:, :, r, None] * d
        if correction:
            U = U - (be[:, :, r, None] * d)[..., None] * kr[:, :, None, :]
    if decay:
        G = torch.cumsum(g.transpose(1, 2), dim=-1)  # (b, Hv, L)
        Gt = torch.gather(G, 2, rows[:, None, :].expand(-1, Hv, -1))
        expo = Gt[..., None] - G[:, :, None, :]
        causal = torch.arange(L, device=q.device)[None, None, None, :] <= rows[:, None, :, None]
        w = w * torch.exp(expo.masked_fill(~causal, 0.0))
    return w


def gated_deltanet_exact_evidence(q, k, beta, g, query_index, visual_index, *, decay: bool = True,
                                  head_agg: str = "mean", query_valid=None, chunk: int = 64) -> torch.Tensor:
    """``e(v) = agg_h Σ_{t∈Q} |w^h[t, v]|`` with the delta-rule products kept (``delta_correction``), in torch.

    Shapes as :func:`gated_deltanet_evidence`; the scan of the module docstring: sequential over
    the query span, chunked (``chunk``) over the positions before every row's first query token
    (:func:`autoprune.kernels.deltanet_exact_evidence.deltanet_exact_evidence_ref`, whatever the
    device; :func:`gated_deltanet_evidence` is the entry that runs the Triton kernel on CUDA).
    Returns ``(b, V)`` fp32 (float64 for float64 inputs).
    """
    f = torch.float64 if q.dtype == torch.float64 else torch.float32
    lam = log_decay_from_q0(g.to(f), query_index) if decay else None
    return deltanet_exact_evidence_ref(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                       query_valid=query_valid, chunk=chunk)


def gated_deltanet_evidence(q, k, beta, g, query_index, visual_index, *, decay: bool = False,
                            correction: bool = False, head_agg: str = "mean", query_valid=None,
                            use_kernels: bool | None = None) -> torch.Tensor:
    """``e(v) = agg_h Σ_{t∈Q} |w^h[t, v]|`` for visual tokens before every query row: ``(b, V)``.

    - ``q, k (b, L, Hk, dk)``: as the recurrence consumes them (:func:`gated_deltanet_inputs`);
    - ``beta, g (b, L, Hv)``: write strength in (0, 1) and log-decay ≤ 0; value head ``h`` reads
      key head ``h // (Hv/Hk)``;
    - ``decay``: keep ``exp(G_t − G_s)``; ``correction``: keep the delta rule's ``I − βkkᵀ``
      products (both: the exact form);
    - ``query_valid (b, Q)`` or None: rows marked False add nothing.

    The Triton kernel or its torch reference as :func:`autoprune.kernels.dispatch.deltanet_evidence`
    (without ``correction``) or :func:`~autoprune.kernels.dispatch.deltanet_exact_evidence` (with it)
    picks them.
    """
    lam = log_decay_from_q0(g.float() if g.dtype != torch.float64 else g, query_index) if decay else None
    if correction:
        return dispatch.deltanet_exact_evidence(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                                query_valid=query_valid, use_kernels=use_kernels)
    return dispatch.deltanet_evidence(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                      query_valid=query_valid, use_kernels=use_kernels)
