"""The mamba-ssm import shim does what upstream's fix does, and nothing more."""

import importlib
import sys
import types

import pytest

from autoprune.compat import mamba_ssm_shim


@pytest.fixture
def clean_modules(monkeypatch):
    monkeypatch.delitem(sys.modules, mamba_ssm_shim.MODULE, raising=False)
    yield


def test_nothing_is_installed_without_mamba_ssm(clean_modules, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert not mamba_ssm_shim.install()
    assert mamba_ssm_shim.MODULE not in sys.modules


def test_nothing_is_installed_when_the_extension_exists(clean_modules, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert not mamba_ssm_shim.install()


def test_the_placeholder_imports_and_raises_only_when_the_mamba1_scan_is_called(clean_modules, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "mamba_ssm" else None)
    assert mamba_ssm_shim.install()
    import selective_scan_cuda  # noqa: F401  (what mamba_ssm/__init__ does)

    assert mamba_ssm_shim.is_installed()
    with pytest.raises(RuntimeError, match="Mamba1 CUDA scan"):
        selective_scan_cuda.fwd(1, 2, 3)
    assert isinstance(selective_scan_cuda, types.ModuleType)
