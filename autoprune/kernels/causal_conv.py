"""Depthwise causal conv1d + SiLU over a channel slice, for evidence capture.

Evidence needs ``B`` and ``C`` of a Mamba2 mixer *after* its depthwise causal conv and
activation. Where a fused kernel (or mamba-ssm) skips the mixer's conv module, autoprune
recomputes the conv on the ``2·G·N`` B/C channels of ``in_proj``'s output. torch's
depthwise ``conv1d`` is a generic kernel, slow for this shape, and needs a transposed copy;
this kernel reads the strided slice in place, accumulates the ``K`` taps in fp32, applies
SiLU and writes ``(b, n, C)`` once.

Ladder: ``_causal_conv1d_act_kernel`` → ``_causal_conv1d_act`` → :func:`causal_conv1d_act`
(public Triton op) → :func:`causal_conv1d_act_ref` (what the mixer computes: torch ``conv1d``
in the weight's dtype, then the activation). Which of the two runs inside the runtime is
decided in :mod:`autoprune.kernels.dispatch`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from autoprune.errors import ReductionInputError

from ._common import KERNEL_DTYPES

__all__ = ["causal_conv1d_act", "causal_conv1d_act_ref"]


@triton.jit
def _causal_conv1d_act_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    n, C,
    stride_xb, stride_xn, stride_ob, stride_on,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    x_base = x_ptr + pid_b * stride_xb
    for k in tl.static_range(K):
        tt = t - (K - 1) + k
        m = ((tt >= 0) & (tt < n))[:, None] & cmask[None, :]
        xv = tl.load(x_base + tt.to(tl.int64)[:, None] * stride_xn + c[None, :], mask=m, other=0.0)
        wk = tl.load(w_ptr + c * K + k, mask=cmask, other=0.0).to(tl.float32)
        acc += xv.to(tl.float32) * wk[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    omask = (t < n)[:, None] & cmask[None, :]
    out = out_ptr + pid_b * stride_ob + t.to(tl.int64)[:, None] * stride_on + c[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=omask)


def _causal_conv1d_act(x, w2d, bias, silu: bool, out, block_t: int = 64, block_c: int = 128):
    b, n, C = x.shape
    K = w2d.shape[1]
    grid = (triton.cdiv(n, block_t), triton.cdiv(C, block_c), b)
    _causal_conv1d_act_kernel[grid](
        x, w2d, bias if bias is not None else w2d, out, n, C,
        x.stride(0), x.stride(1), out.stride(0), out.stride(1),
        K=K, HAS_BIAS=bias is not None, SILU=silu, BLOCK_T=block_t, BLOCK_C=block_c,
    )
    return out


def causal_conv1d_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      activation: str | None = "silu") -> torch.Tensor:
    """``act(conv1d_causal(x))`` per channel: ``x (b, n, C)`` (last dim contiguous, any row
    stride), ``weight (C, 1, K)`` or ``(C, K)``, ``bias (C,)`` → ``(b, n, C)`` in ``weight``'s dtype.
    ``activation`` is ``"silu"`` or ``None``.

    Raises :class:`~autoprune.errors.ReductionInputError` on inconsistent arguments and for a
    dtype of ``x`` or ``weight`` the kernel does not take (fp32/bf16/fp16; float64 is the
    reference's).
    """
    if activation not in ("silu", None):
        raise ReductionInputError(f"causal_conv1d_act supports activation 'silu' or None, got {activation!r}")
    if x.dim() != 3 or x.stride(-1) != 1:
        raise ReductionInputError(f"x must be (b, n, C) with a contiguous last dimension, got {tuple(x.shape)}, "
                                  f"strides {x.stride()}")
    w2d = weight.reshape(weight.shape[0], -1).contiguous()
    if w2d.shape[0] != x.shape[2]:
        raise ReductionInputError(f"weight has {w2d.shape[0]} channels, x has {x.shape[2]}")
    if x.dtype not in KERNEL_DTYPES or w2d.dtype not in KERNEL_DTYPES:
        raise ReductionInputError(f"causal_conv1d_act takes x and weight in {KERNEL_DTYPES}, got {x.dtype}, "
                                  f"{w2d.dtype}")
    out = torch.empty(x.shape, dtype=w2d.dtype, device=x.device)
    return _causal_conv1d_act(x, w2d, None if bias is None else bias.contiguous(), activation == "silu", out)


def causal_conv1d_act_ref(x, weight, bias=None, activation="silu"):
    """What the mixer computes: torch depthwise ``conv1d`` (left padding ``K−1``), then SiLU."""
    w = weight.reshape(weight.shape[0], 1, -1)
    n = x.shape[1]
    y = F.conv1d(x.transpose(1, 2).to(w.dtype), w, bias, padding=w.shape[-1] - 1, groups=w.shape[0])[..., :n]
    if activation == "silu":
        y = F.silu(y)
    return y.transpose(1, 2)
