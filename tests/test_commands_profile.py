import json

import pytest
import torch

from autoprune.cli import main
from autoprune.cost.profile_table import ProfileTable
from hw_fixtures import TINY


@pytest.fixture
def shape_file(tmp_path):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(TINY.to_dict()))
    return p


def test_profile_on_the_cpu_writes_a_table_under_gpu_and_shape(shape_file, tmp_path, capsys):
    out_dir = tmp_path / "measured"
    rc = main(["profile", "--shape", str(shape_file), "--gpu", "cpu", "--tokens", "48,64", "--prefix-tokens", "4",
               "--query-tokens", "4", "--rep-ms", "1", "--warmup-ms", "0", "--min-reps", "2", "--retries", "0",
               "--out-dir", str(out_dir), "--quiet", "--no-scoring", "--no-head"])
    assert rc == 0
    path = out_dir / "cpu" / f"{TINY.name}.json"
    assert f"wrote {path}" in capsys.readouterr().out
    t = ProfileTable.load(path)
    assert t.gpu == "cpu" and t.layers["attention"].tokens == (48, 64) and t.scoring == {}


def test_profile_for_a_gpu_that_is_not_here_is_an_error(shape_file, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["profile", "--shape", str(shape_file), "--gpu", "h100", "--out-dir", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_profile_refuses_an_unknown_shape(capsys):
    assert main(["profile", "--shape", "no-such-shape"]) == 2
    assert "neither a preset" in capsys.readouterr().err
