"""What a schedule does to one sample: visual tokens entering each layer, prune points, evidence layers.

Pure Python (no torch): the runtime applies a :class:`ReductionPlan`, the latency model
prices it, the prefix activation cache keys on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ReductionInputError
from .schedule import Schedule

__all__ = ["EVIDENCE_KINDS", "ReductionPlan", "evidence_kind", "plan_reduction"]

# The evidence each layer-kind letter gives: attention rows, a Mamba implicit attention, a
# Gated DeltaNet's (``linear``), or both (a layer with two mixers, blended by w_attn and
# w_mamba). Other letters give none: short convolutions ("C") are not query-conditioned (the
# state passes through), MLP/MoE layers mix no tokens.
EVIDENCE_KINDS: dict[str, tuple[str, ...]] = {
    "*": ("attention",), "M": ("mamba",), "A": ("mamba",), "L": ("linear",),
    "P": ("attention", "mamba"), "S": ("attention", "mamba"),
}


def evidence_kind(letter: str, w_attn: float, w_mamba: float) -> str | None:
    """``attention``, ``mamba``, ``linear``, ``attention+mamba`` (both mixers of one layer) or
    ``None``: the evidence a layer of kind ``letter`` gives under these weights (a zero weight
    skips a kind). Gated DeltaNet evidence is recurrent-mixer evidence, weighted like Mamba's."""
    w = {"attention": w_attn, "mamba": w_mamba, "linear": w_mamba}
    kinds = [k for k in EVIDENCE_KINDS.get(letter, ()) if w[k] > 0]
    return "+".join(kinds) or None


@dataclass(frozen=True)
class ReductionPlan:
    """What happens at each layer for a sample with ``num_visual`` visual tokens."""

    num_visual: int
    counts: tuple[int, ...]  # visual tokens entering each layer
    prune_layers: tuple[int, ...]
    evidence_layers: dict  # layer -> "attention" | "mamba" | "linear" | "attention+mamba" (state updates)

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
        for p in prunes:
            if p == 0:
                continue  # only a query-agnostic prefilter can act before layer 0
            found = 0
            for j in range(p - 1, -1, -1):
                kind = evidence_kind(layer_kinds[j], sc.w_attn, sc.w_mamba)
                if kind:
                    evidence[j] = kind
                    found += 1
                    if found == sc.evidence_window:
                        break
            if found == 0:
                raise ReductionInputError(
                    f"the schedule removes tokens at layer {p} but no layer before it gives evidence "
                    f"(layer kinds {layer_kinds[:p]!r}, w_attn={sc.w_attn}, w_mamba={sc.w_mamba})"
                )
    return ReductionPlan(num_visual, tuple(counts), tuple(prunes), dict(sorted(evidence.items())))
