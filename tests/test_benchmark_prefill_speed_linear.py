"""The Qwen3.5 prefill benchmark (benchmarks/prefill_speed_linear.py), exercised at toy scale on the CPU."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "prefill_speed_linear.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("prefill_speed_linear_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_reduced_configuration_is_a_mean_quarter_schedule(bench):
    from autoprune.cost.shapes import get_shape
    from autoprune.plan import plan_reduction
    from autoprune.schedule import ModelSignature

    for name in ("qwen3.5-9b", "lfm2-1.2b"):
        shape = get_shape(name)
        sig = ModelSignature(family=shape.family, layer_kinds=shape.layer_kinds)
        for cfg, sched in bench.configs(sig, shape.num_layers, 16384, 16).items():
            if sched is not None and cfg != "uniform-25%":
                assert abs(sched.mean_keep - 0.25) < 0.02, (name, cfg)
                plan_reduction(sched, shape.layer_kinds, 16384)  # evidence before every cut


@pytest.mark.slow
def test_the_tiny_run_writes_a_table_with_the_scoring_share(bench, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--tiny", "--rep-ms", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    size = r["sizes"][0]
    assert len(size["rows"]) == 6 and {"scoring_selection_share", "scoring_selection_share_exact"} <= set(size)
    assert "scoring + selection" in capsys.readouterr().out
