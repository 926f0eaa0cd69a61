"""The one place that picks a Triton kernel or its torch reference for a call.

Every caller that may run a kernel (:mod:`autoprune.scoring`, the runtime's Mamba2 input
recomputation) goes through these functions; the Triton ops themselves never fall back,
they refuse inputs they do not take. ``use_kernels`` means the same everywhere:

- ``False``: the torch reference;
- ``None`` (default): the Triton kernel for CUDA tensors of the dtypes the op runs well on
  (``auto_dtypes`` of :func:`use_triton`: 16-bit activations for the evidence kernels, every
  kernel dtype for the causal conv), else the reference;
- ``True``: the Triton kernel for CUDA tensors of every dtype it takes (fp32/bf16/fp16), else
  the reference (float64, which is what the oracle tests run, and CPU tensors).

``key_valid`` (padding keys) exists only in the attention reference: a call with it takes the
reference whatever ``use_kernels`` says. Likewise Gated DeltaNet heads wider than the exact
kernel's register tiles (``dk > DELTANET_EXACT_MAX_DK``) take the exact form's reference.
"""

from __future__ import annotations

import torch

from ._common import KERNEL_DTYPES
from .attention_evidence import attention_evidence as attention_evidence_triton
from .attention_evidence import attention_evidence_ref
from .causal_conv import causal_conv1d_act as causal_conv1d_act_triton
from .causal_conv import causal_conv1d_act_ref
from .deltanet_evidence import deltanet_evidence as deltanet_evidence_triton
from .deltanet_evidence import deltanet_evidence_ref
from .deltanet_exact_evidence import MAX_DK as DELTANET_EXACT_MAX_DK
from .deltanet_exact_evidence import deltanet_exact_evidence as deltanet_exact_evidence_triton
from .deltanet_exact_evidence import deltanet_exact_evidence_ref
from .mamba2_evidence import mamba2_evidence as mamba2_evidence_triton
from .mamba2_evidence import mamba2_evidence_ref

__all__ = ["SIXTEEN_BIT", "use_triton", "attention_evidence", "mamba2_evidence", "deltanet_evidence",
           "deltanet_exact_evidence", "causal_conv1d_act"]

#: Dtypes for which the evidence kernels run by default. With fp32 operands they use exact
#: (non-tf32) dots and are slower than torch's tf32 matmuls in the reference.
SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def use_triton(x: torch.Tensor, use_kernels: bool | None, *, auto_dtypes=SIXTEEN_BIT,
               dtypes=KERNEL_DTYPES) -> bool:
    """Whether the Triton op runs for activations ``x`` (see the module docstring).

    ``dtypes``: what the op takes; ``auto_dtypes``: where it runs when ``use_kernels`` is None.
    Reads only ``x.is_cuda`` and ``x.dtype``.
    """
    if use_kernels is False or not x.is_cuda or x.dtype not in dtypes:
        return False
    return bool(use_kernels) or x.dtype in auto_dtypes


def attention_evidence(q, k, query_index, visual_index, *, scaling, head_agg="mean", key_valid=None,
                       query_valid=None, use_kernels: bool | None = None) -> torch.Tensor:
    """:func:`~autoprune.kernels.attention_evidence.attention_evidence` or its reference: ``(b, V)`` fp32."""
    if key_valid is None and use_triton(q, use_kernels):
        return attention_evidence_triton(q, k, query_index, visual_index, scaling=scaling, head_agg=head_agg,
                                         query_valid=query_valid)
    return attention_evidence_ref(q, k, query_index, visual_index, scaling=scaling, head_agg=head_agg,
                                  key_valid=key_valid, query_valid=query_valid)


def mamba2_evidence(B, C, dt, A, query_index, visual_index, *, decay=False, head_agg="mean", query_valid=None,
                    use_kernels: bool | None = None) -> torch.Tensor:
    """:func:`~autoprune.kernels.mamba2_evidence.mamba2_evidence` or its reference: ``(b, V)``."""
    if use_triton(B, use_kernels):
        return mamba2_evidence_triton(B, C, dt, A, query_index, visual_index, decay=decay, head_agg=head_agg,
                                      query_valid=query_valid)
    return mamba2_evidence_ref(B, C, dt, A, query_index, visual_index, decay=decay, head_agg=head_agg,
                               query_valid=query_valid)


def deltanet_evidence(q, k, beta, lam, query_index, visual_index, *, head_agg="mean", query_valid=None,
                      use_kernels: bool | None = None) -> torch.Tensor:
    """:func:`~autoprune.kernels.deltanet_evidence.deltanet_evidence` or its reference: ``(b, V)``."""
    if use_triton(q, use_kernels):
        return deltanet_evidence_triton(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                        query_valid=query_valid)
    return deltanet_evidence_ref(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                 query_valid=query_valid)


def deltanet_exact_evidence(q, k, beta, lam, query_index, visual_index, *, head_agg="mean", query_valid=None,
                            use_kernels: bool | None = None) -> torch.Tensor:
    """:func:`~autoprune.kernels.deltanet_exact_evidence.deltanet_exact_evidence` or its reference: ``(b, V)``."""
    if q.shape[-1] <= DELTANET_EXACT_MAX_DK and use_triton(q, use_kernels):
        return deltanet_exact_evidence_triton(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                              query_valid=query_valid)
    return deltanet_exact_evidence_ref(q, k, beta, lam, query_index, visual_index, head_agg=head_agg,
                                       query_valid=query_valid)


def causal_conv1d_act(x, weight, bias=None, activation: str | None = "silu", *,
                      use_kernels: bool | None = None) -> torch.Tensor:
    """:func:`~autoprune.kernels.causal_conv.causal_conv1d_act` or its reference: ``(b, n, C)``.

    The conv kernel is elementwise work, worth it for fp32 as well as 16-bit activations:
    with ``use_kernels=None`` it runs for every dtype it takes.
    """
    if weight.dtype in KERNEL_DTYPES and use_triton(x, use_kernels, auto_dtypes=KERNEL_DTYPES):
        return causal_conv1d_act_triton(x, weight, bias, activation)
    return causal_conv1d_act_ref(x, weight, bias, activation)
