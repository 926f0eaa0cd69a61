"""The main job on the embedded default: `autoprune search --gpu a100 --budget 4x` with the demo model."""

import csv
import json

import optuna
import pytest

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
    # One token accounting: each exported schedule keeps the same share of the tokens at every
    # evaluated length as at the served (latency) length, to within one token, and its speedup is
    # the latency of those served tokens.
    tok = index["provenance"]["tokens"]
    served = tok["served_visual"]
    assert served == 16384 and sorted(tok["evaluated_visual"]) == [256, 512, 1024]
    for s in index["schedules"]:
        sched = Schedule.load(run / s["file"])
        assert all(k >= tok["floor"] - 1e-12 for k in sched.keep)  # exported already at the floor or above
        at_served = [n / served for n in sched.tokens_per_layer(served)]
        for v in tok["evaluated_visual"]:
            evaluated = sched.replace(min_tokens=1).tokens_per_layer(v)
            assert all(abs(n / v - b) <= 1.0 / v + 1e-12 for n, b in zip(evaluated, at_served))
        assert s["speedup"] == pytest.approx(index["target"]["baseline_ms"] / s["latency_ms"])
    study = optuna.load_study(study_name="demo-a100-4x", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) == 12
    assert (run / "report.md").is_file() and (run / "figures" / "pareto.png").is_file()
