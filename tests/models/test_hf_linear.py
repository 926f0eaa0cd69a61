"""The hf model source on tiny Qwen3.5 / Qwen3-Next / LFM2 checkpoints written with save_pretrained:
a search from the command line with embedding records exports schedules that load on the model,
its latency priced at a published shape's widths."""

from __future__ import annotations

import pytest

import autoprune
from autoprune import Schedule
from autoprune.cli import main
import hf_checkpoints as H

WIDTHS = {"qwen3_5_text": "qwen3.5-9b", "qwen3_next": "qwen3-next-80b-a3b", "lfm2": "lfm2-1.2b"}


@pytest.mark.parametrize("family", ["qwen3_5_text", pytest.param("qwen3_next", marks=pytest.mark.slow),
                                    pytest.param("lfm2", marks=pytest.mark.slow)])
def test_a_search_on_a_checkpoint_exports_schedules_that_load_on_it(tmp_path, family):
    ckpt = H.linear_lm_checkpoint(tmp_path / "ckpt", family)
    data = H.embedding_records(tmp_path, hidden=32)
    rc = main(["search", "--model", str(ckpt), "--data", str(data), "--gpu", "h200", "--budget", "2x",
               "--trials", "6", "--out", str(tmp_path / "runs"), "--no-progress",
               "--model-option", f"latency_widths={WIDTHS[family]}", "--model-option", "latency_visual=16384"])
    assert rc == 0
    paths = sorted((tmp_path / "runs").glob("*/pareto/*.json"))
    assert paths
    from autoprune.models.hf import load_checkpoint

    model = load_checkpoint(str(ckpt), device="cpu").model
    sig = autoprune.model_signature(model)
    for p in paths:
        s = Schedule.load(p, model=sig)
        assert s.model.layer_kinds == sig.layer_kinds
