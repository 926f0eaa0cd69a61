"""One-shot GPU run: train the demo model, measure it, and test light finetuning under reduction.

    python3 benchmarks/train_demo.py [--budget 280] [--ft-budget 30] [--out DIR]

Writes to ``$OUT`` if set (else ``--out``, default runs/train_demo), all at the top level:

- ``demo.safetensors``, ``demo.json``        the base model: ship these two in autoprune/demo/weights/
- ``demo_ft4x.safetensors``, ``demo_ft4x.json``  the base model finetuned under a 4× (mean keep 0.25)
                                             low-to-high reduction
- ``summary.json``                           everything measured (below), versions, timings
- ``train.log``                              the log

Steps (wall time on an H100 ≈ warm-up 0.5 min + base 4.7 min + measure 0.3 min + 2 × 0.8 min):

1. base training for ``--budget`` seconds (time-based cosine schedule and curriculum, so the
   recipe adapts to the GPU's speed), then: unreduced test accuracy per family (1024 videos
   of 64 frames), accuracy on 128-frame videos (longer than any training video), and accuracy
   at mean keep 0.25 for language-aware, uniform-stride and random selection;
2. two finetunes of ``--ft-budget`` seconds each from the base weights, same data, same
   learning-rate schedule: one *under reduction* (the paper's light finetuning), one without
   (the control: more training alone). Both are measured like the base, so the effect of
   training under reduction at 4× is the paired difference ft4x − control.

Needs: transformers ≥ 5.24 (NemotronH with ``layers_block_type``), mamba-ssm's Triton Mamba2
kernels (importable through ``autoprune.compat.mamba_ssm_shim``), safetensors, numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=280.0, help="seconds of base training")
    ap.add_argument("--ft-budget", type=float, default=30.0, help="seconds of each finetune (0: skip)")
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/train_demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens-per-step", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--aux-weight", type=float, default=None, help="weight of the grounding loss")
    ap.add_argument("--test-samples", type=int, default=1024)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Intermediate weights stay out of --out (only what is listed above comes back from a GPU run).
    work = Path(tempfile.mkdtemp(prefix="train_demo_"))
    log_fh = open(out / "train.log", "w")
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        log_fh.write(line + "\n")
        log_fh.flush()

    from autoprune.compat import mamba_ssm_shim

    shim = mamba_ssm_shim.install()
    import torch
    import transformers

    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "mamba_ssm_shim_installed": shim}
    try:
        import mamba_ssm
        import triton

        versions.update(mamba_ssm=mamba_ssm.__version__, triton=triton.__version__)
    except Exception as e:  # noqa: BLE001 — reported, training falls back to torch (slow)
        versions["mamba_ssm_error"] = repr(e)
    log(f"versions: {versions}")
    if not torch.cuda.is_available():
        log("WARNING: no CUDA device; this script is meant for one GPU")

    from autoprune.demo.model import save
    from autoprune.demo.train import (
        TrainConfig,
        finetune_config,
        measure,
        train,
        write_report,
    )

    kw = {"seed": args.seed, "time_budget_s": args.budget}
    if args.tokens_per_step:
        kw["tokens_per_step"] = args.tokens_per_step
    if args.lr:
        kw["lr"] = args.lr
    if args.aux_weight is not None:
        kw["aux_weight"] = args.aux_weight
    cfg = TrainConfig(**kw)
    summary: dict = {"versions": versions, "args": vars(args)}

    # 1. base model
    model, report = train(cfg, log=log)
    report["measure"] = measure(model, test_samples=args.test_samples, log=log)
    save(model, out, metadata=report)  # demo.safetensors + demo.json
    base_dir = work / "base"
    save(model, base_dir, metadata=report)
    m = report["measure"]
    summary["base"] = {k: report[k] for k in ("steps", "samples_seen", "train_seconds", "warm_up_seconds")}
    summary["base"]["measure"] = m
    fam = m["test"]["per_family"]
    summary["base"]["meets_targets"] = {
        "mean_ge_0.90": m["test"]["accuracy"] >= 0.90,
        "each_family_ge_0.80": min(fam.values()) >= 0.80,
        "random_drop_ge_20_points": m["random_drop_points"] >= 20,
    }
    log(f"base: test {m['test']['accuracy']:.3f} per family {fam}; random selection at 0.25 loses "
        f"{m['random_drop_points']:.1f} points; targets {summary['base']['meets_targets']}")
    del model
    torch.cuda.empty_cache()

    # 2. light finetuning under reduction vs. the same training without reduction
    if args.ft_budget > 0:
        ft = {}
        for name, mode in (("ft4x", "fixed"), ("control", "control")):
            fcfg = finetune_config(str(base_dir), mode, budget_s=args.ft_budget, lr=args.ft_lr, seed=args.seed + 1,
                                   tokens_per_step=cfg.tokens_per_step)
            fmodel, frep = train(fcfg, log=log)
            frep["measure"] = measure(fmodel, test_samples=args.test_samples, long_frames=None, log=log)
            if name == "ft4x":
                save(fmodel, work / "ft4x", metadata=frep)
            ft[name] = {"steps": frep["steps"], "train_seconds": frep["train_seconds"], "measure": frep["measure"]}
            del fmodel
            torch.cuda.empty_cache()
        comp = {}
        for key in ("low_to_high/language", "high_to_low/language"):
            a = ft["ft4x"]["measure"]["at_mean_keep"]["schedules"][key]["accuracy"]
            c = ft["control"]["measure"]["at_mean_keep"]["schedules"][key]["accuracy"]
            b = m["at_mean_keep"]["schedules"][key]["accuracy"]
            comp[key] = {"base": b, "control": c, "ft4x": a, "ft4x_minus_control_points": round(100 * (a - c), 2)}
        comp["unreduced"] = {"base": m["test"]["accuracy"], "control": ft["control"]["measure"]["test"]["accuracy"],
                             "ft4x": ft["ft4x"]["measure"]["test"]["accuracy"]}
        summary["finetune_under_reduction"] = {"mean_keep": 0.25, "runs": ft, "comparison": comp}
        log(f"finetuning under reduction vs control at mean keep 0.25: {json.dumps(comp)}")
        for suffix in ("safetensors", "json"):
            shutil.copy(work / "ft4x" / f"demo.{suffix}", out / f"demo_ft4x.{suffix}")

    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_report(out / "summary.json", summary)
    log(f"wrote {out}/demo.safetensors, demo.json, summary.json, train.log (+ demo_ft4x.*); "
        f"{summary['total_seconds']}s in all")
    log_fh.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
