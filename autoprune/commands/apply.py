"""``autoprune apply``: run a model with a schedule file and print its score and latency.

    autoprune apply --schedule runs/demo-a100-4x/pareto/trial-0037.json [--model demo]
    autoprune apply --model ./checkpoint --schedule X.json --data clips.jsonl

One library call: :func:`autoprune.search.apply.apply_schedule`.
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "apply",
        help="run a model with a schedule file; print its accuracy and latency",
        description="Evaluate a schedule (JSON v1) on its model and task and estimate its latency on its GPU.",
    )
    p.add_argument("--schedule", required=True, help="schedule JSON file (e.g. runs/<study>/pareto/trial-0037.json)")
    p.add_argument("--model", help="model (default: the schedule's, else demo)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE", help="option of the model source")
    p.add_argument("--task", help="task (default: the schedule's)")
    p.add_argument("--gpu", help="GPU for the latency (default: the schedule's target)")
    p.add_argument("--measure", action="store_true", help="time it on the present GPU")
    from .search import checkpoint_arguments

    checkpoint_arguments(p)
    p.set_defaults(func=apply_command)


def apply_command(args) -> int:
    from ..schedule import Schedule
    from ..search.apply import apply_schedule
    from .search import model_options, resolve_model

    stored = (Schedule.load(args.schedule).provenance or {}).get("model")
    model, options, _ = resolve_model(args, model_options(args.model_option), spec_model=stored)
    r = apply_schedule(args.schedule, model=model, task=args.task, gpu=args.gpu, measure=args.measure,
                       model_options=options)
    res, est, s = r.result, r.latency, r.schedule
    base = (s.metrics or {}).get(f"baseline_{res.metric}")
    print(f"{args.schedule}: model {r.model}, mean keep {s.mean_keep:.3f}, prune layers "
          f"{s.prune_layers(r.num_visual)} at {r.num_visual} visual tokens")
    print(f"{res.metric}: {res.score:.4f} (95% CI {res.ci_low:.4f}-{res.ci_high:.4f}, n={res.n})"
          + (f"; unreduced at export: {base:.4f}" if isinstance(base, (int, float)) else ""))
    print(f"latency: {est.latency_ms:.2f} ms vs {est.baseline_ms:.2f} ms unreduced = {est.speedup:.2f}x "
          f"({est.source}, {est.gpu})" + (f"; energy {est.energy_j:.1f} J" if est.energy_j is not None else ""))
    return 0
