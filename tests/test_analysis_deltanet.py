"""``autoprune analyze`` on a Qwen3.5 checkpoint: the Gated DeltaNet proxies are compared with the
exact form (gate decay + delta correction) layer by layer."""

from __future__ import annotations

import json

from autoprune.analysis import DELTANET_VARIANTS
from autoprune.cli import main
import hf_checkpoints as H


def test_analyze_compares_the_deltanet_proxies_with_the_exact_form(tmp_path, capsys):
    ckpt = H.linear_lm_checkpoint(tmp_path / "ckpt", "qwen3_5_text")
    data = H.embedding_records(tmp_path, hidden=32, n=4)
    out = tmp_path / "analysis"
    assert main(["analyze", "--model", str(ckpt), "--jsonl", str(data), "--out", str(out), "--no-sweep",
                 "--evidence-samples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "Gated DeltaNet proxies against the exact form" in printed
    dn = json.loads((out / "analysis.json").read_text())["deltanet_proxies"]
    assert dn["layers"] == [0, 2, 4] and dn["variants"] == [v[0] for v in DELTANET_VARIANTS]
    assert all(abs(s - 1.0) < 1e-9 for s in dn["spearman"][-1])  # the exact form against itself
    assert all(-1.0 - 1e-9 <= s <= 1.0 + 1e-9 for row in dn["spearman"] for s in row)
    assert all(0.0 <= j <= 1.0 for row in dn["top_jaccard"] for j in row)


def test_analyze_with_a_model_needs_records(tmp_path, capsys):
    assert main(["analyze", "--model", str(tmp_path), "--out", str(tmp_path / "a")]) == 2
    assert "--jsonl" in capsys.readouterr().err
