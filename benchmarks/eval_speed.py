"""Seconds to evaluate one schedule on the default evaluation set, on this machine's CPU.

The default evaluation set is 256 test videos of 64 frames (256 visual tokens each,
269-token prompts). The data is embedded once; each schedule then re-runs the backbone
(the cost the search pays per trial). Uses the shipped weights if present, else random
weights of the same architecture (the time does not depend on the weights).

    python benchmarks/eval_speed.py [--samples 256] [--repeats 3] [--threads N]

Prints a table and writes benchmarks/results/eval_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "eval_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from autoprune.analysis import schedule_family
    from autoprune.demo import video as V
    from autoprune.demo.model import CPU_CHUNK_SIZE, DemoVideoVLM, DemoWeightsMissing, load
    from autoprune.demo.task import DemoQA
    from autoprune.schedule import ScorerConfig
    from autoprune.tasks import AccuracyEvaluator

    try:
        model, weights = load(), "shipped"
    except DemoWeightsMissing:
        torch.manual_seed(0)
        model, weights = DemoVideoVLM().eval(), "random (no shipped weights; time does not depend on them)"
        model.set_chunk_size(CPU_CHUNK_SIZE)
    qa = DemoQA(model)
    t0 = time.perf_counter()
    data = qa.prepare_videos(V.make_split("test", args.samples, args.frames))
    embed_s = time.perf_counter() - t0
    ev = AccuracyEvaluator(qa, data, batch_size=args.batch_size)
    L, Vn = ev.signature.num_layers, ev.num_visual
    cases = [("identity", ev.identity)]
    for m in (0.5, 0.25, 0.125):
        cases.append((f"low_to_high {m} language", schedule_family("low_to_high", m, num_layers=L, num_visual=Vn)))
    cases += [
        ("high_to_low 0.25 language", schedule_family("high_to_low", 0.25, num_layers=L, num_visual=Vn)),
        ("low_to_high 0.25 language+decay",
         schedule_family("low_to_high", 0.25, num_layers=L, num_visual=Vn, scorer=ScorerConfig(mamba_decay=True))),
        ("high_to_low 0.25 random",
         schedule_family("high_to_low", 0.25, num_layers=L, num_visual=Vn, scorer=ScorerConfig(selector="random"))),
        ("uniform 0.25 (prefilter)", schedule_family("uniform", 0.25, num_layers=L, num_visual=Vn)),
    ]
    ev.evaluate(cases[1][1])  # warm-up (allocator, first-call overheads)
    rows = []
    for name, s in cases:
        times = []
        for _ in range(args.repeats):
            ev.clear_cache()
            t = time.perf_counter()
            r = ev.evaluate(s)
            times.append(time.perf_counter() - t)
        # evaluate() of a reduced schedule also scores the identity baseline once (cached in
        # normal use); report the schedule's own forward time.
        own = ev.seconds(s)
        rows.append({"schedule": name, "mean_keep": round(r.extra["mean_keep"], 4), "seconds": round(own, 3),
                     "seconds_median_incl_baseline": round(statistics.median(times), 3), "accuracy": r.score})
    load_avg = os.getloadavg()
    info = {"samples": args.samples, "frames": args.frames, "visual_tokens": Vn,
            "sequence_length": DemoVideoVLM.sequence_length(args.frames), "batch_size": args.batch_size,
            "weights": weights, "embed_seconds_once": round(embed_s, 3), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.processor() or
            platform.machine(), "load_average_after": [round(x, 2) for x in load_avg], "rows": rows}
    print(f"{args.samples} videos × {args.frames} frames ({Vn} visual tokens), weights: {weights}; "
          f"embedding once: {embed_s:.2f}s; torch threads {torch.get_num_threads()}")
    print(f"{'schedule':<34} {'mean keep':>9} {'s/schedule':>10} {'accuracy':>9}")
    for r in rows:
        print(f"{r['schedule']:<34} {r['mean_keep']:>9.3f} {r['seconds']:>10.2f} {r['accuracy']:>9.3f}")
    print(f"load average after: {info['load_average_after']} (other processes on the machine inflate times)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
