import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autoprune.cost.gpus import (
    CPU,
    NUMERIC_FIELDS,
    GpuSpec,
    Registry,
    detect,
    load_registry,
    load_spec,
    normalize_name,
    profiles_root,
    resolve,
    resolve_verbose,
)
from autoprune.errors import ConfigError, UnknownGPUError
from hw_fixtures import FakeNvml

REQUIRED = ["a100-sxm4-40gb", "a100-sxm4-80gb", "a100-pcie-40gb", "a100-pcie-80gb", "h100-sxm5-80gb",
            "h100-pcie-80gb", "h200-sxm-141gb", "l40s", "l4", "a10g", "rtx-4090", "b200"]
REPO = Path(__file__).resolve().parents[2]


def spec_dict(**over):
    d = json.loads((profiles_root() / "gpus" / "h100-sxm5-80gb.json").read_text())
    d.update(over)
    return d


def write_spec(directory: Path, d: dict) -> Path:
    p = directory / f"{d['id']}.json"
    p.write_text(json.dumps(d))
    return p


# ---------------------------------------------------------------- registry
def test_registry_has_every_required_gpu():
    reg = load_registry()
    assert set(REQUIRED) <= {s.id for s in reg}


def test_every_number_has_a_source_and_peaks_are_dense():
    for s in load_registry():
        assert set(NUMERIC_FIELDS) <= set(s.sources), s.id
        assert s.bf16_tflops < 2500 and s.memory_bandwidth_gbs < 10000, s.id
    h100 = resolve("h100-sxm5-80gb")
    assert h100.bf16_tflops == pytest.approx(989.4)  # the datasheet's 1,979 is with 2:4 sparsity


def test_registry_is_found_inside_the_package():
    from autoprune._io import data_dir

    assert (data_dir("profiles") / "gpus" / "a100-sxm4-80gb.json").is_file()


# -------------------------------------------------------------- resolution
@pytest.mark.parametrize("name, gpu_id, how", [
    ("a100-sxm4-80gb", "a100-sxm4-80gb", "id"),
    ("A100 SXM4 80GB", "a100-sxm4-80gb", "id"),
    ("a100_sxm4_40gb", "a100-sxm4-40gb", "id"),
    ("4090", "rtx-4090", "alias"),
    ("h100-sxm", "h100-sxm5-80gb", "alias"),
    ("a100", "a100-sxm4-80gb", "family-default"),
    ("H100", "h100-sxm5-80gb", "family-default"),
    ("h200", "h200-sxm-141gb", "family-only"),
    ("l4", "l4", "id"),
    ("l40", "l40s", "prefix"),
    ("a100-pcie-8", "a100-pcie-80gb", "prefix"),
])
def test_names_resolve(name, gpu_id, how):
    r = resolve_verbose(name)
    assert (r.spec.id, r.how) == (gpu_id, how)


def test_family_default_names_the_other_variants():
    r = resolve_verbose("a100")
    assert "a100-pcie-40gb" in r.describe() and "family-default" in r.describe()


def test_ambiguous_prefix_lists_the_candidates():
    with pytest.raises(UnknownGPUError) as e:
        resolve("a100-sxm4")
    assert "ambiguous" in str(e.value)
    assert "a100-sxm4-40gb" in str(e.value) and "a100-sxm4-80gb" in str(e.value)


def test_family_without_default_is_ambiguous(tmp_path):
    a = spec_dict(id="x1-a", family="x1", family_default=False, aliases=[], nvml_names=["X1 A"])
    b = spec_dict(id="x1-b", family="x1", family_default=False, aliases=[], nvml_names=["X1 B"])
    reg = Registry([GpuSpec.from_dict(a), GpuSpec.from_dict(b)])
    with pytest.raises(UnknownGPUError, match=r"ambiguous.*\['x1-a', 'x1-b'\]"):
        reg.resolve("x1")


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownGPUError) as e:
        resolve("v100")
    msg = str(e.value)
    assert "close matches" in msg and "a100" in msg
    assert isinstance(e.value, LookupError)


def test_cpu_is_a_pseudo_gpu():
    assert resolve("cpu") is CPU and CPU.is_cpu
    with pytest.raises(ConfigError):
        CPU.peak_tflops("float32")


def test_auto_without_nvml_or_cuda_says_to_name_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UnknownGPUError, match="--gpu cpu"):
        resolve("auto", nvml=FakeNvml(fail_init=True))


def test_auto_detects_through_nvml():
    assert resolve("auto", nvml=FakeNvml("NVIDIA H100 80GB HBM3")).id == "h100-sxm5-80gb"
    assert detect(nvml=FakeNvml("NVIDIA A100-SXM4-40GB")).id == "a100-sxm4-40gb"
    assert detect(nvml=FakeNvml("NVIDIA A100 80GB PCIe")).id == "a100-pcie-80gb"
    # L4 and L40S must not be confused
    assert detect(nvml=FakeNvml("NVIDIA L4")).id == "l4"
    assert detect(nvml=FakeNvml("NVIDIA L40S")).id == "l40s"
    assert detect(nvml=FakeNvml(b"NVIDIA H200")).id == "h200-sxm-141gb"


def test_auto_with_an_unknown_device_name_fails_clearly():
    with pytest.raises(UnknownGPUError, match="matches no registry file"):
        detect(nvml=FakeNvml("NVIDIA H200 NVL"))


# -------------------------------------------------------------- validation
def test_missing_source_is_an_error_naming_file_and_field(tmp_path):
    d = spec_dict()
    del d["sources"]["tdp_w"]
    p = write_spec(tmp_path, d)
    with pytest.raises(ConfigError, match=r"h100-sxm5-80gb\.json.*tdp_w"):
        load_spec(p)


@pytest.mark.parametrize("field, value", [("memory_bandwidth_gbs", -1), ("bf16_tflops", "fast"),
                                          ("sm_count", 13.5), ("nvml_names", []), ("unverified", ["speed"])])
def test_bad_values_are_errors_naming_the_field(tmp_path, field, value):
    p = write_spec(tmp_path, spec_dict(**{field: value}))
    with pytest.raises(ConfigError, match=field):
        load_spec(p)


def test_other_format_versions_are_refused(tmp_path):
    p = write_spec(tmp_path, spec_dict(format="autoprune.gpu/v2"))
    with pytest.raises(ConfigError, match="autoprune.gpu/v1"):
        load_spec(p)


def test_unknown_keys_are_refused(tmp_path):
    p = write_spec(tmp_path, spec_dict(clock_mhz=1980))
    with pytest.raises(ConfigError, match="clock_mhz"):
        load_spec(p)


def test_file_name_must_match_id(tmp_path):
    d = spec_dict()
    p = tmp_path / "h100.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="named"):
        load_spec(p)


def test_duplicate_alias_across_files_is_an_error():
    a = GpuSpec.from_dict(spec_dict(id="g-one", aliases=["shared"], family=None, family_default=False))
    b = GpuSpec.from_dict(spec_dict(id="g-two", aliases=["shared"], family=None, family_default=False))
    with pytest.raises(ConfigError, match="shared"):
        Registry([a, b])


def test_two_family_defaults_are_an_error():
    a = GpuSpec.from_dict(spec_dict(id="g-one", aliases=[], family="g", family_default=True))
    b = GpuSpec.from_dict(spec_dict(id="g-two", aliases=[], family="g", family_default=True))
    with pytest.raises(ConfigError, match="family_default"):
        Registry([a, b])


def test_extra_directories_extend_the_registry(tmp_path):
    write_spec(tmp_path, spec_dict(id="my-gpu", name="My GPU", aliases=["mine"], family=None,
                                   family_default=False, nvml_names=["My GPU"]))
    reg = load_registry([tmp_path])
    assert reg.resolve("mine").spec.id == "my-gpu"
    assert "h100-sxm5-80gb" in reg


def test_normalize_name():
    assert normalize_name("  NVIDIA_H100  SXM ") == "nvidia-h100-sxm"


def test_spec_round_trips_through_its_dict():
    s = resolve("l40s")
    assert GpuSpec.from_dict(s.to_dict(), origin=s.origin) == s


# -------------------------------------------------------------- packaging
def test_registry_loads_from_a_built_wheel(tmp_path):
    """``pip wheel`` the project, unpack it elsewhere and resolve from there (no source tree)."""
    src = tmp_path / "src"
    # Build from a clean copy so that build/ and egg-info of the worktree are not touched.
    skip = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".whl", "venv", ".venv",
                                  ".pytest_cache", "runs", "results")
    shutil.copytree(REPO, src, ignore=skip)
    wheels = tmp_path / "wheels"
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)]
    # Without build isolation when the environment's setuptools is new enough (>= 77 for the
    # PEP 639 license string), else let pip provide one.
    r = subprocess.run(base + ["--no-build-isolation"], capture_output=True, text=True)
    if r.returncode != 0:
        r = subprocess.run(base, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr[-300:]}")
    (wheel,) = wheels.glob("autoprune-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "autoprune/data/profiles/gpus/a100-sxm4-80gb.json" in names
        z.extractall(site)
    code = ("import autoprune.cost.gpus as g, pathlib; r = g.resolve('a100'); "
            f"assert pathlib.Path(g.__file__).is_relative_to({str(site)!r}), g.__file__; print(r.id)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "a100-sxm4-80gb"
