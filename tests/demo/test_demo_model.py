"""DemoVideoVLM: layout, reduction through the adapter, weights round trip, missing weights."""

import numpy as np
import pytest
import torch

import autoprune
from autoprune.demo import video as V
from autoprune.demo.model import TINY_CONFIG, DemoConfig, DemoVideoVLM, DemoWeightsMissing, load, save
from autoprune.errors import ConfigError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return DemoVideoVLM(TINY_CONFIG).eval()


def test_sequence_is_prefix_visual_question(tiny):
    b = V.make_split("test", 2, 8)
    x = tiny.embed_batch(b)
    L = DemoVideoVLM.sequence_length(8)
    assert x.shape == (2, L, TINY_CONFIG.hidden_size)
    vm = DemoVideoVLM.visual_mask(2, 8)
    assert vm.shape == (2, L) and int(vm[0].sum()) == 8 * V.TOKENS_PER_FRAME
    idx = vm[0].nonzero().flatten()
    assert idx[0] == len(V.PREFIX_IDS) and idx[-1] == L - V.QUESTION_LEN - 1
    ids = torch.as_tensor(b.question)
    torch.testing.assert_close(x[:, -V.QUESTION_LEN:], tiny.text_embeds(ids))


def test_forward_scores_only_the_choices(tiny):
    b = V.make_split("test", 8, 8)
    with torch.inference_mode():
        out = tiny(b)
    assert out.shape == (8, 4)
    order = b.family == V.FAMILIES.index("order")
    assert torch.isinf(out[torch.as_tensor(order)][:, 2:]).all()
    assert torch.isfinite(out[torch.as_tensor(~order)]).all()


def test_the_adapter_finds_the_backbone_inside(tiny):
    sig = autoprune.model_signature(tiny)
    assert sig.family == "nemotron_h" and sig.layer_kinds == TINY_CONFIG.layer_kinds


def test_all_ones_schedule_changes_nothing(tiny):
    b = V.make_split("test", 4, 8)
    with torch.inference_mode():
        x = tiny.embed_batch(b)
        ref = tiny.last_logits(x)
        s = autoprune.Schedule.identity(TINY_CONFIG.num_layers)
        with autoprune.reduce(tiny, s, visual_mask=DemoVideoVLM.visual_mask(4, 8)):
            got = tiny.last_logits(x)
    torch.testing.assert_close(got, ref)


def test_reduced_forward_keeps_the_question(tiny):
    b = V.make_split("test", 4, 8)
    s = autoprune.Schedule(keep=(1.0, 0.5, 0.5, 0.25, 0.25, 0.25), min_tokens=1)
    with torch.inference_mode():
        x = tiny.embed_batch(b)
        with autoprune.reduce(tiny, s, visual_mask=DemoVideoVLM.visual_mask(4, 8)) as h:
            tiny.last_logits(x)
    L = DemoVideoVLM.sequence_length(8)
    pos = h.last.pos
    assert pos.shape[1] == L - 32 + 8
    assert (pos[:, -V.QUESTION_LEN:] == torch.arange(L - V.QUESTION_LEN, L)).all()


def test_chunk_size_is_only_a_speed_knob(tiny):
    b = V.make_split("test", 2, 16)
    with torch.inference_mode():
        x = tiny.embed_batch(b)
        tiny.set_chunk_size(16)
        a = tiny.last_logits(x)
        tiny.set_chunk_size(64)
        c = tiny.last_logits(x)
        tiny.set_chunk_size(16)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)


def test_weights_round_trip(tiny, tmp_path):
    save(tiny, tmp_path, metadata={"steps": 3})
    back = load(tmp_path)
    assert back.config == TINY_CONFIG and back.metadata["steps"] == 3
    b = V.make_split("test", 2, 8)
    with torch.inference_mode():
        torch.testing.assert_close(back(b), tiny(b))


def test_missing_weights_fail_with_instructions(tmp_path):
    with pytest.raises(DemoWeightsMissing, match="autoprune demo train"):
        load(tmp_path)


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="layer_kinds"):
        DemoConfig(layer_kinds="MXM")
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        DemoConfig(num_attention_heads=4, num_key_value_heads=3)


def test_shipped_weights_fit_the_package_data_budget():
    from autoprune.demo.model import weights_dir

    total = sum(p.stat().st_size for p in weights_dir().glob("*")) if weights_dir().exists() else 0
    assert total <= 20 * 2**20
    assert np.isfinite(total)
