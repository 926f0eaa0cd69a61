"""How fast does the search go, and how should it treat candidates that miss the budget?

    python benchmarks/search_speed.py            # both parts, ~1-2 min on the 2-core CPU
    python benchmarks/search_speed.py --part overhead --trials 60
    python benchmarks/search_speed.py --part budget --seeds 5 --eval-cost 3

Part ``overhead``: trials per minute of ``run_search`` on the synthetic model (no
evaluation cost: this is the search's own overhead per trial: sampler, storage,
projection, bookkeeping), per sampler and storage. With a real evaluator at 2-5 s per
accuracy evaluation the overhead should stay a few percent of the run.

Part ``budget``: the two ways of handling a sampled candidate that is too slow for
the budget (``over_budget``): ``project`` (raise its keep ratios to a power until the
predicted latency meets the budget, then evaluate) vs ``reject`` (record it as PRUNED
with its latency, no evaluation). Both run TPE on the synthetic model under 4x on an
A100 with the same references and seeds; compared at equal *trials* and at equal
*accuracy evaluations* (the real cost), with the projected wall time at
``--eval-cost`` s per evaluation. Quality: best feasible score, and the hypervolume of
the feasible front in (score, latency) against (chance score, latency limit),
normalised to 1 for a perfect score at zero latency.

Part ``cache``: the default study (``autoprune search --gpu a100 --budget 4x``: the demo
model, its 256 test videos, A100 latency model, TPE, seed 0) run twice, with the prefix
activation cache (``autoprune.tasks.prefix_cache``, the default) and without it
(``prefix_cache_mb=0``): trials per minute over the optimisation (trial start to
completion, from the study's own timestamps), wall time of the whole run, seconds spent
in evaluation, the share of layers the cache skipped, and whether the two studies agree
trial by trial (they must: the cache is exact, so the seeded sampler sees the same values).

To extend ``overhead``/``budget`` to another evaluator: pass ``--model`` (a model source name or
``module:attribute``, see :mod:`autoprune.models`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def hypervolume(points, chance: float, limit: float, best: float) -> float:
    """Area dominated by (score ↑, latency ↓) points within [chance, ∞) × [0, limit], normalised."""
    pts = sorted((lat, s) for s, lat in points if lat <= limit and s > chance)
    area, best_s = 0.0, chance
    for i, (lat, s) in enumerate(pts):
        # between this latency and the next, the best score reachable is the running maximum
        nxt = pts[i + 1][0] if i + 1 < len(pts) else limit
        best_s = max(best_s, s)
        area += (best_s - chance) * (nxt - lat)
    return area / ((best - chance) * limit)


def part_overhead(trials: int, model: str, samplers, storages) -> list[dict]:
    from autoprune.search.config import SearchConfig
    from autoprune.search.run import run_search

    rows = []
    for storage in storages:
        for sampler in samplers:
            with tempfile.TemporaryDirectory() as d:
                kw = {} if storage == "sqlite" else {"storage": f"journal:{d}/study.journal"}
                t0 = time.perf_counter()
                r = run_search(SearchConfig(model=model, gpu="a100", budget="4x", trials=trials, sampler=sampler,
                                            out=f"{d}/runs", show_progress=False, **kw),
                               log=lambda *_: None)
                wall = time.perf_counter() - t0
            rows.append({"storage": storage, "sampler": sampler, "trials": r.n_trials, "wall_s": round(wall, 2),
                         "trials_per_min": round(60 * r.n_trials / wall, 1),
                         "ms_per_trial": round(1000 * wall / r.n_trials, 1)})
            print(rows[-1], flush=True)
    return rows


def _study_for(mode: str, seed: int, model: str):
    """An in-memory study with the references enqueued, and its objective (TrialRunner)."""
    import optuna

    from autoprune.budget import parse_budget
    from autoprune.cost.gpus import resolve
    from autoprune.interfaces import SourceRequest
    from autoprune.models import get_model_source
    from autoprune.schedule import Schedule
    from autoprune.search.objective import TrialRunner
    from autoprune.search.references import reference_schedules
    from autoprune.search.samplers import make_sampler
    from autoprune.search.space import load_space

    inputs = get_model_source(model).build(SourceRequest(gpu=resolve("a100")))
    space, budget = load_space("progressive"), parse_budget("4x")
    sig = inputs.evaluator.signature
    base = inputs.latency.estimate(Schedule.identity(sig.num_layers, model=sig)).baseline_ms
    limit = budget.limit_ms(base)
    runner = TrialRunner(space=space, inputs=inputs, budget=budget, limit_ms=limit, baseline_ms=base,
                         objectives=("score", "latency"), over_budget=mode)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("tpe", seed, trials=40))
    for ref in reference_schedules(space, sig, inputs.evaluator.num_visual,
                                   lambda s: inputs.predictor.estimate(s).latency_ms, limit):
        study.enqueue_trial(space.params_for(ref.schedule, sig), user_attrs={"reference": ref.name})
    return study, runner, limit


def _measure(study, runner, limit, eval_cost: float, wall: float) -> dict:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    feas = [(t.values[0], t.values[1]) for t in done if t.values[1] <= limit]
    sampled = [t for t in done if "reference" not in t.user_attrs]
    best = max((s for s, lat in feas), default=float("nan"))
    best_sampled = max((t.values[0] for t in sampled if t.values[1] <= limit), default=float("nan"))
    return {
        "trials": len(study.trials),
        "evaluations": runner.accuracy_evaluations,
        "rejected": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        "feasible": len(feas),
        "projected": sum(1 for t in sampled if t.user_attrs.get("gamma", 1) > 1),
        "best_score": round(best, 4),
        "best_sampled": round(best_sampled, 4),
        "hypervolume": round(hypervolume(feas, 0.25, limit, 0.72), 4),
        "overhead_s": round(wall, 2),
        "projected_wall_min": round((runner.accuracy_evaluations * eval_cost + wall) / 60, 2),
    }


def part_budget(seeds: int, trials: int, eval_cost: float, model: str) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {"project@trials": [], "reject@trials": [], "reject@evaluations": []}
    for seed in range(seeds):
        runs = {}
        for mode in ("project", "reject"):
            study, runner, limit = _study_for(mode, seed, model)
            t0 = time.perf_counter()
            study.optimize(runner, n_trials=trials, catch=(Exception,))
            runs[mode] = _measure(study, runner, limit, eval_cost, time.perf_counter() - t0)
        results["project@trials"].append(runs["project"])
        results["reject@trials"].append(runs["reject"])
        # reject again until it has spent as many evaluations as project did in `trials` trials
        target = runs["project"]["evaluations"]
        study, runner, limit = _study_for("reject", seed, model)

        def stop_at_target(study, _trial, runner=runner, target=target):
            if runner.accuracy_evaluations >= target:
                study.stop()

        t0 = time.perf_counter()
        study.optimize(runner, n_trials=20 * trials, catch=(Exception,), callbacks=[stop_at_target])
        results["reject@evaluations"].append(_measure(study, runner, limit, eval_cost, time.perf_counter() - t0))
        print(f"seed {seed}: " + "; ".join(f"{k}: {v[-1]}" for k, v in results.items()), flush=True)
    summary = {}
    for k, rows in results.items():
        summary[k] = {m: round(statistics.mean(r[m] for r in rows), 3) for m in rows[0]}
    return {"per_seed": results, "mean": summary}


_built: dict = {}


def _keeping_demo_source():
    """The demo model source, keeping the evaluator it builds to read its cache statistics."""
    from autoprune.demo.source import DemoSource
    from autoprune.models import register_model_source

    @register_model_source("demo-keeping")
    class KeepingDemo(DemoSource):
        name = "demo-keeping"

        def build(self, request):
            inputs = super().build(request)
            _built["evaluator"] = inputs.evaluator
            return inputs

    return "demo-keeping"


def part_cache(trials: int, repeats: int) -> dict:
    """Default demo study with and without the prefix cache (alternating, ``repeats`` times)."""
    import optuna

    from autoprune.search.config import SearchConfig
    from autoprune.search.run import run_search

    model = _keeping_demo_source()
    runs, values = [], {}
    for rep in range(repeats):
        for mode, opts in (("without cache", {"prefix_cache_mb": 0}), ("with cache", {})):
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                r = run_search(SearchConfig(gpu="a100", budget="4x", trials=trials, seed=0, out=f"{d}/runs",
                                            model=model, model_options=opts, show_progress=False),
                               log=lambda *_: None)
                wall = time.perf_counter() - t0
                study = optuna.load_study(study_name=r.study_name, storage=r.storage)
                done = [t for t in study.trials if t.datetime_complete is not None]
                span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
                values[mode] = [(t.number, t.state.name, t.values) for t in study.trials]
            ev = _built["evaluator"]
            cache = ev.prefix_cache
            row = {"mode": mode, "repeat": rep, "trials": len(study.trials), "wall_s": round(wall, 1),
                   "optimise_s": round(span, 1), "trials_per_min": round(60 * len(done) / span, 1),
                   "evaluation_s": round(ev.evaluation_seconds(), 1), "evaluations": ev.evaluations,
                   "skipped_layer_share": None if cache is None else round(cache.stats.skipped_share, 3),
                   "cache_mib": None if cache is None else round(cache.stats.stored_bytes / 2**20, 1)}
            runs.append(row)
            print(row, flush=True)
    same = values["without cache"] == values["with cache"]
    med = {m: statistics.median(r["trials_per_min"] for r in runs if r["mode"] == m)
           for m in ("without cache", "with cache")}
    ev_s = {m: statistics.median(r["evaluation_s"] for r in runs if r["mode"] == m)
            for m in ("without cache", "with cache")}
    return {"runs": runs, "identical_trials": same, "median_trials_per_min": med,
            "speedup_trials_per_min": round(med["with cache"] / med["without cache"], 3),
            "median_evaluation_s": ev_s,
            "evaluation_speedup": round(ev_s["without cache"] / ev_s["with cache"], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["overhead", "budget", "cache", "all"], default="all")
    ap.add_argument("--cache-trials", type=int, default=150, help="trials of the default study (part cache)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode (part cache)")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-cost", type=float, default=3.0, help="seconds per accuracy evaluation to project to")
    ap.add_argument("--samplers", default="tpe,random,nsga2")
    ap.add_argument("--storages", default="sqlite,journal")
    ap.add_argument("--model", default="synthetic")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    out = {}
    if args.part in ("overhead", "all"):
        out["overhead"] = part_overhead(args.trials, args.model, args.samplers.split(","),
                                        args.storages.split(","))
    if args.part in ("budget", "all"):
        out["budget"] = part_budget(args.seeds, args.trials, args.eval_cost, args.model)
        print("\nmean over seeds:")
        for k, v in out["budget"]["mean"].items():
            print(f"  {k:20s} {v}")
    if args.part in ("cache", "all"):
        out["cache"] = c = part_cache(args.cache_trials, args.repeats)
        print(f"\nprefix activation cache, default study ({args.cache_trials} trials, 2-core CPU):")
        print(f"  {'mode':15s} {'trials/min':>10s} {'evaluation s':>13s}")
        for m in ("without cache", "with cache"):
            print(f"  {m:15s} {c['median_trials_per_min'][m]:10.1f} {c['median_evaluation_s'][m]:13.1f}")
        print(f"  trials/min x{c['speedup_trials_per_min']}, evaluation x{c['evaluation_speedup']}; "
              f"identical trials: {c['identical_trials']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
