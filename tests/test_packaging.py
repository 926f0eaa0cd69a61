"""What the wheel must carry. From an installed (non-editable) autoprune — as CI runs it — the
code and data must be found inside the installation; from a source checkout, at least present."""

import importlib
import importlib.metadata
from pathlib import Path

import pytest

import autoprune

PACKAGE_DIR = Path(autoprune.__file__).resolve().parent
INSTALLED = not (PACKAGE_DIR.parent / "pyproject.toml").exists()


@pytest.mark.parametrize("module", ["autoprune.kernels", "autoprune.report", "autoprune.adapters",
                                    "autoprune.commands", "autoprune.demo", "autoprune.tasks", "autoprune.serving"])
def test_subpackages_import_and_live_inside_an_installed_package(module):
    mod = importlib.import_module(module)
    if INSTALLED:
        assert PACKAGE_DIR in Path(mod.__file__).resolve().parents


@pytest.mark.parametrize("kind,pattern,at_least", [
    ("search_spaces", "*.yaml", 3),
    ("studies", "*.yaml", 3),
    ("profiles", "gpus/*.json", 12),
    ("profiles", "measured/*/*.json", 2),
])
def test_data_files_ship_with_the_package(kind, pattern, at_least):
    from autoprune._io import data_dir

    root = data_dir(kind).resolve()
    if INSTALLED:
        assert PACKAGE_DIR in root.parents
    assert len(list(root.glob(pattern))) >= at_least


@pytest.mark.skipif(not INSTALLED, reason="about the installed wheel (CI installs it); a checkout lists its sources")
def test_the_distribution_has_no_top_level_kernels_module():
    # 'kernels' is taken on the package index; ours installs only as autoprune.kernels.
    files = importlib.metadata.files("autoprune") or []
    assert not [f for f in files if str(f).split("/")[0] == "kernels"]
    assert any(str(f).startswith("autoprune/kernels/") for f in files)
