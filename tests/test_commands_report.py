"""``autoprune report`` from the command line, on studies made by ``autoprune search --model synthetic``."""

import json

import pytest

from autoprune.cli import main
from autoprune.report import FIGURES

SEARCH = ["search", "--model", "synthetic", "--gpu", "a100", "--budget", "4x", "--no-progress", "--trials", "8",
          "--references", "none,fastv,high_to_low"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_search_then_report_end_to_end(in_tmp, capsys):
    assert main(SEARCH) == 0
    out = capsys.readouterr().out
    run = in_tmp / "runs" / "synthetic-a100-4x"
    assert "report: " in out and (run / "report.md").is_file()  # written by the search's hook
    for f in (run / "figures").iterdir():
        f.unlink()
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out and "report.html" in out
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(FIGURES[:3])  # 8 trials: no importance
    md = (run / "report.md").read_text()
    index = json.loads((run / "pareto.json").read_text())
    for entry in index["schedules"]:
        assert f"| #{entry['trial']}" in md
    assert "No knob importance: too few completed trials" in md


def test_report_of_a_journal_storage_and_a_named_study(in_tmp, capsys):
    journal = in_tmp / "s.journal"
    assert main(SEARCH + ["--study", "j", "--storage", f"journal:{journal}"]) == 0
    capsys.readouterr()
    out_dir = in_tmp / "elsewhere"
    assert main(["report", str(out_dir), "--storage", f"journal:{journal}", "--study", "j"]) == 0
    assert (out_dir / "report.html").is_file() and (out_dir / "figures" / "pareto.png").is_file()


def test_report_errors_name_what_is_missing(in_tmp, capsys):
    assert main(["report", "runs/nope"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (in_tmp / "runs" / "empty").mkdir(parents=True)
    assert main(["report", "runs/empty"]) == 2
    assert "no study storage" in capsys.readouterr().err
    assert main(SEARCH) == 0
    capsys.readouterr()
    assert main(["report", "runs/synthetic-a100-4x", "--study", "other"]) == 2
    err = capsys.readouterr().err
    assert "no study 'other'" in err and "synthetic-a100-4x" in err
    assert main(["report", "runs/synthetic-a100-4x", "--latency-tolerance", "2"]) == 2
    assert "--latency-tolerance" in capsys.readouterr().err


def test_report_of_a_run_dir_reads_the_journal_storage_search_json_records(in_tmp, capsys):
    journal = in_tmp / "s.journal"
    assert main(SEARCH + ["--study", "j2", "--storage", f"journal:{journal}"]) == 0
    capsys.readouterr()
    run = in_tmp / "runs" / "j2"
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0  # no --storage: search.json says where the study lives
    assert (run / "report.md").is_file()
