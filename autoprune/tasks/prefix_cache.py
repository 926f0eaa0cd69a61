"""Prefix activation cache: every schedule's unreduced prefix is computed once per batch.

A schedule changes nothing before its first cut: the layers before it see the full
sequence, the same for every schedule. An evaluator runs each batch of its fixed
evaluation set once per trial, so the cache keeps, per batch,

- the output of each unreduced layer (up to ``max_bytes``), and
- the evidence each evidence layer computed on the unreduced sequence, per scorer setting
  that changes it (attention: head aggregation; Mamba: head aggregation and decay) — a
  few kilobytes,

and the next schedule resumes at its first cut: the skipped evidence layers' evidence is
*replayed* into the importance state (:func:`autoprune.runtime.attach_evidence_store`), so
the result is exact, not approximate. Where an evidence layer's evidence is not stored yet
for the schedule's scorer setting, the schedule resumes at that layer instead (it runs,
and its evidence is stored for the next one). The unreduced baseline, evaluated first in a
search, stores the output of every layer it can hold.

How a layer is skipped: its ``forward`` is replaced, for the duration of one call, on the
instance (hooks keep firing; the class is not touched), returning the stored output of the
deepest cached layer before the resume point. The model's parameters are never touched
and the override is removed in ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..adapters import get_adapter
from ..errors import ReductionInputError
from ..plan import plan_reduction
from ..runtime import attach_evidence_store
from ..schedule import Schedule, ScorerConfig

__all__ = ["DEFAULT_MAX_BYTES", "PrefixCache", "PrefixCacheStats", "prefix_of"]

DEFAULT_MAX_BYTES = 1 << 30


def prefix_of(schedule: Schedule, layer_kinds: str, num_visual: int) -> tuple[int, dict[int, str]]:
    """``(first_cut, evidence)``: the first layer whose input is reduced (``n`` for a schedule
    that removes nothing), and the evidence layers before it (``layer -> kind``). Layers before
    ``first_cut`` see the unreduced sequence whatever the schedule."""
    n = len(layer_kinds)
    if schedule.is_identity and schedule.prefilter is None:
        return n, {}
    plan = plan_reduction(schedule, layer_kinds, num_visual)
    if not plan.prune_layers:
        return n, {}
    first = min(plan.prune_layers)
    return first, {j: k for j, k in plan.evidence_layers.items() if j < first}


def _evidence_key(layer: int, kind: str, scorer: ScorerConfig) -> tuple:
    # what the evidence of one layer depends on besides its (unreduced) input; a two-mixer
    # layer's ("attention+mamba") is the blend of both by the weights
    if kind == "linear":
        return (layer, kind, scorer.head_agg, (scorer.mamba_decay, scorer.delta_correction))
    if "+" in kind:
        return (layer, kind, scorer.head_agg, scorer.mamba_decay, scorer.w_attn, scorer.w_mamba)
    return (layer, kind, scorer.head_agg, scorer.mamba_decay if kind == "mamba" else None)


@dataclass
class PrefixCacheStats:
    """Counters: forward calls, layers skipped and run (summed over calls), bytes held."""

    calls: int = 0
    layers_skipped: int = 0
    layers_run: int = 0
    stored_bytes: int = 0
    refused_bytes: int = 0

    @property
    def skipped_share(self) -> float:
        total = self.layers_skipped + self.layers_run
        return self.layers_skipped / total if total else 0.0

    def to_dict(self) -> dict:
        return {"calls": self.calls, "layers_skipped": self.layers_skipped, "layers_run": self.layers_run,
                "skipped_share": self.skipped_share, "stored_bytes": self.stored_bytes,
                "refused_bytes": self.refused_bytes}


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    return 0


def _detached(obj):
    if isinstance(obj, torch.Tensor):
        # A copy: a later layer must not be able to change a stored output in place.
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_detached(o) for o in obj)
    if isinstance(obj, list):
        return [_detached(o) for o in obj]
    return obj


class PrefixCache:
    """Stored unreduced layer outputs and evidence, per evaluation batch (``key``).

    ``with cache.resume(key, schedule, num_visual): logits = forward(...)`` runs the model
    call inside the block from the schedule's first cut (or the first evidence layer whose
    evidence is not stored yet). The key must name the batch exactly (an evaluator uses its
    group and offset); the cache cannot tell two batches apart by their shape.
    """

    def __init__(self, module: nn.Module, *, max_bytes: int = DEFAULT_MAX_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self.module = module
        self.adapter = get_adapter(module)
        self.layers = self.adapter.layers
        self.layer_kinds = self.adapter.layer_kinds
        self.max_bytes = max_bytes
        self.stats = PrefixCacheStats()
        self._outputs: dict[Hashable, dict[int, object]] = {}
        self._evidence: dict[Hashable, dict[tuple, torch.Tensor]] = {}

    def clear(self) -> None:
        self._outputs.clear()
        self._evidence.clear()
        self.stats.stored_bytes = 0

    def cached_layers(self, key: Hashable) -> list[int]:
        """Layers whose output is stored for batch ``key``."""
        return sorted(self._outputs.get(key, {}))

    def resume_point(self, key: Hashable, schedule: Schedule, num_visual: int) -> int:
        """The first layer ``schedule`` will run for batch ``key`` (0: nothing reused)."""
        first, evidence = prefix_of(schedule, self.layer_kinds, num_visual)
        return self._skip_to(key, schedule.scorer, first, evidence) + 1

    def _skip_to(self, key, scorer: ScorerConfig, first: int, evidence: dict[int, str]) -> int:
        outputs, stored = self._outputs.get(key, {}), self._evidence.get(key, {})
        missing = [j for j, kind in evidence.items() if _evidence_key(j, kind, scorer) not in stored]
        limit = min([first, *missing])  # layers from here on must run
        return max((j for j in outputs if j < limit), default=-1)

    @contextlib.contextmanager
    def resume(self, key: Hashable, schedule: Schedule, num_visual: int) -> Iterator[None]:
        first, evidence = prefix_of(schedule, self.layer_kinds, num_visual)
        skip_to = self._skip_to(key, schedule.scorer, first, evidence)
        outputs = self._outputs.setdefault(key, {})
        store = _EvidenceStore(self, self._evidence.setdefault(key, {}), skip_to)
        restore: list[tuple[nn.Module, object]] = []
        hooks = []
        try:
            if skip_to >= 0:
                value = outputs[skip_to]
                for layer in self.layers[: skip_to + 1]:
                    restore.append((layer, layer.__dict__.get("forward")))
                    layer.forward = _returning(value)
            for j in range(skip_to + 1, first):
                if j not in outputs:
                    hooks.append(self.layers[j].register_forward_hook(self._keeper(outputs, j)))
            with attach_evidence_store(self.module, store):
                yield
        finally:
            for h in hooks:
                h.remove()
            for layer, previous in restore:
                if previous is None:
                    del layer.forward
                else:
                    layer.forward = previous
        self.stats.calls += 1
        self.stats.layers_skipped += skip_to + 1
        self.stats.layers_run += len(self.layers) - skip_to - 1

    def _keeper(self, held: dict, j: int):
        def hook(module, args, output):
            if not self._fits(_nbytes(output)):
                return
            held[j] = _detached(output)

        return hook

    def _fits(self, size: int) -> bool:
        if self.stats.stored_bytes + size > self.max_bytes:
            self.stats.refused_bytes += size
            return False
        self.stats.stored_bytes += size
        return True


class _EvidenceStore:
    """What one call replays (evidence of the layers skipped) and stores (evidence computed)."""

    def __init__(self, cache: PrefixCache, stored: dict, skip_to: int):
        self.cache, self.stored, self.skip_to = cache, stored, skip_to

    def replay(self, evidence_layers: dict[int, str], scorer: ScorerConfig) -> list:
        out = []
        for j, kind in sorted(evidence_layers.items()):
            if j > self.skip_to:
                continue
            ev = self.stored.get(_evidence_key(j, kind, scorer))
            if ev is None:  # the cache skipped a layer whose evidence it does not hold: a bug, not bad input
                raise ReductionInputError(f"prefix cache: no stored {kind} evidence of layer {j} for {scorer}")
            out.append((j, kind, ev))
        return out

    def observe(self, layer: int, kind: str, scorer: ScorerConfig, evidence: torch.Tensor) -> None:
        k = _evidence_key(layer, kind, scorer)
        if k not in self.stored and self.cache._fits(_nbytes(evidence)):
            self.stored[k] = evidence.detach().clone()


def _returning(value):
    def forward(*args, **kwargs):
        return value

    return forward
