"""Procedural long-video QA: determinism, splits, answers by construction, token choice."""

import numpy as np
import pytest

from autoprune.demo import video as V
from autoprune.errors import ConfigError


def _fingerprints(b: V.VideoBatch) -> set[bytes]:
    return {b.shape[i].tobytes() + b.colour[i].tobytes() + b.question[i].tobytes() for i in range(len(b))}


def test_generation_is_deterministic_from_the_seed():
    a = V.make_split("test", 32, 16)
    b = V.make_split("test", 32, 16)
    for k in ("shape", "colour", "texture", "tint", "question", "choices", "answer", "evidence"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_a_sample_does_not_depend_on_the_batch_it_is_generated_in():
    seeds = V.split_seeds("train", 20, 16)
    fams = np.arange(20) % 4
    whole = V.generate(seeds, fams, 16)
    alone = V.generate(seeds[7:8], fams[7:8], 16)
    np.testing.assert_array_equal(whole.shape[7], alone.shape[0])
    np.testing.assert_array_equal(whole.question[7], alone.question[0])
    np.testing.assert_array_equal(V.render(whole)[7], V.render(alone)[0])


def test_splits_have_disjoint_seed_ranges_and_content():
    seeds = {s: set(V.split_seeds(s, 500, 16).tolist()) for s in ("train", "val", "test")}
    assert not seeds["train"] & seeds["val"] and not seeds["train"] & seeds["test"] and not seeds["val"] & seeds["test"]
    prints = {s: _fingerprints(V.make_split(s, 200, 16)) for s in ("train", "val", "test")}
    assert not prints["train"] & prints["val"] and not prints["train"] & prints["test"]
    assert not prints["val"] & prints["test"]


def test_longer_test_videos_come_from_their_own_seed_range():
    a = set(V.split_seeds("test", 100, 64).tolist())
    b = set(V.split_seeds("test", 100, 128).tolist())
    assert not a & b
    assert V.make_split("test", 4, 128).frames == 128


@pytest.mark.parametrize("frames", [4, 16, 64, 256])
def test_every_answer_is_right_by_construction(frames):
    b = V.make_split("val", 80, frames)
    for i in range(len(b)):
        assert b.choice_words(i)[b.answer[i]] == V.answer_from_cells(b, i), (frames, i, b.question_text(i))


def test_answers_hold_with_fewer_distractors_too():
    b = V.generate(V.split_seeds("train", 40, 8), np.arange(40) % 4, 8, tracks=0)
    for i in range(len(b)):
        assert b.choice_words(i)[b.answer[i]] == V.answer_from_cells(b, i)
    assert ((b.shape >= 0) == b.evidence).all()  # no distractors: only the targets are drawn


def test_evidence_is_a_few_question_dependent_tokens():
    b = V.make_split("test", 200, 64)
    n = b.evidence.reshape(len(b), -1).sum(1)
    assert n.min() >= 1 and n.max() <= 4
    assert n.mean() / (64 * V.TOKENS_PER_FRAME) < 0.01
    # the evidence cells are the only cells with the queried identity
    for i in range(0, 200, 7):
        w = b.question_text(i).split()
        if w[0] in ("count", "where"):
            c, s = V.COLOURS.index(w[1]), V.SHAPES.index(w[2])
            np.testing.assert_array_equal((b.shape[i] == s) & (b.colour[i] == c), b.evidence[i])
    # most frames show distractor objects
    assert (b.shape >= 0).any(-1).mean() > 0.9


def test_families_cycle_and_answers_are_balanced():
    b = V.make_split("test", 800, 32)
    assert np.bincount(b.family, minlength=4).tolist() == [200] * 4
    for f, k in zip(range(4), (4, 4, 2, 4)):
        counts = np.bincount(b.answer[b.family == f], minlength=k)[:k]
        assert counts.min() > 0.5 * counts.mean(), (V.FAMILIES[f], counts)


def test_torch_rendering_matches_numpy():
    b = V.make_split("test", 3, 8)
    img = V.render(b)
    cells = img.reshape(3, 8, 2, 8, 2, 8, 3).transpose(0, 1, 2, 4, 3, 5, 6).reshape(3, 32, 192)
    np.testing.assert_allclose(V.render_cells_torch(b).numpy(), cells, atol=1e-6)
    assert img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("bad", [0, 3, -1, 5000, 2.5, True])
def test_bad_frame_counts_are_refused(bad):
    with pytest.raises(ConfigError, match="frames"):
        V.make_split("test", 2, bad)


def test_unknown_split_is_refused():
    with pytest.raises(ConfigError, match="unknown split"):
        V.split_seeds("dev", 2)


def test_question_text_round_trips_through_the_encoder():
    b = V.make_split("test", 40, 8)
    for i in range(len(b)):
        np.testing.assert_array_equal(V.encode_question(b.question_text(i), b.choice_words(i)), b.question[i])
    assert V.make_split("test", 1, 8).question_text(0).startswith("needle ")


def test_the_words_to_look_for_come_last():
    b = V.make_split("test", 8, 8)
    for i in range(8):
        text = b.question_text(i).split()
        assert b.question_words(i)[-1] == text[-1] and text[-1] in V.SHAPES
