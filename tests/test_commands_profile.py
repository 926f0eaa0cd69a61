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


PROFILE = ["profile", "--gpu", "cpu", "--tokens", "48,64", "--prefix-tokens", "4", "--query-tokens", "4",
           "--rep-ms", "1", "--warmup-ms", "0", "--min-reps", "2", "--retries", "0", "--no-scoring", "--no-head",
           "--no-gather", "--kinds", "M*"]


def test_a_complete_profile_has_no_partial_key(shape_file, tmp_path):
    out = tmp_path / "t.json"
    assert main(PROFILE + ["--shape", str(shape_file), "--output", str(out), "--quiet"]) == 0
    assert "partial" not in json.loads(out.read_text())


def interrupt_after(monkeypatch, calls: int):
    """Ctrl-C during the timing call after ``calls`` completed ones."""
    import autoprune.profiler.layer_bench as lb

    real, count = lb.time_fn, [0]

    def time_fn(*a, **kw):
        if count[0] == calls:
            raise KeyboardInterrupt
        count[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(lb, "time_fn", time_fn)


def test_ctrl_c_leaves_the_partial_table_and_exits_130_with_one_line(shape_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "t.json"
    interrupt_after(monkeypatch, 3)  # mamba at 48 and 64, attention at 48; stopped during attention at 64
    assert main(PROFILE + ["--shape", str(shape_file), "--output", str(out)]) == 130
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "autoprune profile" in line]
    assert lines == [f'autoprune profile: interrupted: the partial table (3 layer points, "partial": true) is in '
                     f"{out}; run the command again to measure it all"]
    d = json.loads(out.read_text())
    assert d["partial"] is True
    t = ProfileTable.load(out)
    assert t.layers["mamba"].tokens == (48, 64) and t.layers["attention"].tokens == (48,)


def test_ctrl_c_before_the_first_point_writes_nothing(shape_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "t.json"
    interrupt_after(monkeypatch, 0)
    assert main(PROFILE + ["--shape", str(shape_file), "--output", str(out), "--quiet"]) == 130
    assert "nothing was measured yet, nothing written" in capsys.readouterr().err
    assert not out.exists()


def test_the_progress_bar_shows_an_eta_on_stderr(shape_file, tmp_path, capsys):
    assert main(PROFILE + ["--shape", str(shape_file), "--output", str(tmp_path / "t.json")]) == 0
    err = capsys.readouterr().err
    assert "profile tiny" in err and "ETA" in err and "100%" in err
