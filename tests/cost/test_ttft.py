"""Time to first token: vision encoder, EVS and prefill, each part with its source."""

import dataclasses

import pytest

from autoprune.cost.latency import LatencyModel
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout
from autoprune.cost.ttft import VisionShape, evs_kept_tokens, predict_ttft
from autoprune.errors import ConfigError
from autoprune.schedule import Schedule

VISION = VisionShape()
IDENTITY = Schedule.identity(NEMOTRON_H_8B.num_layers)


def _model(visual, gpu="h200-sxm-141gb"):
    return LatencyModel(NEMOTRON_H_8B, TokenLayout(32, visual, 64), gpu)


def test_radio_defaults_give_256_llm_tokens_per_tubelet():
    assert (VISION.patches, VISION.sequence, VISION.tokens_out) == (1024, 1034, 256)


def test_ttft_is_the_sum_of_its_named_parts():
    frames = 64
    kept = evs_kept_tokens(VISION, 32, 0.5)
    assert kept == 32 * 256 // 2
    est = predict_ttft(_model(kept), IDENTITY, VISION, frames=frames, evs_rate=0.5)
    names = [p.name for p in est.parts]
    assert names == ["vision encoder", "EVS pruning", "LM prefill"]
    assert [p.source for p in est.parts] == ["roofline-uncalibrated", "roofline-uncalibrated", "table"]
    assert est.total_ms == pytest.approx(sum(p.ms for p in est.parts))
    assert est.low_ms < est.total_ms < est.high_ms
    assert est.parts[0].tokens == 32 * 256 and est.parts[1].tokens == kept
    assert "time to 1st token" in est.lines()[-1]


def test_without_evs_there_is_no_pruning_part():
    est = predict_ttft(_model(32 * 256), IDENTITY, VISION, frames=64)
    assert [p.name for p in est.parts] == ["vision encoder", "LM prefill"]


def test_the_vision_encoder_scales_with_frames():
    a = predict_ttft(_model(32 * 256), IDENTITY, VISION, frames=64).parts[0].ms
    b = predict_ttft(_model(64 * 256), IDENTITY, VISION, frames=128).parts[0].ms
    assert b == pytest.approx(2 * a, rel=0.05)


def test_a_layout_that_is_not_what_evs_leaves_is_refused():
    with pytest.raises(ConfigError, match="EVS at rate 0.5 keeps"):
        predict_ttft(_model(32 * 256), IDENTITY, VISION, frames=64, evs_rate=0.5)


def test_a_bad_vision_shape_is_refused_by_field():
    with pytest.raises(ConfigError, match="image_size"):
        dataclasses.replace(VISION, image_size=500)
