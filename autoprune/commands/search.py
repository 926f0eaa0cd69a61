"""``autoprune search``: find the Pareto-optimal schedules for a GPU under a latency budget.

    autoprune search --gpu a100 --budget 4x
    autoprune search --spec demo-a100-4x --trials 80 --workers 2
    autoprune search --study demo-a100-4x --resume
    autoprune search --model ./checkpoint --data clips.jsonl --gpu h100 --budget 3x

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


def parse_seed(text: str) -> int | None:
    """``--seed``: a non-negative integer, or ``none`` for an unseeded sampler."""
    from ..errors import ConfigError

    if text.strip().lower() == "none":
        return None
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ConfigError(f"--seed takes a non-negative integer or 'none', got {text!r}")
    return seed


def checkpoint_arguments(p) -> None:
    """The flags of a real checkpoint (the ``hf`` model source): they become its model options."""
    g = p.add_argument_group("checkpoint (--model PATH: a transformers checkpoint, the hf model source)")
    g.add_argument("--data", metavar="FILE.jsonl", help="evaluation records (autoprune.tasks.records); needs --model")
    g.add_argument("--validation", metavar="FILE.jsonl",
                   help="held-out records (disjoint from --data): the export validates the front on them")
    g.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="weights dtype (default bf16 on a GPU, fp32 on CPU)")
    g.add_argument("--device", help="torch device of the model (default cuda when there is one)")
    g.add_argument("--limit", type=int, metavar="N", help="evaluate the first N records only")
    g.add_argument("--stack", choices=["eager", "compiled"],
                   help="what --measure times: the eager runtime (default) or the serving runner (ReducedPrefill: "
                        "compiled blocks, Triton conv, CUDA graphs)")


def resolve_model(args, options: dict | None, *, spec_model: str | None = None) -> tuple:
    """``(model source, options, label)`` from ``--model`` and the checkpoint flags.

    A checkpoint path or repo id becomes the ``hf`` source (see
    :func:`autoprune.models.resolve_model_argument`); ``--data`` and the other checkpoint flags
    are its options and need a model that takes them."""
    from ..errors import ConfigError
    from ..models import resolve_model_argument

    model, options, label = resolve_model_argument(args.model, options)
    flags = {k: getattr(args, k, None) for k in ("data", "validation", "dtype", "device", "limit", "stack")}
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        if (model or spec_model) is None:
            raise ConfigError(f"--{next(iter(given))} needs --model PATH (a checkpoint directory or cached repo id)")
        options = {**(options or {}), **given}
    return model, options, label


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
    p.add_argument("--model", help="model: a checkpoint directory or cached repo id (the hf source; with --data), "
                                   "demo (default), synthetic (a dry run without weights), or MODULE:ATTRIBUTE "
                                   "of a model source of your own (see autoprune.models)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE", help="option of the model source")
    p.add_argument("--task", help="evaluation task (default: the model's; accuracy or fidelity)")
    p.add_argument("--space", help="search space: progressive (default), per_layer, fixed_scorer, or a .yaml path")
    p.add_argument("--sampler", choices=["tpe", "nsga2", "gp", "random"], help="Optuna sampler (default tpe)")
    p.add_argument("--trials", type=int, help="total trials in the study, references included (default 150)")
    p.add_argument("--seed", help="sampler seed (default 0; 'none' for unseeded)")
    p.add_argument("--storage", help="SQLAlchemy URL or journal:PATH (default sqlite:///<out>/<study>/study.db)")
    p.add_argument("--resume", action="store_true", help="continue an existing study")
    p.add_argument("--workers", type=int, help="worker processes on the one storage (default 1, or one per --devices)")
    p.add_argument("--devices", metavar="0,1,…", help="GPUs of this node, one worker each (CUDA_VISIBLE_DEVICES "
                                                     "per worker); with --workers N they are dealt round-robin")
    p.add_argument("--heartbeat", type=int, metavar="S", help="seconds between heartbeats of a running trial on a "
                                                              "server storage (default 10; grace 6x)")
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
    checkpoint_arguments(p)
    p.set_defaults(func=search_command)


def search_command(args) -> int:
    from ..report import report_run_dir
    from ..search.config import SearchConfig, load_study_spec
    from ..search.run import run_search

    spec = load_study_spec(args.spec) if args.spec else None
    model, options, label = resolve_model(args, model_options(args.model_option),
                                          spec_model=spec.model if spec else None)
    study = args.study
    if study is None and label is not None and args.gpu and args.budget:
        from ..search.config import coerce_budget, derive_study_name

        study = derive_study_name(label, args.gpu, coerce_budget(args.budget))
    seed_given = args.seed is not None
    seed = parse_seed(args.seed) if seed_given else 0
    overrides = dict(
        gpu=args.gpu, budget=args.budget, study=study, model=model, task=args.task, space=args.space,
        sampler=args.sampler, trials=args.trials, storage=args.storage, workers=_workers(args),
        measure=args.measure, timeout=args.timeout, over_budget=args.over_budget,
        model_options=options,
        objectives=("score", "latency", "energy") if args.energy else None,
        references=() if args.no_references else (
            tuple(x.strip() for x in args.references.split(",") if x.strip()) if args.references else None),
        race=False if args.no_racing else None,
    )
    common = dict(out=args.out, resume=args.resume, show_progress=not args.no_progress,
                  validate=not args.no_validation, devices=args.devices or ())
    if args.heartbeat is not None:
        common["heartbeat_s"] = args.heartbeat
    if spec is not None:
        config = SearchConfig.from_spec(spec, **overrides, **common)
        if seed_given:
            config = _replace(config, seed=seed)
    else:
        config = SearchConfig(**{k: v for k, v in overrides.items() if v is not None}, seed=seed, **common)
    result = run_search(config)
    if result.export is not None:
        report_run_dir(result.run_dir, storage=result.storage_spec, study=result.study_name)
    return 0


def _workers(args) -> int | None:
    """``--workers``, or one worker per ``--devices`` entry when only those are given."""
    if args.workers is None and args.devices:
        return len([d for d in args.devices.split(",") if d.strip()])
    return args.workers


def _replace(config, **kw):
    import dataclasses

    return dataclasses.replace(config, **kw)
