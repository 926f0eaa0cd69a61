"""Light finetuning of a trained demo model, with and without training under reduction.

    python3 benchmarks/finetune_demo.py --init-from DIR --mode {fixed,random,control} --budget 200 --out DIR

- ``fixed``: every step under the paper's low-to-high schedule at mean keep 0.25;
- ``random``: ``--reduce-prob`` (75 %) of the steps under a random progressive schedule and scorer
  (:func:`autoprune.demo.train.random_schedule`), the others unreduced;
- ``control``: the same data, learning rate and time without reduction (what more
  training alone does).

Writes ``demo.safetensors`` and ``demo.json`` (with the training report and
:func:`autoprune.demo.train.measure`: unreduced test accuracy per family and accuracy of
several mean-keep-0.25 schedules) to ``--out``. Run the three modes side by side
(``benchmarks/finetune_demo_sweep.sh``) and compare the paired numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init-from", required=True)
    ap.add_argument("--mode", choices=["fixed", "random", "control"], required=True)
    ap.add_argument("--budget", type=float, default=200.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reduce-prob", type=float, default=0.75, help="random mode: share of steps under reduction")
    ap.add_argument("--test-samples", type=int, default=1024)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from autoprune.compat import mamba_ssm_shim

    mamba_ssm_shim.install()
    from autoprune.demo.model import save
    from autoprune.demo.train import finetune_config, measure, train

    t0 = time.perf_counter()
    cfg = finetune_config(args.init_from, args.mode, budget_s=args.budget, lr=args.lr, seed=args.seed,
                          reduce_prob=args.reduce_prob)
    model, report = train(cfg, log=lambda m: print(f"[{args.mode} {time.perf_counter() - t0:6.1f}s] {m}", flush=True))
    report["finetune_mode"] = args.mode
    report["measure"] = measure(model, test_samples=args.test_samples, long_frames=128, long_samples=512,
                                log=lambda m: print(f"[{args.mode}] {m}", flush=True))
    save(model, args.out, metadata=report)
    print(f"[{args.mode}] wrote {args.out} in {time.perf_counter() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
