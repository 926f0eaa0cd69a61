"""The one registry of named schedule shapes: the study's reference schedules and the shapes the
analysis compares at equal mean keep.

A shape is a *unit* schedule — retention factors at named layers, ``keep[i]`` the product of the
factors at or before ``i`` — and a one-parameter family around it: ``keep ** gamma``
(:func:`autoprune.budget.project_keep`), which keeps the layers that see every token, the prune
points and monotonicity. A shape is placed on a target by solving for ``gamma``: on a latency
limit (:func:`reference_schedules`, the study's references) or on a mean keep
(:func:`shape_at_mean_keep`, the analysis). ``lo`` below is the first layer that may remove
tokens (:func:`~autoprune.search.space.first_cut_layer`: after the first layer whose evidence
the scorer uses), ``attn`` the first attention layer:

=================  ===========================================================================
``none``           no reduction (the baseline)
``fastv@K``        one cut at layer ``K`` (FastV-like); ``fastv`` alone cuts at ``attn + 1``
``uniform``        one cut at ``lo``, nothing removed after it
``pyramid``        four equal stages from ``lo`` (PyramidDrop-like)
``high_to_low``    a hard cut at ``lo``, then a mild one (10 % of the rest) at mid depth
``low_to_high``    geometric from ``lo``: every layer keeps the same share of the one before
``prefilter``      a query-agnostic uniform-stride selection before layer 0, nothing after it
=================  ===========================================================================

Shapes of attention-based methods (``fastv``, ``uniform``, ``pyramid``, ``high_to_low``) score with
attention evidence only (``w_mamba = 0``) unless a scorer is given, so their ``lo`` is the layer
after the first attention layer; ``low_to_high`` (the paper's) uses the unified score. A name may
end in ``:attn`` (attention evidence only) or ``:unified`` (both kinds) to choose. In a study's list
of references, ``fastv@*`` stands for a FastV-like cut at every layer that can reach the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..budget import fit_to_budget
from ..errors import ConfigError
from ..schedule import ModelSignature, Schedule, ScorerConfig
from .space import SearchSpace, first_cut_layer

__all__ = ["ScheduleShape", "Reference", "REFERENCES", "register_shape", "reference_names", "get_shape",
           "parse_reference", "unit_schedule", "shape_at_mean_keep", "reference_schedules", "expand_references"]

# The references a new study evaluates first, in this order (``fastv@*``: every admissible layer).
REFERENCES = ("none", "fastv@*", "uniform", "pyramid", "high_to_low", "low_to_high", "low_to_high:attn")

_ATTENTION_ONLY = {"w_mamba": 0.0, "w_attn": 1.0}
_SCORERS = {"attn": _ATTENTION_ONLY, "unified": {}}


@dataclass(frozen=True)
class ScheduleShape:
    """A named unit schedule: ``cuts(signature, scorer, at)`` gives ``{layer: retention}`` (``None``
    for no reduction); ``prefilter`` is set for shapes that cut before layer 0; ``scorer`` are the
    scorer settings the shape uses unless the caller gives a scorer; ``takes_layer`` whether the
    name takes ``@K``."""

    name: str
    description: str
    cuts: Callable[[ModelSignature, ScorerConfig, int | None], dict[int, float] | None]
    prefilter: str | None = None
    scorer: Mapping[str, Any] = field(default_factory=dict)
    takes_layer: bool = False


_SHAPES: dict[str, ScheduleShape] = {}


def register_shape(name: str, description: str, *, prefilter: str | None = None,
                   scorer: Mapping[str, Any] | None = None, takes_layer: bool = False):
    """Decorator: register ``cuts(signature, scorer, at)`` as the shape ``name``."""

    def deco(fn):
        if name in _SHAPES:
            raise ValueError(f"schedule shape {name!r} is registered twice")
        _SHAPES[name] = ScheduleShape(name, description, fn, prefilter, dict(scorer or {}), takes_layer)
        return fn

    return deco


def reference_names() -> list[str]:
    return list(_SHAPES)


def get_shape(name: str) -> ScheduleShape:
    try:
        return _SHAPES[name]
    except KeyError:
        raise ConfigError(f"unknown schedule shape {name!r}; known: {reference_names()}") from None


def parse_reference(name: str) -> tuple[ScheduleShape, int | None, Mapping[str, Any] | None]:
    """``fastv@3:attn`` → (the shape, layer 3, the scorer override); ConfigError naming what is wrong."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a reference name must be a non-empty string, got {name!r}")
    base, _, kind = name.partition(":")
    if kind and kind not in _SCORERS:
        raise ConfigError(f"reference {name!r}: the scorer suffix must be one of {sorted(_SCORERS)}, got {kind!r}")
    base, at_sep, at = base.partition("@")
    shape = get_shape(base)
    layer = None
    if at_sep:
        if not shape.takes_layer:
            raise ConfigError(f"reference {name!r}: shape {base!r} takes no layer")
        if at != "*":
            try:
                layer = int(at)
            except ValueError:
                raise ConfigError(f"reference {name!r}: the layer after '@' must be an integer or '*'") from None
            if layer < 1:
                raise ConfigError(f"reference {name!r}: a cut needs a layer >= 1")
    return shape, layer, (_SCORERS[kind] if kind else None)


def _scorer_for(shape: ScheduleShape, base: ScorerConfig, override: Mapping[str, Any] | None) -> ScorerConfig:
    changes = shape.scorer if override is None else override
    return ScorerConfig(**{**base.to_dict(), **changes}) if changes else base


# ------------------------------------------------------------------ the shapes
@register_shape("none", "no reduction")
def _none(signature: ModelSignature, scorer: ScorerConfig, at: int | None):
    return None


@register_shape("uniform", "one cut at the first layer that may remove tokens", scorer=_ATTENTION_ONLY)
def _uniform(signature: ModelSignature, scorer: ScorerConfig, at: int | None):
    return {first_cut_layer(signature, scorer): 0.5}


def _first_attention_cut(signature: ModelSignature, scorer: ScorerConfig) -> int:
    lo = first_cut_layer(signature, scorer)
    attn = [j for j, c in enumerate(signature.layer_kinds[:-1]) if c in "*PS"]  # P, S layers attend too
    at = attn[0] + 1 if attn and scorer.w_attn > 0 and scorer.selector == "language" else lo
    return max(lo, at)


@register_shape("fastv", "one cut at a layer (FastV-like; default: after the first attention layer)",
                scorer=_ATTENTION_ONLY, takes_layer=True)
def _fastv(signature: ModelSignature, scorer: ScorerConfig, at: int | None):
    if at is None:
        return {_first_attention_cut(signature, scorer): 0.5}
    lo = first_cut_layer(signature, scorer)
    if not lo <= at < signature.num_layers:
        raise ConfigError(f"fastv@{at}: the cut must lie in layers {lo}..{signature.num_layers - 1} (layer {lo} is "
                          "the first after a layer whose evidence the scorer uses)")
    return {at: 0.5}


@register_shape("pyramid", "four equal stages from the first layer that may remove tokens (PyramidDrop-like)",
                scorer=_ATTENTION_ONLY)
def _pyramid(signature: ModelSignature, scorer: ScorerConfig, at: int | None):
    L, lo = signature.num_layers, first_cut_layer(signature, scorer)
    quarter = [lo + round(j * (L - lo) / 4) for j in range(4)]
    return {c: 0.5 for c in dict.fromkeys(min(L - 1, c) for c in quarter)}


@register_shape("high_to_low", "a hard cut at the first layer that may remove tokens, then a mild one at mid depth",
                scorer=_ATTENTION_ONLY)
def _high_to_low(signature: ModelSignature, scorer: ScorerConfig, at: int | None):
    L, lo = signature.num_layers, first_cut_layer(signature, scorer)
    return {lo: 0.5, min(L - 1, max(lo + 1, lo + (L - lo) // 2)): 0.9}


@register_shape("low_to_high", "geometric from the first layer that may remove tokens (the paper's progressive shape)")
def _low_to_high(signature: ModelSignature, scorer: ScorerConfig, at: int | None):
    return {i: 0.5 for i in range(first_cut_layer(signature, scorer), signature.num_layers)}


@register_shape("prefilter", "a query-agnostic uniform-stride selection before layer 0", prefilter="uniform_stride")
def _prefilter(signature: ModelSignature, scorer: ScorerConfig, at: int | None):
    return {0: 0.5}


# ------------------------------------------------------------------ placing a shape
def unit_schedule(name: str, signature: ModelSignature, scorer: ScorerConfig | None, min_tokens: int) -> Schedule:
    """The shape named ``name`` (``fastv@3``, ``low_to_high:attn``, …) at its unit strength (the identity
    for ``none``). ``scorer`` is the base scorer; the shape's own evidence setting applies on top of it
    unless ``name`` chooses one."""
    shape, at, override = parse_reference(name)
    scorer = _scorer_for(shape, scorer or ScorerConfig(), override)
    cuts = shape.cuts(signature, scorer, at) or {}
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
    (as close to it as the shape allows); ConfigError if the shape cannot get that low. A given
    ``scorer`` is used as it is (the shape's own evidence setting does not apply)."""
    m = float(mean_keep)
    if not 0 < m <= 1:
        raise ConfigError(f"mean_keep must be in (0, 1], got {mean_keep!r}")
    shape, at, override = parse_reference(name)
    if scorer is not None:
        name = name.partition(":")[0] + ":unified"  # the caller's scorer as it is
    unit = unit_schedule(name, signature, scorer, min_tokens)
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


def expand_references(names: Sequence[str], signature: ModelSignature, scorer: ScorerConfig) -> list[str]:
    """``fastv@*`` → ``fastv@K`` for every layer ``K`` a one-shot cut may take; other names as they are."""
    out = []
    for name in names:
        shape, _, override = parse_reference(name)
        base = name.partition(":")[0]
        if base.endswith("@*"):
            sc = _scorer_for(shape, scorer, override)
            suffix = name[len(base):]
            out.extend(f"{shape.name}@{k}{suffix}" for k in range(first_cut_layer(signature, sc), signature.num_layers))
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def _spread(layers: list[int], anchors: set[int], at_most: int) -> list[int]:
    """At most ``at_most`` of ``layers``: the anchors first, then evenly spaced others."""
    if len(layers) <= at_most:
        return layers
    keep = [x for x in layers if x in anchors][:at_most]
    rest = [x for x in layers if x not in keep]
    room = at_most - len(keep)
    if room > 0 and rest:
        step = len(rest) / room
        keep += [rest[min(len(rest) - 1, int(i * step))] for i in range(room)]
    return sorted(set(keep))


def reference_schedules(space: SearchSpace, signature: ModelSignature, num_visual: int,
                        latency_ms: Callable[[Schedule], float], limit_ms: float,
                        names: Sequence[str] = REFERENCES, *, floor: float | None = None,
                        keep_unfitted: bool = True, max_one_shot: int = 8) -> list[Reference]:
    """The named shapes with the space's default scorer (and each shape's evidence setting), each
    fitted to ``limit_ms`` on ``latency_ms``. ``none`` is the unreduced model; a shape the budget
    cannot reach stays at its unit strength (``fitted=False``), or is left out without
    ``keep_unfitted``; a reference equal to an earlier one is left out; of the one-shot cuts that
    ``fastv@*`` expands to, those that reach the budget stay, at most ``max_one_shot`` of them (those
    right after an attention layer, then evenly spaced). ``floor`` is the smallest keep ratio (default ``min_tokens / num_visual``)."""
    scorer = space.default_scorer()
    out, seen = [], set()
    refs = _fitted(space, signature, num_visual, latency_ms, limit_ms, names, floor, keep_unfitted, scorer)
    shots = [int(r.name.split("@")[1].split(":")[0]) for r in refs if "@" in r.name and r.fitted]
    anchors = {j + 1 for j, c in enumerate(signature.layer_kinds) if c in "*PS"}
    chosen = set(_spread(sorted(shots), anchors, max_one_shot))
    expanded = {n for n in expand_references(names, signature, scorer)} - set(names)
    for ref in refs:
        if ref.name in expanded and (not ref.fitted or int(ref.name.split("@")[1].split(":")[0]) not in chosen):
            continue  # of the cuts fastv@* stands for, the ones that reach the budget, at most max_one_shot
        key = (ref.schedule.keep, ref.schedule.scorer, ref.schedule.prefilter)
        if key in seen:
            continue
        seen.add(key)
        out.append(ref)
    return out


def _fitted(space, signature, num_visual, latency_ms, limit_ms, names, floor, keep_unfitted, scorer):
    out = []
    for name in expand_references(names, signature, scorer):
        unit = unit_schedule(name, signature, scorer, space.min_tokens)
        if unit.is_identity and unit.prefilter is None:
            ref = Reference(name, unit, False, 1.0)
        else:
            fit = fit_to_budget(unit, latency_ms, limit_ms, num_visual, gamma_low=0.01, floor=floor)
            if not fit.met and not keep_unfitted:
                continue
            ref = Reference(name, fit.schedule if fit.met else unit, fit.met, fit.gamma if fit.met else 1.0)
        out.append(ref)
    return out
