"""Language-aware evidence: how much the query rows draw on each visual token.

All functions take *current-sequence* indices (after earlier reductions) and
compute only query rows: nothing of shape (L × L) is ever built, except in the
``*_alpha`` functions, which exist to check the method against a mixer's own
output on small inputs.

Shapes (``b`` batch, ``L`` current length, ``Q`` query rows, ``V`` visual tokens):

- attention: ``q (b, H, Q, d)`` query rows after RoPE, ``k (b, Hkv, L, d)`` all keys;
- Mamba2/SSD: ``B, C (b, L, G, N)`` after conv + activation, ``dt (b, L, H)`` after
  ``softplus(dt + dt_bias)`` and the mixer's clipping, ``A (H,)`` negative;
- Mamba1: ``B, C (b, L, N)``, ``dt (b, L, D)``, ``A (D, N)`` negative.

Evidence returned is ``(b, V)``, non-negative, aggregated over heads; callers
normalise it with :func:`normalise`.
"""

from __future__ import annotations

import torch

from .errors import ReductionInputError

__all__ = [
    "attention_query_probs",
    "attention_evidence",
    "attention_evidence_torch",
    "mamba2_alpha",
    "mamba2_evidence",
    "mamba2_evidence_torch",
    "mamba1_alpha",
    "mamba1_evidence",
    "normalise",
    "ImportanceState",
    "select_topk",
    "select_uniform_stride",
    "select_random",
]


# --------------------------------------------------------------------- attention
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


def attention_evidence_torch(
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
    """``e(v) = agg_h Σ_{q∈Q} softmax(q·k/√d)[h, q, v]``: ``(b, V)`` fp32.

    Heads are processed in chunks so that memory is ``O(b · chunk · Q · L)``.
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
    return _aggregate_heads(ev, head_agg)


def attention_evidence(q, k, query_index, visual_index, *, scaling, head_agg="mean", key_valid=None,
                       query_valid=None, use_kernels: bool | None = None) -> torch.Tensor:
    """Attention evidence; uses the Triton kernel on CUDA when available (see ``autoprune.kernels``)."""
    if _want_kernels(q, use_kernels) and key_valid is None:
        from .kernels import attention_evidence as kernel

        return kernel(q, k, query_index, visual_index, scaling=scaling, head_agg=head_agg,
                      query_valid=query_valid)
    return attention_evidence_torch(q, k, query_index, visual_index, scaling=scaling, head_agg=head_agg,
                                    key_valid=key_valid, query_valid=query_valid)


def _aggregate_heads(ev: torch.Tensor, head_agg: str) -> torch.Tensor:
    if head_agg == "mean":
        return ev.mean(dim=1)
    if head_agg == "max":
        return ev.amax(dim=1)
    raise ReductionInputError(f"head_agg must be 'mean' or 'max', got {head_agg!r}")


def _want_kernels(t: torch.Tensor, use_kernels: bool | None) -> bool:
    """Kernels on CUDA; by default only for 16-bit activations: with fp32 operands the
    kernels use exact (non-tf32) dots and are slower than torch's tf32 matmuls (measured on
    an H100: attention evidence 2.7 ms vs 1.2 ms at 16k tokens; bf16: 0.12 ms vs 1.4 ms)."""
    if use_kernels is False or not t.is_cuda:
        return False
    if use_kernels is None and t.dtype not in (torch.bfloat16, torch.float16):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        if use_kernels:
            raise ReductionInputError("use_kernels=True but triton is not installed (pip install triton)") from None
        return False
    return True


# ------------------------------------------------------------------ Mamba2 / SSD
def _heads_per_group(B: torch.Tensor, dt: torch.Tensor) -> int:
    G, H = B.shape[2], dt.shape[2]
    if H % G:
        raise ReductionInputError(f"{H} Mamba heads are not a multiple of {G} groups")
    return H // G


def mamba2_alpha(B, C, dt, A, rows: torch.Tensor, *, decay: bool = True) -> torch.Tensor:
    """Implicit attention rows ``α^h[t, s]`` for ``t`` in ``rows (b, R)``: ``(b, H, R, L)``.

    ``α^h[t,s] = (C_t·B_s) · exp(Σ_{k=s+1..t} Δ_k A_h) · Δ_s`` for ``s ≤ t`` else 0;
    without decay the exponential is dropped. Reference for tests (materialises R × L).
    """
    b, L, G, N = B.shape
    H = dt.shape[2]
    hpg = _heads_per_group(B, dt)
    Ct = torch.gather(C, 1, rows[:, :, None, None].expand(-1, -1, G, N))  # (b, R, G, N)
    Gm = torch.einsum("brgn,bsgn->bgrs", Ct, B)  # (b, G, R, L)
    Gm = Gm.repeat_interleave(hpg, dim=1)  # (b, H, R, L)
    dts = dt.permute(0, 2, 1)  # (b, H, L)
    alpha = Gm * dts[:, :, None, :]
    pos = torch.arange(L, device=B.device)
    causal = pos[None, None, :] <= rows[:, :, None]  # (b, R, L)
    if decay:
        cum = torch.cumsum(dts * A.to(dts.dtype)[None, :, None], dim=-1)  # (b, H, L)
        cum_t = torch.gather(cum, 2, rows[:, None, :].expand(-1, H, -1))  # (b, H, R)
        expo = cum_t[:, :, :, None] - cum[:, :, None, :]
        expo = expo.masked_fill(~causal[:, None], float("-inf"))
        alpha = alpha * torch.exp(expo)
    return alpha.masked_fill(~causal[:, None], 0.0)


def mamba2_evidence_torch(
    B, C, dt, A, query_index, visual_index, *, decay: bool = False, head_agg: str = "mean",
    query_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``e(v) = agg_h Σ_{t∈Q} |α^h[t, v]|`` for visual tokens before every query row: ``(b, V)``.

    Exact, per query row (the ``|·|`` is taken per term), in ``O(G·Q·V·N + H·Q·V)``:
    for ``s < q0 = min Q ≤ t`` the decay factorises,
    ``exp(cum_t − cum_s) = exp(cum_t − cum_q0) · exp(cum_q0 − cum_s)`` (both exponents ≤ 0),
    so ``Σ_t |α[t,s]| = Δ_s e^{cum_q0 − cum_s} Σ_t |C_t·B_s| e^{cum_t − cum_q0}``.
    """
    b, L, G, N = B.shape
    H = dt.shape[2]
    hpg = _heads_per_group(B, dt)
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
    return _aggregate_heads(per_head.float() if f32 != torch.float64 else per_head, head_agg)


def mamba2_evidence(B, C, dt, A, query_index, visual_index, *, decay=False, head_agg="mean",
                    query_valid=None, use_kernels: bool | None = None) -> torch.Tensor:
    """Mamba2 evidence; uses the Triton kernel on CUDA when available (see ``autoprune.kernels``)."""
    if _want_kernels(B, use_kernels):
        from .kernels import mamba2_evidence as kernel

        return kernel(B, C, dt, A, query_index, visual_index, decay=decay, head_agg=head_agg,
                      query_valid=query_valid)
    return mamba2_evidence_torch(B, C, dt, A, query_index, visual_index, decay=decay, head_agg=head_agg,
                                 query_valid=query_valid)


# ------------------------------------------------------------------------ Mamba1
def mamba1_alpha(B, C, dt, A, rows: torch.Tensor, *, decay: bool = True) -> torch.Tensor:
    """Per-channel implicit attention ``α^d[t, s]`` for ``t`` in ``rows``: ``(b, D, R, L)``.

    ``α^d[t,s] = Σ_n C_{t,n} B_{s,n} Δ_{s,d} exp(A_{d,n}(cumΔ_{t,d} − cumΔ_{s,d}))`` (s ≤ t).
    """
    b, L, N = B.shape
    D = dt.shape[2]
    Ct = torch.gather(C, 1, rows[:, :, None].expand(-1, -1, N))  # (b, R, N)
    pos = torch.arange(L, device=B.device)
    causal = pos[None, None, :] <= rows[:, :, None]  # (b, R, L)
    if not decay:
        G = torch.einsum("brn,bsn->brs", Ct, B)
        alpha = G[:, None] * dt.permute(0, 2, 1)[:, :, None, :]
        return alpha.masked_fill(~causal[:, None], 0.0)
    cum = torch.cumsum(dt, dim=1)  # (b, L, D)
    cum_t = torch.gather(cum, 1, rows[:, :, None].expand(-1, -1, D))  # (b, R, D)
    diff = cum_t[:, :, None, :] - cum[:, None, :, :]  # (b, R, L, D)
    diff = diff.masked_fill(~causal[..., None], 0.0)
    expo = torch.exp(diff[..., None] * A[None, None, None])  # (b, R, L, D, N)
    alpha = torch.einsum("brn,bsn,brsdn->bdrs", Ct, B, expo) * dt.permute(0, 2, 1)[:, :, None, :]
    return alpha.masked_fill(~causal[:, None], 0.0)


def mamba1_evidence(B, C, dt, A, query_index, visual_index, *, decay=False, head_agg="mean",
                    query_valid=None, channels_per_chunk: int = 64) -> torch.Tensor:
    """``e(v) = agg_d Σ_{t∈Q} |α^d[t, v]|`` for visual tokens before every query row: ``(b, V)``.

    Uses the same factorisation at ``q0 = min Q`` as :func:`mamba2_evidence_torch`, per
    channel and state dimension; channels are processed in chunks.
    """
    b, L, N = B.shape
    D = dt.shape[2]
    f = torch.float64 if B.dtype == torch.float64 else torch.float32
    Cq = torch.gather(C, 1, query_index[:, :, None].expand(-1, -1, N)).to(f)
    Bv = torch.gather(B, 1, visual_index[:, :, None].expand(-1, -1, N)).to(f)
    dt = dt.to(f)
    dt_v = torch.gather(dt, 1, visual_index[:, :, None].expand(-1, -1, D))  # (b, V, D)
    qv = None if query_valid is None else query_valid.to(f)
    if not decay:
        P = torch.einsum("bqn,bvn->bqv", Cq, Bv).abs_()
        if qv is not None:
            P = P * qv[:, :, None]
        per_ch = P.sum(dim=1)[:, None, :] * dt_v.permute(0, 2, 1)  # (b, D, V)
        return _aggregate_heads(per_ch.to(torch.float32) if f != torch.float64 else per_ch, head_agg)
    cum = torch.cumsum(dt, dim=1)  # (b, L, D)
    q0 = query_index.min(dim=1, keepdim=True).values
    cum_q0 = torch.gather(cum, 1, q0[:, :, None].expand(-1, -1, D))  # (b, 1, D)
    cum_q = torch.gather(cum, 1, query_index[:, :, None].expand(-1, -1, D)) - cum_q0  # (b, Q, D) >= 0
    cum_v = cum_q0 - torch.gather(cum, 1, visual_index[:, :, None].expand(-1, -1, D))  # (b, V, D) >= 0
    Af = A.to(f)
    out = []
    for d0 in range(0, D, channels_per_chunk):
        d1 = min(D, d0 + channels_per_chunk)
        Cw = Cq[:, :, None, :] * torch.exp(cum_q[:, :, d0:d1, None] * Af[None, None, d0:d1])  # (b,Q,d,N)
        Bw = Bv[:, :, None, :] * torch.exp(cum_v[:, :, d0:d1, None] * Af[None, None, d0:d1])  # (b,V,d,N)
        a = torch.einsum("bqdn,bvdn->bdqv", Cw, Bw).abs_()
        if qv is not None:
            a = a * qv[:, None, :, None]
        out.append(a.sum(dim=2) * dt_v[:, :, d0:d1].permute(0, 2, 1))
    per_ch = torch.cat(out, dim=1)
    return _aggregate_heads(per_ch.to(torch.float32) if f != torch.float64 else per_ch, head_agg)


# ---------------------------------------------------------------- state & select
def normalise(e: torch.Tensor) -> torch.Tensor:
    """``ê = e / Σ_v e(v)`` per row; a row with zero mass stays zero."""
    s = e.sum(dim=-1, keepdim=True)
    return torch.where(s > 0, e / s.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))


def select_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(b, k)`` of the ``k`` highest scores, ties to the earlier position, ascending."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]
    return torch.sort(order, dim=-1).values


def select_uniform_stride(batch: int, n: int, k: int, device=None) -> torch.Tensor:
    """Query-agnostic: ``k`` evenly spaced indices among ``n`` (ascending), ``(b, k)``."""
    idx = torch.floor((torch.arange(k, device=device, dtype=torch.float64) + 0.5) * n / k).long()
    return idx.clamp_(0, n - 1)[None].expand(batch, -1).contiguous()


def select_random(batch: int, n: int, k: int, *, seed: int, device=None) -> torch.Tensor:
    """Query-agnostic: ``k`` random indices among ``n`` per row (seeded), ascending, ``(b, k)``."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.sort(torch.randperm(n, generator=g)[:k]).values for _ in range(batch)]
    return torch.stack(rows).to(device)


class ImportanceState:
    """Running importance ``S`` over the visual tokens still present, ``(b, n)`` fp32.

    ``update``: ``S ← normalise(β·S + (1−β)·w·ê)``. ``keep(k)`` keeps the top-``k`` by ``S``
    (ties: earlier position), returns their indices among the present tokens (ascending),
    and drops the others' entries.
    """

    def __init__(self, batch: int, num_visual: int, *, momentum: float, device=None):
        self.momentum = float(momentum)
        self.scores = torch.zeros(batch, num_visual, dtype=torch.float32, device=device)
        self.updates = 0

    def update(self, evidence: torch.Tensor, weight: float = 1.0) -> None:
        if evidence.shape != self.scores.shape:
            raise ReductionInputError(
                f"evidence has shape {tuple(evidence.shape)}, importance state {tuple(self.scores.shape)}"
            )
        # A non-finite entry (overflowing activations) counts as no evidence. Checking and
        # raising would need a device-to-host sync at every evidence layer.
        e = normalise(torch.nan_to_num(evidence.float(), nan=0.0, posinf=0.0, neginf=0.0))
        self.scores = normalise(self.momentum * self.scores + (1.0 - self.momentum) * weight * e)
        self.updates += 1

    def keep(self, k: int) -> torch.Tensor:
        idx = select_topk(self.scores, k)
        self.scores = torch.gather(self.scores, 1, idx)
        return idx

    def gather(self, idx: torch.Tensor) -> None:
        """Follow a selection made elsewhere (e.g. by a query-agnostic selector)."""
        self.scores = torch.gather(self.scores, 1, idx)
