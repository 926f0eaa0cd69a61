"""The one registry of named schedule shapes: the study's reference schedules and the shapes the
analysis compares at equal mean keep.

A shape is a *unit* schedule — retention factors at named layers, ``keep[i]`` the product of the
factors at or before ``i`` — and a one-parameter family around it: ``keep ** gamma``
(:func:`autoprune.budget.project_keep`), which keeps the layers that see every token, the prune
points and monotonicity. A shape is placed on a target by solving for ``gamma``: on a latency
limit (:func:`reference_schedules`, the study's references) or on a mean keep
(:func:`shape_at_mean_keep`, the analysis). ``lo`` below is the first layer that may remove
tokens (:func:`~autoprune.search.space.first_cut_layer`: after the first layer whose evidence
the scorer uses):

=================  ===========================================================================
``none``           no reduction (the baseline)
``uniform``        one cut at ``lo``, nothing removed after it
``fastv``          one cut after the first attention layer (FastV-like); ``lo`` without one
``pyramid``        four equal stages from ``lo`` (PyramidDrop-like)
``high_to_low``    a hard cut at ``lo``, then a mild one (10 % of the rest) at mid depth
``low_to_high``    geometric from ``lo``: every layer keeps the same share of the one before
``prefilter``      a query-agnostic uniform-stride selection before layer 0, nothing after it
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..budget import fit_to_budget
from ..errors import ConfigError
from ..schedule import ModelSignature, Schedule, ScorerConfig
from .space import SearchSpace, first_cut_layer

__all__ = ["ScheduleShape", "Reference", "REFERENCES", "register_shape", "reference_names", "get_shape",
           "unit_schedule", "shape_at_mean_keep", "reference_schedules"]

# The references a new study evaluates first (trials 0-4), in this order.
REFERENCES = ("none", "uniform", "fastv", "pyramid", "high_to_low")


@dataclass(frozen=True)
class ScheduleShape:
    """A named unit schedule: ``cuts(signature, scorer)`` gives ``{layer: retention}`` (``None``
    for no reduction); ``prefilter`` is set for shapes that cut before layer 0."""

    name: str
    description: str
    cuts: Callable[[ModelSignature, ScorerConfig], dict[int, float] | None]
    prefilter: str | None = None


_SHAPES: dict[str, ScheduleShape] = {}


def register_shape(name: str, description: str, *, prefilter: str | None = None):
    """Decorator: register ``cuts(signature, scorer)`` as the shape ``name``."""

    def deco(fn):
        if name in _SHAPES:
            raise ValueError(f"schedule shape {name!r} is registered twice")
        _SHAPES[name] = ScheduleShape(name, description, fn, prefilter)
        return fn

    return deco


def reference_names() -> list[str]:
    return list(_SHAPES)


def get_shape(name: str) -> ScheduleShape:
    try:
        return _SHAPES[name]
    except KeyError:
        raise ConfigError(f"unknown schedule shape {name!r}; known: {reference_names()}") from None


# ------------------------------------------------------------------ the shapes
@register_shape("none", "no reduction")
def _none(signature: ModelSignature, scorer: ScorerConfig):
    return None


@register_shape("uniform", "one cut at the first layer that may remove tokens")
def _uniform(signature: ModelSignature, scorer: ScorerConfig):
    return {first_cut_layer(signature, scorer): 0.5}


@register_shape("fastv", "one cut after the first attention layer (FastV-like)")
def _fastv(signature: ModelSignature, scorer: ScorerConfig):
    lo = first_cut_layer(signature, scorer)
    attn = [j for j, c in enumerate(signature.layer_kinds[:-1]) if c == "*"]
    at = attn[0] + 1 if attn and scorer.w_attn > 0 and scorer.selector == "language" else lo
    return {max(lo, at): 0.5}


@register_shape("pyramid", "four equal stages from the first layer that may remove tokens (PyramidDrop-like)")
def _pyramid(signature: ModelSignature, scorer: ScorerConfig):
    L, lo = signature.num_layers, first_cut_layer(signature, scorer)
    quarter = [lo + round(j * (L - lo) / 4) for j in range(4)]
    return {c: 0.5 for c in dict.fromkeys(min(L - 1, c) for c in quarter)}


@register_shape("high_to_low", "a hard cut at the first layer that may remove tokens, then a mild one at mid depth")
def _high_to_low(signature: ModelSignature, scorer: ScorerConfig):
    L, lo = signature.num_layers, first_cut_layer(signature, scorer)
    return {lo: 0.5, min(L - 1, max(lo + 1, lo + (L - lo) // 2)): 0.9}


@register_shape("low_to_high", "geometric from the first layer that may remove tokens (the paper's progressive shape)")
def _low_to_high(signature: ModelSignature, scorer: ScorerConfig):
    return {i: 0.5 for i in range(first_cut_layer(signature, scorer), signature.num_layers)}


@register_shape("prefilter", "a query-agnostic uniform-stride selection before layer 0", prefilter="uniform_stride")
def _prefilter(signature: ModelSignature, scorer: ScorerConfig):
    return {0: 0.5}


# ------------------------------------------------------------------ placing a shape
def unit_schedule(name: str, signature: ModelSignature, scorer: ScorerConfig, min_tokens: int) -> Schedule:
    """The shape ``name`` at its unit strength (the identity for ``none``)."""
    shape = get_shape(name)
    cuts = shape.cuts(signature, scorer) or {}
    keep, k = [], 1.0
    for i in range(signature.num_layers):
        k *= cuts.get(i, 1.0)
        keep.append(k)
    return Schedule(keep=tuple(keep), model=signature, min_tokens=min_tokens, scorer=scorer,
                    prefilter=shape.prefilter if cuts else None)


def _realised_mean_keep(schedule: Schedule, num_visual: int) -> float:
    counts = schedule.tokens_per_layer(num_visual)
    return sum(counts) / (len(counts) * num_visual)


def shape_at_mean_keep(name: str, signature: ModelSignature, mean_keep: float, num_visual: int, *,
                       scorer: ScorerConfig | None = None, min_tokens: int = 1) -> Schedule:
    """The shape ``name`` whose realised token counts have a mean keep of at most ``mean_keep``
    (as close to it as the shape allows); ConfigError if the shape cannot get that low."""
    m = float(mean_keep)
    if not 0 < m <= 1:
        raise ConfigError(f"mean_keep must be in (0, 1], got {mean_keep!r}")
    unit = unit_schedule(name, signature, scorer or ScorerConfig(), min_tokens)
    if m >= 1 or unit.is_identity and unit.prefilter is None:
        return unit.replace(keep=(1.0,) * signature.num_layers, prefilter=None)
    fit = fit_to_budget(unit, lambda s: _realised_mean_keep(s, num_visual), m, num_visual, gamma_low=1e-3,
                        rtol=1e-6, max_probes=80)
    if not fit.met:
        raise ConfigError(f"shape {name!r} cannot reach mean keep {m} on {signature.num_layers} layers "
                          f"(at most down to {_realised_mean_keep(fit.schedule, num_visual):.3f})")
    return fit.schedule


@dataclass(frozen=True)
class Reference:
    """A reference schedule of a study: ``fitted`` when ``gamma`` placed it on the budget."""

    name: str
    schedule: Schedule
    fitted: bool
    gamma: float


def reference_schedules(space: SearchSpace, signature: ModelSignature, num_visual: int,
                        latency_ms: Callable[[Schedule], float], limit_ms: float,
                        names: Sequence[str] = REFERENCES) -> list[Reference]:
    """The named shapes with the space's default scorer, each fitted to ``limit_ms`` on
    ``latency_ms`` (``none`` is the unreduced model; a shape the budget cannot reach stays at
    its unit strength, ``fitted=False``)."""
    scorer = space.default_scorer()
    out = []
    for name in names:
        unit = unit_schedule(name, signature, scorer, space.min_tokens)
        if unit.is_identity and unit.prefilter is None:
            out.append(Reference(name, unit, False, 1.0))
            continue
        fit = fit_to_budget(unit, latency_ms, limit_ms, num_visual, gamma_low=0.01)
        out.append(Reference(name, fit.schedule if fit.met else unit, fit.met, fit.gamma if fit.met else 1.0))
    return out
