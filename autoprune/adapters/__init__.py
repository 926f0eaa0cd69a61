"""Model families plug in here, keyed by ``config.model_type``.

An adapter tells the runtime where a family's decoder stack is, what kind each
layer is, and how to read the inputs of evidence from a layer's own modules.
"""

from __future__ import annotations

from . import (  # noqa: F401  (registration side effect)
    bamba,
    evs,
    falcon_h1,
    granitemoehybrid,
    jamba,
    lfm2,
    nemotron_h,
    qwen3_5,
    qwen3_next,
    zamba2,
)
from .base import (
                   AttentionParts,
                   GatedDeltaNetParts,
                   HybridAdapter,
                   Mamba1Parts,
                   Mamba2Parts,
                   fingerprint,
                   get_adapter,
                   get_input_stage,
                   register_adapter,
                   register_input_stage,
)

__all__ = [
    "AttentionParts",
    "GatedDeltaNetParts",
    "HybridAdapter",
    "Mamba1Parts",
    "Mamba2Parts",
    "fingerprint",
    "get_adapter",
    "get_input_stage",
    "register_adapter",
    "register_input_stage",
]
