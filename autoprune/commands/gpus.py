"""``autoprune gpus``: the GPU registry as a table, and which GPUs have measured profiles."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gpus",
        help="list the GPU registry and the measured latency tables",
        description="List the GPU spec sheets in profiles/gpus (dense tensor-core peaks, bandwidth, TDP) and, per "
                    "GPU, the model shapes with a measured latency table (autoprune profile).",
    )
    p.add_argument("--resolve", metavar="NAME", help="show what a --gpu NAME resolves to, and why")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--profile-dir", action="append", default=None, metavar="DIR",
                   help="a 'measured' directory to search for tables (repeatable; default: the standard places)")
    p.set_defaults(func=gpus_command)


def _rows(registry, tables):
    measured: dict[str, list[str]] = {}
    for gpu_id, shape, _ in tables:
        measured.setdefault(gpu_id, []).append(shape)
    rows = []
    for s in registry:
        fam = s.family or ""
        if s.family_default and len(registry.families.get(s.family, [])) > 1:
            fam += " (default)"
        rows.append({
            "id": s.id, "name": s.name, "arch": s.architecture, "sms": s.sm_count, "mem_gb": s.memory_gb,
            "bw_gbs": s.memory_bandwidth_gbs, "bf16_tflops": s.bf16_tflops, "tdp_w": s.tdp_w, "family": fam,
            "aliases": list(s.aliases), "unverified": list(s.unverified), "measured": sorted(measured.get(s.id, [])),
        })
    if "cpu" in measured:
        rows.append({"id": "cpu", "name": "CPU (wall-clock fallback)", "arch": "cpu", "sms": 0, "mem_gb": 0,
                     "bw_gbs": 0, "bf16_tflops": 0, "tdp_w": 0, "family": "", "aliases": [], "unverified": [],
                     "measured": sorted(measured["cpu"])})
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def gpus_command(args: argparse.Namespace) -> int:
    import json

    from ..cost.gpus import load_registry, resolve_verbose
    from ..cost.profile_table import list_tables

    registry = load_registry()
    if args.resolve:
        r = resolve_verbose(args.resolve, registry)
        if args.json:
            print(json.dumps({"query": args.resolve, "id": r.spec.id, "how": r.how, "detail": r.detail}))
        else:
            print(r.describe())
        return 0
    rows = _rows(registry, list_tables(args.profile_dir))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = [("id", "id"), ("name", "name"), ("arch", "arch"), ("sms", "SMs"), ("mem_gb", "mem GB"),
            ("bw_gbs", "GB/s"), ("bf16_tflops", "bf16 TF"), ("tdp_w", "TDP W"), ("family", "family"),
            ("measured", "measured shapes")]
    table = []
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r[key]
            if key == "measured":
                v = ", ".join(v) if v else "-"
            elif key == "id" and r["unverified"]:
                v = f"{v}*"
            cells.append(_fmt(v))
        table.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, (_, h) in enumerate(cols)]
    print("  ".join(h.ljust(w) for (_, h), w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print("\nPeaks are dense (no 2:4 sparsity). * = some numbers not checked against a vendor datasheet "
          "(see the file's 'unverified' and 'sources'). A family name (e.g. a100) resolves to its '(default)' "
          "member; 'cpu' is the CPU fallback, 'auto' the detected GPU.")
    return 0
