"""``autoprune search``: find the Pareto-optimal schedules for a GPU under a latency budget.

    autoprune search --gpu a100 --budget 4x
    autoprune search --spec demo-a100-4x --trials 80 --workers 2
    autoprune search --study demo-a100-4x --resume

The study is :func:`autoprune.search.run_search`; the report of its run directory
(:func:`autoprune.report.report_run_dir`) is written after it.
"""

from __future__ import annotations


def model_options(pairs: list[str] | None) -> dict | None:
    """``--model-option KEY=VALUE`` pairs as a mapping (values read as YAML scalars); None when none."""
    if not pairs:
        return None
    import yaml

    from ..errors import ConfigError

    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-option takes KEY=VALUE, got {p!r}")
        out[key] = yaml.safe_load(value)
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search",
        help="search reduction schedules for a GPU under a latency budget (Optuna)",
        description="Search per-layer keep ratios and scorer blending for a target GPU under a latency budget, "
                    "then export the feasible Pareto-optimal schedules to runs/<study>/.",
    )
    p.add_argument("--gpu", help="target GPU (e.g. a100, h100; 'auto' = the present one)")
    p.add_argument("--budget", help="latency budget: '4x' (speedup), '120ms', or '25%%' of the unreduced latency")
    p.add_argument("--study", help="study name (default: <model>-<gpu>-<budget>, e.g. demo-a100-4x)")
    p.add_argument("--spec", help="a study spec: a name from studies/ (e.g. demo-a100-4x) or a .yaml path")
    p.add_argument("--model", help="model source: demo (default), synthetic (a dry run without weights), or "
                                   "MODULE:ATTRIBUTE of a model source of your own (see autoprune.models)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE", help="option of the model source")
    p.add_argument("--task", help="evaluation task (default: the model's; accuracy or fidelity)")
    p.add_argument("--space", help="search space: progressive (default), per_layer, fixed_scorer, or a .yaml path")
    p.add_argument("--sampler", choices=["tpe", "nsga2", "gp", "random"], help="Optuna sampler (default tpe)")
    p.add_argument("--trials", type=int, help="total trials in the study, references included (default 150)")
    p.add_argument("--seed", help="sampler seed (default 0; 'none' for unseeded)")
    p.add_argument("--storage", help="SQLAlchemy URL or journal:PATH (default sqlite:///<out>/<study>/study.db)")
    p.add_argument("--resume", action="store_true", help="continue an existing study")
    p.add_argument("--workers", type=int, help="worker processes on the one storage (default 1)")
    p.add_argument("--measure", action="store_true", default=None, help="time candidates on the present GPU")
    p.add_argument("--energy", action="store_true", help="add energy (J) as a third objective (needs --measure)")
    p.add_argument("--over-budget", choices=["project", "reject"],
                   help="a too-slow candidate is projected onto the budget (default) or rejected")
    p.add_argument("--no-references", action="store_true", help="do not add the reference schedules")
    p.add_argument("--references", metavar="NAME,…",
                   help="the reference schedules to evaluate first (default: none, fastv@*, uniform, pyramid, "
                        "high_to_low, low_to_high, low_to_high:attn; see autoprune.search.references)")
    p.add_argument("--no-racing", action="store_true",
                   help="evaluate every candidate on the whole search set (no early stop against the incumbent)")
    p.add_argument("--no-validation", action="store_true",
                   help="export on search-set scores (no validation set)")
    p.add_argument("--out", default="runs", help="folder of run directories (default runs)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=search_command)


def search_command(args) -> int:
    from ..report import report_run_dir
    from ..search.config import SearchConfig, load_study_spec
    from ..search.run import run_search

    seed_given = args.seed is not None
    seed = None if (args.seed or "").lower() == "none" else (int(args.seed) if seed_given else 0)
    overrides = dict(
        gpu=args.gpu, budget=args.budget, study=args.study, model=args.model, task=args.task, space=args.space,
        sampler=args.sampler, trials=args.trials, storage=args.storage, workers=args.workers,
        measure=args.measure, timeout=args.timeout, over_budget=args.over_budget,
        model_options=model_options(args.model_option),
        objectives=("score", "latency", "energy") if args.energy else None,
        references=() if args.no_references else (
            tuple(x.strip() for x in args.references.split(",") if x.strip()) if args.references else None),
        race=False if args.no_racing else None,
    )
    common = dict(out=args.out, resume=args.resume, show_progress=not args.no_progress,
                  validate=not args.no_validation)
    if args.spec:
        spec = load_study_spec(args.spec)
        config = SearchConfig.from_spec(spec, **overrides, **common)
        if seed_given:
            config = _replace(config, seed=seed)
    else:
        config = SearchConfig(**{k: v for k, v in overrides.items() if v is not None}, seed=seed, **common)
    result = run_search(config)
    if result.export is not None:
        report_run_dir(result.run_dir, storage=result.storage_spec, study=result.study_name)
    return 0


def _replace(config, **kw):
    import dataclasses

    return dataclasses.replace(config, **kw)
