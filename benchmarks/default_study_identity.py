"""Is the seeded default study trial-for-trial what it was? (a check kept for refactors)

    python benchmarks/default_study_identity.py [--reference CSV] [--json OUT]

Runs ``autoprune search --gpu a100 --budget 4x`` (the embedded default: demo model, A100 latency
model, TPE, seed 0, 150 trials) in a temporary folder and compares its ``trials.csv`` with a
reference ``trials.csv`` column by column: trial numbers, states, reference names, parameters,
objective values, constraints, feasibility, keep vectors, scorer knobs, projection factors and
the exported Pareto set. Run times and worker names are left out (they differ run to run).
Prints a table of what differs (nothing, when the two agree) and writes the verdict as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_REFERENCE = HERE / "results" / "identity" / "default_study_before_refactor.csv"
VOLATILE = {"worker", "duration_s", "eval_s"}


def read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(fh)]


def compare(ref: list[dict], new: list[dict]) -> dict:
    cols = sorted(set(ref[0]) & set(new[0])) if ref and new else []
    diffs = []
    for i, (a, b) in enumerate(zip(ref, new)):
        for c in cols:
            if a[c] != b[c]:
                diffs.append({"trial": i, "column": c, "reference": a[c], "now": b[c]})
    pareto = lambda rows: sorted(int(r["number"]) for r in rows if r.get("pareto") == "True")  # noqa: E731
    return {"trials_reference": len(ref), "trials_now": len(new), "columns_compared": cols,
            "columns_only_in_reference": sorted(set(ref[0]) - set(new[0])) if ref and new else [],
            "columns_only_now": sorted(set(new[0]) - set(ref[0])) if ref and new else [],
            "differences": diffs[:50], "n_differences": len(diffs),
            "pareto_reference": pareto(ref), "pareto_now": pareto(new),
            "identical": len(ref) == len(new) and not diffs and pareto(ref) == pareto(new)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    ap.add_argument("--json", type=Path, help="write the verdict here")
    ap.add_argument("--keep", type=Path, help="copy the new trials.csv here")
    args = ap.parse_args(argv)
    from autoprune.cli import main as cli

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rc = cli(["search", "--gpu", "a100", "--budget", "4x", "--out", d, "--no-progress"])
        wall = time.perf_counter() - t0
        if rc != 0:
            print(f"the default study failed (exit {rc})", file=sys.stderr)
            return rc
        csv_path = Path(d) / "demo-a100-4x" / "trials.csv"
        if args.keep:
            args.keep.write_bytes(csv_path.read_bytes())
        verdict = compare(read(args.reference), read(csv_path))
    verdict["wall_s"] = round(wall, 1)
    verdict["reference"] = str(args.reference.relative_to(HERE.parent) if args.reference.is_relative_to(HERE.parent)
                               else args.reference)
    print(f"\n{'':<28}{'reference':>12}{'now':>12}")
    print(f"{'trials':<28}{verdict['trials_reference']:>12}{verdict['trials_now']:>12}")
    print(f"{'exported (Pareto) trials':<28}{len(verdict['pareto_reference']):>12}{len(verdict['pareto_now']):>12}")
    print(f"{'columns compared':<28}{len(verdict['columns_compared']):>12}")
    print(f"{'differing cells':<28}{verdict['n_differences']:>12}")
    for d in verdict["differences"][:10]:
        print(f"  trial {d['trial']} {d['column']}: {d['reference']} -> {d['now']}")
    print(f"identical: {verdict['identical']}  ({verdict['wall_s']} s)")
    if args.json:
        args.json.write_text(json.dumps(verdict, indent=2) + "\n")
    return 0 if verdict["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
