"""Token-reduction schedules: what fraction of visual tokens enters each layer.

A :class:`Schedule` is pure data (frozen, validated at construction) and has one
serialised form, JSON ``autoprune.schedule/v1``::

    {"format": "autoprune.schedule/v1",
     "model": {"family": "nemotron_h", "layer_kinds": "M-M*-", "num_layers": 5,
               "fingerprint": "sha256:..."},
     "keep": [1.0, 1.0, 0.5, 0.5, 0.25],
     "min_tokens": 16,
     "scorer": {...}, "prefilter": null,
     "target": {"gpu": "a100-sxm4-80gb", "budget": "4x"},
     "metrics": {...}, "provenance": {...}}

``"stages": [[layer, keep], ...]`` (change points, first at layer 0) may stand in
for ``"keep"`` on load; it is normalised to one entry per layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _io
from .errors import (
    ModelMismatchError,
    MonotonicityError,
    ScheduleError,
    ScheduleFormatError,
    ScheduleValueError,
    check_keys,
)

FORMAT = "autoprune.schedule/v1"
LAYER_KIND_LETTERS = {
    "M": "mamba", "*": "attention", "-": "mlp", "E": "moe",
    # a layer running attention and Mamba2 in parallel on the same input (Falcon-H1)
    "P": "parallel",
    # a layer running a weight-tied shared attention block, then Mamba2 (Zamba2's hybrid layers)
    "S": "shared_attention",
    # a Mamba1 (selective-scan, per-channel) layer (Jamba)
    "A": "mamba1",
    # a Gated DeltaNet linear-attention layer (Qwen3.5, Qwen3-Next), its MLP in the same layer
    "L": "linear_attention",
    # a short-convolution layer (LFM2), its MLP in the same layer
    "C": "short_conv",
}
HEAD_AGGREGATIONS = ("mean", "max")
SELECTORS = ("language", "uniform_stride", "random")
PREFILTERS = (None, "uniform_stride")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite_number(value: Any, where: str) -> float:
    if not _is_number(value):
        raise ScheduleValueError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ScheduleValueError(f"{where} must be finite, got {value!r}")
    return value


def _check_keys(obj: Mapping, allowed: set[str], required: set[str], where: str) -> None:
    check_keys(obj, allowed, required, where, error=ScheduleFormatError, container="a JSON object")


@dataclass(frozen=True)
class ModelSignature:
    """Identifies the model a schedule belongs to.

    ``layer_kinds`` uses NemotronH's pattern letters, one per decoder layer:
    ``M`` Mamba(2), ``*`` attention, ``-`` MLP, ``E`` MoE, and for other families ``P``
    attention and Mamba2 in parallel (Falcon-H1), ``S`` shared attention block then Mamba2
    (Zamba2), ``A`` Mamba1 (Jamba), ``L`` linear attention (Gated DeltaNet), ``C`` short
    convolution (LFM2), each a mixer with its MLP in the same layer; see
    :data:`LAYER_KIND_LETTERS`. ``fingerprint`` hashes the
    architecture (see :func:`autoprune.adapters.fingerprint`); ``None`` skips that check.
    """

    family: str
    layer_kinds: str
    fingerprint: str | None = None

    def __post_init__(self):
        if not isinstance(self.family, str) or not self.family:
            raise ScheduleValueError(f"model.family must be a non-empty string, got {self.family!r}")
        if not isinstance(self.layer_kinds, str) or not self.layer_kinds:
            raise ScheduleValueError(f"model.layer_kinds must be a non-empty string, got {self.layer_kinds!r}")
        bad = sorted(set(self.layer_kinds) - set(LAYER_KIND_LETTERS))
        if bad:
            raise ScheduleValueError(
                f"model.layer_kinds has unknown letter(s) {bad}; allowed: {sorted(LAYER_KIND_LETTERS)}"
            )
        if self.fingerprint is not None and not isinstance(self.fingerprint, str):
            raise ScheduleValueError(f"model.fingerprint must be a string or null, got {self.fingerprint!r}")

    @property
    def num_layers(self) -> int:
        return len(self.layer_kinds)

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "layer_kinds": self.layer_kinds,
            "num_layers": self.num_layers,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelSignature:
        _check_keys(d, {"family", "layer_kinds", "num_layers", "fingerprint"}, {"family", "layer_kinds"}, "model")
        sig = cls(family=d["family"], layer_kinds=d["layer_kinds"], fingerprint=d.get("fingerprint"))
        if "num_layers" in d and d["num_layers"] != sig.num_layers:
            raise ScheduleValueError(
                f"model.num_layers is {d['num_layers']!r} but model.layer_kinds has {sig.num_layers} letters"
            )
        return sig


@dataclass(frozen=True)
class ScorerConfig:
    """How token importance is scored and accumulated (the scorer-blending knobs).

    - ``state_momentum`` β ∈ [0, 1): ``S ← normalise(β·S + (1−β)·w_kind·ê)``; 0 = last layer only.
    - ``w_attn``, ``w_mamba`` ≥ 0: weight of attention and recurrent-mixer evidence (Mamba or
      Gated DeltaNet); a zero weight also skips computing that kind of evidence.
    - ``mamba_decay``: use the recurrent mixer's implicit attention with its position-dependent
      decay (``False`` = the decay-free proxy); for Gated DeltaNet the gate decay.
    - ``delta_correction``: Gated DeltaNet only: keep the delta rule's ``I − βkkᵀ`` products
      (with ``mamba_decay``: the exact form; see :mod:`autoprune.delta_rule`).
    - ``head_agg``: aggregation of attention heads, ``mean`` or ``max``.
    - ``evidence_window`` ≥ 1: how many evidence layers before each prune point contribute.
    - ``selector``: ``language`` (the query-conditioned score), or the query-agnostic
      baselines ``uniform_stride`` and ``random`` (seeded by ``seed``).
    """

    state_momentum: float = 0.5
    w_attn: float = 1.0
    w_mamba: float = 1.0
    mamba_decay: bool = False
    delta_correction: bool = False
    head_agg: str = "mean"
    evidence_window: int = 2
    selector: str = "language"
    seed: int = 0

    def __post_init__(self):
        beta = _finite_number(self.state_momentum, "scorer.state_momentum")
        if not 0.0 <= beta < 1.0:
            raise ScheduleValueError(f"scorer.state_momentum must be in [0, 1), got {beta!r}")
        for name in ("w_attn", "w_mamba"):
            w = _finite_number(getattr(self, name), f"scorer.{name}")
            if w < 0:
                raise ScheduleValueError(f"scorer.{name} must be >= 0, got {w!r}")
        if not isinstance(self.mamba_decay, bool):
            raise ScheduleValueError(f"scorer.mamba_decay must be true or false, got {self.mamba_decay!r}")
        if not isinstance(self.delta_correction, bool):
            raise ScheduleValueError(f"scorer.delta_correction must be true or false, got {self.delta_correction!r}")
        if self.head_agg not in HEAD_AGGREGATIONS:
            raise ScheduleValueError(f"scorer.head_agg must be one of {HEAD_AGGREGATIONS}, got {self.head_agg!r}")
        if isinstance(self.evidence_window, bool) or not isinstance(self.evidence_window, int):
            raise ScheduleValueError(f"scorer.evidence_window must be an integer, got {self.evidence_window!r}")
        if self.evidence_window < 1:
            raise ScheduleValueError(f"scorer.evidence_window must be >= 1, got {self.evidence_window!r}")
        if self.selector not in SELECTORS:
            raise ScheduleValueError(f"scorer.selector must be one of {SELECTORS}, got {self.selector!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ScheduleValueError(f"scorer.seed must be an integer, got {self.seed!r}")
        if self.selector == "language" and self.w_attn == 0 and self.w_mamba == 0:
            raise ScheduleValueError("scorer.w_attn and scorer.w_mamba are both 0: the language score has no evidence")
        # Normalise ints to floats so that equality and JSON round trips are exact.
        object.__setattr__(self, "state_momentum", float(self.state_momentum))
        object.__setattr__(self, "w_attn", float(self.w_attn))
        object.__setattr__(self, "w_mamba", float(self.w_mamba))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> ScorerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        _check_keys(d, names, set(), "scorer")
        return cls(**dict(d))


@dataclass(frozen=True)
class Target:
    """What the schedule was searched for: a GPU name and a budget string (both optional)."""

    gpu: str | None = None
    budget: str | None = None

    def __post_init__(self):
        for name in ("gpu", "budget"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ScheduleValueError(f"target.{name} must be a string or null, got {v!r}")

    def to_dict(self) -> dict:
        return {"gpu": self.gpu, "budget": self.budget}

    @classmethod
    def from_dict(cls, d: Mapping) -> Target:
        _check_keys(d, {"gpu", "budget"}, set(), "target")
        return cls(**dict(d))


def _json_value(value: Any, where: str) -> Any:
    """Check that ``value`` is plain JSON (finite numbers), return a deep copy."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise ScheduleValueError(f"{where} must be finite, got {value!r}")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ScheduleValueError(f"{where} keys must be strings, got {k!r}")
            out[k] = _json_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ScheduleValueError(f"{where} must be JSON data, got {type(value).__name__}")


@dataclass(frozen=True)
class Schedule:
    """Per-layer keep ratios plus the scorer that decides which tokens stay.

    ``keep[i]`` ∈ (0, 1] is the fraction of the sample's original visual tokens that
    enter decoder layer ``i``; layer ``i`` sees ``max(min_tokens, ceil(keep[i]·V))``
    of them (never more than ``V``). ``keep`` never increases along depth, and
    ``keep[0] == 1`` unless a query-agnostic ``prefilter`` is configured.

    Raises :class:`~autoprune.errors.ScheduleError` subclasses naming field, layer, value.
    """

    keep: tuple[float, ...]
    model: ModelSignature | None = None
    min_tokens: int = 16
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    prefilter: str | None = None
    target: Target | None = None
    metrics: Mapping[str, Any] | None = None
    provenance: Mapping[str, Any] | None = None

    def __post_init__(self):
        if isinstance(self.keep, (str, bytes)) or not isinstance(self.keep, Sequence):
            raise ScheduleValueError(f"keep must be a list of numbers, got {type(self.keep).__name__}")
        keep = tuple(_finite_number(v, f"keep[{i}] (layer {i})") for i, v in enumerate(self.keep))
        if not keep:
            raise ScheduleValueError("keep is empty: need one entry per decoder layer")
        object.__setattr__(self, "keep", keep)
        if self.model is not None and not isinstance(self.model, ModelSignature):
            raise ScheduleValueError(f"model must be a ModelSignature, got {type(self.model).__name__}")
        if not isinstance(self.scorer, ScorerConfig):
            raise ScheduleValueError(f"scorer must be a ScorerConfig, got {type(self.scorer).__name__}")
        if self.target is not None and not isinstance(self.target, Target):
            raise ScheduleValueError(f"target must be a Target, got {type(self.target).__name__}")
        if isinstance(self.min_tokens, bool) or not isinstance(self.min_tokens, int) or self.min_tokens < 1:
            raise ScheduleValueError(f"min_tokens must be an integer >= 1, got {self.min_tokens!r}")
        if self.prefilter not in PREFILTERS:
            raise ScheduleValueError(f"prefilter must be one of {PREFILTERS}, got {self.prefilter!r}")
        if self.model is not None and len(keep) != self.model.num_layers:
            raise ScheduleValueError(
                f"keep has {len(keep)} entries but model {self.model.family!r} has "
                f"{self.model.num_layers} layers ({self.model.layer_kinds!r})"
            )
        for i, k in enumerate(keep):
            if not 0.0 < k <= 1.0:
                raise ScheduleValueError(f"keep[{i}] (layer {i}) = {k!r} is outside (0, 1]")
        if keep[0] < 1.0 and self.prefilter is None:
            raise ScheduleValueError(
                f"keep[0] (layer 0) = {keep[0]!r} < 1 but no prefilter is configured: "
                "before layer 0 there is no query evidence (set prefilter='uniform_stride' to allow it)"
            )
        for i in range(1, len(keep)):
            if keep[i] > keep[i - 1]:
                raise MonotonicityError(
                    f"keep increases from layer {i - 1} ({keep[i - 1]!r}) to layer {i} ({keep[i]!r}): "
                    "schedules must be low-to-high monotone (a removed token never comes back)"
                )
        for name in ("metrics", "provenance"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Mapping):
                raise ScheduleValueError(f"{name} must be a JSON object or null, got {type(v).__name__}")
        object.__setattr__(self, "metrics", None if self.metrics is None else _json_value(self.metrics, "metrics"))
        object.__setattr__(
            self, "provenance", None if self.provenance is None else _json_value(self.provenance, "provenance")
        )

    # ----------------------------------------------------------------- queries
    @property
    def num_layers(self) -> int:
        return len(self.keep)

    @property
    def mean_keep(self) -> float:
        return sum(self.keep) / len(self.keep)

    @property
    def is_identity(self) -> bool:
        """True when no token is ever removed (the schedule is a no-op at any V)."""
        return all(k == 1.0 for k in self.keep)

    @property
    def first_cut(self) -> int | None:
        """The first layer ``i >= 1`` whose keep ratio is below layer ``i - 1``'s (None: no such layer)."""
        return next((i for i in range(1, len(self.keep)) if self.keep[i] < self.keep[i - 1]), None)

    def tokens_per_layer(self, num_visual: int) -> list[int]:
        """Visual tokens entering each layer for a sample with ``num_visual`` of them."""
        if isinstance(num_visual, bool) or not isinstance(num_visual, int) or num_visual < 0:
            raise ScheduleValueError(f"num_visual must be a non-negative integer, got {num_visual!r}")
        out, prev = [], num_visual
        for k in self.keep:
            n = min(prev, num_visual, max(self.min_tokens, math.ceil(k * num_visual - 1e-9)))
            out.append(n)
            prev = n
        return out

    def prune_layers(self, num_visual: int) -> list[int]:
        """Layers at whose input tokens are removed (for ``num_visual`` visual tokens)."""
        counts = self.tokens_per_layer(num_visual)
        prev = [num_visual] + counts[:-1]
        return [i for i, (a, b) in enumerate(zip(prev, counts)) if b < a]

    def check_model(self, signature: ModelSignature) -> None:
        """Raise :class:`ModelMismatchError` if this schedule was made for another model."""
        if len(self.keep) != signature.num_layers:
            mine = "" if self.model is None else f" (for {self.model.family!r}, {self.model.layer_kinds!r})"
            raise ModelMismatchError(
                f"schedule has {len(self.keep)} layers{mine} but the model {signature.family!r} has "
                f"{signature.num_layers} ({signature.layer_kinds!r})"
            )
        if self.model is None:
            return
        if self.model.layer_kinds != signature.layer_kinds or self.model.family != signature.family:
            raise ModelMismatchError(
                f"schedule is for {self.model.family!r} with layer kinds {self.model.layer_kinds!r}; "
                f"the model is {signature.family!r} with layer kinds {signature.layer_kinds!r}"
            )
        if (
            self.model.fingerprint is not None
            and signature.fingerprint is not None
            and self.model.fingerprint != signature.fingerprint
        ):
            raise ModelMismatchError(
                f"schedule fingerprint {self.model.fingerprint} differs from the model's "
                f"{signature.fingerprint} (same layer kinds {signature.layer_kinds!r}, other architecture)"
            )

    def replace(self, **changes) -> Schedule:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------- constructors
    @classmethod
    def identity(cls, num_layers: int, **kw) -> Schedule:
        return cls(keep=(1.0,) * num_layers, **kw)

    @classmethod
    def from_stages(cls, stages: Sequence[Sequence[float]], num_layers: int, **kw) -> Schedule:
        """Build from change points ``[(layer, keep), ...]``; the first must be at layer 0."""
        return cls(keep=stages_to_keep(stages, num_layers), **kw)

    # ------------------------------------------------------------------- io
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": None if self.model is None else self.model.to_dict(),
            "keep": list(self.keep),
            "min_tokens": self.min_tokens,
            "scorer": self.scorer.to_dict(),
            "prefilter": self.prefilter,
            "target": None if self.target is None else self.target.to_dict(),
            "metrics": None if self.metrics is None else dict(self.metrics),
            "provenance": None if self.provenance is None else dict(self.provenance),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping, *, model: ModelSignature | None = None) -> Schedule:
        """Parse JSON v1 data. With ``model``, also check that the schedule fits it."""
        allowed = {"format", "model", "keep", "stages", "min_tokens", "scorer", "prefilter", "target",
                   "metrics", "provenance"}
        _check_keys(d, allowed, {"format", "model"}, "schedule")
        if d["format"] != FORMAT:
            raise ScheduleFormatError(f"format is {d['format']!r}; this autoprune reads {FORMAT!r} only")
        if d["model"] is None:
            raise ScheduleFormatError("model must be given: a schedule file names the model it was made for")
        sig = ModelSignature.from_dict(d["model"])
        if ("keep" in d) == ("stages" in d):
            raise ScheduleFormatError("give exactly one of 'keep' (per layer) or 'stages' (change points)")
        if "keep" in d:
            keep = d["keep"]
            if not isinstance(keep, list):
                raise ScheduleFormatError(f"keep must be a JSON list, got {type(keep).__name__}")
        else:
            keep = stages_to_keep(d["stages"], sig.num_layers)
        sched = cls(
            keep=tuple(keep),
            model=sig,
            min_tokens=d.get("min_tokens", 16),
            scorer=ScorerConfig.from_dict(d.get("scorer") or {}),
            prefilter=d.get("prefilter"),
            target=None if d.get("target") is None else Target.from_dict(d["target"]),
            metrics=d.get("metrics"),
            provenance=d.get("provenance"),
        )
        if model is not None:
            sched.check_model(model)
        return sched

    @classmethod
    def from_json(cls, text: str, *, model: ModelSignature | None = None) -> Schedule:
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as e:
            raise ScheduleFormatError(f"not valid JSON: {e}") from None
        return cls.from_dict(data, model=model)

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: ModelSignature | None = None) -> Schedule:
        """Read a schedule file. Every error (missing, unreadable, malformed, invalid values, another
        model) is a :class:`ScheduleError` whose message starts with the file's path."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ScheduleFormatError(f"{path}: not UTF-8 text ({e})") from None
        except FileNotFoundError:
            raise ScheduleFormatError(f"{path}: no such schedule file") from None
        except OSError as e:
            raise ScheduleFormatError(f"{path}: cannot be read ({e.strerror or e})") from None
        try:
            return cls.from_json(text, model=model)
        except ScheduleError as e:
            raise type(e)(f"{path}: {e}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON v1 atomically (a reader never sees half a file)."""
        if self.model is None:
            raise ScheduleFormatError("cannot save a schedule without a model signature (use .replace(model=...))")
        return _io.write_text(path, self.to_json() + "\n")


def _refuse_constant(name: str):
    raise ScheduleValueError(f"{name} is not allowed in a schedule file")


def stages_to_keep(stages: Any, num_layers: int) -> tuple[float, ...]:
    """Normalise change points ``[[layer, keep], ...]`` to one keep ratio per layer."""
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise ScheduleFormatError("stages must be a non-empty list of [layer, keep] pairs")
    keep: list[float] = []
    prev_layer = -1
    for j, st in enumerate(stages):
        if isinstance(st, (str, bytes)) or not isinstance(st, Sequence) or len(st) != 2:
            raise ScheduleFormatError(f"stages[{j}] must be a [layer, keep] pair, got {st!r}")
        layer, k = st
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ScheduleValueError(f"stages[{j}] layer must be an integer, got {layer!r}")
        if j == 0 and layer != 0:
            raise ScheduleValueError(f"stages[0] must start at layer 0, got layer {layer}")
        if layer <= prev_layer or layer >= num_layers:
            raise ScheduleValueError(
                f"stages[{j}] layer {layer} must be increasing and < num_layers ({num_layers})"
            )
        if j > 0:
            keep.extend([keep[-1]] * (layer - prev_layer - 1))
        keep.append(_finite_number(k, f"stages[{j}] keep (layer {layer})"))
        prev_layer = layer
    keep.extend([keep[-1]] * (num_layers - prev_layer - 1))
    return tuple(keep)
