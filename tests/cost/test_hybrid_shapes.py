"""ModelShape of GraniteMoeHybrid, Falcon-H1, Zamba2 and Jamba: read from a config (the layer kinds
the adapter declares), back to a config, presets that predict on a GPU, and the new kinds' costs."""

import dataclasses

import pytest
from tiny_hybrids import FAMILIES

import autoprune
from autoprune.cost.latency import LatencyModel
from autoprune.cost.roofline import layer_bytes
from autoprune.cost.shapes import (
    PRESETS,
    ModelShape,
    TokenLayout,
    get_shape,
    layer_flops,
    prefill_flops,
)
from autoprune.schedule import Schedule, ScorerConfig

NEW = {"granitemoehybrid": "granite-4.0-h-small", "falcon_h1": "falcon-h1-7b", "zamba2": "zamba2-7b",
       "jamba": "jamba-mini"}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_shape_read_from_a_config_has_the_adapters_layer_kinds_and_converts_back(family):
    model = FAMILIES[family]()
    shape = ModelShape.from_config(model.config)
    assert shape.family == family
    assert shape.layer_kinds == autoprune.model_signature(model).layer_kinds
    assert ModelShape.from_config(shape.to_family_config(), name=shape.name) == shape


@pytest.mark.parametrize("family,preset", NEW.items())
def test_each_preset_is_its_familys_shape_and_survives_a_config_round_trip(family, preset):
    shape = get_shape(preset)
    assert shape.family == family and PRESETS[preset] is shape
    assert ModelShape.from_config(shape.to_family_config(), name=preset) == shape


@pytest.mark.parametrize("preset", NEW.values())
def test_a_gpu_prediction_for_each_preset_speeds_up_a_quarter_keep_schedule(preset):
    shape = get_shape(preset)
    lm = LatencyModel(shape, TokenLayout(prefix=32, visual=16384, query=64), "h200", search_dirs=[])
    n = shape.num_layers
    sig = autoprune.ModelSignature(family=shape.family, layer_kinds=shape.layer_kinds)
    sched = Schedule(keep=(1.0, 1.0) + (0.25,) * (n - 2), model=sig, min_tokens=16, scorer=ScorerConfig())
    est = lm.estimate(sched)
    layout = lm.layout
    ideal = prefill_flops(shape, layout) / prefill_flops(shape, layout, sched.tokens_per_layer(layout.visual))
    assert est.source == "roofline-uncalibrated"
    # weights are read whatever the token count and scoring adds work: below the FLOP-ideal, near it
    assert 0.85 * ideal < est.speedup < ideal


def test_a_parallel_layer_costs_its_two_mixers_and_a_shared_attention_layer_more_than_its_mamba():
    s, n = get_shape("falcon-h1-7b"), 4096
    assert layer_flops(s, "P", n) == layer_flops(s, "M", n) + layer_flops(s, "*", n)
    assert layer_bytes(s, "M", n) < layer_bytes(s, "P", n) < layer_bytes(s, "M", n) + layer_bytes(s, "*", n)
    z = get_shape("zamba2-7b")
    assert layer_flops(z, "S", n) > layer_flops(z, "M", n) + layer_flops(z, "*", n)  # 2h-wide q/k/v, MLP


def test_mamba1_cost_grows_linearly_with_tokens():
    j = get_shape("jamba-mini")
    assert layer_flops(j, "A", 8192) == pytest.approx(2 * layer_flops(j, "A", 4096))


def test_a_shape_with_an_unknown_letter_is_refused():
    with pytest.raises(autoprune.ConfigError, match="letters"):
        dataclasses.replace(get_shape("jamba-mini"), layer_kinds="AX*")


@pytest.mark.slow
@pytest.mark.parametrize("preset,published", [("falcon-h1-7b", 7.6e9), ("zamba2-7b", 7.4e9),
                                              ("granite-4.0-h-small", 32e9), ("jamba-mini", 52e9)])
def test_each_presets_config_builds_a_model_of_the_published_size(preset, published):
    # parameter counts of the released models (their cards): the preset's widths are theirs
    import torch
    from transformers import AutoModelForCausalLM

    shape = get_shape(preset)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(shape.to_family_config(use_cache=False))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(published, rel=0.03)
    assert autoprune.model_signature(model).layer_kinds == shape.layer_kinds
