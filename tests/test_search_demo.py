"""The main job on the embedded default: `autoprune search --gpu a100 --budget 4x` with the demo model."""

import csv
import json

import optuna

from autoprune.cli import main
from autoprune.schedule import Schedule
from autoprune.demo.source import build_evaluator


def _non_dominated(rows):
    out = []
    for r in rows:
        dominated = any(o["score"] >= r["score"] and o["latency_ms"] <= r["latency_ms"]
                        and (o["score"] > r["score"] or o["latency_ms"] < r["latency_ms"]) for o in rows)
        if not dominated:
            out.append(r["number"])
    return sorted(out)


def test_default_search_on_the_demo_model_exports_the_feasible_front(tmp_path, capsys):
    rc = main(["search", "--gpu", "a100", "--budget", "4x", "--trials", "12", "--model-option", "n=32",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    run = tmp_path / "demo-a100-4x"
    rows = []
    with open(run / "trials.csv") as fh:
        for r in csv.DictReader(fh):
            if r["state"] == "COMPLETE" and r["feasible"] == "True":
                rows.append({"number": int(r["number"]), "score": float(r["score"]),
                             "latency_ms": float(r["latency_ms"]), "source": r["latency_source"]})
    assert rows and {r["source"] for r in rows} == {"roofline"}  # no A100 here: calibrated roofline
    index = json.loads((run / "pareto.json").read_text())
    assert sorted(s["trial"] for s in index["schedules"]) == _non_dominated(rows)
    ev = build_evaluator(n=8)
    budget_ms = index["target"]["budget_ms"]
    assert index["target"]["latency_source"] == "roofline"
    for s in index["schedules"]:
        sched = Schedule.load(run / s["file"], model=ev.signature)
        assert sched.keep[0] == 1.0
        assert s["latency_ms"] <= budget_ms
    study = optuna.load_study(study_name="demo-a100-4x", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) == 12
    assert (run / "report.md").is_file() and (run / "figures" / "pareto.png").is_file()
