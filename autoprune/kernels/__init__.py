"""Triton kernels, installed as ``autoprune.kernels``; each sits beside its torch reference ``*_ref``.

One module per op, each with mamba_ssm's ladder (``_x_kernel`` → ``_x`` launcher → ``x`` public
Triton op → ``x_ref`` torch). The Triton ops refuse inputs they do not take; the choice between
an op and its reference is made in :mod:`autoprune.kernels.dispatch` only.

Importing needs triton (a dependency) but no GPU: on a machine without CUDA the kernels run
under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before this import.
"""

from .attention_evidence import (
    attention_evidence,
    attention_evidence_ref,
    attention_query_probs,
)
from .causal_conv import causal_conv1d_act, causal_conv1d_act_ref
from .deltanet_evidence import deltanet_evidence, deltanet_evidence_ref
from .deltanet_exact_evidence import deltanet_exact_evidence, deltanet_exact_evidence_ref
from .mamba2_evidence import mamba2_evidence, mamba2_evidence_ref

__all__ = [
    "attention_evidence",
    "attention_evidence_ref",
    "attention_query_probs",
    "causal_conv1d_act",
    "causal_conv1d_act_ref",
    "deltanet_evidence",
    "deltanet_evidence_ref",
    "deltanet_exact_evidence",
    "deltanet_exact_evidence_ref",
    "mamba2_evidence",
    "mamba2_evidence_ref",
]
