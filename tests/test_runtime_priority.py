"""reduce(..., priority=MASK): tokens kept before any other at every language-aware cut; no change
without it; refused where it cannot mean what it says."""

import pytest
import torch

import autoprune
from autoprune import ReductionInputError
from tiny_models import V0, inputs, progressive, tiny_bamba, tiny_nemotron_h

FAMILIES = {"nemotron_h": tiny_nemotron_h, "bamba": tiny_bamba}


def run(model, sched, ids, vm, **kw):
    with autoprune.reduce(model, sched, visual_mask=vm, **kw) as h:
        out = model(input_ids=ids).logits
    return out, h.last


def dropped_at_first_cut(last, vm):
    """Per row, the visual positions the unprioritised run removed at its first cut."""
    first = min(last.selections)
    out = []
    for r in range(vm.shape[0]):
        kept = set(last.selections[first][r].tolist())
        out.append([p for p in vm[r].nonzero().flatten().tolist() if p not in kept])
    return out


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_priority_tokens_survive_every_cut_when_the_keep_holds_them(family):
    model = FAMILIES[family]()
    ids, vm = inputs()
    sched = progressive(model)
    _, plain = run(model, sched, ids, vm)
    # three tokens the score alone drops at the first cut: only the priority can keep them
    prio = torch.zeros_like(vm)
    for r, gone in enumerate(dropped_at_first_cut(plain, vm)):
        prio[r, gone[:3]] = True
    _, last = run(model, sched, ids, vm, priority=prio)
    assert sorted(last.selections) == sorted(plain.selections) == [2, 4]
    for layer, sel in last.selections.items():
        for r in range(vm.shape[0]):
            assert set(prio[r].nonzero().flatten().tolist()) <= set(sel[r].tolist()), (layer, r)
    for r in range(vm.shape[0]):  # physically present in the last layer's input (the cache)
        assert set(prio[r].nonzero().flatten().tolist()) <= set(last.pos[r].tolist())


@torch.no_grad()
def test_the_score_fills_the_rest_of_the_keep_in_its_own_order():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    sched = progressive(model)
    _, plain = run(model, sched, ids, vm)
    gone = dropped_at_first_cut(plain, vm)
    prio = torch.zeros_like(vm)
    prio[0, gone[0][:1]] = True  # one token in row 0; row 1 has none
    _, last = run(model, sched, ids, vm, priority=prio)
    first = min(last.selections)
    # row 1 is reduced exactly as without priority; row 0 gives up one of its own picks
    assert torch.equal(last.selections[first][1], plain.selections[first][1])
    assert len(set(plain.selections[first][0].tolist()) - set(last.selections[first][0].tolist())) == 1


@torch.no_grad()
def test_more_priority_tokens_than_the_keep_are_cut_among_themselves():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    sched = progressive(model)
    prio = vm.clone()
    prio[:, V0 + 20:] = False  # 20 priority tokens; the cuts keep 14, then 7
    _, last = run(model, sched, ids, vm, priority=prio)
    for sel in last.selections.values():
        assert bool(prio.gather(1, sel).all())


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_no_priority_is_bit_identical_to_no_option(family):
    model = FAMILIES[family]()
    ids, vm = inputs()
    sched = progressive(model)
    ref, plain = run(model, sched, ids, vm)
    for prio in (None, torch.zeros_like(vm)):  # an empty mask takes the priority path: same result
        out, last = run(model, sched, ids, vm, priority=prio)
        assert torch.equal(out, ref)
        assert all(torch.equal(last.selections[k], plain.selections[k]) for k in plain.selections)
        assert torch.equal(last.pos, plain.pos)


@pytest.mark.parametrize("selector", ["uniform_stride", "random"])
def test_priority_is_refused_with_a_query_agnostic_selector(selector):
    model = tiny_nemotron_h()
    ids, vm = inputs()
    with pytest.raises(ReductionInputError, match=r"priority.*selector"):
        autoprune.reduce(model, progressive(model, selector=selector), visual_mask=vm, priority=vm.clone())


def test_priority_is_refused_in_ragged_mode():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    with pytest.raises(ReductionInputError, match=r"priority.*ragged"):
        autoprune.reduce(model, progressive(model), visual_mask=vm, ragged=True, priority=vm.clone())


@pytest.mark.parametrize("bad, match", [
    (lambda vm: ~vm, "not visual"),
    (lambda vm: vm[:, :-1], "shape"),
    (lambda vm: vm.long(), "boolean"),
    (lambda vm: vm.tolist(), "torch.Tensor"),
])
def test_a_malformed_priority_mask_is_refused_by_name(bad, match):
    model = tiny_nemotron_h()
    ids, vm = inputs()
    with pytest.raises(ReductionInputError, match=rf"priority.*{match}|{match}.*priority"):
        autoprune.reduce(model, progressive(model), visual_mask=vm, priority=bad(vm))
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
