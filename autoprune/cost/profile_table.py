"""Measured latency tables (``autoprune.profile/v1``): one file per (device, model shape).

Written by ``autoprune profile`` (see :mod:`autoprune.profiler.layer_bench`) to
``profiles/measured/<gpu-id>/<shape-name>.json``, read by :mod:`autoprune.cost.latency`::

    {"format": "autoprune.profile/v1",
     "gpu": "h100-sxm5-80gb", "device_name": "NVIDIA H100 80GB HBM3",
     "shape": {ModelShape fields}, "method": "cuda-events",
     "prefix_tokens": 32, "query_tokens": 64, "scoring_impl": "torch",
     "layers":  {"mamba": SERIES, "attention": SERIES, "mlp": SERIES},
     "scoring": {"attention": SERIES, "mamba": SERIES, "mamba_decay": SERIES},
     "gather": SERIES, "head": SERIES,
     "skipped": [{"what": "attention", "tokens": 131072, "reason": "..."}],
     "environment": {...}, "created": "...", "autoprune": "0.1.0"}

A table that ``autoprune profile`` is still writing (or that was interrupted) carries
``"partial": true``: the points measured so far; a complete table has no ``partial`` key.

A SERIES is ``{"tokens": [...], "ms": [...], "spread": [...], "flags": [[...], ...]}``;
``tokens`` is the number of tokens a layer processes (prefill: queries = keys = tokens),
for ``scoring`` the tokens present at the evidence layer, for ``gather`` the tokens
entering the layer that prunes, for ``head`` the tokens reaching the final norm.

:meth:`Series.at` interpolates piecewise-linearly in (log tokens, log ms): exact for any
power law between two grid points, so it follows attention's mix of ``a·n`` (projections)
and ``b·n²`` (scores) without a global fit. Outside the grid the end segment's log-log
slope is extended, clamped to a plausible range, and the value is marked extrapolated.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import ConfigError
from .shapes import ModelShape

__all__ = [
    "FORMAT",
    "KIND_NAMES",
    "Series",
    "ProfileTable",
    "default_search_dirs",
    "find_table",
    "list_tables",
    "table_path",
]

FORMAT = "autoprune.profile/v1"
KIND_NAMES = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe", "L": "linear_attention", "C": "short_conv",
              "P": "parallel", "S": "shared_attention", "A": "mamba1"}
SCORING_KEYS = ("attention", "mamba", "mamba_decay", "linear", "linear_decay", "linear_exact")
_TOP = {"format", "gpu", "device_name", "shape", "method", "prefix_tokens", "query_tokens", "scoring_impl",
        "layers", "scoring", "gather", "head", "skipped", "environment", "created", "autoprune", "partial"}
_TOP_REQUIRED = {"format", "gpu", "shape", "method", "layers"}


def _num_list(v: Any, where: str) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{where} must be a list, got {type(v).__name__}")
    out = []
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ConfigError(f"{where}[{i}] must be a finite number, got {x!r}")
        out.append(float(x))
    return tuple(out)


@dataclass(frozen=True)
class Series:
    """Measured ms per call at increasing token counts (log-log interpolation, see module doc)."""

    tokens: tuple[int, ...]
    ms: tuple[float, ...]
    spread: tuple[float, ...] | None = None
    flags: tuple[tuple[str, ...], ...] | None = None
    where: str = field(default="series", compare=False, repr=False)

    def __post_init__(self):
        toks = _num_list(self.tokens, f"{self.where}.tokens")
        ms = _num_list(self.ms, f"{self.where}.ms")
        if not toks:
            raise ConfigError(f"{self.where}: no measured points")
        if len(toks) != len(ms):
            raise ConfigError(f"{self.where}: {len(toks)} token counts but {len(ms)} times")
        for i, t in enumerate(toks):
            if not t.is_integer() or t < 1:
                raise ConfigError(f"{self.where}.tokens[{i}] must be an integer >= 1, got {t!r}")
            if i and t <= toks[i - 1]:
                raise ConfigError(f"{self.where}.tokens must increase strictly; tokens[{i}] = {int(t)} after "
                                  f"{int(toks[i - 1])}")
        for i, m in enumerate(ms):
            if m <= 0:
                raise ConfigError(f"{self.where}.ms[{i}] must be > 0, got {m!r}")
        object.__setattr__(self, "tokens", tuple(int(t) for t in toks))
        object.__setattr__(self, "ms", ms)
        if self.spread is not None:
            sp = _num_list(self.spread, f"{self.where}.spread")
            if len(sp) != len(ms):
                raise ConfigError(f"{self.where}: {len(sp)} spreads for {len(ms)} points")
            object.__setattr__(self, "spread", sp)
        if self.flags is not None:
            if len(self.flags) != len(ms) or not all(isinstance(f, (list, tuple)) for f in self.flags):
                raise ConfigError(f"{self.where}.flags must be one list of strings per point")
            object.__setattr__(self, "flags", tuple(tuple(str(x) for x in f) for f in self.flags))

    def __len__(self):
        return len(self.tokens)

    def at(self, tokens: float) -> tuple[float, bool]:
        """``(ms, extrapolated)`` at ``tokens`` (> 0).

        Beyond the grid the end segment's log-log slope is used, clamped: below the
        smallest point to [0, 1] (fewer tokens cannot make a call faster than linearly:
        weights and launches stay), above the largest to [1, 2] (every token is processed;
        nothing here is worse than attention's quadratic term).
        """
        if not tokens > 0:
            raise ConfigError(f"{self.where}: token count must be > 0, got {tokens!r}")
        xs, ys = self.tokens, self.ms
        if len(xs) == 1:
            return ys[0] * (tokens / xs[0]), tokens != xs[0]
        if xs[0] <= tokens <= xs[-1]:
            j = bisect.bisect_left(xs, tokens)
            if xs[j] == tokens:
                return ys[j], False
            x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
            w = (math.log(tokens) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + w * (math.log(y1) - math.log(y0))), False
        if tokens < xs[0]:
            (x0, x1), (y0, y1), lo, hi, ax, ay = xs[:2], ys[:2], 0.0, 1.0, xs[0], ys[0]
        else:
            (x0, x1), (y0, y1), lo, hi, ax, ay = xs[-2:], ys[-2:], 1.0, 2.0, xs[-1], ys[-1]
        slope = (math.log(y1) - math.log(y0)) / (math.log(x1) - math.log(x0))
        return ay * (tokens / ax) ** max(lo, min(hi, slope)), True

    def to_dict(self) -> dict:
        d: dict = {"tokens": list(self.tokens), "ms": list(self.ms)}
        if self.spread is not None:
            d["spread"] = list(self.spread)
        if self.flags is not None:
            d["flags"] = [list(f) for f in self.flags]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Series:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where} must be an object with tokens and ms, got {type(d).__name__}")
        unknown = sorted(set(d) - {"tokens", "ms", "spread", "flags"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}")
        if "tokens" not in d or "ms" not in d:
            raise ConfigError(f"{where}: needs 'tokens' and 'ms'")
        return cls(tokens=d["tokens"], ms=d["ms"], spread=d.get("spread"), flags=d.get("flags"), where=where)


@dataclass(frozen=True)
class ProfileTable:
    """Per-layer-kind latency of one model shape on one device (see the module docstring).

    ``layers`` is keyed by kind name (``mamba``, ``attention``, ``mlp``, ``moe``). A table
    may lack a kind (profiled with ``kinds=``, or every point skipped); :meth:`missing_kinds`
    says which, and the latency model refuses such a table. ``partial``: the points measured so
    far by a profile that has not finished (or was interrupted). ``origin`` names the file.
    """

    gpu: str
    shape: ModelShape
    method: str
    layers: Mapping[str, Series]
    scoring: Mapping[str, Series] = field(default_factory=dict)
    gather: Series | None = None
    head: Series | None = None
    prefix_tokens: int = 0
    query_tokens: int = 0
    scoring_impl: str | None = None
    device_name: str | None = None
    skipped: tuple[Mapping[str, Any], ...] = ()
    environment: Mapping[str, Any] = field(default_factory=dict)
    created: str | None = None
    autoprune: str | None = None
    partial: bool = False
    origin: str = field(default="<table>", compare=False)

    def __post_init__(self):
        o = self.origin
        if not isinstance(self.gpu, str) or not self.gpu:
            raise ConfigError(f"{o}: gpu must be a non-empty string, got {self.gpu!r}")
        if not isinstance(self.shape, ModelShape):
            raise ConfigError(f"{o}: shape must be a ModelShape")
        from ..profiler.timing import METHODS

        if self.method not in METHODS:
            raise ConfigError(f"{o}: method must be one of {METHODS}, got {self.method!r}")
        bad = sorted(set(self.layers) - set(KIND_NAMES.values()))
        if bad:
            raise ConfigError(f"{o}: layers has unknown kind(s) {bad}; kinds: {sorted(KIND_NAMES.values())}")
        if not self.layers:
            raise ConfigError(f"{o}: no layer measurements at all (see 'skipped' for why)")
        bad = sorted(set(self.scoring) - set(SCORING_KEYS))
        if bad:
            raise ConfigError(f"{o}: scoring has unknown key(s) {bad}; keys: {list(SCORING_KEYS)}")
        if not isinstance(self.partial, bool):
            raise ConfigError(f"{o}: partial must be true or false, got {self.partial!r}")
        for name in ("prefix_tokens", "query_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{o}: {name} must be an integer >= 0, got {v!r}")
        object.__setattr__(self, "layers", dict(self.layers))
        object.__setattr__(self, "scoring", dict(self.scoring))
        object.__setattr__(self, "skipped", tuple(dict(s) for s in self.skipped))
        object.__setattr__(self, "environment", dict(self.environment))

    @property
    def is_cpu(self) -> bool:
        from ..profiler.timing import METHOD_WALL_CLOCK

        return self.gpu == "cpu" or self.method == METHOD_WALL_CLOCK

    def missing_kinds(self) -> list[str]:
        """Kind names of ``shape.layer_kinds`` without measurements."""
        return sorted({KIND_NAMES[k] for k in self.shape.layer_kinds} - set(self.layers))

    def layer(self, kind_letter: str) -> Series:
        return self.layers[KIND_NAMES[kind_letter]]

    def measured_range(self) -> dict[str, list[int]]:
        """``{name: [min tokens, max tokens]}`` measured per layer kind (``mamba``, ``attention``, …) and
        overhead (``scoring.<what>``, ``gather``, ``head``): outside it a prediction is extrapolated."""
        out = {k: [v.tokens[0], v.tokens[-1]] for k, v in self.layers.items()}
        out.update({f"scoring.{k}": [v.tokens[0], v.tokens[-1]] for k, v in self.scoring.items()})
        for name in ("gather", "head"):
            series = getattr(self, name)
            if series is not None:
                out[name] = [series.tokens[0], series.tokens[-1]]
        return out

    # ------------------------------------------------------------------- io
    def to_dict(self) -> dict:
        d = {
            "format": FORMAT,
            "gpu": self.gpu,
            "device_name": self.device_name,
            "shape": self.shape.to_dict(),
            "method": self.method,
            "prefix_tokens": self.prefix_tokens,
            "query_tokens": self.query_tokens,
            "scoring_impl": self.scoring_impl,
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
            "scoring": {k: v.to_dict() for k, v in self.scoring.items()},
            "gather": None if self.gather is None else self.gather.to_dict(),
            "head": None if self.head is None else self.head.to_dict(),
            "skipped": [dict(s) for s in self.skipped],
            "environment": dict(self.environment),
            "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "autoprune": self.autoprune,
        }
        if self.partial:  # absent from a complete table
            d["partial"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping, origin: str = "<dict>") -> ProfileTable:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{origin}: a profile table must be a JSON object")
        if d.get("format") != FORMAT:
            raise ConfigError(f"{origin}: format is {d.get('format')!r}; this autoprune reads {FORMAT!r} only "
                              "(re-run `autoprune profile` to measure again)")
        unknown = sorted(set(d) - _TOP)
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {unknown}")
        missing = sorted(_TOP_REQUIRED - set(d))
        if missing:
            raise ConfigError(f"{origin}: missing key(s) {missing}")
        try:
            shape = ModelShape.from_dict(d["shape"])
        except (TypeError, ConfigError) as e:
            raise ConfigError(f"{origin}: shape: {e}") from None
        if not isinstance(d["layers"], Mapping):
            raise ConfigError(f"{origin}: layers must be an object kind -> series")
        layers = {k: Series.from_dict(v, f"{origin}: layers.{k}") for k, v in d["layers"].items()}
        scoring = {k: Series.from_dict(v, f"{origin}: scoring.{k}") for k, v in (d.get("scoring") or {}).items()}
        gather = None if d.get("gather") is None else Series.from_dict(d["gather"], f"{origin}: gather")
        head = None if d.get("head") is None else Series.from_dict(d["head"], f"{origin}: head")
        return cls(
            gpu=d["gpu"], shape=shape, method=d["method"], layers=layers, scoring=scoring, gather=gather, head=head,
            prefix_tokens=d.get("prefix_tokens", 0), query_tokens=d.get("query_tokens", 0),
            scoring_impl=d.get("scoring_impl"), device_name=d.get("device_name"),
            skipped=tuple(d.get("skipped") or ()), environment=d.get("environment") or {},
            created=d.get("created"), autoprune=d.get("autoprune"), partial=d.get("partial", False), origin=origin,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a reader never sees half a file)."""
        return _io.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProfileTable:
        path = Path(path)
        return cls.from_dict(_io.read_json(path), origin=str(path))


# ----------------------------------------------------------------- locations
def table_path(root: str | os.PathLike, gpu_id: str, shape_name: str) -> Path:
    """``<root>/<gpu-id>/<shape-name>.json`` (``root`` is a ``measured`` directory)."""
    return Path(root) / gpu_id / f"{shape_name}.json"


def default_search_dirs() -> list[Path]:
    """Where measured tables are looked for, first hit wins.

    ``$AUTOPRUNE_PROFILE_DIRS`` (``os.pathsep``-separated ``measured`` directories), then
    ``./profiles/measured`` (what ``autoprune profile`` writes by default), then the
    tables shipped in the package (``autoprune/data/profiles/measured``).
    """
    dirs = [Path(p) for p in os.environ.get("AUTOPRUNE_PROFILE_DIRS", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "profiles" / "measured")
    from .gpus import profiles_root

    dirs.append(profiles_root() / "measured")
    out: list[Path] = []
    for d in dirs:
        r = d.resolve() if d.exists() else d
        if r not in out:
            out.append(r)
    return out


def find_table(gpu_id: str, shape_name: str, dirs: Sequence[str | os.PathLike] | None = None) -> Path | None:
    for d in default_search_dirs() if dirs is None else [Path(x) for x in dirs]:
        p = table_path(d, gpu_id, shape_name)
        if p.is_file():
            return p
    return None


def list_tables(dirs: Sequence[str | os.PathLike] | None = None) -> list[tuple[str, str, Path]]:
    """``(gpu_id, shape_name, path)`` of every measured table found (first hit per pair)."""
    seen: dict[tuple[str, str], Path] = {}
    for d in default_search_dirs() if dirs is None else [Path(x) for x in dirs]:
        d = Path(d)
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*/*.json")):
            seen.setdefault((p.parent.name, p.stem), p)
    return [(g, s, p) for (g, s), p in sorted(seen.items())]
