"""Prefix activation cache: schedules resume after the shared unreduced prefix, with the
same logits as a full run (the oracle: the runtime without the cache, and for the
unreduced schedule the unmodified model)."""

import numpy as np
import pytest
import torch

from autoprune.demo.model import load
from autoprune.demo.task import DemoQA
from autoprune.demo.train import random_schedule
from autoprune.errors import ConfigError
from autoprune.schedule import Schedule, ScorerConfig
from autoprune.demo.source import build_evaluator
from autoprune.tasks import AccuracyEvaluator, PrefixCache, prefix_of, reduced_logits

KINDS = "M*M-M*M-M*M-"  # the shipped demo


@pytest.fixture(scope="module")
def qa():
    return DemoQA(load())


@pytest.fixture(scope="module")
def batch(qa):
    from autoprune.demo import video as V

    with torch.inference_mode():
        data = qa.prepare_videos(V.make_split("test", 12, 16))
    g = data.groups[0]
    return g.inputs_embeds, g.visual_mask[None].expand(len(g), -1)


def _keep(cut: int, ratio: float = 0.3) -> tuple[float, ...]:
    return (1.0,) * cut + (ratio,) * (len(KINDS) - cut)


# ---------------------------------------------------------------- where to resume
def test_a_schedule_that_removes_nothing_has_no_cut():
    assert prefix_of(Schedule.identity(12), KINDS, 64) == (12, {})


def test_a_score_free_selector_needs_no_evidence_before_its_first_cut():
    s = Schedule(keep=_keep(7), scorer=ScorerConfig(selector="uniform_stride"))
    assert prefix_of(s, KINDS, 64) == (7, {})


def test_the_evidence_before_the_first_cut_is_the_last_evidence_window_mixers():
    s = Schedule(keep=_keep(7), scorer=ScorerConfig(evidence_window=3))
    assert prefix_of(s, KINDS, 64) == (7, {4: "mamba", 5: "attention", 6: "mamba"})
    attention_only = Schedule(keep=_keep(7), scorer=ScorerConfig(w_mamba=0.0, evidence_window=2))
    assert prefix_of(attention_only, KINDS, 64) == (7, {1: "attention", 5: "attention"})
    assert prefix_of(Schedule(keep=(0.5,) * 12, prefilter="uniform_stride"), KINDS, 64) == (0, {})


def test_a_schedule_resumes_at_its_cut_once_its_evidence_is_stored(qa, batch):
    x, vm = batch
    cache = PrefixCache(qa.module)
    nv = int(vm[0].sum())
    s = Schedule(keep=_keep(7), scorer=ScorerConfig(evidence_window=2))  # evidence: 5 (attention), 6 (mamba)
    assert cache.resume_point("b", s, nv) == 0  # nothing stored yet
    _logits(qa, x, vm, Schedule.identity(12), cache)
    assert cache.resume_point("b", s, nv) == 5  # layer outputs stored, the evidence not yet
    _logits(qa, x, vm, s, cache)
    assert cache.resume_point("b", s, nv) == 7
    # evidence depends on head aggregation (and Mamba's on decay): another setting runs them again
    assert cache.resume_point("b", s.replace(scorer=ScorerConfig(evidence_window=2, head_agg="max")), nv) == 5
    assert cache.resume_point("b", s.replace(scorer=ScorerConfig(evidence_window=2, mamba_decay=True)), nv) == 6
    # weights and momentum do not change a layer's evidence, only how it is blended
    same = s.replace(scorer=ScorerConfig(evidence_window=2, w_attn=0.3, state_momentum=0.8))
    assert cache.resume_point("b", same, nv) == 7
    assert torch.equal(_logits(qa, x, vm, same, cache), _logits(qa, x, vm, same))


# ------------------------------------------------------------------- exactness
def _logits(qa, x, vm, s, cache=None, key="b"):
    with torch.inference_mode():
        if cache is None:
            return reduced_logits(qa, x, vm, s)
        with cache.resume(key, s, int(vm[0].sum())):
            return reduced_logits(qa, x, vm, s)


def test_logits_with_the_cache_equal_a_full_run_for_random_schedules(qa, batch):
    x, vm = batch
    cache = PrefixCache(qa.module)
    rng = np.random.default_rng(0)
    schedules = [Schedule.identity(12)] + [random_schedule(rng, KINDS) for _ in range(12)]
    for s in schedules + schedules[::-1]:  # the second pass resumes from what the first stored
        assert torch.equal(_logits(qa, x, vm, s, cache), _logits(qa, x, vm, s)), s
    assert cache.stats.layers_skipped > 0
    assert cache.cached_layers("b") == list(range(12))  # the unreduced run stored every layer


def test_the_unreduced_schedule_from_the_cache_gives_the_unmodified_models_logits(qa, batch):
    x, vm = batch
    cache = PrefixCache(qa.module)
    with torch.inference_mode():
        plain = qa.last_logits(x)
    first = _logits(qa, x, vm, Schedule.identity(12), cache)
    again = _logits(qa, x, vm, Schedule.identity(12), cache)
    assert torch.equal(first, plain) and torch.equal(again, plain)
    assert cache.stats.layers_skipped == 12  # the second call ran no layer


def test_skipped_layers_do_not_run_and_the_model_is_restored(qa, batch):
    x, vm = batch
    cache = PrefixCache(qa.module)
    _logits(qa, x, vm, Schedule.identity(12), cache)
    layers = qa.module.backbone.layers
    ran = []
    hooks = [layer.mixer.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    s = Schedule(keep=_keep(7), scorer=ScorerConfig(evidence_window=1))
    try:
        _logits(qa, x, vm, s, cache)  # runs 6 (evidence) on: its evidence is stored
        first = list(ran)
        ran.clear()
        _logits(qa, x, vm, s, cache)  # resumes at the cut
    finally:
        for h in hooks:
            h.remove()
    assert first == list(range(6, 12)) and ran == list(range(7, 12))
    assert all("forward" not in layer.__dict__ for layer in layers)
    with torch.inference_mode():
        assert torch.equal(qa.last_logits(x), _logits(qa, x, vm, Schedule.identity(12)))


def test_the_model_is_restored_when_the_call_fails(qa, batch):
    x, vm = batch
    cache = PrefixCache(qa.module)
    _logits(qa, x, vm, Schedule.identity(12), cache)
    with pytest.raises(RuntimeError, match="boom"):
        with cache.resume("b", Schedule(keep=_keep(9)), int(vm[0].sum())):
            raise RuntimeError("boom")
    assert all("forward" not in layer.__dict__ for layer in qa.module.backbone.layers)


def test_batches_are_kept_apart_by_key(qa, batch):
    x, vm = batch
    cache = PrefixCache(qa.module)
    s = Schedule(keep=_keep(7), scorer=ScorerConfig(selector="uniform_stride"))
    _logits(qa, x[:6], vm[:6], Schedule.identity(12), cache, key="first")
    out = _logits(qa, x[6:], vm[6:], s, cache, key="second")
    assert torch.equal(out, _logits(qa, x[6:], vm[6:], s))
    assert cache.cached_layers("second") == list(range(7))


def test_a_cache_without_room_stores_nothing_and_stays_exact(qa, batch):
    x, vm = batch
    cache = PrefixCache(qa.module, max_bytes=0)
    s = Schedule(keep=_keep(7))
    for _ in range(2):
        assert torch.equal(_logits(qa, x, vm, s, cache), _logits(qa, x, vm, s))
    assert cache.cached_layers("b") == [] and cache.stats.stored_bytes == 0 and cache.stats.refused_bytes > 0
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(qa.module, max_bytes=-1)


# ------------------------------------------------------------------- evaluators
def test_an_evaluator_with_the_cache_gives_the_same_results(qa):
    from autoprune.demo import video as V

    with torch.inference_mode():
        data = qa.prepare_videos(V.make_split("test", 24, 16))
    plain = AccuracyEvaluator(qa, data, batch_size=8, n_boot=50)
    cached = AccuracyEvaluator(qa, data, batch_size=8, n_boot=50, prefix_cache=True)
    rng = np.random.default_rng(1)
    for s in [Schedule.identity(12)] + [random_schedule(rng, KINDS) for _ in range(4)]:
        a, b = plain.evaluate(s), cached.evaluate(s)
        assert (a.score, a.ci_low, a.ci_high, a.extra.get("delta")) == (b.score, b.ci_low, b.ci_high,
                                                                       b.extra.get("delta"))
        assert torch.equal(plain.predictions(s), cached.predictions(s))
    assert cached.prefix_cache.stats.layers_skipped > 0


def test_the_demo_evaluator_caches_by_default_and_the_option_turns_it_off():
    assert isinstance(build_evaluator(n=4).prefix_cache, PrefixCache)
    assert build_evaluator(n=4, prefix_cache_mb=0).prefix_cache is None
    for bad in (-1, "lots", float("nan")):
        with pytest.raises(ConfigError, match="prefix_cache_mb"):
            build_evaluator(n=4, prefix_cache_mb=bad)
