"""The GPU validation script (benchmarks/latency_model.py), exercised at toy scale on the CPU."""

import importlib.util
import json
from pathlib import Path

import pytest

from hw_fixtures import TINY

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "latency_model.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("latency_model_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_random_schedules_are_monotone_and_spread_over_the_mean_range(bench):
    scheds = bench.random_schedules(52, 20, seed=3, mean_keep=(0.15, 0.8))
    means = sorted(s.mean_keep for s in scheds)
    assert len(scheds) == 20
    assert means[0] < 0.2 and means[-1] > 0.75
    for s in scheds:
        assert s.keep[0] == 1.0
        assert all(b <= a for a, b in zip(s.keep, s.keep[1:]))
    targets = [0.15 + 0.65 * (i + 0.5) / 20 for i in range(20)]
    assert all(abs(a - b) < 0.02 for a, b in zip(means, sorted(targets)))


def test_random_schedules_are_reproducible(bench):
    a = bench.random_schedules(10, 5, seed=1)
    b = bench.random_schedules(10, 5, seed=1)
    assert [s.keep for s in a] == [s.keep for s in b]


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_a_tiny_shape(bench, tmp_path):
    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps(TINY.to_dict()))
    rc = bench.main(["--shape", str(shape), "--device", "cpu", "--visual", "96", "--prefix", "8", "--query", "8",
                     "--schedules", "2", "--repeats", "2", "--retries", "0", "--profile", "--grid-min", "64",
                     "--grid-max", "128", "--profile-rep-ms", "1", "--out", str(tmp_path)])
    assert rc == 0
    (result,) = tmp_path.glob("latency_model-cpu-*.json")
    data = json.loads(result.read_text())
    size = data["sizes"][0]
    assert size["visual"] == 96 and len(size["rows"]) == 2
    assert set(size["summary"]) == {"table"}
    assert (tmp_path / "profiles" / "measured" / "cpu" / f"{TINY.name}.json").is_file()


@pytest.mark.slow
def test_benchmark_with_quick_points_compares_few_shot_and_the_spec_only_forms(bench, tmp_path):
    from hw_fixtures import TINY_BF16, linear_table

    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps(TINY_BF16.to_dict()))
    grid = (64, 128, 256, 512, 1024, 2048)
    linear_table(TINY_BF16, gpu="h100-sxm5-80gb", tokens=grid).save(tmp_path / "h100.json")
    linear_table(TINY_BF16, gpu="h200-sxm-141gb", tokens=grid).save(tmp_path / "h200.json")
    rc = bench.main(["--shape", str(shape), "--device", "cpu", "--as-gpu", "h200-sxm-141gb", "--visual", "96",
                     "--prefix", "8", "--query", "8", "--schedules", "2", "--repeats", "2", "--retries", "0",
                     "--table", str(tmp_path / "h200.json"), "--quick-from", str(tmp_path / "h100.json"),
                     "--quick-visual", "96", "--quick-tokens", "32,64,128,256", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / f"latency_model-h200-sxm-141gb-{TINY_BF16.name}-V96.json").read_text())
    assert len(data["quick"]["quick_profile"]["points"]) == 12 and len(data["quick"]["quick_profile"]["prefills"]) == 3
    size = data["sizes"][0]
    assert {"table", "few-shot", "roofline", "roofline-max"} <= set(size["summary"])
    row = size["rows"][0]
    assert row["few-shot"]["source"] == "few-shot" and row["roofline"]["source"] == "roofline"
    assert row["few-shot"]["low_ms"] < row["few-shot"]["latency_ms"] < row["few-shot"]["high_ms"]
    assert (tmp_path / f"quick-h200-sxm-141gb-{TINY_BF16.name}.json").is_file()
