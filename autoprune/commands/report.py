"""``autoprune report``: the report of a study (figures, tables, report.md, report.html).

    autoprune report runs/synthetic-a100-4x
    autoprune report runs/x --storage postgresql://user@host/db --study x

One library call: :func:`autoprune.report.report_run_dir`.
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a study's report: Pareto, schedule, progress and importance figures, tables, Markdown, HTML",
        description="Read a study made by `autoprune search` and write into its run directory: report.md, a "
                    "self-contained report.html, trials.csv and figures/*.png (Pareto front, keep-ratio schedules, "
                    "search progress and hypervolume, scorer-knob importance). Rewrites them if they exist.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the study's run directory, e.g. runs/synthetic-a100-4x")
    p.add_argument("--storage", help="SQLAlchemy URL or journal:PATH (default sqlite:///RUN_DIR/study.db)")
    p.add_argument("--study", help="study name (default: from RUN_DIR/search.json, else the only study stored)")
    p.add_argument("--latency-tolerance", type=float, default=0.05, metavar="FRACTION",
                   help="relative latency window for 'references at equal latency' (default 0.05 = ±5%%)")
    p.add_argument("--importance", choices=["ped-anova", "fanova", "mdi"], default="ped-anova",
                   help="Optuna importance evaluator for the scorer knobs (default ped-anova; fanova and mdi need "
                        "scikit-learn)")
    p.set_defaults(func=report_command)


def report_command(args) -> int:
    from ..errors import ConfigError
    from ..report import report_run_dir

    if not 0 <= args.latency_tolerance < 1:
        raise ConfigError(f"--latency-tolerance must be in [0, 1), got {args.latency_tolerance}")
    report_run_dir(args.run_dir, storage=args.storage, study=args.study, tolerance=args.latency_tolerance,
                   importance=args.importance)
    return 0
