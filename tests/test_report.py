"""Making a report (autoprune/report/build.py): files, edge-case studies, idempotence, the search hook."""

import base64
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autoprune import _io
from autoprune.errors import ConfigError
from autoprune.report import FIGURES, write_report
from autoprune.search.config import SearchConfig
from autoprune.search.export import trials_frame
from autoprune.search.records import read_trial
from autoprune.search.run import run_search
from report_helpers import make_study, references, trial


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real synthetic study and its report."""
    out = tmp_path_factory.mktemp("report") / "runs"
    r = run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=20, seed=0, out=str(out),
                                references=("none", "fastv", "high_to_low"), show_progress=False), log=quiet)
    study = optuna.load_study(study_name=r.study_name, storage=f"sqlite:///{r.run_dir / 'study.db'}")
    write_report(study, r.run_dir, log=quiet)
    return r, study


def _md_table(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {header_start}"))
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]])
    return rows


def test_search_writes_the_report_through_its_hook(run):
    r, _ = run
    for name in ("report.md", "report.html", "trials.csv"):
        assert (r.run_dir / name).is_file()
    assert sorted(p.name for p in (r.run_dir / "figures").iterdir()) == sorted(FIGURES)


def test_the_markdown_table_shows_the_stored_numbers_of_every_exported_trial(run):
    r, study = run
    md = (r.run_dir / "report.md").read_text()
    rows = _md_table(md, "schedule")
    by_number = {t.number: t for t in study.trials}
    base = next(t for t in study.trials if t.user_attrs.get("reference") == "none").values[0]
    numbers = [int(row[0].split()[0][1:]) for row in rows]
    assert sorted(numbers) == r.export.pareto  # every exported schedule, once
    assert numbers == sorted(numbers, key=lambda n: (by_number[n].values[1], n))  # fastest first
    for row in rows:
        t = by_number[int(row[0].split()[0][1:])]
        score, latency = t.values
        assert row[1].startswith(f"{score:.3f} [")
        assert row[2] == f"{score - base:+.3f}"
        assert row[3] == f"{latency:.2f}" and row[4] == f"{read_trial(t).latency.speedup:.2f}×"
        assert row[5] == "roofline" and row[6] == "A100-SXM4-80GB"
    assert "4x: ≤ " in md and "sampler tpe" in md and "20: " in md


def test_the_html_is_one_file_with_the_figures_embedded(run):
    r, _ = run
    html = (r.run_dir / "report.html").read_text()
    srcs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(srcs) == 4
    embedded = {base64.b64decode(s) for s in srcs}
    assert embedded == {(r.run_dir / "figures" / name).read_bytes() for name in FIGURES}
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<table" in html and "Exported schedules vs references at equal latency" in html


def test_trials_csv_is_the_exports_frame(run):
    r, study = run
    assert (r.run_dir / "trials.csv").read_text() == trials_frame(study).to_csv(index=False)


def test_regenerating_gives_the_same_bytes_and_writes_every_file_atomically(run, monkeypatch):
    r, study = run
    before = {p.relative_to(r.run_dir): p.read_bytes() for p in r.run_dir.rglob("*")
              if p.is_file() and p.suffix in (".md", ".html", ".csv", ".png")}
    written = []
    real = _io.write_bytes
    monkeypatch.setattr(_io, "write_bytes", lambda path, data: written.append(Path(path)) or real(path, data))
    result = write_report(study, r.run_dir, log=quiet)
    after = {p.relative_to(r.run_dir): p.read_bytes() for p in r.run_dir.rglob("*")
             if p.is_file() and p.suffix in (".md", ".html", ".csv", ".png")}
    assert after == before and not result.problems
    assert {p.relative_to(r.run_dir) for p in written} == set(before)
    assert not list(r.run_dir.rglob("*.tmp"))


def test_a_stale_figure_is_replaced_or_removed(tmp_path):
    figs = tmp_path / "figures"
    figs.mkdir()
    for name in FIGURES:
        (figs / name).write_bytes(b"stale")
    study = make_study(references() + [trial(score=0.4, latency=80.0)])  # too few trials for importance
    result = write_report(study, tmp_path, log=quiet)
    assert sorted(result.figures) == ["history.png", "pareto.png", "schedules.png"]
    assert all((figs / n).read_bytes().startswith(b"\x89PNG") for n in result.figures)
    assert not (figs / "importance.png").exists() and result.removed == [figs / "importance.png"]
    md = (tmp_path / "report.md").read_text()
    assert "No knob importance: too few completed trials" in md and "figures/importance.png" not in md


def test_a_study_with_zero_feasible_trials_gives_a_report_that_says_so(tmp_path):
    study = make_study([trial(score=0.72, latency=400.0, reference="none"),
                        trial(score=0.55, latency=180.0), trial(score=0.5, latency=140.0),
                        trial("PRUNED", latency=120.0, rejected="over budget: 120.00 ms > 100.00 ms"),
                        trial("FAIL", fail_reason="MemoryError: synthetic out-of-memory at evaluation 3")])
    result = write_report(study, tmp_path, log=quiet)
    assert not result.problems and result.n_feasible == 0 and result.n_exported == 0
    md = (tmp_path / "report.md").read_text()
    assert "**No feasible trial**" in md and "no schedule was exported" in md
    assert "No schedule was exported, so there is nothing to compare" in md
    assert "#4: MemoryError: synthetic out-of-memory at evaluation 3" in md
    assert "no feasible trial" in result.data["pareto.png"].panels[1].message
    html = (tmp_path / "report.html").read_text()
    assert "<strong>No feasible trial</strong>" in html


def test_a_study_of_only_references_reports_cleanly(tmp_path):
    study = make_study(references())
    result = write_report(study, tmp_path, log=quiet)
    assert not result.problems
    rows = result.data["table"]
    assert [(r.number, r.reference) for r in rows] == [(3, "pyramid")]  # 0.45 at 99.9 ms beats the others
    md = (tmp_path / "report.md").read_text()
    assert "#3 (PyramidDrop-like)" in md and "| no reduction | #0 | COMPLETE | 0.720 |" in md


def test_a_study_with_failed_trials_lists_them_and_reports_the_rest(tmp_path):
    trials = references() + [trial("FAIL", fail_reason=f"NaN score at evaluation {i}") for i in range(12)]
    result = write_report(make_study(trials), tmp_path, log=quiet)
    assert not result.problems
    md = (tmp_path / "report.md").read_text()
    assert "## Failed trials (12)" in md and "#5: NaN score at evaluation 0" in md and "and 2 more" in md
    assert "12 failed" in md and "12 failed trials (no result) not shown" in result.data["pareto.png"].footnote


def test_a_study_without_trials_reports_that_there_is_nothing(tmp_path):
    result = write_report(make_study([]), tmp_path, log=quiet)
    assert not result.problems
    assert "The study has no trials yet" in (tmp_path / "report.md").read_text()


def test_a_section_that_fails_costs_only_that_section(tmp_path, monkeypatch):
    from autoprune.report import pareto

    def boom(data):
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(pareto, "draw_pareto", boom)
    seen = []
    result = write_report(make_study(references()), tmp_path, log=seen.append)
    assert result.problems == ["pareto.png could not be made: RuntimeError: cannot draw"]
    assert "pareto.png" not in result.figures and "schedules.png" in result.figures
    assert any("warning" in s for s in seen)
    assert "**Warning:** pareto.png could not be made" in (tmp_path / "report.md").read_text()


def test_a_stale_export_index_is_pointed_out(tmp_path):
    (tmp_path / "pareto.json").write_text('{"schedules": [{"trial": 99}]}')
    write_report(make_study(references()), tmp_path, log=quiet)
    assert "pareto.json lists trials [99] but the study's feasible front is now [3]" in (
        tmp_path / "report.md").read_text()


def test_a_study_not_made_by_autoprune_search_is_refused(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ConfigError, match="not made by autoprune search"):
        write_report(study, tmp_path, log=quiet)


def test_importing_the_report_package_imports_no_plotting_or_tables():
    code = ("import sys, autoprune.report; "
            "print(sorted(m for m in ('matplotlib', 'pandas', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_study_without_references_reports_its_front_and_says_there_is_nothing_to_compare_with(tmp_path):
    study = make_study([trial(score=0.40, latency=60.0), trial(score=0.45, latency=90.0)])
    result = write_report(study, tmp_path, log=quiet)
    assert not result.problems and result.n_exported == 2
    md = (tmp_path / "report.md").read_text()
    assert "no evaluated reference" in md and "This study has no reference trials" in md
    assert "unknown (no completed 'none' reference)" in md
