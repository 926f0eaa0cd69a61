"""``autoprune profile``: measure a model shape's per-layer latency table on the present device.

The table is written as it is measured: after every point the file holds the points so far with
``"partial": true`` (atomically: a reader never sees half a file), and a progress bar shows an
ETA weighed by the tokens of the points left. Ctrl-C leaves that partial file and exits 130.
"""

from __future__ import annotations

import argparse
import sys


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
    quick = p.add_argument_group("quick (few-shot) profile")
    quick.add_argument("--quick", action="store_true",
                       help="measure only <= 12 layer timings and <= 3 whole prefills here (under a minute) and "
                            "calibrate the transfer of another GPU's full table: predictions name source 'few-shot'; "
                            "writes <out-dir>/<gpu-id>/quick/<shape>.json")
    quick.add_argument("--from", dest="source_gpu", metavar="GPU",
                       help="the GPU whose measured table --quick transfers (default: the first other GPU with a "
                            "table of this shape)")
    quick.add_argument("--quick-prefills", type=int, default=3, help="whole prefills --quick times (0-3, default 3)")
    quick.add_argument("--quick-visual", type=int, default=16384,
                       help="visual tokens of --quick's whole prefills (default 16384)")
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", default="profiles/measured",
                     help="root of measured tables (default: ./profiles/measured)")
    out.add_argument("--output", help="exact output file (overrides --out-dir)")
    out.add_argument("--quiet", action="store_true", help="no per-point lines and no progress bar")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    if args.quick:
        return _quick(args, shape, device, gpu_id)
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
    path = Path(args.output) if args.output else table_path(args.out_dir, gpu_id, shape.name)
    bar = None if args.quiet or args.no_progress else _ProgressBar(shape.name)
    say = (lambda s: None) if args.quiet else (bar.write if bar else (lambda s: print(s, flush=True)))
    if note:
        say(f"note: {note}")
    say(f"profiling {shape.name} on {gpu_id} ({device}), {len(tokens)} token counts {tokens[0]}..{tokens[-1]}; "
        f"writing {path} as it goes")
    saved = []

    def checkpoint(partial_table) -> None:
        _annotated(partial_table, note).save(path)
        saved.append(sum(len(s) for s in partial_table.layers.values()))

    try:
        table = profile_shape(
            shape, device=device, gpu_id=gpu_id, tokens=tokens, kinds=args.kinds, prefix_tokens=args.prefix_tokens,
            query_tokens=args.query_tokens, scoring=not args.no_scoring, gather=not args.no_gather,
            head=not args.no_head, monitor=monitor, time_budget_s=args.time_budget, log=say, stack=args.stack,
            timer_kw={"rep_ms": args.rep_ms, "warmup_ms": args.warmup_ms, "min_reps": args.min_reps,
                      "max_spread": args.max_spread, "retries": args.retries},
            progress=bar.update if bar else None, checkpoint=checkpoint,
        )
    except KeyboardInterrupt:
        if bar:
            bar.close()  # before the message (the finally closes it again: a no-op)
        left = (f"the partial table ({saved[-1]} layer points, \"partial\": true) is in {path}" if saved
                else "nothing was measured yet, nothing written")
        print(f"autoprune profile: interrupted: {left}; run the command again to measure it all", file=sys.stderr)
        return 130
    finally:
        if bar:
            bar.close()
    table = _annotated(table, note)
    table.save(path)
    print(f"wrote {path} ({table.method}; {sum(len(s) for s in table.layers.values())} layer points, "
          f"{len(table.skipped)} skipped)")
    for s in table.skipped:
        print(f"  skipped {s['what']} at {s['tokens']} tokens: {s['reason']}")
    return 0


def _annotated(table, note: str | None):
    """``table`` with the command's note (e.g. the CPU fallback) in its environment."""
    if not note:
        return table
    import dataclasses

    return dataclasses.replace(table, environment={**table.environment, "note": note})


class _ProgressBar:
    """A tqdm bar on stderr fed by :func:`profile_shape`'s ``progress(done, total, label)``: its ETA
    is weighed by the tokens of the points left (a long point counts for more)."""

    def __init__(self, name: str):
        self.name = name
        self._bar = None

    def update(self, done: int, total: int, label: str) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=f"profile {self.name}", file=sys.stderr, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {elapsed} elapsed, ETA {remaining}{postfix}")
        self._bar.n = done
        if label:
            self._bar.set_postfix_str(label, refresh=False)
        self._bar.refresh()

    def write(self, text: str) -> None:
        if self._bar is None:
            print(text, flush=True)
        else:
            self._bar.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _quick(args: argparse.Namespace, shape, device: str, gpu_id: str) -> int:
    """``profile --quick``: the few-shot points, their fit, the stated forms per kind."""
    import time
    from pathlib import Path

    from ..cost.gpus import load_registry, resolve
    from ..cost.latency import calibrate_prefills
    from ..cost.profile_table import ProfileTable, find_table, list_tables
    from ..cost.quick import quick_path
    from ..errors import ConfigError
    from ..profiler.quick import quick_profile

    if device != "cuda":
        raise ConfigError("--quick calibrates a GPU from a few timings measured on it; there is no CUDA device "
                          "here (profile the CPU without --quick)")
    if args.source_gpu:
        src_id = resolve(args.source_gpu).id
        path = find_table(src_id, shape.name)
        if path is None:
            raise ConfigError(f"--from {args.source_gpu}: no measured table of {shape.name!r} on {src_id}")
    else:
        found = [(g, p) for g, s, p in list_tables() if s == shape.name and g not in (gpu_id, "cpu")]
        if not found:
            raise ConfigError(f"--quick: no table of {shape.name!r} measured on another GPU to transfer; measure one "
                              "with `autoprune profile` (without --quick) on any GPU")
        src_id, path = found[0]
    source = ProfileTable.load(path)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    t0 = time.monotonic()
    log(f"quick profile of {shape.name} on {gpu_id}, transferring {path}")
    qp = quick_profile(shape, source, gpu_id=gpu_id, device=device, prefills=args.quick_prefills,
                       visual=args.quick_visual, prefix_tokens=args.prefix_tokens, query_tokens=args.query_tokens,
                       log=log)
    out = Path(args.output) if args.output else quick_path(args.out_dir, gpu_id, shape.name)
    qp.save(out)
    reg = load_registry()
    fs = calibrate_prefills(qp.few_shot(reg, [Path(path).parent.parent]), qp.prefills, shape,
                            prefix=qp.prefix_tokens, query=qp.query_tokens)
    print(f"wrote {out} ({len(qp.points)} layer timings, {len(qp.prefills)} prefills, "
          f"{time.monotonic() - t0:.0f} s); few-shot from {src_id}:")
    print(f"  {'kind':<10} {'host ms':>8} {'gpu floor':>9} {'e_c':>6} {'e_m':>6} {'beta':>5} {'gpu scale':>9}")
    for name, c in fs.target_forms.to_dict()["kinds"].items():
        ec = "-" if c["compute"] is None else f"{c['compute']:.3f}"
        em = "-" if c["memory"] is None else f"{c['memory']:.3f}"
        print(f"  {name:<10} {c['host_ms']:8.3f} {c['gpu_floor_ms']:9.3f} {ec:>6} {em:>6} {c['beta']:5.1f} "
              f"{fs.gpu_scale[c['letter']]:9.3f}")
    print(f"  whole-prefill correction: scale {fs.prefill_scale:.4f}, {fs.prune_point_ms:.3f} ms of host time per "
          f"prune point (fitted on {len(qp.prefills)} measured prefills)")
    return 0
