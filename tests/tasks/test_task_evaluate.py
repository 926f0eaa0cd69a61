"""Evaluators: the Evaluator protocol, pairing, bootstrap intervals, fidelity, caching, JSONL data."""

import pytest
import torch

import autoprune
from autoprune.demo import video as V
from autoprune.demo.model import TINY_CONFIG, DemoVideoVLM
from autoprune.demo.task import DemoQA, export_jsonl
from autoprune.interfaces import Evaluator, TaskResult
from autoprune.tasks import AccuracyEvaluator, FidelityEvaluator, bootstrap_ci, load_jsonl, reduced_logits
from autoprune.tasks.records import RecordError

FRAMES = 8


@pytest.fixture(scope="module")
def qa():
    torch.manual_seed(0)
    return DemoQA(DemoVideoVLM(TINY_CONFIG).eval())


@pytest.fixture(scope="module")
def data(qa):
    return qa.prepare_videos(V.make_split("test", 24, FRAMES))


def _sched(keep=(1.0, 0.5, 0.5, 0.25, 0.25, 0.25), **scorer):
    return autoprune.Schedule(keep=keep, min_tokens=1, scorer=autoprune.ScorerConfig(**scorer))


def test_evaluators_implement_the_protocol(qa, data):
    for cls in (AccuracyEvaluator, FidelityEvaluator):
        ev = cls(qa, data, batch_size=8)
        assert isinstance(ev, Evaluator)
        assert ev.signature == autoprune.model_signature(qa.module)
        assert ev.num_visual == FRAMES * V.TOKENS_PER_FRAME
        r = ev.evaluate(_sched())
        assert isinstance(r, TaskResult) and r.metric == cls.metric and r.n == 24
        assert r.ci_low <= r.score <= r.ci_high
        assert set(r.per_family) == set(V.FAMILIES)


def test_fidelity_of_the_all_ones_schedule_is_perfect(qa, data):
    ev = FidelityEvaluator(qa, data, batch_size=8)
    r = ev.evaluate(ev.identity)
    assert r.score == 1.0 and r.extra["kl"] == 0.0
    # the same through the runtime's hooks (not the evaluator's no-op shortcut)
    def always_hooked(q, x, vm, s):
        with autoprune.reduce(q.module, s, visual_mask=vm):
            return q.last_logits(x)

    ev2 = FidelityEvaluator(qa, data, batch_size=8)
    ev2.forward = always_hooked
    r2 = ev2.evaluate(ev2.identity)
    assert r2.score == 1.0 and r2.extra["kl"] < 1e-9


def test_fidelity_sees_a_reduction(qa, data):
    ev = FidelityEvaluator(qa, data, batch_size=8)
    r = ev.evaluate(_sched(keep=(1.0,) + (0.05,) * 5, selector="random"))
    assert r.extra["kl"] > 0 and r.extra["kl_ci_low"] <= r.extra["kl"] <= r.extra["kl_ci_high"]
    assert 0 <= r.score <= 1


def test_evaluation_is_paired_and_seeded(qa, data):
    a = AccuracyEvaluator(qa, data, batch_size=8, seed=3)
    b = AccuracyEvaluator(qa, data, batch_size=5, seed=3)
    s = _sched()
    ra, rb = a.evaluate(s), b.evaluate(s)
    assert (ra.score, ra.ci_low, ra.ci_high) == (rb.score, rb.ci_low, rb.ci_high)  # batching does not matter
    torch.testing.assert_close(a.outcomes(s)["score"], b.outcomes(s)["score"])
    d, lo, hi = a.paired_delta(s, s)
    assert (d, lo, hi) == (0.0, 0.0, 0.0)
    assert ra.extra["baseline"] == a.baseline.score
    assert ra.extra["delta_ci_low"] <= ra.extra["delta"] <= ra.extra["delta_ci_high"]


def test_results_and_baseline_are_cached(qa, data):
    calls = []

    def counting(q, x, vm, s):
        calls.append(s.keep)
        return reduced_logits(q, x, vm, s)

    ev = AccuracyEvaluator(qa, data, batch_size=8, forward=counting)
    s = _sched()
    ev.evaluate(s)
    n = len(calls)
    assert n == 2 * 3  # the schedule and the identity baseline, 3 batches each
    ev.evaluate(s)
    ev.evaluate(_sched())  # an equal schedule
    _ = ev.baseline
    assert len(calls) == n


def test_realised_mean_keep_is_reported(qa, data):
    ev = AccuracyEvaluator(qa, data, batch_size=8)
    s = _sched()
    assert ev.evaluate(s).extra["mean_keep"] == pytest.approx(sum(s.tokens_per_layer(32)) / (6 * 32))


def test_bootstrap_interval_brackets_the_mean():
    v = torch.tensor([1.0] * 30 + [0.0] * 70)
    idx = torch.randint(100, (2000, 100), generator=torch.Generator().manual_seed(0))
    lo, hi = bootstrap_ci(v, idx)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert bootstrap_ci(torch.ones(10), idx[:, :10] % 10) == (1.0, 1.0)


def test_accuracy_needs_labels(qa, tmp_path):
    import numpy as np

    np.save(tmp_path / "e.npy", np.zeros((32, TINY_CONFIG.hidden_size), dtype=np.float32))
    (tmp_path / "d.jsonl").write_text('{"question": "count red ring", "embeddings": "e.npy"}\n')
    data = qa.prepare(load_jsonl(tmp_path / "d.jsonl"))
    with pytest.raises(ValueError, match="answer"):
        AccuracyEvaluator(qa, data)
    r = FidelityEvaluator(qa, data).evaluate(_sched())  # whole-vocabulary fidelity
    assert r.n == 1 and 0 <= r.score <= 1


def test_jsonl_frames_give_the_same_answers_as_generated_videos(qa, tmp_path):
    b = V.make_split("test", 6, FRAMES)
    export_jsonl(b, tmp_path)
    recs = load_jsonl(tmp_path / "data.jsonl")
    assert [r.family for r in recs] == b.family_names
    from_files = AccuracyEvaluator(qa, qa.prepare(recs)).answer_logits(_sched())[0]
    direct = AccuracyEvaluator(qa, qa.prepare_videos(b)).answer_logits(_sched())[0]
    torch.testing.assert_close(from_files, direct, atol=0.05, rtol=0.05)  # 8-bit PNG pixels


def test_jsonl_embeddings_round_trip_exactly(qa, tmp_path):
    b = V.make_split("test", 4, FRAMES)
    export_jsonl(b, tmp_path, model=qa.model)
    data = qa.prepare(load_jsonl(tmp_path / "data.jsonl"))
    got = AccuracyEvaluator(qa, data).answer_logits(_sched())[0]
    want = AccuracyEvaluator(qa, qa.prepare_videos(b)).answer_logits(_sched())[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mixed_lengths_are_grouped(qa, tmp_path):
    import numpy as np

    H = TINY_CONFIG.hidden_size
    lines = []
    for i, v in enumerate((32, 16, 32)):
        np.save(tmp_path / f"e{i}.npy", np.random.default_rng(i).normal(size=(v, H)).astype(np.float32))
        lines.append(f'{{"question": "where red ring", "choices": ["q1", "q2", "q3", "q4"], "answer": {i}, '
                     f'"embeddings": "e{i}.npy"}}')
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    data = qa.prepare(load_jsonl(tmp_path / "d.jsonl"))
    assert sorted(len(g) for g in data.groups) == [1, 2]
    r = AccuracyEvaluator(qa, data).evaluate(_sched())
    assert r.n == 3


def test_demo_records_with_unknown_words_name_the_line(qa, tmp_path):
    import numpy as np

    np.save(tmp_path / "e.npy", np.zeros((32, TINY_CONFIG.hidden_size), dtype=np.float32))
    (tmp_path / "d.jsonl").write_text(
        '{"question": "count red ring", "choices": ["1", "2"], "answer": 0, "embeddings": "e.npy"}\n'
        '{"question": "how many dogs", "choices": ["1", "2"], "answer": 0, "embeddings": "e.npy"}\n')
    with pytest.raises(RecordError, match="line 2: 'how' is not a word"):
        qa.prepare(load_jsonl(tmp_path / "d.jsonl"))


# ------------------------------------------------------------------ racing
@pytest.mark.parametrize("cls", [AccuracyEvaluator, FidelityEvaluator])
def test_a_race_run_to_the_end_gives_the_same_result_as_evaluate(qa, data, cls):
    a, b = cls(qa, data, batch_size=8), cls(qa, data, batch_size=8)
    seen = []
    r = a.race(_sched(), lambda idx, sc: seen.append(int(idx.numel())) or True)
    want = b.evaluate(_sched())
    assert (r.score, r.ci_low, r.ci_high, r.per_family) == (want.score, want.ci_low, want.ci_high, want.per_family)
    assert seen == [8, 16]  # after every batch but the last
    torch.testing.assert_close(a.sample_scores(_sched()), b.sample_scores(_sched()))


def test_a_race_stops_when_told_and_reports_what_it_saw(qa, data):
    from autoprune.tasks.evaluate import RacedOut

    ev = AccuracyEvaluator(qa, data, batch_size=8)
    out = ev.race(_sched(), lambda idx, sc: False)
    full = AccuracyEvaluator(qa, data, batch_size=8).sample_scores(_sched())
    assert isinstance(out, RacedOut) and out.n == 8 and out.batches == 1
    assert out.score == pytest.approx(float(full[:8].mean()))  # the first batch of the one group, in set order
    assert ev.evaluations == 0  # nothing cached for a stopped race


def test_racing_order_interleaves_groups_of_different_lengths(qa):
    mixed = qa.prepare_videos(V.make_split("test", 16, FRAMES))
    longer = qa.prepare_videos(V.make_split("test", 8, 2 * FRAMES))
    from autoprune.tasks.prepared import PreparedSet

    ev = AccuracyEvaluator(qa, PreparedSet.concat([mixed, longer]), batch_size=8)
    assert ev.batches() == [(0, 0, 8), (1, 0, 8), (0, 8, 16)]
    r = ev.evaluate(_sched())
    assert set(r.per_length) == {str(FRAMES * V.TOKENS_PER_FRAME), str(2 * FRAMES * V.TOKENS_PER_FRAME)}
