"""reduce(..., ragged=True): rows with different visual counts and prompts, left-padded into one batch,
each reduced by its own plan, equal to running the rows one at a time."""

import pytest
import torch

import autoprune
from autoprune import ReductionInputError, Schedule, ScorerConfig
from autoprune.adapters import get_adapter
from tiny_hybrids import tiny_falcon_h1, tiny_granitemoehybrid, tiny_jamba, tiny_zamba2
from tiny_models import tiny_bamba, tiny_nemotron_h

# Granite 4.0-H has only Mamba2 and attention mixers (M, *): the ragged masks cover it
FAMILIES = {"nemotron_h": tiny_nemotron_h, "bamba": tiny_bamba,
            "granitemoehybrid": lambda: tiny_granitemoehybrid(rope=True)}


def requests(n=8, seed=0):
    """``n`` rows: prefix 2-4, visual 8..8+5(n-1), query 3-6 tokens (token ids, visual masks)."""
    g = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    for r in range(n):
        P, V, Q = 2 + r % 3, 8 + 5 * r, 3 + r % 4
        rows.append(torch.randint(0, 64, (P + V + Q,), generator=g))
        vm = torch.zeros(P + V + Q, dtype=torch.bool)
        vm[P:P + V] = True
        masks.append(vm)
    return rows, masks


def left_pad(rows, masks):
    L = max(len(x) for x in rows)
    b = len(rows)
    ids = torch.zeros(b, L, dtype=torch.long)
    vm = torch.zeros(b, L, dtype=torch.bool)
    tv = torch.zeros(b, L, dtype=torch.bool)
    pos = torch.zeros(b, L, dtype=torch.long)
    for r, (x, m) in enumerate(zip(rows, masks)):
        n = len(x)
        ids[r, L - n:], vm[r, L - n:], tv[r, L - n:], pos[r, L - n:] = x, m, True, torch.arange(n)
    return ids, vm, tv, pos


def schedule(model, **scorer):
    ad = get_adapter(model)
    n = ad.num_layers
    return Schedule(keep=(1.0, 1.0) + (0.5,) * 2 + (0.25,) * (n - 4), model=ad.signature(), min_tokens=2,
                    scorer=ScorerConfig(**scorer))


SCORERS = {"default": {}, "decay-max-momentum": {"mamba_decay": True, "head_agg": "max", "state_momentum": 0.3},
           "uniform-stride": {"selector": "uniform_stride"}}


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_ragged_batch_of_eight_equals_eight_single_runs(family, scorer):
    model = FAMILIES[family]()
    sched = schedule(model, **SCORERS[scorer])
    rows, masks = requests()
    ids, vm, tv, pos = left_pad(rows, masks)
    with autoprune.reduce(model, sched, visual_mask=vm, ragged=True, token_valid=tv) as h:
        batch = model(input_ids=ids, attention_mask=tv.long(), position_ids=pos).logits[:, -1]
    L = ids.shape[1]
    for r, (x, m) in enumerate(zip(rows, masks)):
        with autoprune.reduce(model, sched, visual_mask=m[None]) as h1:
            one = model(input_ids=x[None]).logits[0, -1]
        assert (batch[r] - one).abs().max() <= 1e-5, r
        shift = L - len(x)  # the row's pads before it
        for p, sel in h1.last.selections.items():
            k = sel.shape[1]
            assert torch.equal(h.last.selections[p][r, :k], sel[0] + shift), (r, p)


@torch.no_grad()
def test_rows_with_equal_lengths_and_different_visual_counts_need_no_padding_given():
    model = tiny_nemotron_h()
    sched = schedule(model)
    rows, masks = requests(n=2)
    # same length, different visual counts: row 1's extra visual tokens replace prefix text
    masks = [masks[0], torch.cat([masks[0][:1], masks[1][: len(masks[0]) - 1]])]
    rows = [rows[0], rows[1][: len(rows[0])]]
    masks[1][-3:] = False  # its query
    ids, vm = torch.stack(rows), torch.stack(masks)
    assert vm.sum(1).tolist()[0] != vm.sum(1).tolist()[1]
    with autoprune.reduce(model, sched, visual_mask=vm, ragged=True):
        batch = model(input_ids=ids).logits[:, -1]
    for r in range(2):
        with autoprune.reduce(model, sched, visual_mask=vm[r:r + 1]):
            assert (batch[r] - model(input_ids=ids[r:r + 1]).logits[0, -1]).abs().max() <= 1e-5


def test_different_visual_counts_without_ragged_are_refused_with_a_hint():
    model = tiny_nemotron_h()
    rows, masks = requests(n=2)
    _, vm, _, _ = left_pad(rows, masks)
    with pytest.raises(ReductionInputError, match="ragged=True"):
        autoprune.reduce(model, schedule(model), visual_mask=vm)


@pytest.mark.parametrize("make", [tiny_falcon_h1, tiny_zamba2, tiny_jamba], ids=["falcon_h1", "zamba2", "jamba"])
def test_ragged_batches_are_refused_on_layers_that_take_masks_of_their_own(make):
    model = make()
    rows, masks = requests(n=2)
    _, vm, tv, _ = left_pad(rows, masks)
    with pytest.raises(ReductionInputError, match="ragged batches are not supported on"):
        autoprune.reduce(model, schedule(model), visual_mask=vm, ragged=True, token_valid=tv)


def test_pads_after_real_tokens_are_refused():
    model = tiny_nemotron_h()
    rows, masks = requests(n=2)
    _, vm, tv, _ = left_pad(rows, masks)
    with pytest.raises(ReductionInputError, match="left padding"):
        autoprune.reduce(model, schedule(model), visual_mask=vm, ragged=True, token_valid=tv.flip(1) | vm)


def test_a_pad_marked_visual_is_refused():
    model = tiny_nemotron_h()
    rows, masks = requests(n=2)
    _, vm, tv, _ = left_pad(rows, masks)
    tv = tv.clone()
    tv[1, :] = False
    tv[1, -3:] = True
    with pytest.raises(ReductionInputError, match="visual token as padding"):
        autoprune.reduce(model, schedule(model), visual_mask=vm, ragged=True, token_valid=tv)


def test_too_few_query_slots_are_refused():
    model = tiny_nemotron_h()
    rows, masks = requests(n=2)
    _, vm, tv, _ = left_pad(rows, masks)
    with pytest.raises(ReductionInputError, match="query_slots"):
        autoprune.reduce(model, schedule(model), visual_mask=vm, ragged=True, token_valid=tv, query_slots=1)


def test_attention_masks_let_a_pad_see_only_itself():
    valid = torch.tensor([[False, False, True, True]])
    m = autoprune.runtime.attention_mask_4d(valid, "sdpa", torch.float32)[0, 0]
    assert m[0].tolist() == [True, False, False, False]
    assert m[3].tolist() == [False, False, True, True]
    add = autoprune.runtime.attention_mask_4d(valid, "eager", torch.float32)[0, 0]
    assert add[3, 2] == 0 and add[3, 0] == torch.finfo(torch.float32).min
    with pytest.raises(ReductionInputError, match="flash"):
        autoprune.runtime.attention_mask_4d(valid, "flash_attention_2", torch.float32)


@torch.no_grad()
def test_rebind_copies_new_masks_of_the_same_layout_into_the_handles_buffers():
    """What a CUDA-graph replay relies on: the device buffers a captured prefill reads are rewritten in place."""
    model = tiny_bamba()
    sched = schedule(model)
    rows, masks = requests(n=3, seed=1)
    ids, vm, tv, pos = left_pad(rows, masks)
    rows2, masks2 = requests(n=3, seed=2)
    rows2[0], masks2[0] = rows2[0][1:], masks2[0][1:]  # a shorter prompt, the same visual counts
    ids2, vm2, tv2, pos2 = left_pad(rows2, masks2)
    assert ids2.shape == ids.shape and not torch.equal(tv2, tv)
    with autoprune.reduce(model, sched, visual_mask=vm, ragged=True, token_valid=tv, query_slots=8) as h:
        model(input_ids=ids, position_ids=pos)
        buffers = [t.data_ptr() for t in h.device_masks("cpu") if t is not None]
        h.rebind(vm2, token_valid=tv2)
        assert [t.data_ptr() for t in h.device_masks("cpu") if t is not None] == buffers
        again = model(input_ids=ids2, position_ids=pos2).logits[:, -1]
    with autoprune.reduce(model, sched, visual_mask=vm2, ragged=True, token_valid=tv2, query_slots=8):
        fresh = model(input_ids=ids2, position_ids=pos2).logits[:, -1]
    assert torch.equal(again, fresh)


def test_rebind_refuses_another_layout():
    model = tiny_nemotron_h()
    rows, masks = requests(n=3)
    _, vm, tv, _ = left_pad(rows, masks)
    with autoprune.reduce(model, schedule(model), visual_mask=vm, ragged=True, token_valid=tv, query_slots=8) as h:
        with pytest.raises(ReductionInputError, match="same layout"):
            h.rebind(vm.roll(1, 0), token_valid=tv.roll(1, 0))


@torch.no_grad()
def test_pads_taken_for_real_tokens_change_the_rows():
    """The control of the equality above: the same batch with its pads counted as tokens differs."""
    model = tiny_nemotron_h()
    sched = schedule(model)
    rows, masks = requests()
    ids, vm, tv, pos = left_pad(rows, masks)
    with autoprune.reduce(model, sched, visual_mask=vm, ragged=True):  # no token_valid: pads are text
        batch = model(input_ids=ids, position_ids=pos).logits[:, -1]
    x, m = rows[0], masks[0]  # the shortest row: the most pads
    with autoprune.reduce(model, sched, visual_mask=m[None]):
        one = model(input_ids=x[None]).logits[0, -1]
    assert (batch[0] - one).abs().max() > 1e-3


@torch.no_grad()
def test_decoding_a_ragged_prefill_through_the_handle_points_to_reduced_prefill():
    model = tiny_nemotron_h()
    model.generation_config.eos_token_id = None
    rows, masks = requests(n=2)
    ids, vm, tv, pos = left_pad(rows, masks)
    with autoprune.reduce(model, schedule(model), visual_mask=vm, ragged=True, token_valid=tv):
        with pytest.raises(ReductionInputError, match="ReducedPrefill"):
            model.generate(input_ids=ids, attention_mask=tv.long(), max_new_tokens=2, do_sample=False, use_cache=True)


def _long_and_short():
    """A long row (prefix 3, 40 visual, query 5) and a short one (prefix 2, 8 visual, query 3)."""
    rows, masks = [], []
    for P, V, Q in ((3, 40, 5), (2, 8, 3)):
        rows.append(torch.randint(0, 64, (P + V + Q,), generator=torch.Generator().manual_seed(V)))
        m = torch.zeros(P + V + Q, dtype=torch.bool)
        m[P:P + V] = True
        masks.append(m)
    return rows, masks


@torch.no_grad()
def test_after_a_cut_rows_are_repadded_to_the_widest_rows_real_tokens_not_to_the_padded_length():
    model = tiny_nemotron_h()
    sched = schedule(model)
    rows, masks = _long_and_short()
    ids, vm, tv, pos = left_pad(rows, masks)
    with autoprune.reduce(model, sched, visual_mask=vm, ragged=True, token_valid=tv) as h:
        model(input_ids=ids, attention_mask=tv.long(), position_ids=pos)
    for layer, width in h.widths.items():
        kept = [p.counts[layer] for p in h.row_plans]
        assert width == max(8 + kept[0], 5 + kept[1]), layer  # text + kept visual of each row
        assert width < ids.shape[1] - (8 - kept[1])  # what bounding the short row's text by L gave
    assert h.last.pos.shape[1] == h.widths[max(h.widths)]


@torch.no_grad()
def test_text_slots_fix_the_widths_for_prompts_of_other_lengths_and_refuse_a_longer_text():
    model = tiny_nemotron_h()
    sched = schedule(model)
    rows, masks = _long_and_short()
    ids, vm, tv, pos = left_pad(rows, masks)
    with autoprune.reduce(model, sched, visual_mask=vm, ragged=True, token_valid=tv, text_slots=12) as h:
        L = ids.shape[1]
        for layer, width in h.widths.items():  # a row's text capacity: the slots, or what its length leaves
            assert width == max(min(12, L - v) + p.counts[layer] for v, p in zip(h.row_visual, h.row_plans))
    with pytest.raises(ReductionInputError, match="text_slots=4 is less than the 8 text tokens"):
        autoprune.reduce(model, sched, visual_mask=vm, ragged=True, token_valid=tv, text_slots=4)


def test_rebind_refuses_rows_whose_text_no_longer_fits_the_widths():
    model = tiny_nemotron_h()
    rows, masks = _long_and_short()
    _, vm, tv, _ = left_pad(rows, masks)
    longer = tv.clone()
    first = int((~tv[1]).sum())
    longer[1, first - 30:first] = True  # 30 of the short row's pads taken for text: now the widest row
    with autoprune.reduce(model, schedule(model), visual_mask=vm, ragged=True, token_valid=tv, query_slots=8) as h:
        with pytest.raises(ReductionInputError, match="no longer fits"):
            h.rebind(vm, token_valid=longer)
