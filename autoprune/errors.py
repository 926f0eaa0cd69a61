"""Every error autoprune raises on purpose subclasses :class:`AutopruneError`.

Errors about values a user supplied are also ``ValueError`` so that generic
handlers keep working; each message names the field (and layer) at fault.
"""

from __future__ import annotations


class AutopruneError(Exception):
    """Base class of all deliberate autoprune errors."""


class ScheduleError(AutopruneError, ValueError):
    """A schedule (or scorer config) is malformed or does not fit its model."""


class ScheduleFormatError(ScheduleError):
    """Wrong format version, unknown or missing keys, wrong JSON types."""


class ScheduleValueError(ScheduleError):
    """A value is out of range, NaN/inf, or of the wrong type."""


class MonotonicityError(ScheduleError):
    """Keep ratios increase along depth: a removed token would have to come back."""


class ModelMismatchError(ScheduleError):
    """The schedule was made for a model with other layer kinds or another fingerprint."""


class UnsupportedModelError(AutopruneError, TypeError):
    """No adapter is registered for this model, or a feature of it is not supported."""


class ReductionInputError(AutopruneError, ValueError):
    """The inputs given to :func:`autoprune.reduce` do not fit the model call."""


class ConfigError(AutopruneError, ValueError):
    """A configuration file (search space, study spec, GPU profile) is invalid."""


class UnknownGPUError(AutopruneError, LookupError):
    """A GPU name does not resolve (unknown or ambiguous); lists close matches."""


class BudgetError(AutopruneError, ValueError):
    """A latency budget string cannot be parsed or is impossible (e.g. ``0.5x``)."""


class StorageError(AutopruneError, RuntimeError):
    """A study storage cannot be opened or does not answer."""


class MeasurementError(AutopruneError, RuntimeError):
    """Timings on this machine are too noisy to decide what was asked (a loaded CPU, a throttled GPU)."""


def check_keys(obj, allowed: set[str], required: set[str], where: str, *, error: type[AutopruneError] = ConfigError,
               container: str = "a mapping") -> None:
    """Raise ``error`` naming ``where`` if ``obj`` is not a mapping, has a key outside ``allowed``
    or lacks one of ``required`` (the one check behind every file format autoprune reads)."""
    from collections.abc import Mapping

    if not isinstance(obj, Mapping):
        raise error(f"{where} must be {container}, got {type(obj).__name__}")
    unknown = sorted(map(str, set(obj) - allowed))
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(obj))
    if missing:
        raise error(f"{where}: missing key(s) {missing}")
