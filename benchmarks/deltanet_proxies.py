"""Gated DeltaNet evidence proxies against the exact form, through ``autoprune analyze``.

Writes a tiny random Qwen3.5 language-model checkpoint (``save_pretrained``, the tests' word-level
tokenizer) and JSONL records with random visual embeddings, runs
``autoprune analyze --model CKPT --jsonl DATA --no-sweep`` and keeps its ``deltanet_proxies``:
per DeltaNet layer, the Spearman rank correlation and top-25% Jaccard of each proxy's evidence
(decay-free; gate decay; delta correction without decay) with the exact form's (decay + delta
correction). Random weights: this measures how much each simplification changes the ranking
the delta rule itself implies, not accuracy. CPU, seconds. Prints the table; writes JSON to
``--out`` (default ``benchmarks/results/deltanet_proxies_tiny_random.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tiny-checkpoint writers the tests use


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=16)
    ap.add_argument("--visual", type=int, default=192, help="visual embeddings per record (a multiple of 8)")
    ap.add_argument("--out", default=str(HERE / "results" / "deltanet_proxies_tiny_random.json"))
    args = ap.parse_args(argv)
    import hf_checkpoints as H

    from autoprune.cli import main as cli

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ckpt = H.linear_lm_checkpoint(d / "ckpt", "qwen3_5_text")
        data = H.embedding_records(d, hidden=32, n=args.records, visual=args.visual)
        rc = cli(["analyze", "--model", str(ckpt), "--jsonl", str(data), "--out", str(d / "analysis"), "--no-sweep",
                  "--evidence-samples", str(args.records)])
        if rc:
            return rc
        rep = json.loads((d / "analysis" / "analysis.json").read_text())
    out = {"benchmark": "deltanet_proxies", "machine": "cpu", "model": "tiny random Qwen3_5ForCausalLM "
           "(hidden 32, layers L*L*L, DeltaNet 2 key / 4 value heads of 8)", "records": args.records,
           "visual": args.visual, "deltanet_proxies": rep["deltanet_proxies"]}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
