"""``autoprune analyze``: the paper's analysis (sparsity, stability, evidence kinds, schedule shapes)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="layerwise sparsity, cross-layer stability, evidence kinds, schedule shapes",
        description="Run the paper's analysis on the demo model (shipped weights unless --weights) and its "
                    "test videos, or on a JSONL dataset (--jsonl). Writes PNG figures and analysis.json.",
    )
    p.add_argument("--out", default="runs/analysis", help="output folder (default runs/analysis)")
    p.add_argument("--weights", default=None, help="demo weights folder (default: shipped)")
    p.add_argument("--random-weights", action="store_true",
                   help="use an untrained demo model (smoke test of the pipeline; numbers mean nothing)")
    p.add_argument("--jsonl", default=None, help="evaluate on this JSONL dataset instead of demo videos")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="analyse a transformers checkpoint (the hf model source: NemotronH, Bamba, Granite 4.0-H, "
                        "Falcon-H1, Zamba2, Jamba, Qwen3.5, Qwen3-Next, LFM2, NemotronH Omni) on the records of "
                        "--jsonl instead of the demo model")
    p.add_argument("--samples", type=int, default=256, help="demo test videos for the schedule sweep")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--evidence-samples", type=int, default=128, help="samples for the evidence statistics")
    p.add_argument("--keeps", type=float, nargs="+", default=[0.5, 0.25, 0.125], help="mean keeps to compare")
    p.add_argument("--no-sweep", action="store_true", help="skip the schedule sweep")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--headroom", action="store_true",
                   help="instead: the headroom of keep schedules on the demo's validation videos (split val from "
                        "seed 1,000,000, 64/128/256 frames mixed, as a study validates): accuracy as is, with an "
                        "oracle that keeps the answer tokens first, and with a query-agnostic floor, per family; "
                        "answer-token recall per layer; where the lost questions lose their answer tokens. "
                        "Writes headroom.json and headroom.png")
    p.add_argument("--schedule", nargs="+", action="extend", default=None, metavar="FILE",
                   help="--headroom: schedule JSON files (default: the high_to_low and fastv shapes at mean keep 0.25)")
    p.add_argument("--n", type=int, default=1536, metavar="N", help="--headroom: validation videos (default 1536)")
    p.add_argument("--floor-selector", default="uniform_stride", choices=("uniform_stride", "random"),
                   help="--headroom: the query-agnostic selector of the floor (default uniform_stride)")
    p.set_defaults(func=analyze_command)


def analyze_command(args) -> int:
    import time

    import torch

    from ..demo import video as V
    from ..demo.task import DemoQA
    from ..tasks.evaluate import AccuracyEvaluator, FidelityEvaluator
    from ..tasks.records import load_jsonl

    t0 = time.perf_counter()
    if args.headroom:
        return _headroom(args, t0)
    if args.model is not None:
        from ..errors import ConfigError
        from ..models.hf import HFOptions, load_setup

        if not args.jsonl:
            raise ConfigError("--model needs --jsonl: the records to analyse the checkpoint on")
        ev = load_setup(HFOptions(path=args.model, data=args.jsonl, device="cpu" if not torch.cuda.is_available()
                                  else None, batch_size=args.batch_size, seed=args.seed, progress=False)).evaluator
        return _report(args, ev, t0, weights=args.model)
    model = _demo_model(args)
    qa = DemoQA(model)
    with torch.inference_mode():
        if args.jsonl:
            data = qa.prepare(load_jsonl(args.jsonl))
        else:
            data = qa.prepare_videos(V.make_split("test", args.samples, args.frames))
    cls = AccuracyEvaluator if data.labelled else FidelityEvaluator
    ev = cls(qa, data, batch_size=args.batch_size, seed=args.seed)
    return _report(args, ev, t0, weights="random" if args.random_weights else (args.weights or "shipped"))


def _demo_model(args):
    """The demo model ``--random-weights`` (seeded) or ``--weights`` asks for."""
    import torch

    from ..demo.model import CPU_CHUNK_SIZE, DemoVideoVLM, load

    if not args.random_weights:
        return load(args.weights)
    torch.manual_seed(args.seed)
    model = DemoVideoVLM().eval()
    model.set_chunk_size(CPU_CHUNK_SIZE)
    return model


def _report(args, ev, t0, *, weights: str) -> int:
    import json
    import time

    from ..analysis import run_analysis

    print(f"{ev.metric}: {len(ev.data)} samples, {ev.num_visual} visual tokens, layers {ev.signature.layer_kinds}")
    base = ev.baseline
    print(f"unreduced {base.metric} {base.score:.3f}")
    rep = run_analysis(ev, args.out, evidence_samples=args.evidence_samples, mean_keeps=tuple(args.keeps),
                       sweep=not args.no_sweep, log=print)
    sp, st, ek = rep.sparsity, rep.stability, rep.evidence_kinds
    print("\nlayer kind       50%    80%    90% of importance held by this share of visual tokens")
    for j, k, row in zip(sp.layers, sp.kinds, sp.share):
        print(f"{j:5d} {k:<9} " + "  ".join(f"{v:5.3f}" for v in row))
    print(f"\nadjacent-layer top-{int(st.top_frac * 100)}% Jaccard {st.adjacent_jaccard:.3f}; within attention "
          f"{_f(ek.within_attention_jaccard)}, within recurrent (Mamba/DeltaNet) {_f(ek.within_mamba_jaccard)}, "
          f"across kinds {_f(ek.cross_kind_jaccard)}")
    if ek.target_mass:
        print(f"importance on the answer's tokens (flat: {ek.chance_mass:.3f}):")
        for j, k, m, md in zip(ek.layers, ek.kinds, ek.target_mass, ek.target_mass_decay):
            print(f"  layer {j:2d} {k:<9} {m:.3f}" + ("" if md is None else f"   with decay {md:.3f}"))
    dn = rep.deltanet
    if dn is not None:
        print(f"\nGated DeltaNet proxies against the exact form (Spearman / top-{int(dn.top_frac * 100)}% Jaccard "
              "per layer):")
        for v, name in enumerate(dn.variants):
            print(f"  {name:<18} " + "  ".join(f"L{j}: {s:.3f}/{jc:.3f}" for j, s, jc in
                                                zip(dn.layers, dn.spearman[v], dn.top_jaccard[v])))
    if args.jsonl and args.random_weights:
        print("note: random weights")
    meta = {"weights": weights,
            "seconds": round(time.perf_counter() - t0, 1), "baseline": base.score}
    (json_path := __import__("pathlib").Path(args.out) / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"\nwrote {', '.join(rep.files)}, {args.out}/analysis.json, {json_path}  ({meta['seconds']}s)")
    return 0


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


# Where the studies validate (autoprune.demo.source.STUDY_DEFAULTS): split val from this seed on,
# this length mix with equal visual tokens per length.
HEADROOM_SPLIT, HEADROOM_START, HEADROOM_FRAMES = "val", 1_000_000, (64, 128, 256)
HEADROOM_DEFAULT_SHAPES, HEADROOM_DEFAULT_KEEP = ("high_to_low", "fastv"), 0.25


def _headroom(args, t0) -> int:
    import time
    from pathlib import Path

    import torch

    from .. import model_signature
    from ..demo import video as V
    from ..demo.source import split_counts
    from ..demo.task import DemoQA
    from ..errors import ConfigError
    from ..headroom import headroom, headroom_table, render_headroom
    from ..schedule import Schedule
    from ..search.references import shape_at_mean_keep
    from ..tasks.evaluate import AccuracyEvaluator
    from ..tasks.prepared import PreparedSet

    if args.model is not None or args.jsonl:
        raise ConfigError("--headroom runs on the demo videos, which know each question's answer tokens; "
                          "--model/--jsonl records do not")
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    model = _demo_model(args)
    sig = model_signature(model)
    # every schedule is read (and checked against the model) before anything runs or is written
    schedules, labels = [], []
    for f in args.schedule or ():
        s = Schedule.load(f, model=sig)  # its errors name the file; model=: refuses another model's
        schedules.append(s)
        labels.append(Path(f).stem)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--schedule: two files share a name ({labels}); the labels are the file names")
    qa = DemoQA(model)
    counts = split_counts(args.n, HEADROOM_FRAMES)
    with torch.inference_mode():
        sets = [qa.prepare_videos(V.make_split(HEADROOM_SPLIT, k, f, HEADROOM_START)) for f, k in counts.items() if k]
    data = sets[0] if len(sets) == 1 else PreparedSet.concat(sets)
    ev = AccuracyEvaluator(qa, data, batch_size=args.batch_size, seed=args.seed)
    if not schedules:
        for shape in HEADROOM_DEFAULT_SHAPES:
            schedules.append(shape_at_mean_keep(shape, sig, HEADROOM_DEFAULT_KEEP, ev.num_visual))
            labels.append(f"{shape}@{HEADROOM_DEFAULT_KEEP}")
    print(f"headroom: {len(data)} validation videos ({', '.join(f'{k}×{f} frames' for f, k in counts.items() if k)}), "
          f"layers {sig.layer_kinds}, {len(schedules)} schedule(s)")
    info = {"data": "procedural demo videos", "split": HEADROOM_SPLIT, "start": HEADROOM_START,
            "frames": {str(f): k for f, k in counts.items() if k},
            "weights": "random" if args.random_weights else (args.weights or "shipped")}
    res = headroom(ev, schedules, labels=labels, floor_selector=args.floor_selector, data_info=info, log=print)
    out = Path(args.out)
    json_path = res.save(out / "headroom.json")
    png_path = render_headroom(res, out / "headroom.png")
    print()
    print(headroom_table(res))
    print(f"\nwrote {json_path}, {png_path}  ({time.perf_counter() - t0:.1f}s)")
    return 0
