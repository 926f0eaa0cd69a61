"""Rebuild schedule files of a study's trials from its committed ``trials.csv`` (the study's own
``pareto/*.json`` were not committed), for ``autoprune analyze --headroom --schedule``.

    python benchmarks/headroom_schedules.py benchmarks/results/demo-a100-4x-validated 141 5 4 \
        --out benchmarks/results/headroom/schedules

Each row gives the keep vector and every ``scorer.*`` field; ``min_tokens`` and the target come
from the study's ``pareto.json`` / ``report.md`` (16 and its GPU/budget); the model signature is the
shipped demo model's (the study's model). Prints one line per file written.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from autoprune import Schedule, ScorerConfig, Target, model_signature
from autoprune.demo.model import load

SCORER_TYPES = {"state_momentum": float, "w_attn": float, "w_mamba": float, "mamba_decay": lambda v: v == "True",
                "delta_correction": lambda v: v == "True", "head_agg": str, "evidence_window": int, "selector": str,
                "seed": int}


def schedule_of(row: dict, signature, *, min_tokens: int, target: Target, study: str, source: str) -> Schedule:
    scorer = ScorerConfig(**{k: t(row[f"scorer.{k}"]) for k, t in SCORER_TYPES.items()})
    metrics = {"accuracy": float(row["score"]), "latency_ms": float(row["latency_ms"]),
               "speedup": float(row["speedup"]), "validated": row["validated"] == "True"}
    prov = {"study": study, "trial": int(row["number"]), "reference": row["reference"] or None,
            "rebuilt_from": source}
    return Schedule(keep=tuple(json.loads(row["keep"])), model=signature, min_tokens=min_tokens, scorer=scorer,
                    target=target, metrics=metrics, provenance=prov)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study_dir")
    p.add_argument("trials", type=int, nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--min-tokens", type=int, default=16)
    a = p.parse_args(argv)
    d = Path(a.study_dir)
    pareto = json.loads((d / "pareto.json").read_text())
    target = Target(gpu=pareto["target"]["gpu"], budget=pareto["target"]["budget"])
    rows = {int(r["number"]): r for r in csv.DictReader((d / "trials.csv").open())}
    sig = model_signature(load())
    for t in a.trials:
        row = rows[t]
        name = f"trial-{t:04d}" + (f"-{row['reference'].replace(':', '-').replace('@', '-')}" if row["reference"] else "")
        s = schedule_of(row, sig, min_tokens=a.min_tokens, target=target, study=pareto["study"],
                        source=str(d / "trials.csv"))
        path = s.save(Path(a.out) / f"{name}.json")
        print(f"{path}: keep mean {s.mean_keep:.4f}, validated accuracy {row['score']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
