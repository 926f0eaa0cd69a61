"""What a measurement ran on: library versions, the device, and which Mamba kernels transformers picked.

Recorded in every measured table (``environment``) so that a table says whether it
describes the fast path (mamba-ssm's Triton kernels) or a torch fallback.
"""

from __future__ import annotations

import importlib.metadata as _md
import logging
import platform
import sys
from typing import Any

from .._version import __version__

__all__ = ["FallbackWarnings", "environment_info", "mamba_kernel_status", "scoring_kernels_available"]


def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def mamba_kernel_status() -> dict[str, str]:
    """Which implementation transformers' NemotronH uses for each Mamba op, read from the module.

    transformers >= 5.2x wraps each op with a hub-kernel/package/torch fallback chosen once at
    import (its closure holds ``implementation`` and ``is_new_implementation``); older
    versions bind module globals that are ``None`` when the package is missing.
    """
    try:
        import transformers.models.nemotron_h.modeling_nemotron_h as m
    except Exception as e:  # pragma: no cover
        return {"error": f"cannot import NemotronH: {e}"}
    out: dict[str, str] = {}
    names = ("mamba2_chunk_scan", "causal_conv1d_fn", "mamba2_split_conv1d_scan_combined",
             "mamba2_selective_state_update", "causal_conv1d_update", "mamba_chunk_scan_combined",
             "mamba_split_conv1d_scan_combined", "selective_state_update")
    for name in names:
        if not hasattr(m, name):
            continue
        fn = getattr(m, name)
        if fn is None:
            out[name] = "missing (torch path)"
            continue
        cells = {}
        code = getattr(fn, "__code__", None)
        if code is not None and fn.__closure__:
            cells = dict(zip(code.co_freevars, (c.cell_contents for c in fn.__closure__)))
        impl = cells.get("implementation", fn)
        if cells.get("is_new_implementation") is False:
            out[name] = "torch reference (fallback)"
        else:
            qual = getattr(impl, "__qualname__", getattr(impl, "__name__", "?"))
            out[name] = f"{getattr(impl, '__module__', '?')}.{qual}"
    if hasattr(m, "is_fast_path_available"):
        out["is_fast_path_available"] = str(m.is_fast_path_available)
    return out


def scoring_kernels_available() -> bool:
    """True when ``autoprune.kernels`` provides the Triton evidence kernels the scoring dispatches to."""
    try:
        import autoprune.kernels as k
    except ImportError:
        return False
    return all(hasattr(k, n) for n in ("attention_evidence", "mamba2_evidence"))


def environment_info(device) -> dict[str, Any]:
    """Versions (python, torch, CUDA, transformers, triton, mamba-ssm, ...) and the device's
    properties, for a measured table's ``environment`` (which Mamba kernels ran included)."""
    import torch

    dev = torch.device(device)
    env: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "transformers": _version("transformers"), "triton": _version("triton"),
        "mamba_ssm": _version("mamba-ssm") or _version("mamba_ssm"), "causal_conv1d": _version("causal-conv1d"),
        "nvidia_ml_py": _version("nvidia-ml-py"), "autoprune": __version__, "device": str(dev),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update({"device_name": props.name, "sm_count": props.multi_processor_count,
                    "memory_total_bytes": props.total_memory,
                    "l2_cache_bytes": getattr(props, "L2_cache_size", None),
                    "capability": f"{props.major}.{props.minor}"})
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                v = pynvml.nvmlSystemGetDriverVersion()
                env["driver"] = v.decode() if isinstance(v, bytes) else v
            finally:
                pynvml.nvmlShutdown()
        except Exception as e:
            env["driver"] = f"unknown (NVML: {type(e).__name__})"
    else:
        env["device_name"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    try:
        from ..compat import mamba_ssm_shim

        env["mamba_ssm_shim"] = mamba_ssm_shim.is_installed()
    except Exception:  # pragma: no cover
        pass
    env["mamba_kernels"] = mamba_kernel_status()
    return env


class FallbackWarnings(logging.Handler):
    """Collects transformers' "falling back to ... PyTorch implementation" warnings."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if "falling back" in msg.lower() or "fall back" in msg.lower():
            if msg not in self.messages:
                self.messages.append(msg)
