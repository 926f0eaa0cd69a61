"""Does the default sampler earn its trials? Samplers compared at equal trial counts on validated accuracy.

    python benchmarks/sampler_comparison.py --samplers tpe,random --seeds 0,1,2 --trials 150 \\
        --checkpoints 50,150 --json benchmarks/results/sampler_comparison.json

For every sampler and seed: the default demo study (``autoprune search --gpu a100 --budget 4x``:
its search set, references, space and racing) run for ``--trials`` trials without its own
validation. At each checkpoint (the first N trials) the study's validation candidates
(:func:`autoprune.search.validate.select_candidates`) are evaluated on the demo's validation set —
one evaluator shared by every run, so a schedule two runs share is evaluated once — and the
result is the validated accuracy of what the export would pick at the budget: the best validated
sampled or reference schedule within the budget, and the best validated reference alone. Prints
a table (mean over seeds per sampler and checkpoint) and writes every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _options(pairs):
    import yaml

    out = {}
    for p in pairs or ():
        k, _, v = p.partition("=")
        out[k] = yaml.safe_load(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samplers", default="tpe,random")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--checkpoints", default="50,150")
    ap.add_argument("--budget", default="4x")
    ap.add_argument("--gpu", default="a100")
    ap.add_argument("--space", default=None)
    ap.add_argument("--model-option", action="append", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import optuna

    from autoprune.cost.gpus import resolve
    from autoprune.interfaces import SourceRequest
    from autoprune.models import get_model_source
    from autoprune.search.config import SearchConfig
    from autoprune.search.export import trials_frame
    from autoprune.search.records import read_trial
    from autoprune.search.run import run_search
    from autoprune.search.settings import load_settings
    from autoprune.search.validate import select_candidates

    options = _options(args.model_option)
    checkpoints = [int(x) for x in args.checkpoints.split(",")]
    t0 = time.perf_counter()
    validator = get_model_source("demo").build(
        SourceRequest(gpu=resolve(args.gpu), options=options)).validation()
    print(f"validation set: {len(validator.data)} videos ({time.perf_counter() - t0:.0f} s to prepare)", flush=True)
    runs = []
    for sampler in args.samplers.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as d:
                t1 = time.perf_counter()
                r = run_search(SearchConfig(gpu=args.gpu, budget=args.budget, trials=args.trials, sampler=sampler,
                                            seed=seed, space=args.space, model_options=options or None, out=d,
                                            show_progress=False, export=False, validate=False),
                               log=lambda *_: None)
                wall = time.perf_counter() - t1
                study = optuna.load_study(study_name=r.study_name, storage=r.storage_spec.url)
                settings = load_settings(study)
                df = trials_frame(study, settings)
                by_number = {t.number: t for t in study.trials}
                row = {"sampler": sampler, "seed": seed, "trials": len(study.trials), "wall_s": round(wall, 1),
                       "trials_per_min": round(60 * len(study.trials) / wall, 1),
                       "raced_out": int(df["raced_out_at"].notna().sum()), "checkpoints": {}}
                for c in checkpoints:
                    part = df[df["number"] < c]
                    numbers = select_candidates(part)
                    val = {}
                    for n in numbers:
                        sched = settings.accounting.for_evaluation(read_trial(by_number[n]).schedule)
                        val[n] = validator.evaluate(sched).score
                    feas = part[part["feasible"] & part["number"].isin(numbers)]
                    refs = feas[feas["reference"].notna()]
                    best = max(feas.itertuples(), key=lambda x: (val[x.number], -x.latency_ms, -x.number))
                    best_ref = max(refs.itertuples(), key=lambda x: (val[x.number], -x.latency_ms, -x.number))
                    row["checkpoints"][str(c)] = {
                        "best": {"trial": int(best.number), "reference": best.reference if isinstance(best.reference, str)
                                 else None, "validation": val[best.number], "search": float(best.score)},
                        "best_reference": {"trial": int(best_ref.number), "name": best_ref.reference,
                                           "validation": val[best_ref.number]},
                        "validated": len(numbers),
                    }
                runs.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for sampler in args.samplers.split(","):
        for c in checkpoints:
            rows = [r["checkpoints"][str(c)] for r in runs if r["sampler"] == sampler]
            summary[f"{sampler}@{c}"] = {
                "mean_validation": round(statistics.mean(x["best"]["validation"] for x in rows), 4),
                "per_seed": [round(x["best"]["validation"], 4) for x in rows],
                "mean_gain_vs_best_reference": round(statistics.mean(
                    x["best"]["validation"] - x["best_reference"]["validation"] for x in rows), 4)}
    print(f"\n{'sampler@trials':<16}{'validated acc (mean)':>22}{'per seed':>28}{'gain vs best ref':>18}")
    for k, v in summary.items():
        print(f"{k:<16}{v['mean_validation']:>22.4f}{str(v['per_seed']):>28}{v['mean_gain_vs_best_reference']:>+18.4f}")
    out = {"budget": args.budget, "gpu": args.gpu, "trials": args.trials, "options": options,
           "validation_n": len(validator.data), "runs": runs, "summary": summary,
           "machine": "2-core CPU (this project's CPU machine)"}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
