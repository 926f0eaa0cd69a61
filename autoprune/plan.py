"""What a schedule does to one sample: visual tokens entering each layer, prune points, evidence layers.

Pure Python (no torch): the runtime applies a :class:`ReductionPlan`, the latency model
prices it, the prefix activation cache keys on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ReductionInputError
from .schedule import Schedule

__all__ = ["ReductionPlan", "plan_reduction"]


@dataclass(frozen=True)
class ReductionPlan:
    """What happens at each layer for a sample with ``num_visual`` visual tokens."""

    num_visual: int
    counts: tuple[int, ...]  # visual tokens entering each layer
    prune_layers: tuple[int, ...]
    evidence_layers: dict  # layer -> "attention" | "mamba" | "linear" (state updates)

    @property
    def mean_keep(self) -> float:
        return sum(self.counts) / (len(self.counts) * max(1, self.num_visual))


def plan_reduction(schedule: Schedule, layer_kinds: str, num_visual: int) -> ReductionPlan:
    """Token counts, prune points and evidence layers; raises if a prune point has no evidence."""
    counts = schedule.tokens_per_layer(num_visual)
    prunes = schedule.prune_layers(num_visual)
    sc = schedule.scorer
    evidence: dict[int, str] = {}
    if sc.selector == "language":
        # Gated DeltaNet ("L") evidence is recurrent-mixer evidence, weighted like Mamba's; short
        # convolutions ("C") are not query-conditioned and give none (the state passes through).
        wanted = {"*": ("attention", sc.w_attn), "M": ("mamba", sc.w_mamba), "L": ("linear", sc.w_mamba)}
        for p in prunes:
            if p == 0:
                continue  # only a query-agnostic prefilter can act before layer 0
            found = 0
            for j in range(p - 1, -1, -1):
                kind = wanted.get(layer_kinds[j])
                if kind and kind[1] > 0:
                    evidence[j] = kind[0]
                    found += 1
                    if found == sc.evidence_window:
                        break
            if found == 0:
                raise ReductionInputError(
                    f"the schedule removes tokens at layer {p} but no layer before it gives evidence "
                    f"(layer kinds {layer_kinds[:p]!r}, w_attn={sc.w_attn}, w_mamba={sc.w_mamba})"
                )
    return ReductionPlan(num_visual, tuple(counts), tuple(prunes), dict(sorted(evidence.items())))
