"""mamba-ssm 2.3.2.post1 imports its Mamba1 CUDA extension unconditionally.

``mamba_ssm/__init__.py`` reaches ``import selective_scan_cuda`` with no guard, so a
build without the extension (the Mamba2 path is Triton only and needs none) cannot
be imported at all. Upstream fixed this after the release by guarding the import and
failing only when the Mamba1 scan is called. :func:`install` does exactly that and
nothing more: if ``mamba_ssm`` is installed and ``selective_scan_cuda`` is missing, it
registers a placeholder module whose functions raise a clear error when called.

It must run before transformers imports a modeling module that looks for mamba-ssm
(transformers picks kernels once, at import of e.g. ``modeling_nemotron_h``).
"""

from __future__ import annotations

import importlib.util
import sys
import types

MODULE = "selective_scan_cuda"


class _MissingExtension(types.ModuleType):
    """Stands in for the unbuilt extension; every function raises when called."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(
                f"mamba-ssm's Mamba1 CUDA scan ({MODULE}.{name}) is not built in this installation. "
                "Mamba2 models (NemotronH, Bamba, ...) do not need it; for Mamba1 models install "
                "mamba-ssm with its CUDA extension."
            )

        return missing


def needed() -> bool:
    """True when mamba-ssm is installed but its Mamba1 extension is not importable."""
    if MODULE in sys.modules:
        return False
    return importlib.util.find_spec("mamba_ssm") is not None and importlib.util.find_spec(MODULE) is None


def install() -> bool:
    """Register the placeholder if :func:`needed`; returns whether it did."""
    if not needed():
        return False
    sys.modules[MODULE] = _MissingExtension(MODULE, __doc__)
    return True


def is_installed() -> bool:
    return isinstance(sys.modules.get(MODULE), _MissingExtension)
