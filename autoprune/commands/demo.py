"""``autoprune demo``: per-family accuracy of the shipped demo model; ``demo train``; ``demo export``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the built-in tiny hybrid video VLM: accuracy, training, data export",
        description="Print the per-family test accuracy of the demo model (shipped weights unless --weights). "
                    "Subcommands: train, export.",
    )
    p.add_argument("--weights", default=None, help="folder with demo.safetensors + demo.json (default: shipped)")
    p.add_argument("--samples", type=int, default=256, help="test videos (default 256)")
    p.add_argument("--frames", type=int, default=64, help="frames per video (default 64)")
    p.add_argument("--long-frames", type=int, default=128, help="also test videos this long (0: skip)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.set_defaults(func=demo_command)
    sub = p.add_subparsers(dest="demo_command", metavar="SUBCOMMAND")

    t = sub.add_parser("train", help="train the demo model (a GPU takes ~6 minutes)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--out", required=True, help="folder for demo.safetensors, demo.json, report.json")
    t.add_argument("--time-budget", type=float, default=270.0, help="seconds of training (0: use --steps)")
    t.add_argument("--steps", type=int, default=None, help="number of steps (ends training if reached first)")
    t.add_argument("--tokens-per-step", type=int, default=None, help="tokens per batch (default ≈128 videos)")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--warmup-steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    t.add_argument("--no-bf16", action="store_true", help="train in fp32 on CUDA")
    t.add_argument("--init-from", default=None, help="start from these weights (finetuning)")
    t.add_argument("--reduce-mean-keep", type=float, default=None,
                   help="train under reduction: the low-to-high schedule at this mean keep (e.g. 0.25)")
    t.add_argument("--test-samples", type=int, default=1024)
    t.add_argument("--long-frames", type=int, default=128, help="also test videos this long (0: skip)")
    t.add_argument("--eval-every", type=int, default=300)
    t.set_defaults(func=train_command)

    e = sub.add_parser("export", help="write demo videos as a JSONL dataset (PNG frames or .npy embeddings)")
    e.add_argument("--out", required=True)
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--samples", type=int, default=8)
    e.add_argument("--frames", type=int, default=64)
    e.add_argument("--embeddings", action="store_true", help="write projector outputs (.npy) instead of PNGs")
    e.add_argument("--weights", default=None)
    e.set_defaults(func=export_command)


def demo_command(args) -> int:
    import json
    import time

    import torch

    from ..demo import video as V
    from ..demo.model import load
    from ..demo.task import DemoQA
    from ..tasks.evaluate import AccuracyEvaluator

    t0 = time.perf_counter()
    model = load(args.weights)
    qa = DemoQA(model)
    out = {}
    runs = [(args.frames, args.samples)]
    if args.long_frames:
        runs.append((args.long_frames, max(4, args.samples // 2)))
    meta = getattr(model, "metadata", {}) or {}
    print(f"demo model: {model.config.layer_kinds} hidden {model.config.hidden_size}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
          + (f", trained {meta['base'].get('steps')} steps + finetuned {meta.get('steps')} steps under random "
             f"schedules on {meta.get('device_name')}" if isinstance(meta.get("base"), dict)
             else f", trained {meta.get('steps')} steps on {meta.get('device_name')}" if meta.get("steps") else ""))
    for frames, n in runs:
        with torch.inference_mode():
            data = qa.prepare_videos(V.make_split("test", n, frames))
        bs = max(1, args.batch_size * V.DEFAULT_FRAMES // frames)
        r = AccuracyEvaluator(qa, data, batch_size=bs).baseline
        out[f"{frames}_frames"] = {"n": r.n, "accuracy": r.score, "ci": [r.ci_low, r.ci_high],
                                   "per_family": dict(r.per_family), "seconds": r.extra["seconds"]}
        print(f"\ntest, {frames} frames ({4 * frames} visual tokens), n={r.n}   [{r.extra['seconds']:.1f}s]")
        for f in V.FAMILIES:
            if f in r.per_family:
                print(f"  {f:<8} {r.per_family[f]:.3f}")
        print(f"  {'mean':<8} {r.score:.3f}  (95% CI {r.ci_low:.3f}–{r.ci_high:.3f})")
    print(f"\n{time.perf_counter() - t0:.1f}s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


def train_command(args) -> int:
    from ..demo.train import TrainConfig, train_and_report

    kw = {"seed": args.seed, "bf16": not args.no_bf16, "eval_every": args.eval_every,
          "time_budget_s": args.time_budget or None, "steps": args.steps,
          "reduce_mean_keep": args.reduce_mean_keep, "init_from": args.init_from}
    for name in ("tokens_per_step", "lr", "warmup_steps"):
        v = getattr(args, name)
        if v is not None:
            kw[name] = v
    cfg = TrainConfig(**kw)
    train_and_report(cfg, args.out, device=args.device, test_samples=args.test_samples,
                     long_frames=args.long_frames or None)
    print(f"wrote {args.out}/demo.safetensors, demo.json, report.json")
    return 0


def export_command(args) -> int:
    from ..demo import video as V
    from ..demo.task import export_jsonl

    model = None
    if args.embeddings:
        from ..demo.model import load

        model = load(args.weights)
    path = export_jsonl(V.make_split(args.split, args.samples, args.frames), args.out, model=model)
    print(f"wrote {path}")
    return 0
