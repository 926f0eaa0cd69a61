"""ModelShape presets of the linear-attention / short-conv hybrids: published widths, FLOPs per layer
kind, the latency model on them, and ``autoprune profile`` on tiny versions on the CPU."""

import dataclasses
import json

import pytest

from autoprune import Schedule, ScorerConfig
from autoprune.cli import main
from autoprune.cost.latency import LatencyModel
from autoprune.cost.profile_table import ProfileTable
from autoprune.cost.shapes import ModelShape, TokenLayout, get_shape, layer_flops, prefill_flops
from tiny_linear_models import qwen3_5_text_config, tiny_lfm2_vl, tiny_qwen3_next

LAYOUT = TokenLayout(prefix=32, visual=16384, query=64)


def test_presets_have_the_published_layer_patterns():
    q = get_shape("qwen3.5-9b")
    assert (q.layer_kinds.count("L"), q.layer_kinds.count("*"), q.hidden_size, q.linear_num_value_heads) == (24, 8, 4096,
                                                                                                           32)
    assert get_shape("qwen3.5-27b").num_layers == 64
    assert get_shape("qwen3-next-80b-a3b").moe_top_k == 10
    assert get_shape("lfm2-1.2b").layer_kinds == "CC*CC*CC*C*C*C*C"


def test_a_shape_with_deltanet_layers_needs_their_widths():
    from autoprune.errors import ConfigError

    with pytest.raises(ConfigError, match="Gated DeltaNet"):
        dataclasses.replace(get_shape("qwen3.5-9b"), linear_num_value_heads=24, linear_num_key_heads=16)
    with pytest.raises(ConfigError, match="mixer_mlp"):
        dataclasses.replace(get_shape("lfm2-1.2b"), mixer_mlp=1)
    assert ModelShape.from_dict(get_shape("qwen3.5-9b").to_dict()) == get_shape("qwen3.5-9b")


def test_shapes_from_configs_match_the_models_layer_kinds():
    from autoprune.adapters import get_adapter

    assert ModelShape.from_config(qwen3_5_text_config()).layer_kinds == "LL*L*L"
    assert ModelShape.from_config(tiny_qwen3_next().config).layer_kinds == get_adapter(tiny_qwen3_next()).layer_kinds
    lfm = tiny_lfm2_vl()
    assert ModelShape.from_config(lfm.config).layer_kinds == get_adapter(lfm).layer_kinds


def test_a_deltanet_layer_costs_linear_time_and_attention_quadratic():
    q = get_shape("qwen3.5-9b")
    lin = layer_flops(q, "L", 32768) / layer_flops(q, "L", 16384)
    att = layer_flops(q, "*", 32768) / layer_flops(q, "*", 16384)
    assert 1.9 < lin < 2.1 and att > lin
    gateless = dataclasses.replace(q, attn_output_gate=False)
    assert layer_flops(q, "*", 1024) > layer_flops(gateless, "*", 1024)  # q_proj packs the gate


@pytest.mark.parametrize("name", ["qwen3.5-9b", "qwen3-next-80b-a3b", "lfm2-1.2b"])
def test_the_latency_model_predicts_a_speedup_near_the_flop_ideal(name):
    shape = get_shape(name)
    first = shape.layer_kinds.index("*") + 1  # LFM2: nothing scores before its first attention layer
    keep = tuple([1.0] * first + [0.25] * (shape.num_layers - first))
    for scorer in (ScorerConfig(), ScorerConfig(mamba_decay=True, delta_correction=True)):
        sched = Schedule(keep=keep, scorer=scorer)
        est = LatencyModel(shape, LAYOUT, "h200").estimate(sched)
        ideal = prefill_flops(shape, LAYOUT) / prefill_flops(shape, LAYOUT, sched.tokens_per_layer(LAYOUT.visual))
        assert 1.5 < est.baseline_ms / est.latency_ms <= ideal * 1.05


TINY = {
    "qwen3_5_text": ModelShape(name="tiny-qwen3.5", family="qwen3_5_text", layer_kinds="LL*", hidden_size=32,
                               num_attention_heads=4, num_kv_heads=2, head_dim=8, mamba_num_heads=0, mamba_head_dim=0,
                               n_groups=0, ssm_state_size=0, conv_kernel=4, mlp_intermediate_size=48, vocab_size=64,
                               chunk_size=64, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                               linear_value_head_dim=8, attn_output_gate=True, mixer_mlp=True, dtype="float32"),
    "lfm2": ModelShape(name="tiny-lfm2", family="lfm2", layer_kinds="C*C", hidden_size=32, num_attention_heads=4,
                       num_kv_heads=2, head_dim=8, mamba_num_heads=0, mamba_head_dim=0, n_groups=0, ssm_state_size=0,
                       conv_kernel=3, mlp_intermediate_size=48, vocab_size=64, mixer_mlp=True, dtype="float32"),
}


@pytest.mark.parametrize("family", TINY)
def test_profile_times_every_layer_kind_and_the_deltanet_scoring_on_the_cpu(family, tmp_path):
    shape = TINY[family]
    f = tmp_path / "shape.json"
    f.write_text(json.dumps(shape.to_dict()))
    out = tmp_path / "t.json"
    rc = main(["profile", "--shape", str(f), "--gpu", "cpu", "--tokens", "24,40", "--prefix-tokens", "4",
               "--query-tokens", "4", "--rep-ms", "1", "--warmup-ms", "0", "--min-reps", "2", "--retries", "0",
               "--output", str(out), "--quiet", "--no-head", "--no-gather"])
    assert rc == 0
    t = ProfileTable.load(out)
    kinds = {"qwen3_5_text": {"linear_attention", "attention"}, "lfm2": {"short_conv", "attention"}}[family]
    assert set(t.layers) == kinds
    if family == "qwen3_5_text":
        assert {"linear", "linear_decay", "linear_exact"} <= set(t.scoring)


def test_the_qwen_presets_are_transformers_default_configs_of_those_checkpoints():
    # transformers 5.24's Qwen3_5TextConfig / Qwen3NextConfig defaults are Qwen3.5-9B's and
    # Qwen3-Next-80B-A3B's published text configs
    from transformers import Qwen3_5TextConfig, Qwen3NextConfig

    assert ModelShape.from_config(Qwen3_5TextConfig(), name="qwen3.5-9b") == get_shape("qwen3.5-9b")
    assert ModelShape.from_config(Qwen3NextConfig(), name="qwen3-next-80b-a3b") == get_shape("qwen3-next-80b-a3b")
