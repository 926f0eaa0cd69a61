"""``autoprune profile``: measure a model shape's per-layer latency table on the present device."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure per-layer latency tables on the present GPU (or the CPU)",
        description="Time one random-weight layer of each kind of a model shape over a token grid, plus the "
                    "reduction's scoring, gather and head costs, and write "
                    "<out-dir>/<gpu-id>/<shape>.json for the latency model.",
    )
    p.add_argument("--shape", default="nemotron-h-8b",
                   help="a preset shape name, a ModelShape JSON file, or a transformers config.json "
                        "(default: nemotron-h-8b)")
    p.add_argument("--model", metavar="PATH",
                   help="a transformers checkpoint (directory or cached repo id): profile its language model's "
                        "shape, read from its config (no weights are loaded); the table is named after it")
    p.add_argument("--gpu", default="auto",
                   help="registry id to file the table under: 'auto' (detect the present GPU; the CPU when there "
                        "is none), 'cpu' (wall-clock fallback even on a GPU machine) or a GPU name that must be "
                        "the present one")
    grid = p.add_argument_group("token grid")
    grid.add_argument("--tokens", help="comma-separated token counts (overrides the log-spaced grid)")
    grid.add_argument("--min-tokens", type=int, default=128)
    grid.add_argument("--max-tokens", type=int, default=131072)
    grid.add_argument("--per-octave", type=int, default=2, help="grid points per doubling (default 2)")
    p.add_argument("--kinds", help="layer-kind letters to measure (default: all of the shape), e.g. 'M*-'")
    p.add_argument("--prefix-tokens", type=int, default=32)
    p.add_argument("--query-tokens", type=int, default=64)
    p.add_argument("--no-scoring", action="store_true", help="skip the evidence-scoring overheads")
    p.add_argument("--no-gather", action="store_true", help="skip the gather overhead")
    p.add_argument("--no-head", action="store_true", help="skip the final norm + LM head")
    p.add_argument("--stack", choices=["eager", "compiled"], default="eager",
                   help="time the blocks eagerly or on the serving stack (compiled hook-free modules, Triton conv)")
    timing = p.add_argument_group("timing")
    timing.add_argument("--rep-ms", type=float, default=100.0, help="timed ms per point (repeats derived from it)")
    timing.add_argument("--warmup-ms", type=float, default=25.0)
    timing.add_argument("--min-reps", type=int, default=5)
    timing.add_argument("--max-spread", type=float, default=0.10,
                        help="re-measure a point whose (p80-p20)/median exceeds this (default 0.10)")
    timing.add_argument("--retries", type=int, default=2)
    timing.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="stop measuring after this long (what is left out is recorded as skipped)")
    timing.add_argument("--no-monitor", action="store_true", help="do not sample NVML clocks/clock-event reasons")
    timing.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU profiling)")
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", default="profiles/measured",
                     help="root of measured tables (default: ./profiles/measured)")
    out.add_argument("--output", help="exact output file (overrides --out-dir)")
    out.add_argument("--quiet", action="store_true")
    p.set_defaults(func=profile_command)


def load_shape(spec: str):
    """A ModelShape from a preset name, a ModelShape JSON file or a transformers config JSON."""
    import json
    from pathlib import Path

    from ..cost.shapes import PRESETS, ModelShape, get_shape
    from ..errors import ConfigError

    if spec in PRESETS:
        return get_shape(spec)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--shape {spec!r} is neither a preset ({sorted(PRESETS)}) nor a file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if isinstance(data, dict) and "layer_kinds" in data:
        return ModelShape.from_dict(data)
    if isinstance(data, dict) and "model_type" in data:
        from transformers import AutoConfig

        kw = {k: v for k, v in data.items() if k != "model_type"}
        cfg = AutoConfig.for_model(data["model_type"], **kw)
        return ModelShape.from_config(cfg, name=path.stem if path.stem != "config" else None)
    raise ConfigError(f"{path}: expected a ModelShape (with layer_kinds) or a transformers config (with model_type)")


def _target(gpu: str):
    """(device string, registry id, note) for --gpu."""
    import torch

    from ..cost.gpus import CPU, detect, resolve
    from ..errors import ConfigError, UnknownGPUError

    if gpu.strip().lower() == "cpu":
        return "cpu", CPU.id, None
    if gpu.strip().lower() == "auto":
        if not torch.cuda.is_available():
            return "cpu", CPU.id, "no CUDA device: profiling the CPU (wall clock)"
        return "cuda", detect().id, None
    wanted = resolve(gpu)
    if wanted.is_cpu:
        return "cpu", CPU.id, None
    if not torch.cuda.is_available():
        raise ConfigError(f"--gpu {gpu}: there is no CUDA device here; a table can only be measured on the GPU it "
                          "is for (other GPUs are predicted by the calibrated roofline)")
    try:
        present = detect()
    except UnknownGPUError as e:
        return "cuda", wanted.id, f"the present GPU is not in the registry ({e}); filed under {wanted.id} as asked"
    if present.id != wanted.id:
        raise ConfigError(f"--gpu {gpu} resolves to {wanted.id}, but this machine has {present.id}; measure on the "
                          f"GPU the table is for, or use --gpu auto")
    return "cuda", wanted.id, None


def profile_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..cost.profile_table import table_path
    from ..errors import ConfigError
    from ..profiler.layer_bench import profile_shape, token_grid

    if args.model:
        from ..models.hf import checkpoint_shape

        shape = checkpoint_shape(args.model)
    else:
        shape = load_shape(args.shape)
    device, gpu_id, note = _target(args.gpu)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tokens:
        try:
            tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(f"--tokens must be comma-separated integers, got {args.tokens!r}") from None
    else:
        tokens = token_grid(args.min_tokens, args.max_tokens, args.per_octave)
    monitor = None
    if device == "cuda" and not args.no_monitor:
        from ..profiler.monitor import GpuMonitor

        monitor = GpuMonitor(energy=False)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    if note:
        log(f"note: {note}")
    log(f"profiling {shape.name} on {gpu_id} ({device}), {len(tokens)} token counts {tokens[0]}..{tokens[-1]}")
    table = profile_shape(
        shape, device=device, gpu_id=gpu_id, tokens=tokens, kinds=args.kinds, prefix_tokens=args.prefix_tokens,
        query_tokens=args.query_tokens, scoring=not args.no_scoring, gather=not args.no_gather,
        head=not args.no_head, monitor=monitor, time_budget_s=args.time_budget, log=log, stack=args.stack,
        timer_kw={"rep_ms": args.rep_ms, "warmup_ms": args.warmup_ms, "min_reps": args.min_reps,
                  "max_spread": args.max_spread, "retries": args.retries},
    )
    if note:
        import dataclasses

        table = dataclasses.replace(table, environment={**table.environment, "note": note})
    path = Path(args.output) if args.output else table_path(args.out_dir, gpu_id, shape.name)
    table.save(path)
    print(f"wrote {path} ({table.method}; {sum(len(s) for s in table.layers.values())} layer points, "
          f"{len(table.skipped)} skipped)")
    for s in table.skipped:
        print(f"  skipped {s['what']} at {s['tokens']} tokens: {s['reason']}")
    return 0
