"""autoprune: query-conditioned visual-token reduction for hybrid (attention + Mamba) VLMs.

``import autoprune`` needs only torch (and transformers' model classes when a model
is reduced); the search, the reports and the GPU profiler import their heavy
dependencies when they are used.
"""

from __future__ import annotations

from ._version import __version__
from .compat import mamba_ssm_shim as _mamba_ssm_shim
from .errors import (
    AutopruneError,
    BudgetError,
    ConfigError,
    MeasurementError,
    ModelMismatchError,
    MonotonicityError,
    ReductionInputError,
    ScheduleError,
    ScheduleFormatError,
    ScheduleValueError,
    StorageError,
    UnknownGPUError,
    UnsupportedModelError,
)
from .schedule import ModelSignature, Schedule, ScorerConfig, Target

# mamba-ssm 2.3.2.post1 cannot be imported without its Mamba1 CUDA extension; the
# shim does what upstream's later fix does (see its docstring). It must run before
# transformers imports a NemotronH/Bamba modeling module, which picks its Mamba
# kernels once, at import. It does nothing where mamba-ssm is absent or complete.
_mamba_ssm_shim.install()


__all__ = [
    "__version__",
    "Schedule",
    "ScorerConfig",
    "ModelSignature",
    "Target",
    "reduce",
    "ReductionHandle",
    "ReducedPrefill",
    "RaggedBatch",
    "PrefillOutput",
    "get_adapter",
    "model_signature",
    "best_schedule",
    "register_kind",
    "KindSpec",
    "KindCost",
    "AutopruneError",
    "BudgetError",
    "ConfigError",
    "ModelMismatchError",
    "MonotonicityError",
    "ReductionInputError",
    "ScheduleError",
    "ScheduleFormatError",
    "ScheduleValueError",
    "StorageError",
    "MeasurementError",
    "UnknownGPUError",
    "UnsupportedModelError",
]


def __getattr__(name):
    # The runtime imports the adapters (and through them transformers) only when used.
    if name in ("reduce", "ReductionHandle"):
        from . import runtime

        return getattr(runtime, name)
    if name in ("ReducedPrefill", "RaggedBatch", "PrefillOutput"):
        from . import serving

        return getattr(serving, name)
    if name == "best_schedule":
        from .search.export import best_schedule

        return best_schedule
    if name in ("register_kind", "KindSpec", "KindCost"):  # the per-layer-kind cost registry
        from .cost import kinds

        return getattr(kinds, name)
    if name == "get_adapter":
        from .adapters import get_adapter

        return get_adapter
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")


def model_signature(model) -> ModelSignature:
    """The :class:`ModelSignature` (family, layer kinds, fingerprint) of a supported model."""
    from .adapters import get_adapter

    return get_adapter(model).signature()
