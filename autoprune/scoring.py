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

The attention and Mamba2 evidence have a Triton kernel and a torch reference each, defined
side by side in :mod:`autoprune.kernels`; :func:`attention_evidence` and
:func:`mamba2_evidence` here are the entry points the runtime calls, and leave the choice
between the two to :mod:`autoprune.kernels.dispatch`.
"""

from __future__ import annotations

import torch

from .errors import ReductionInputError
from .kernels import dispatch
from .kernels._common import aggregate_heads, heads_per_group

__all__ = [
    "attention_evidence",
    "mamba2_alpha",
    "mamba2_evidence",
    "mamba1_alpha",
    "mamba1_evidence",
    "normalise",
    "ImportanceState",
    "select_topk",
    "select_uniform_stride",
    "select_random",
]


# --------------------------------------------------------------------- attention
def attention_evidence(q, k, query_index, visual_index, *, scaling, head_agg="mean", key_valid=None,
                       query_valid=None, use_kernels: bool | None = None) -> torch.Tensor:
    """``e(v) = agg_h Σ_{q∈Q} softmax(q·k/√d)[h, q, v]``: ``(b, V)`` fp32.

    The Triton kernel or the torch reference, as :func:`autoprune.kernels.dispatch.attention_evidence`
    picks them (``use_kernels``: None = kernel on CUDA for 16-bit activations, True = kernel
    wherever it takes the inputs, False = reference; ``key_valid`` = reference).
    """
    return dispatch.attention_evidence(q, k, query_index, visual_index, scaling=scaling, head_agg=head_agg,
                                       key_valid=key_valid, query_valid=query_valid, use_kernels=use_kernels)


# ------------------------------------------------------------------ Mamba2 / SSD
def mamba2_alpha(B, C, dt, A, rows: torch.Tensor, *, decay: bool = True) -> torch.Tensor:
    """Implicit attention rows ``α^h[t, s]`` for ``t`` in ``rows (b, R)``: ``(b, H, R, L)``.

    ``α^h[t,s] = (C_t·B_s) · exp(Σ_{k=s+1..t} Δ_k A_h) · Δ_s`` for ``s ≤ t`` else 0;
    without decay the exponential is dropped. Reference for tests (materialises R × L).
    """
    b, L, G, N = B.shape
    H = dt.shape[2]
    hpg = heads_per_group(B, dt)
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


def mamba2_evidence(B, C, dt, A, query_index, visual_index, *, decay=False, head_agg="mean",
                    query_valid=None, use_kernels: bool | None = None) -> torch.Tensor:
    """``e(v) = agg_h Σ_{t∈Q} |α^h[t, v]|`` for visual tokens before every query row: ``(b, V)``.

    The Triton kernel or the torch reference, as :func:`autoprune.kernels.dispatch.mamba2_evidence`
    picks them (``use_kernels`` as for :func:`attention_evidence`).
    """
    return dispatch.mamba2_evidence(B, C, dt, A, query_index, visual_index, decay=decay, head_agg=head_agg,
                                    query_valid=query_valid, use_kernels=use_kernels)


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

    Uses the same factorisation at ``q0 = min Q`` as :func:`~autoprune.kernels.mamba2_evidence_ref`, per
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
        return aggregate_heads(per_ch.to(torch.float32) if f != torch.float64 else per_ch, head_agg)
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
    return aggregate_heads(per_ch.to(torch.float32) if f != torch.float64 else per_ch, head_agg)


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

    def keep(self, k: int, first: torch.Tensor | None = None) -> torch.Tensor:
        """``first (b, n) bool`` (optional): tokens ranked before all others (by ``S`` among
        themselves); the others fill the rest of the ``k`` by ``S``."""
        if first is None:
            idx = select_topk(self.scores, k)
        else:
            order = torch.sort(self.scores, dim=-1, descending=True, stable=True).indices
            # a stable sort on the flag keeps the score order within each class
            lead = torch.sort((~torch.gather(first, 1, order)).to(torch.int8), dim=-1, stable=True).indices
            idx = torch.sort(torch.gather(order, 1, lead)[:, :k], dim=-1).values
        self.scores = torch.gather(self.scores, 1, idx)
        return idx

    def gather(self, idx: torch.Tensor) -> None:
        """Follow a selection made elsewhere (e.g. by a query-agnostic selector)."""
        self.scores = torch.gather(self.scores, 1, idx)
