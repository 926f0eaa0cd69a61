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
    p.set_defaults(func=analyze_command)


def analyze_command(args) -> int:
    import time

    import torch

    from ..demo import video as V
    from ..demo.model import CPU_CHUNK_SIZE, DemoVideoVLM, load
    from ..demo.task import DemoQA
    from ..tasks.evaluate import AccuracyEvaluator, FidelityEvaluator
    from ..tasks.records import load_jsonl

    t0 = time.perf_counter()
    if args.model is not None:
        from ..errors import ConfigError
        from ..models.hf import HFOptions, load_setup

        if not args.jsonl:
            raise ConfigError("--model needs --jsonl: the records to analyse the checkpoint on")
        ev = load_setup(HFOptions(path=args.model, data=args.jsonl, device="cpu" if not torch.cuda.is_available()
                                  else None, batch_size=args.batch_size, seed=args.seed, progress=False)).evaluator
        return _report(args, ev, t0, weights=args.model)
    if args.random_weights:
        torch.manual_seed(args.seed)
        model = DemoVideoVLM().eval()
        model.set_chunk_size(CPU_CHUNK_SIZE)
    else:
        model = load(args.weights)
    qa = DemoQA(model)
    with torch.inference_mode():
        if args.jsonl:
            data = qa.prepare(load_jsonl(args.jsonl))
        else:
            data = qa.prepare_videos(V.make_split("test", args.samples, args.frames))
    cls = AccuracyEvaluator if data.labelled else FidelityEvaluator
    ev = cls(qa, data, batch_size=args.batch_size, seed=args.seed)
    return _report(args, ev, t0, weights="random" if args.random_weights else (args.weights or "shipped"))


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
