"""headroom(): a schedule as is, with the answer tokens kept first (oracle) and with a query-agnostic
floor, at the same keeps; answer-token recall per layer; where the lost questions lose their
evidence; the autoprune.headroom/v1 file; ``autoprune analyze --headroom``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import autoprune
from autoprune.cli import main
from autoprune.demo import video as V
from autoprune.demo.model import load
from autoprune.demo.task import DemoQA
from autoprune.errors import ConfigError
from autoprune.headroom import ARMS, HEADROOM_FORMAT, HeadroomResult, answer_recall, headroom, headroom_table
from autoprune.tasks import AccuracyEvaluator

FRAMES, N = 16, 32
MAX_ANSWER_TOKENS = 4  # a demo question's evidence is 1-4 tokens


@pytest.fixture(scope="module")
def ev():
    qa = DemoQA(load())
    return AccuracyEvaluator(qa, qa.prepare_videos(V.make_split("val", N, FRAMES)), batch_size=16)


def harsh(ev, **scorer):
    """Two cuts after the first attention layer: 64 -> 13 -> 6 visual tokens (>= 4: every answer fits)."""
    keep = (1.0, 1.0, 0.2, 0.2, 0.2, 0.2, 0.09, 0.09, 0.09, 0.09, 0.09, 0.09)
    return autoprune.Schedule(keep=keep, model=ev.signature, min_tokens=MAX_ANSWER_TOKENS,
                              scorer=autoprune.ScorerConfig(w_mamba=0.0, **scorer))


@pytest.fixture(scope="module")
def result(ev):
    return headroom(ev, [harsh(ev)], labels=["harsh"])


def test_the_schedule_arm_and_unreduced_score_what_the_evaluator_scores(ev, result):
    s = result.schedule("harsh")
    r = ev.evaluate(harsh(ev))
    assert s.arm("schedule").accuracy == pytest.approx(r.score, abs=1e-12)
    assert s.arm("schedule").per_family == pytest.approx(r.per_family, abs=1e-12)
    assert result.unreduced == pytest.approx(ev.baseline.score, abs=1e-12)
    assert result.n == N and sum(result.family_counts.values()) == N


def test_the_oracle_keeps_every_answer_token_where_the_keep_holds_them(result):
    s = result.schedule("harsh")
    assert s.arm("oracle").recall == (1.0,) * 12
    assert all(row == (1.0,) * 12 for row in s.arm("oracle").recall_per_family.values())
    assert min(s.arm("schedule").recall) < 1.0  # the score alone does lose some: the oracle changed something


def test_before_the_first_cut_every_arm_has_every_answer_token(result):
    for a in ARMS:
        assert result.schedule("harsh").arm(a).recall[:2] == (1.0, 1.0)


def test_no_selection_keeps_more_answer_tokens_than_the_oracle(result):
    s = result.schedule("harsh")
    for a in ("schedule", "floor"):
        assert all(o >= x for o, x in zip(s.arm("oracle").recall, s.arm(a).recall))
    # the query-agnostic floor keeps answer tokens about as often as its keep share: far fewer
    assert s.arm("floor").recall[-1] < s.arm("schedule").recall[-1]


def test_the_loss_attribution_counts_the_questions_lost_to_the_schedule(ev, result):
    base, got = ev.sample_scores(ev.identity).bool(), ev.sample_scores(harsh(ev)).bool()
    at = result.schedule("harsh").attribution
    assert at.lost == int((base & ~got).sum())
    assert sum(at.below_one.values()) == sum(at.below_half.values()) == at.lost
    assert sum(at.lost_per_family.values()) == at.lost
    for f, n in at.lost_per_family.items():
        assert sum(at.below_one_per_family[f].values()) == n
    cuts = {str(i) for i in harsh(ev).prune_layers(FRAMES * V.TOKENS_PER_FRAME)}  # recall only falls at a cut
    assert set(at.below_one) | set(at.below_half) <= cuts | {"never"}


def test_answer_recall_counts_the_targets_entering_each_layer():
    vm = torch.tensor([[False, True, True, True, True, False]])
    targets = torch.tensor([[False, True, False, False, True, False]])
    sel = {1: torch.tensor([[1, 2, 4]]), 3: torch.tensor([[2]])}
    rec = answer_recall(sel, vm, targets, 4)
    assert rec.tolist() == [[1.0, 1.0, 1.0, 0.0]]
    assert torch.isnan(answer_recall({}, vm, torch.zeros_like(vm), 2)).all()  # no answer tokens: no recall


def test_the_result_round_trips_through_its_json_file(result, tmp_path):
    path = result.save(tmp_path / "headroom.json")
    raw = json.loads(path.read_text())
    assert raw["format"] == HEADROOM_FORMAT == "autoprune.headroom/v1"
    assert HeadroomResult.load(path) == result
    assert HeadroomResult.from_dict(result.to_dict()) == result


def test_another_format_version_is_refused(result):
    d = result.to_dict()
    d["format"] = "autoprune.headroom/v2"
    with pytest.raises(ConfigError, match="format"):
        HeadroomResult.from_dict(d)


def test_an_inconsistent_attribution_is_refused(result):
    at = result.schedule("harsh").attribution
    with pytest.raises(ConfigError, match="below_one"):
        dataclasses.replace(at, lost=at.lost + 1)


def test_headroom_needs_the_answer_tokens(ev):
    data = dataclasses.replace(ev.data, targets=None)
    blind = AccuracyEvaluator(ev.qa, data, batch_size=16)
    with pytest.raises(ConfigError, match="answer tokens"):
        headroom(blind, [harsh(ev)])


def test_headroom_refuses_a_query_agnostic_schedule(ev):
    with pytest.raises(ConfigError, match="selector"):
        headroom(ev, [harsh(ev, selector="uniform_stride")])


def test_the_table_lists_unreduced_oracle_schedule_and_floor_per_family(result):
    t = headroom_table(result)
    for row in ("| unreduced |", "| harsh: oracle |", "| harsh |", "| harsh: floor (uniform_stride) |"):
        assert row in t
    assert all(f in t.splitlines()[0] for f in result.families)


# ------------------------------------------------------------------------------- CLI
def test_analyze_headroom_writes_its_json_and_figure(ev, tmp_path, capsys):
    f = harsh(ev).save(tmp_path / "harsh.json")
    out = tmp_path / "out"
    assert main(["analyze", "--headroom", "--n", "8", "--schedule", str(f), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| harsh: oracle |" in printed
    res = HeadroomResult.load(out / "headroom.json")
    assert res.n == 8 and [s.label for s in res.schedules] == ["harsh"]
    assert res.data["split"] == "val" and res.data["start"] == 1_000_000
    assert (out / "headroom.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, match", [
    (["--schedule", "{tmp}/missing.json"], "missing.json"),
    (["--schedule", "{tmp}/other.json"], "other.json"),
    (["--jsonl", "{tmp}/x.jsonl"], "--jsonl"),
    (["--n", "0"], "--n"),
])
def test_analyze_headroom_refuses_bad_input_in_one_line_and_writes_nothing(ev, tmp_path, capsys, argv, match):
    other = dataclasses.replace(harsh(ev), keep=(1.0,) * 4,
                                model=autoprune.ModelSignature(family="demo", layer_kinds="M*M-"))
    other.save(tmp_path / "other.json")
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["analyze", "--headroom", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not out.exists()
