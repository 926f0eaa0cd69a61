"""Model families plug in here, keyed by ``config.model_type``.

An adapter tells the runtime where a family's decoder stack is, what kind each
layer is, and how to read the inputs of evidence from a layer's own modules.
"""

from __future__ import annotations

from . import bamba, evs, falcon_h1, granitemoehybrid, jamba, nemotron_h, zamba2  # noqa: F401  (registration)
from .base import (
                   AttentionParts,
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
    "HybridAdapter",
    "Mamba1Parts",
    "Mamba2Parts",
    "fingerprint",
    "get_adapter",
    "get_input_stage",
    "register_adapter",
    "register_input_stage",
]
