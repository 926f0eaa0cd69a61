"""Quick profiles (``autoprune.quick/v1``): the few points ``autoprune profile --quick`` measures.

One file per (GPU, model shape) at ``<measured-root>/<gpu-id>/quick/<shape>.json``::

    {"format": "autoprune.quick/v1", "gpu": "h200-sxm-141gb", "shape": "nemotron-h-8b",
     "source_gpu": "h100-sxm5-80gb",
     "points":   [{"kind": "M", "tokens": 512, "ms": 1.36}, ...],            (≤ 12)
     "prefills": [{"keep": [1.0, ...], "visual": 16384, "ms": 587.4}, ...],  (≤ 3)
     "prefix_tokens": 32, "query_tokens": 64, "environment": {...}, "created": "..."}

Only measurements are stored: the transfer is refitted from them and the source GPU's table
when the file is read (:meth:`QuickProfile.few_shot`), so a better fit applies to old files.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import ConfigError
from .gpus import Registry, load_registry
from .profile_table import ProfileTable, default_search_dirs, find_table
from .transfer import FewShot, QuickPoint, QuickPrefill, fit_few_shot

__all__ = ["FORMAT", "QuickProfile", "find_quick", "quick_path"]

FORMAT = "autoprune.quick/v1"
_KEYS = {"format", "gpu", "shape", "source_gpu", "points", "prefills", "prefix_tokens", "query_tokens",
         "environment", "created", "autoprune"}


def quick_path(root: str | os.PathLike, gpu_id: str, shape_name: str) -> Path:
    """``<root>/<gpu-id>/quick/<shape-name>.json`` (``root`` is a ``measured`` directory; one
    level below the tables, so table listings never read it as one)."""
    return Path(root) / gpu_id / "quick" / f"{shape_name}.json"


def find_quick(gpu_id: str, shape_name: str, dirs: Sequence[str | os.PathLike] | None = None) -> Path | None:
    for d in default_search_dirs() if dirs is None else [Path(x) for x in dirs]:
        p = quick_path(d, gpu_id, shape_name)
        if p.is_file():
            return p
    return None


@dataclass(frozen=True)
class QuickProfile:
    """The quick points of one shape on one GPU and the GPU whose full table they transfer."""

    gpu: str
    shape: str
    source_gpu: str
    points: tuple[QuickPoint, ...]
    prefills: tuple[QuickPrefill, ...] = ()
    prefix_tokens: int = 32
    query_tokens: int = 64
    environment: Mapping[str, Any] = field(default_factory=dict)
    created: str | None = None
    autoprune: str | None = None
    origin: str = field(default="<quick>", compare=False)

    def __post_init__(self):
        o = self.origin
        for name in ("gpu", "shape", "source_gpu"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{o}: {name} must be a non-empty string, got {v!r}")
        if self.source_gpu == self.gpu:
            raise ConfigError(f"{o}: source_gpu is the GPU itself ({self.gpu!r}); a quick profile transfers another "
                              "GPU's table")
        if not self.points or len(self.points) > 12:
            raise ConfigError(f"{o}: a quick profile holds 1 to 12 layer timings, got {len(self.points)}")
        if len(self.prefills) > 3:
            raise ConfigError(f"{o}: a quick profile holds at most 3 whole prefills, got {len(self.prefills)}")
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "prefills", tuple(self.prefills))
        object.__setattr__(self, "environment", dict(self.environment))

    def source_table(self, search_dirs: Sequence[str | os.PathLike] | None = None) -> ProfileTable:
        path = find_table(self.source_gpu, self.shape, search_dirs)
        if path is None:
            raise ConfigError(f"{self.origin}: no measured table of {self.shape!r} on {self.source_gpu!r} to transfer "
                              "(the quick points calibrate a full table measured on another GPU)")
        return ProfileTable.load(path)

    def few_shot(self, registry: Registry | None = None,
                 search_dirs: Sequence[str | os.PathLike] | None = None) -> FewShot:
        """The transfer fitted from these layer timings and the source table (the whole
        prefills are applied by :func:`autoprune.cost.latency.calibrate_prefills`, which
        :class:`~autoprune.cost.latency.LatencyModel` does when it finds this file)."""
        reg = registry or load_registry()
        src = self.source_table(search_dirs)
        return fit_few_shot(src, reg.get(self.source_gpu), reg.get(self.gpu), self.points)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "gpu": self.gpu, "shape": self.shape, "source_gpu": self.source_gpu,
                "points": [{"kind": p.kind, "tokens": p.tokens, "ms": p.ms} for p in self.points],
                "prefills": [{"keep": list(p.keep), "visual": p.visual, "ms": p.ms} for p in self.prefills],
                "prefix_tokens": self.prefix_tokens, "query_tokens": self.query_tokens,
                "environment": dict(self.environment),
                "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "autoprune": self.autoprune}

    @classmethod
    def from_dict(cls, d: Mapping, origin: str = "<dict>") -> QuickProfile:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else None
            raise ConfigError(f"{origin}: format is {got!r}; this autoprune reads {FORMAT!r} only")
        unknown = sorted(set(d) - _KEYS)
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {unknown}")
        try:
            points = tuple(QuickPoint(kind=p["kind"], tokens=p["tokens"], ms=p["ms"]) for p in d.get("points") or ())
            prefills = tuple(QuickPrefill(keep=tuple(p["keep"]), visual=p["visual"], ms=p["ms"])
                             for p in d.get("prefills") or ())
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{origin}: a point or prefill lacks a field ({e})") from None
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
        return cls(gpu=d.get("gpu"), shape=d.get("shape"), source_gpu=d.get("source_gpu"), points=points,
                   prefills=prefills, prefix_tokens=d.get("prefix_tokens", 32), query_tokens=d.get("query_tokens", 64),
                   environment=d.get("environment") or {}, created=d.get("created"), autoprune=d.get("autoprune"),
                   origin=origin)

    def save(self, path: str | os.PathLike) -> Path:
        return _io.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> QuickProfile:
        path = Path(path)
        return cls.from_dict(_io.read_json(path), origin=str(path))
