"""Search spaces: ``search_spaces/*.yaml`` → frozen specs → valid, monotone schedules.

A space says how an Optuna trial becomes a :class:`~autoprune.schedule.Schedule`:

- **schedule parametrisation** (``schedule.kind``):

  - ``progressive``: ``n_stages`` prune stages; stage ``s`` starts at layer ``cut_s``
    and keeps a fraction ``retention_s`` ∈ (0, 1] of the tokens present before it.
    ``keep[i]`` is the product of the retention factors of the stages that start at or
    before ``i``; ``keep[0] = 1``. Monotone by construction. Every ``cut_s`` and
    ``retention_s`` is always suggested (unused ones are ignored) so that the space has
    a fixed dimension, which multivariate TPE, NSGA-II and GP need.
  - ``budgeted``: like ``progressive``, but stage ``s`` gets a *share* ``share_s`` ∈ (0, 1] of the
    reduction instead of a retention factor (its unit factor is ``0.5 ** share_s``), and the
    objective fits the strength of the whole schedule (``keep ** gamma``) to a latency target: the
    budget's limit times ``target`` (one of ``schedule.targets``); with ``align: attention`` (one
    of ``schedule.align``) each cut moves to the next layer after an attention layer. Every sample lands on its
    target, so the sampler learns *where* and *how* to cut, not how much — the budget decides that.
  - ``per_layer``: free monotone per-layer ratios. ``final_keep`` ∈ (0, 1] and one
    share ``share_i`` ∈ [0, 1] per layer; layer ``i`` keeps the factor
    ``final_keep ** (share_i / Σ share)`` of the tokens before it (per-layer retention
    factors, multiplied cumulatively). Any monotone schedule whose last keep lies in
    ``final_keep``'s range is expressible.

- **scorer knobs** (the :class:`~autoprune.schedule.ScorerConfig` fields): a scalar
  fixes a knob, ``{low, high[, log][, default]}`` searches a range, ``{choices[, default]}``
  (or a bare list) a categorical. ``fixed_scorer.yaml`` fixes all of them to isolate
  the schedule.

No cut is placed before the first layer that can give evidence (a mixer layer whose
kind has a positive weight): such cuts are moved to that layer, so every sampled
schedule passes :func:`autoprune.plan.plan_reduction`.

:meth:`SearchSpace.params_for` maps a schedule back to parameters (for
``study.enqueue_trial``), or returns ``None`` when the space cannot express it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from .._io import data_dir, find_data_file, read_yaml_mapping
from ..errors import ConfigError, ScheduleError, check_keys
from ..plan import evidence_kind
from ..schedule import ModelSignature, Schedule, ScorerConfig
from .knobs import (
    KNOBS,
    Choice,
    Fixed,
    FloatRange,
    IntRange,
    Knob,
    check_knobs,
    knob_default,
    knob_to_dict,
    parse_knob,
    parse_range,
    suggest,
)

__all__ = [
    "SearchSpace",
    "ProgressiveSchedule",
    "PerLayerSchedule",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Choice",
    "load_space",
    "available_spaces",
    "first_cut_layer",
]

# ------------------------------------------------------------ parametrisations
@dataclass(frozen=True)
class ProgressiveSchedule:
    """``n_stages`` ∈ [min_stages, max_stages] cuts, each with a retention factor."""

    min_stages: int
    max_stages: int
    retention: FloatRange

    kind = "progressive"

    def __post_init__(self):
        if isinstance(self.min_stages, bool) or not isinstance(self.min_stages, int) or self.min_stages < 1:
            raise ConfigError(f"schedule.stages low must be an integer >= 1, got {self.min_stages!r}")
        if isinstance(self.max_stages, bool) or not isinstance(self.max_stages, int) or self.max_stages < self.min_stages:
            raise ConfigError(f"schedule.stages high must be an integer >= low, got {self.max_stages!r}")
        if not 0 < self.retention.low <= self.retention.high <= 1:
            raise ConfigError(
                f"schedule.retention must lie in (0, 1], got [{self.retention.low}, {self.retention.high}]"
            )

    def to_dict(self) -> dict:
        return {"kind": self.kind, "stages": {"low": self.min_stages, "high": self.max_stages},
                "retention": knob_to_dict(self.retention)}


@dataclass(frozen=True)
class BudgetedSchedule:
    """``n_stages`` ∈ [min_stages, max_stages] cuts with relative shares of the reduction; the
    strength is fitted to ``target`` × the latency limit, ``target`` one of ``targets``."""

    min_stages: int
    max_stages: int
    share: FloatRange
    targets: tuple[float, ...] = (1.0,)
    align: tuple[str, ...] = ("any",)
    warm_start: bool = False

    kind = "budgeted"

    def __post_init__(self):
        ProgressiveSchedule(self.min_stages, self.max_stages, FloatRange(0.5, 1.0))  # the same stage checks
        if not 0 < self.share.low <= self.share.high <= 1:
            raise ConfigError(f"schedule.share must lie in (0, 1], got [{self.share.low}, {self.share.high}]")
        t = tuple(self.targets)
        if not t or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x <= 1 for x in t) \
                or len(set(t)) != len(t):
            raise ConfigError(f"schedule.targets must be distinct fractions of the latency limit in (0, 1], got "
                              f"{list(t)}")
        object.__setattr__(self, "targets", tuple(float(x) for x in t))
        a = tuple(self.align)
        if not a or any(x not in ALIGNMENTS for x in a) or len(set(a)) != len(a):
            raise ConfigError(f"schedule.align must be distinct values of {list(ALIGNMENTS)}, got {list(a)}")
        object.__setattr__(self, "align", a)
        if not isinstance(self.warm_start, bool):
            raise ConfigError(f"schedule.warm_start must be true or false, got {self.warm_start!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "stages": {"low": self.min_stages, "high": self.max_stages},
                "share": knob_to_dict(self.share), "targets": list(self.targets), "align": list(self.align),
                "warm_start": self.warm_start}


# How a budgeted stage's cut layer is placed: where it was sampled, or moved to the next layer after
# an attention layer (the first to see that layer's attention evidence).
ALIGNMENTS = ("any", "attention")


def align_cut(cut: int, kinds: str, how: str) -> int:
    """``cut`` for alignment ``how`` (see :data:`ALIGNMENTS`): the first layer after an attention layer at
    or after ``cut``; ``cut`` itself when there is none or ``how`` is ``any``."""
    if how == "attention":
        for j in range(cut - 1, len(kinds) - 1):
            if kinds[j] in "*PS":  # layers with attention (P, S: with a Mamba2 beside it)
                return j + 1
    return cut


UNIT_BASE = 0.5  # the unit retention of a stage with share 1 (any base: the fit rescales it)


@dataclass(frozen=True)
class PerLayerSchedule:
    """Free monotone schedule: the last layer's keep and where along depth it is lost."""

    final_keep: FloatRange

    kind = "per_layer"

    def __post_init__(self):
        if not 0 < self.final_keep.low <= self.final_keep.high <= 1:
            raise ConfigError(
                f"schedule.final_keep must lie in (0, 1], got [{self.final_keep.low}, {self.final_keep.high}]"
            )

    def to_dict(self) -> dict:
        return {"kind": self.kind, "final_keep": knob_to_dict(self.final_keep)}


def first_cut_layer(signature: ModelSignature, scorer: ScorerConfig | None = None) -> int:
    """The first layer at which tokens may be removed.

    With the language-aware selector a prune point needs an evidence layer before it: a
    Mamba or Gated DeltaNet layer (``w_mamba > 0``), an attention layer (``w_attn > 0``), or a
    two-mixer layer with either weight (see :func:`autoprune.plan.evidence_kind`). With
    ``scorer=None`` both kinds count (the static bound of the parameter ranges).
    Query-agnostic selectors may cut from layer 1 on. Raises ScheduleError if no layer
    qualifies.
    """
    kinds = signature.layer_kinds
    if scorer is not None and scorer.selector != "language":
        return 1
    w_attn, w_mamba = (1.0, 1.0) if scorer is None else (scorer.w_attn, scorer.w_mamba)
    for j, k in enumerate(kinds[:-1]):
        # any mixer letter (M * P S A L) whose kind has weight; Gated DeltaNet ("L") evidence is
        # weighted by w_mamba like Mamba's, short convolutions ("C") give none
        if evidence_kind(k, w_attn, w_mamba):
            return j + 1
    raise ScheduleError(
        f"no layer of {kinds!r} before the last one gives evidence for the language-aware score"
        + ("" if scorer is None else f" (w_attn={scorer.w_attn}, w_mamba={scorer.w_mamba})")
    )


# ------------------------------------------------------------------------ space
@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring). Build with :func:`load_space`."""

    name: str
    schedule: ProgressiveSchedule | BudgetedSchedule | PerLayerSchedule
    scorer: tuple[tuple[str, Knob], ...]
    min_tokens: int = 16
    description: str = ""
    source: str = ""

    def __post_init__(self):
        names = [n for n, _ in self.scorer]
        if sorted(names) != sorted(KNOBS):
            raise ConfigError(f"space {self.name!r}: scorer knobs {sorted(names)} must be exactly {sorted(KNOBS)}")
        if isinstance(self.min_tokens, bool) or not isinstance(self.min_tokens, int) or self.min_tokens < 1:
            raise ConfigError(f"space {self.name!r}: min_tokens must be an integer >= 1, got {self.min_tokens!r}")

    # ------------------------------------------------------------ knobs
    @property
    def knobs(self) -> dict[str, Knob]:
        return dict(self.scorer)

    def default_scorer(self) -> ScorerConfig:
        """The scorer used by reference schedules: each knob's default (see :func:`_knob_default`)."""
        return ScorerConfig(**{n: knob_default(n, k) for n, k in self.scorer})

    def scorer_from_params(self, params: Mapping[str, Any]) -> ScorerConfig:
        values = {}
        for n, k in self.scorer:
            values[n] = k.value if isinstance(k, Fixed) else params[n]
        return ScorerConfig(**values)

    @property
    def fits_to_budget(self) -> bool:
        """Whether the objective fits every sampled schedule to its latency target (``budgeted``)."""
        return isinstance(self.schedule, BudgetedSchedule)

    def target_of(self, params: Mapping[str, Any]) -> float:
        """The fraction of the latency limit a ``budgeted`` trial is fitted to (1 for other spaces)."""
        sch = self.schedule
        if not isinstance(sch, BudgetedSchedule):
            return 1.0
        return float(params["target"]) if len(sch.targets) > 1 else sch.targets[0]

    # ----------------------------------------------------- distributions
    def distributions(self, signature: ModelSignature) -> dict:
        """Every parameter of this space for ``signature``, name → Optuna distribution.

        Fixed dimension: the same names for every trial (see the module docstring).
        """
        L = signature.num_layers
        lo = first_cut_layer(signature)
        d: dict[str, Any] = {}
        sch = self.schedule
        if isinstance(sch, ProgressiveSchedule):
            d["n_stages"] = IntDistribution(sch.min_stages, sch.max_stages)
            for s in range(1, sch.max_stages + 1):
                d[f"cut_{s}"] = IntDistribution(lo, L - 1)
                d[f"retention_{s}"] = sch.retention.distribution()
        elif isinstance(sch, BudgetedSchedule):
            d["n_stages"] = IntDistribution(sch.min_stages, sch.max_stages)
            for s in range(1, sch.max_stages + 1):
                d[f"cut_{s}"] = IntDistribution(lo, L - 1)
                d[f"share_{s}"] = sch.share.distribution()
            if len(sch.targets) > 1:
                d["target"] = CategoricalDistribution(list(sch.targets))
            if len(sch.align) > 1:
                d["align"] = CategoricalDistribution(list(sch.align))
        else:
            d["final_keep"] = sch.final_keep.distribution()
            for i in range(lo, L):
                d[_share(i)] = FloatDistribution(0.0, 1.0)
        for n, k in self.scorer:
            if not isinstance(k, Fixed):
                d[n] = k.distribution()
        return d

    def sample(self, trial, signature: ModelSignature) -> Schedule:
        """Suggest every parameter on ``trial`` and return the schedule they define."""
        params = {name: suggest(trial, name, dist) for name, dist in self.distributions(signature).items()}
        return self.schedule_from_params(params, signature)

    # -------------------------------------------------- params → schedule
    def schedule_from_params(self, params: Mapping[str, Any], signature: ModelSignature) -> Schedule:
        """The schedule that ``params`` (as returned by :meth:`distributions`) define."""
        scorer = self.scorer_from_params(params)
        L = signature.num_layers
        lo = first_cut_layer(signature, scorer)
        sch = self.schedule
        if isinstance(sch, (ProgressiveSchedule, BudgetedSchedule)):
            n = int(params["n_stages"])
            factor_at = [1.0] * L
            how = "any" if isinstance(sch, ProgressiveSchedule) else (params["align"] if len(sch.align) > 1
                                                                     else sch.align[0])
            for s in range(1, n + 1):
                cut = min(L - 1, max(align_cut(int(params[f"cut_{s}"]), signature.layer_kinds, how), lo))
                if isinstance(sch, ProgressiveSchedule):
                    factor_at[cut] *= float(params[f"retention_{s}"])
                else:
                    factor_at[cut] *= UNIT_BASE ** float(params[f"share_{s}"])
            keep, k = [], 1.0
            for i in range(L):
                k *= factor_at[i]
                keep.append(k)
        else:
            final = float(params["final_keep"])
            w = [0.0] * L
            for i in range(lo, L):
                w[i] = float(params[_share(i)])
            total = sum(w)
            if total <= 0 or final >= 1.0:
                keep = [1.0] * L
            else:
                keep, acc = [], 0.0
                for i in range(L):
                    acc += w[i]
                    keep.append(1.0 if acc <= 0 else final ** min(1.0, acc / total))
        return Schedule(keep=tuple(keep), model=signature, min_tokens=self.min_tokens, scorer=scorer)

    def warm_starts(self, signature: ModelSignature) -> list[dict]:
        """Parameters of structured first trials (``schedule.warm_start``) for a ``budgeted`` space that
        aligns to attention, enqueued after the references so the sampler starts from them:
        one stage of equal share right after each of the first ``max_stages`` attention layers, fitted
        to the whole budget, with the default scorer and then every other choice of each categorical
        knob, one knob at a time. Empty for other spaces and models without attention layers."""
        sch = self.schedule
        if not isinstance(sch, BudgetedSchedule) or not sch.warm_start or "attention" not in sch.align \
                or 1.0 not in sch.targets:
            return []
        kinds = signature.layer_kinds
        # layers with attention, as align_cut counts them (P, S: with a Mamba2 beside it)
        cuts = [j + 1 for j, k in enumerate(kinds[:-1]) if k in "*PS"][:sch.max_stages]
        if len(cuts) < sch.min_stages:
            return []
        base: dict[str, Any] = {"n_stages": len(cuts)}
        for s in range(1, sch.max_stages + 1):
            base[f"cut_{s}"] = cuts[s - 1] if s <= len(cuts) else cuts[0]
            base[f"share_{s}"] = sch.share.clip(1.0)
        if len(sch.targets) > 1:
            base["target"] = 1.0
        if len(sch.align) > 1:
            base["align"] = "attention"
        defaults = {n: knob_default(n, k) for n, k in self.scorer if not isinstance(k, Fixed)}
        out = [{**base, **defaults}]
        for n, k in self.scorer:
            if isinstance(k, Choice):
                out += [{**base, **defaults, n: v} for v in k.choices if v != defaults[n]]
        return out

    # -------------------------------------------------- schedule → params
    def params_for(self, schedule: Schedule, signature: ModelSignature) -> dict | None:
        """Parameters under which this space gives ``schedule`` (for ``enqueue_trial``).

        ``None`` when the space cannot express it (a knob outside its range, a cut
        before the first evidence layer, a retention factor out of range, too many
        stages, another ``min_tokens``, a prefilter). The round trip holds up to float
        rounding: ``schedule_from_params(params_for(s)).keep ≈ s.keep``.
        """
        if schedule.num_layers != signature.num_layers or schedule.prefilter is not None:
            return None
        if schedule.min_tokens != self.min_tokens or schedule.keep[0] != 1.0:
            return None
        params: dict[str, Any] = {}
        for n, k in self.scorer:
            v = getattr(schedule.scorer, n)
            if isinstance(k, Fixed):
                if v != k.value:
                    return None
            elif not k.contains(v):
                return None
            else:
                params[n] = k.clip(v) if isinstance(k, FloatRange) else v
        try:
            lo = first_cut_layer(signature, schedule.scorer)
        except ScheduleError:
            return None
        lo_static = first_cut_layer(signature)
        keep, L = schedule.keep, schedule.num_layers
        changes = [(i, keep[i] / keep[i - 1]) for i in range(1, L) if keep[i] < keep[i - 1]]
        if any(i < max(lo, lo_static) for i, _ in changes):
            return None
        sch = self.schedule
        if isinstance(sch, BudgetedSchedule):
            if not changes or len(changes) > sch.max_stages or 1.0 not in sch.targets:
                return None
            logs = [math.log(r) for _, r in changes]
            top = min(logs)  # the strongest stage has share 1
            shares = [x / top for x in logs]
            if any(not sch.share.contains(x) for x in shares):
                return None
            if len(changes) < sch.min_stages:
                return None
            params["n_stages"] = len(changes)
            for s in range(1, sch.max_stages + 1):
                cut, share = (changes[s - 1][0], shares[s - 1]) if s <= len(changes) else (lo_static, sch.share.high)
                params[f"cut_{s}"] = cut
                params[f"share_{s}"] = sch.share.clip(share)
            if len(sch.targets) > 1:
                params["target"] = 1.0
            if len(sch.align) > 1:
                params["align"] = "any"
            elif sch.align[0] != "any" and any(align_cut(c, signature.layer_kinds, sch.align[0]) != c
                                               for c, _ in changes):
                return None
        elif isinstance(sch, ProgressiveSchedule):
            ret = sch.retention
            if len(changes) > sch.max_stages or any(not ret.contains(r) for _, r in changes):
                return None
            while len(changes) < sch.min_stages:
                if not ret.contains(1.0):
                    return None
                changes.append((L - 1, 1.0))  # a no-op stage
            params["n_stages"] = len(changes)
            filler = ret.default if ret.default is not None else ret.high
            for s in range(1, sch.max_stages + 1):
                cut, r = changes[s - 1] if s <= len(changes) else (lo_static, filler)
                params[f"cut_{s}"] = cut
                params[f"retention_{s}"] = ret.clip(r)
        else:
            final = keep[-1]
            if not sch.final_keep.contains(final):
                return None
            params["final_keep"] = sch.final_keep.clip(final)
            shares = {i: 0.0 for i in range(lo_static, L)}
            if final < 1.0:
                for i, r in changes:
                    shares[i] = math.log(r) / math.log(final)
                top = max(shares.values())
                shares = {i: s / top for i, s in shares.items()}
            for i, s in shares.items():
                params[_share(i)] = min(1.0, max(0.0, s))
        return params

    # ---------------------------------------------------------------- io
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "schedule": self.schedule.to_dict(),
            "min_tokens": self.min_tokens,
            "scorer": {n: knob_to_dict(k) for n, k in self.scorer},
        }


def _share(i: int) -> str:
    return f"share_{i:03d}"


# ---------------------------------------------------------------------- loading
def available_spaces() -> list[str]:
    return sorted(p.stem for p in data_dir("search_spaces").glob("*.yaml"))


def load_space(name_or_path: str | os.PathLike = "progressive") -> SearchSpace:
    """Load and validate a space by name (``progressive``, ``per_layer``, ``fixed_scorer``) or path.

    Raises :class:`~autoprune.errors.ConfigError` naming the file and the key at fault.
    """
    path = find_data_file(name_or_path, "search_spaces", "search space")
    return space_from_dict(read_yaml_mapping(path, "search space"), source=str(path))


def space_from_dict(data: Mapping, *, source: str = "<dict>") -> SearchSpace:
    where = source
    check_keys(data, {"name", "description", "schedule", "scorer", "min_tokens"}, {"schedule"}, where)
    try:
        name = data.get("name", Path(source).stem)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        desc = data.get("description", "")
        if not isinstance(desc, str):
            raise ConfigError(f"description must be a string, got {desc!r}")
        schedule = _parse_schedule(data["schedule"], f"{where}: schedule")
        scorer_data = data.get("scorer") or {}
        check_keys(scorer_data, set(KNOBS), set(), f"{where}: scorer")
        knobs = []
        for n in KNOBS:
            if n in scorer_data:
                knobs.append((n, parse_knob(n, scorer_data[n], f"{where}: scorer.{n}")))
            else:
                knobs.append((n, Fixed(getattr(ScorerConfig(), n))))
        check_knobs(knobs, where)
        min_tokens = data.get("min_tokens", 16)
        return SearchSpace(name=name, schedule=schedule, scorer=tuple(knobs), min_tokens=min_tokens,
                           description=desc, source=source)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _parse_schedule(d: Any, where: str):
    if not isinstance(d, Mapping) or "kind" not in d:
        raise ConfigError(f"{where} must be a mapping with a 'kind' (progressive, budgeted or per_layer)")
    kind = d["kind"]
    if kind in ("progressive", "budgeted"):
        extra = {"retention"} if kind == "progressive" else {"share", "targets", "align", "warm_start"}
        check_keys(d, {"kind", "stages"} | extra, {"kind"}, where)
        stages = d.get("stages", {"low": 1, "high": 4})
        if isinstance(stages, int) and not isinstance(stages, bool):
            lo = hi = stages
        else:
            check_keys(stages, {"low", "high"}, {"low", "high"}, f"{where}.stages")
            lo, hi = stages["low"], stages["high"]
    if kind == "budgeted":
        share = parse_range(d.get("share", {"low": 0.05, "high": 1.0}), float, f"{where}.share")
        targets = d.get("targets", [1.0])
        if not isinstance(targets, list):
            raise ConfigError(f"{where}.targets must be a list of fractions of the latency limit, got {targets!r}")
        align = d.get("align", ["any"])
        if not isinstance(align, list):
            raise ConfigError(f"{where}.align must be a list of {list(ALIGNMENTS)}, got {align!r}")
        try:
            return BudgetedSchedule(min_stages=lo, max_stages=hi, share=share, targets=tuple(targets),
                                    align=tuple(align), warm_start=d.get("warm_start", False))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if kind == "progressive":
        ret = parse_range(d.get("retention", {"low": 0.05, "high": 1.0}), float, f"{where}.retention")
        try:
            return ProgressiveSchedule(min_stages=lo, max_stages=hi, retention=ret)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if kind == "per_layer":
        check_keys(d, {"kind", "final_keep"}, {"kind"}, where)
        fk = parse_range(d.get("final_keep", {"low": 0.01, "high": 1.0, "log": True}), float, f"{where}.final_keep")
        try:
            return PerLayerSchedule(final_keep=fk)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    raise ConfigError(f"{where}.kind must be 'progressive', 'budgeted' or 'per_layer', got {kind!r}")


