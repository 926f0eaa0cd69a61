"""Serving-grade prefill: ragged batches of requests, reduced by their own counts, on the fast stack.

- :mod:`~autoprune.serving.batch` — :class:`RaggedBatch`: requests left-padded into one batch;
- :mod:`~autoprune.serving.stack` — compiled hook-free blocks, the Triton causal conv, CUDA graphs;
- :mod:`~autoprune.serving.prefill` — :class:`ReducedPrefill`, :class:`PrefillOutput`.
"""

from .batch import RaggedBatch
from .prefill import PrefillOutput, ReducedPrefill

__all__ = ["PrefillOutput", "RaggedBatch", "ReducedPrefill"]
