"""The one guard for optional dependencies: a feature that needs one calls :func:`require`, which
names the package and how to install it instead of failing later with an ``ImportError``."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import ConfigError

__all__ = ["require", "available"]


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def require(module: str, *, feature: str, install: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise ConfigError saying ``pip install <install>``."""
    if not available(module):
        raise ConfigError(f"{feature} needs {module}: pip install {install}")
    return importlib.import_module(module)
