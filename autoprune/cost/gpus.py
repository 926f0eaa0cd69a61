"""GPU registry: one JSON spec sheet per GPU under ``profiles/gpus/``, and name resolution.

``resolve(name)`` turns what a user types (``--gpu a100``) into a :class:`GpuSpec`:

1. ``cpu`` is the pseudo-GPU of the CPU fallback (wall clock, measured tables only);
   ``auto`` detects the present GPU through NVML (or torch) and matches its reported name
   against each file's ``nvml_names`` patterns.
2. An exact id or alias (case-insensitive; spaces and underscores count as ``-``).
3. A family name (``a100``, ``h100``): the family's member marked ``family_default`` in
   its file — ``a100`` ⇒ ``a100-sxm4-80gb``, ``h100`` ⇒ ``h100-sxm5-80gb`` — or the only
   member. Why defaults rather than an error: the main command is
   ``autoprune search --gpu a100 --budget 4x`` and "an A100" in a cloud catalogue today
   almost always means the SXM4 80 GB part; the choice is printed (see
   :func:`resolve_verbose`) and every other variant stays one exact name away.
4. A unique prefix of an id or alias (``a100-pcie-8`` ⇒ ``a100-pcie-80gb``).
5. Otherwise :class:`~autoprune.errors.UnknownGPUError`: an ambiguous prefix lists the
   candidates (``a100-sxm4`` matches two files); an unknown name lists close matches.

Files are found in the package's data (``autoprune/data/profiles``, :func:`autoprune._io.data_dir`);
extra directories can be given explicitly.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import ConfigError, UnknownGPUError, check_keys

__all__ = [
    "FORMAT",
    "GpuSpec",
    "CPU",
    "Registry",
    "Resolution",
    "load_registry",
    "load_spec",
    "resolve",
    "resolve_verbose",
    "detect",
    "present_device",
    "profiles_root",
    "normalize_name",
]

FORMAT = "autoprune.gpu/v1"
NUMERIC_FIELDS = ("sm_count", "memory_gb", "memory_bandwidth_gbs", "bf16_tflops", "fp16_tflops", "tdp_w")
_ALLOWED = {"format", "id", "name", "aliases", "family", "family_default", "architecture", "compute_capability",
            *NUMERIC_FIELDS, "nvml_names", "sources", "unverified", "notes"}
_REQUIRED = {"format", "id", "name", "architecture", *NUMERIC_FIELDS, "nvml_names", "sources"}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


def normalize_name(name: str) -> str:
    """``"A100 SXM4_80GB"`` → ``"a100-sxm4-80gb"`` (lower case; runs of space/underscore/dash → ``-``)."""
    return re.sub(r"[\s_\-]+", "-", name.strip().lower()).strip("-")


@dataclass(frozen=True)
class GpuSpec:
    """Spec-sheet peaks of one GPU (dense tensor-core rates, not the 2:4-sparse ones).

    Units: ``memory_gb`` GB, ``memory_bandwidth_gbs`` GB/s, ``*_tflops`` TFLOP/s,
    ``tdp_w`` W. ``sources[field]`` names where each number comes from; ``unverified``
    lists the fields not checked against a vendor datasheet. ``kind`` is ``gpu`` or, for
    the CPU pseudo-GPU, ``cpu`` (whose numbers are 0: it has measured tables only).
    Raises :class:`ConfigError` naming ``origin`` (the file) and the field.
    """

    id: str
    name: str
    architecture: str
    sm_count: int
    memory_gb: float
    memory_bandwidth_gbs: float
    bf16_tflops: float
    fp16_tflops: float
    tdp_w: float
    nvml_names: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    family: str | None = None
    family_default: bool = False
    compute_capability: str | None = None
    unverified: tuple[str, ...] = ()
    notes: str | None = None
    kind: str = "gpu"
    origin: str = field(default="<memory>", compare=False)

    def __post_init__(self):
        where = f"{self.origin}"
        if self.kind not in ("gpu", "cpu"):
            raise ConfigError(f"{where}: kind must be 'gpu' or 'cpu', got {self.kind!r}")
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise ConfigError(f"{where}: id must be lower-case letters, digits, '.' and '-', got {self.id!r}")
        for f in ("name", "architecture"):
            v = getattr(self, f)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{where}: {f} must be a non-empty string, got {v!r}")
        for f in NUMERIC_FIELDS:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where}: {f} must be a finite number, got {v!r}")
            if self.kind == "gpu" and v <= 0:
                raise ConfigError(f"{where}: {f} must be > 0, got {v!r}")
        if isinstance(self.sm_count, float) and not self.sm_count.is_integer():
            raise ConfigError(f"{where}: sm_count must be an integer, got {self.sm_count!r}")
        object.__setattr__(self, "sm_count", int(self.sm_count))
        for f in ("aliases", "nvml_names", "unverified"):
            v = getattr(self, f)
            if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
                raise ConfigError(f"{where}: {f} must be a list of non-empty strings, got {v!r}")
            object.__setattr__(self, f, tuple(v))
        object.__setattr__(self, "aliases", tuple(normalize_name(a) for a in self.aliases))
        for pat in self.nvml_names:
            try:
                re.compile(pat)
            except re.error as e:
                raise ConfigError(f"{where}: nvml_names pattern {pat!r} is not a valid regular expression: "
                                  f"{e}") from None
        if self.kind == "gpu" and not self.nvml_names:
            raise ConfigError(f"{where}: nvml_names must list at least one pattern (used by --gpu auto)")
        bad = sorted(set(self.unverified) - set(NUMERIC_FIELDS))
        if bad:
            raise ConfigError(f"{where}: unverified names unknown field(s) {bad}; fields: {list(NUMERIC_FIELDS)}")
        if not isinstance(self.sources, Mapping):
            raise ConfigError(f"{where}: sources must be a mapping field -> source text")
        if self.kind == "gpu":
            missing = [f for f in NUMERIC_FIELDS if not isinstance(self.sources.get(f), str) or not self.sources[f]]
            if missing:
                raise ConfigError(f"{where}: sources has no source text for {missing}: every number needs its source")
        extra = sorted(set(self.sources) - set(NUMERIC_FIELDS))
        if extra:
            raise ConfigError(f"{where}: sources has unknown field(s) {extra}")
        object.__setattr__(self, "sources", dict(self.sources))
        if self.family is not None:
            if not isinstance(self.family, str) or not self.family:
                raise ConfigError(f"{where}: family must be a non-empty string or null, got {self.family!r}")
            object.__setattr__(self, "family", normalize_name(self.family))
        if not isinstance(self.family_default, bool):
            raise ConfigError(f"{where}: family_default must be true or false, got {self.family_default!r}")
        if self.family_default and self.family is None:
            raise ConfigError(f"{where}: family_default is true but no family is given")

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def peak_tflops(self, dtype: str) -> float:
        """Dense tensor-core peak for ``bfloat16``/``float16`` (TFLOP/s)."""
        if dtype in ("bfloat16", "bf16"):
            return float(self.bf16_tflops)
        if dtype in ("float16", "fp16", "half"):
            return float(self.fp16_tflops)
        raise ConfigError(f"the GPU registry has tensor-core peaks for bfloat16 and float16 only, not {dtype!r}")

    def matches_device_name(self, device_name: str) -> bool:
        return any(re.fullmatch(p, device_name.strip(), flags=re.IGNORECASE) for p in self.nvml_names)

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "id": self.id, "name": self.name, "aliases": list(self.aliases),
             "family": self.family, "family_default": self.family_default, "architecture": self.architecture,
             "compute_capability": self.compute_capability}
        d.update({f: getattr(self, f) for f in NUMERIC_FIELDS})
        d.update({"nvml_names": list(self.nvml_names), "sources": dict(self.sources),
                  "unverified": list(self.unverified)})
        if self.notes:
            d["notes"] = self.notes
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], origin: str = "<dict>") -> GpuSpec:
        # the format first: a file of another version is named as such, not by its new keys
        if isinstance(d, Mapping) and d.get("format") != FORMAT:
            raise ConfigError(f"{origin}: format is {d.get('format')!r}; this autoprune reads {FORMAT!r} only")
        check_keys(d, _ALLOWED, _REQUIRED, f"{origin}: a GPU spec", container="a JSON object")
        kw = {k: v for k, v in d.items() if k != "format"}
        return cls(origin=origin, **kw)


CPU = GpuSpec(
    id="cpu", name="CPU (wall-clock fallback)", architecture="cpu", sm_count=0, memory_gb=0,
    memory_bandwidth_gbs=0, bf16_tflops=0, fp16_tflops=0, tdp_w=0, kind="cpu", origin="<builtin cpu>",
    notes="Pseudo-GPU: timings use the wall clock; latency comes from measured tables only (no roofline).",
)


# --------------------------------------------------------------------- loading
def profiles_root() -> Path:
    """Directory of the GPU specs and measured tables shipped in the package."""
    return _io.data_dir("profiles")


def load_spec(path: str | Path) -> GpuSpec:
    path = Path(path)
    spec = GpuSpec.from_dict(_io.read_json(path), origin=str(path))
    if path.stem != spec.id:
        raise ConfigError(f"{path}: id is {spec.id!r} but the file is named {path.name!r}; name it {spec.id}.json")
    return spec


@dataclass(frozen=True)
class Resolution:
    """How a name resolved: ``how`` ∈ {cpu, detected, id, alias, family-default, family-only, prefix}."""

    spec: GpuSpec
    how: str
    query: str
    detail: str = ""

    def describe(self) -> str:
        if self.how in ("id", "cpu"):
            return self.spec.id
        return f"{self.query} -> {self.spec.id} ({self.how}{': ' + self.detail if self.detail else ''})"


class Registry:
    """The GPU specs of one or more directories; ids and aliases are unique across files."""

    def __init__(self, specs: Iterable[GpuSpec]):
        self.specs: dict[str, GpuSpec] = {}
        self._names: dict[str, tuple[GpuSpec, str]] = {}
        for s in specs:
            if s.id in self.specs:
                raise ConfigError(f"GPU id {s.id!r} is defined twice: {self.specs[s.id].origin} and {s.origin}")
            self.specs[s.id] = s
        for s in self.specs.values():
            for name, how in [(s.id, "id")] + [(a, "alias") for a in s.aliases]:
                if name in ("cpu", "auto"):
                    raise ConfigError(f"{s.origin}: {name!r} is reserved and cannot be a GPU id or alias")
                if name in self._names and self._names[name][0] is not s:
                    raise ConfigError(
                        f"GPU name {name!r} is used by {self._names[name][0].origin} and {s.origin}"
                    )
                self._names[name] = (s, how)
        self.families: dict[str, list[GpuSpec]] = {}
        for s in self.specs.values():
            if s.family:
                self.families.setdefault(s.family, []).append(s)
        for fam, members in self.families.items():
            defaults = [m.id for m in members if m.family_default]
            if len(defaults) > 1:
                raise ConfigError(f"GPU family {fam!r} has several family_default files: {sorted(defaults)}")
            clash = self._names.get(fam)
            if clash is not None and clash[0].family != fam:
                raise ConfigError(f"family name {fam!r} is also a name of {clash[0].origin} (another family)")

    def __iter__(self):
        return iter(sorted(self.specs.values(), key=lambda s: s.id))

    def __len__(self):
        return len(self.specs)

    def __contains__(self, gpu_id: str) -> bool:
        return gpu_id in self.specs

    def get(self, gpu_id: str) -> GpuSpec:
        if gpu_id == "cpu":
            return CPU
        try:
            return self.specs[gpu_id]
        except KeyError:
            raise UnknownGPUError(f"no GPU with id {gpu_id!r}; known: {sorted(self.specs)}") from None

    def all_names(self) -> list[str]:
        return sorted(set(self._names) | set(self.families) | {"cpu", "auto"})

    def family_default(self, family: str) -> GpuSpec | None:
        members = self.families.get(family, [])
        for m in members:
            if m.family_default:
                return m
        return members[0] if len(members) == 1 else None

    def resolve(self, name: str, *, nvml: Any = None) -> Resolution:
        if not isinstance(name, str) or not name.strip():
            raise UnknownGPUError(f"a GPU name must be a non-empty string, got {name!r}")
        q = normalize_name(name)
        if q == "cpu":
            return Resolution(CPU, "cpu", name)
        if q == "auto":
            spec, device_name = _detect(self, nvml=nvml)
            return Resolution(spec, "detected", name, f"NVML/torch reports {device_name!r}")
        hit = self._names.get(q)
        if hit is not None:
            return Resolution(hit[0], hit[1], name)
        if q in self.families:
            members = sorted(m.id for m in self.families[q])
            default = self.family_default(q)
            if default is not None:
                how = "family-default" if len(members) > 1 else "family-only"
                others = [m for m in members if m != default.id]
                detail = f"other {q} variants: {', '.join(others)}" if others else ""
                return Resolution(default, how, name, detail)
            raise UnknownGPUError(
                f"GPU name {name!r} is ambiguous: it names the family {q!r} with several variants and no "
                f"family default; choose one of {members}"
            )
        prefixed = sorted({s.id for n, (s, _) in self._names.items() if n.startswith(q)})
        if len(prefixed) == 1:
            return Resolution(self.specs[prefixed[0]], "prefix", name)
        if len(prefixed) > 1:
            raise UnknownGPUError(f"GPU name {name!r} is ambiguous; candidates: {prefixed}")
        close = difflib.get_close_matches(q, self.all_names(), n=5, cutoff=0.5)
        hint = f"; close matches: {close}" if close else ""
        raise UnknownGPUError(
            f"unknown GPU {name!r}{hint}. Known GPUs: {sorted(self.specs)} (or 'cpu', 'auto'); "
            "add profiles/gpus/<id>.json for another GPU"
        )


def _load_dir(directory: Path) -> list[GpuSpec]:
    if not directory.is_dir():
        return []
    return [load_spec(p) for p in sorted(directory.glob("*.json"))]


@lru_cache(maxsize=8)
def _cached_registry(dirs: tuple[str, ...]) -> Registry:
    specs: list[GpuSpec] = []
    for d in dirs:
        specs.extend(_load_dir(Path(d)))
    return Registry(specs)


def load_registry(extra_dirs: Sequence[str | Path] = (), *, include_builtin: bool = True) -> Registry:
    """All GPU specs: the packaged ``profiles/gpus`` plus ``extra_dirs`` (cached per directory set)."""
    dirs = [str(profiles_root() / "gpus")] if include_builtin else []
    dirs += [str(Path(d)) for d in extra_dirs]
    return _cached_registry(tuple(dirs))


def resolve_verbose(name: str, registry: Registry | None = None, *, nvml: Any = None) -> Resolution:
    """Like :func:`resolve`, also saying how the name resolved (for the CLI to print)."""
    return (registry or load_registry()).resolve(name, nvml=nvml)


def resolve(name: str, registry: Registry | None = None, *, nvml: Any = None) -> GpuSpec:
    """The :class:`GpuSpec` for a user-supplied name (see the module docstring for the rules)."""
    return resolve_verbose(name, registry, nvml=nvml).spec


# ------------------------------------------------------------------- detection
def _device_name(nvml: Any = None, index: int | None = None) -> tuple[str | None, str]:
    """Name of the present GPU and how it was found, or ``(None, reason)``."""
    reasons = []
    mod = nvml
    if mod is None:
        try:
            import pynvml as mod  # nvidia-ml-py
        except ImportError as e:
            mod = None
            reasons.append(f"pynvml not importable ({e})")
    if mod is not None:
        try:
            mod.nvmlInit()
            try:
                h = mod.nvmlDeviceGetHandleByIndex(index or 0)
                n = mod.nvmlDeviceGetName(h)
                return (n.decode() if isinstance(n, bytes) else str(n)), "nvml"
            finally:
                try:
                    mod.nvmlShutdown()
                except Exception:
                    pass
        except Exception as e:
            reasons.append(f"NVML: {type(e).__name__}: {e}")
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(index or 0), "torch"
        reasons.append("torch sees no CUDA device")
    except Exception as e:  # pragma: no cover
        reasons.append(f"torch: {e}")
    return None, "; ".join(reasons)


def _detect(registry: Registry, *, nvml: Any = None, index: int | None = None) -> tuple[GpuSpec, str]:
    name, how = _device_name(nvml, index)
    if name is None:
        raise UnknownGPUError(
            f"--gpu auto found no GPU ({how}). Name the target GPU (e.g. --gpu a100), or use --gpu cpu for the "
            "CPU fallback"
        )
    matches = [s for s in registry if s.matches_device_name(name)]
    if len(matches) == 1:
        return matches[0], name
    if not matches:
        close = difflib.get_close_matches(normalize_name(name), registry.all_names(), n=5, cutoff=0.4)
        raise UnknownGPUError(
            f"the present GPU reports {name!r}, which matches no registry file's nvml_names"
            + (f" (close names: {close})" if close else "")
            + "; add profiles/gpus/<id>.json for it or name a registry GPU with --gpu"
        )
    raise UnknownGPUError(f"the present GPU {name!r} matches several registry files: {sorted(s.id for s in matches)}")


def detect(registry: Registry | None = None, *, nvml: Any = None, index: int | None = None) -> GpuSpec:
    """The registry entry of the present GPU (NVML name, else torch's); raises if none or unknown."""
    return _detect(registry or load_registry(), nvml=nvml, index=index)[0]


def present_device(registry: Registry | None = None, *, nvml: Any = None) -> GpuSpec:
    """What ``autoprune profile`` measures on: the detected GPU, or :data:`CPU` when torch sees none."""
    import torch

    if not torch.cuda.is_available():
        return CPU
    return detect(registry, nvml=nvml)
