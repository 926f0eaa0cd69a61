"""``autoprune worker``: join an existing study from any host and run its trials.

    autoprune worker --storage postgresql://autoprune@db:5432/studies --study demo-a100-4x
    autoprune worker --storage postgresql://autoprune@db/studies --study demo-a100-4x --device cuda:3

One library call: :func:`autoprune.search.join.join_study`. The study's stored settings decide
everything; the worker refuses a study made by another autoprune version or for another model.
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "worker",
        help="join an existing study (any host) and run its trials until it has its count",
        description="Join a study made by `autoprune search` on a shared storage (PostgreSQL for many hosts) and run "
                    "its trials with the study's stored settings until the study holds its trial count. Validation, "
                    "export and report stay with the search command (or `search --resume`).",
    )
    p.add_argument("--storage", required=True, help="the study's storage: postgresql://user@host:port/db (or any "
                                                    "SQLAlchemy URL, journal:PATH)")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--device", help="the one device this worker uses: cuda:K (or K), or cpu")
    p.add_argument("--index", type=int, metavar="K",
                   help="sampler-seed index of this worker, e.g. $SLURM_ARRAY_TASK_ID (default: from host and pid)")
    p.add_argument("--max-trials", type=int, metavar="N", help="stop after running N trials (default: until the study "
                                                               "has its count)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--heartbeat", type=int, default=10, metavar="S",
                   help="seconds between heartbeats of a running trial (default 10)")
    p.add_argument("--grace", type=int, metavar="S",
                   help="a trial whose heartbeat is older is failed and re-queued (default 6 x --heartbeat)")
    p.set_defaults(func=worker_command)


def worker_command(args) -> int:
    from ..errors import ConfigError
    from ..search.join import join_study

    for flag, v, low in (("--index", args.index, 0), ("--max-trials", args.max_trials, 1),
                         ("--heartbeat", args.heartbeat, 1), ("--grace", args.grace, 1)):
        if v is not None and v < low:
            raise ConfigError(f"{flag} must be >= {low}, got {v}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.grace is not None and args.grace <= args.heartbeat:
        raise ConfigError(f"--grace ({args.grace} s) must exceed --heartbeat ({args.heartbeat} s)")
    if args.device is not None:
        from ..search.devices import parse_devices

        try:
            parse_devices([args.device])
        except ValueError as e:
            raise ConfigError(f"--device: {e}") from None
    join_study(args.storage, args.study, device=args.device, index=args.index, timeout=args.timeout,
               max_trials=args.max_trials, heartbeat_s=args.heartbeat, grace_s=args.grace)
    return 0
