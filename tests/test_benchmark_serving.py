"""benchmarks/serving.py --tiny runs every section on the CPU and writes its JSON."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


@pytest.mark.slow
def test_the_tiny_serving_benchmark_writes_every_section(tmp_path, capsys):
    import serving

    out = tmp_path / "serving.json"
    assert serving.main(["--tiny", "--out", str(out), "--batches", "1,4", "--headline", "64"]) == 0
    res = json.loads(out.read_text())
    assert [s["visual"] for s in res["headline"]] == [64]
    assert [s["batch_size"] for s in res["serving"]] == [1, 4]
    for sec in res["serving"]:
        assert set(sec["runners"]) == {"unreduced-eager", "reduced-eager", "unreduced-graphs", "reduced-graphs"}
        assert all("requests_per_s" in r for r in sec["runners"].values())
        assert sec["runners"]["reduced-graphs"]["agreement_with_eager"]["top1_equal_share"] == 1.0
    assert "serving on cpu" in capsys.readouterr().out
