"""The hf model source on tiny GraniteMoeHybrid, Falcon-H1, Zamba2 and Jamba checkpoints written with
save_pretrained: the search from the command line exports schedules that load and run on the
checkpoint (and through `autoprune apply`), `autoprune analyze --model` reads them, and families
without an adapter are refused."""

from __future__ import annotations

import json

import hf_checkpoints as H
import pytest
import torch
from tiny_hybrids import save_checkpoint

import autoprune
from autoprune import Schedule, UnsupportedModelError
from autoprune.cli import main

PRESET = {"granitemoehybrid": "granite-4.0-h-small", "falcon_h1": "falcon-h1-7b", "zamba2": "zamba2-7b",
          "jamba": "jamba-mini"}


def _slow(*families):
    return [pytest.param(f, marks=pytest.mark.slow) if f in families else f for f in PRESET]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for family in PRESET:
        d = tmp_path_factory.mktemp(family)
        save_checkpoint(d / "ckpt", family)
        H.embedding_records(d, hidden=32)
        out[family] = d
    return out


@pytest.mark.parametrize("family", _slow("granitemoehybrid", "zamba2"))
def test_a_search_on_each_family_exports_schedules_that_load_and_run_on_its_checkpoint(checkpoints, tmp_path,
                                                                                       family):
    d = checkpoints[family]
    rc = main(["search", "--model", str(d / "ckpt"), "--data", str(d / "tiny.jsonl"), "--gpu", "h200",
               "--budget", "2x", "--trials", "6", "--out", str(tmp_path / "runs"), "--no-progress",
               "--model-option", f"latency_widths={PRESET[family]}", "--model-option", "latency_visual=16384"])
    assert rc == 0
    paths = sorted((tmp_path / "runs").glob("*/pareto/*.json"))
    assert paths
    from autoprune.models.hf import load_checkpoint

    model = load_checkpoint(str(d / "ckpt"), device="cpu").model
    sig = autoprune.model_signature(model)
    sched = Schedule.load(paths[0], model=sig)
    assert sched.model.family == family and sched.mean_keep < 1
    ids = torch.randint(0, H.VOCAB, (1, 40))
    vm = torch.zeros(1, 40, dtype=torch.bool)
    vm[:, 4:32] = True
    with torch.no_grad(), autoprune.reduce(model, sched, visual_mask=vm) as h:
        model(input_ids=ids)
    assert h.last.pos.shape[1] < 40
    assert main(["apply", "--model", str(d / "ckpt"), "--schedule", str(paths[0]), "--data",
                 str(d / "tiny.jsonl")]) == 0


@pytest.mark.parametrize("family", _slow("granitemoehybrid", "jamba", "falcon_h1"))
def test_analyze_reads_a_checkpoint_of_each_family(checkpoints, tmp_path, family, capsys):
    d = checkpoints[family]
    out = tmp_path / "analysis"
    assert main(["analyze", "--model", str(d / "ckpt"), "--jsonl", str(d / "tiny.jsonl"), "--out", str(out),
                 "--keeps", "0.25", "--evidence-samples", "3"]) == 0
    report = json.loads((out / "analysis.json").read_text())
    layers = report["sparsity"]["layers"]
    assert layers and (out / "sparsity.png").is_file()
    if family in ("falcon_h1", "zamba2"):  # the two-mixer layers report a blended evidence
        assert "attention+mamba" in report["sparsity"]["kinds"]


def test_analyze_with_a_model_needs_its_records(checkpoints, tmp_path, capsys):
    assert main(["analyze", "--model", str(checkpoints["jamba"] / "ckpt"), "--out", str(tmp_path / "a")]) == 2
    assert "--jsonl" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_family_without_an_adapter_is_still_refused_naming_the_supported_ones(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(UnsupportedModelError, match="falcon_h1.*granitemoehybrid.*jamba.*zamba2"):
        autoprune.model_signature(model)
    model.save_pretrained(tmp_path / "llama")
    H.write_tokenizer(tmp_path / "llama")
    from autoprune.models.hf import load_checkpoint

    with pytest.raises(UnsupportedModelError, match="'llama' is not supported.*falcon_h1"):
        load_checkpoint(str(tmp_path / "llama"), device="cpu")
