"""Triton kernels, installed as ``autoprune.kernels``; each sits beside its torch reference ``*_ref``.

Importing needs triton (a dependency) but no GPU: on a machine without CUDA the kernels run
under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before this import.
"""

from .attention_evidence import attention_evidence, attention_evidence_ref
from .causal_conv import causal_conv1d_act, causal_conv1d_act_ref
from .mamba2_evidence import mamba2_evidence, mamba2_evidence_ref

__all__ = [
    "attention_evidence",
    "attention_evidence_ref",
    "causal_conv1d_act",
    "causal_conv1d_act_ref",
    "mamba2_evidence",
    "mamba2_evidence_ref",
]
