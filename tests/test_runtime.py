"""reduce(): equal to the unmodified model when nothing is removed, equal to a physical-deletion
oracle when tokens are removed, correct decoding afterwards, and exact restoration."""

import pytest
import torch

import autoprune
from autoprune import ModelMismatchError, ReductionInputError, Schedule, ScorerConfig
from autoprune.adapters import get_adapter
from tiny_models import L, V0, V1, inputs, oracle_forward, progressive, tiny_bamba, tiny_nemotron_h

FAMILIES = {"nemotron_h": tiny_nemotron_h, "bamba": tiny_bamba}


def deletions_of(handle, ids, vm):
    """Oracle input: per prune layer, the original positions that enter it."""
    b, n = ids.shape
    nonvis = torch.arange(n)[None].expand(b, -1)[~torch.cat([vm, torch.zeros(b, n - vm.shape[1], dtype=torch.bool)],
                                                            1)].view(b, -1)
    return {p: torch.sort(torch.cat([nonvis, sel], 1), 1).values for p, sel in handle.last.selections.items()}


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(params=list(FAMILIES))
def model(request):
    return FAMILIES[request.param]()


# ----------------------------------------------------------------- equality
@torch.no_grad()
def test_an_all_ones_schedule_gives_the_unmodified_logits(model):
    ids, vm = inputs()
    ref = model(input_ids=ids).logits
    sched = Schedule.identity(get_adapter(model).num_layers, model=autoprune.model_signature(model))
    with autoprune.reduce(model, sched, visual_mask=vm):
        out = model(input_ids=ids).logits
    assert (out - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_removing_tokens_equals_running_the_prefix_in_full_and_deleting_them_physically(family, attn):
    model = FAMILIES[family](attn=attn)
    ids, vm = inputs()
    with autoprune.reduce(model, progressive(model), visual_mask=vm) as h:
        out = model(input_ids=ids).logits
    assert sorted(h.last.selections) == [2, 4]
    ref, pos = oracle_forward(model, ids, deletions_of(h, ids, vm))
    assert torch.equal(pos, h.last.pos)
    assert (out - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_the_first_prune_keeps_the_tokens_eager_attention_ranks_highest(family):
    # attention-only evidence, window 1, no momentum: the tokens kept at the first prune
    # point are the top-k of the eager attention mass of the query rows at the last
    # attention layer before it (the prefix runs in full, so eager weights are the oracle).
    model = FAMILIES[family](attn="eager")
    ad = get_adapter(model)
    ids, vm = inputs()
    first_attn = ad.layer_kinds.index("*")
    p = first_attn + 1
    n = ad.num_layers
    keep = tuple([1.0] * p + [0.4] * (n - p))
    sched = Schedule(keep=keep, model=ad.signature(), min_tokens=1,
                     scorer=ScorerConfig(w_mamba=0.0, evidence_window=1, state_momentum=0.0))
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        model(input_ids=ids)
    attn = model(input_ids=ids, output_attentions=True).attentions[0]  # first attention layer
    mass = attn[:, :, V1:, V0:V1].sum(dim=2).mean(dim=1)  # (b, V)
    k = sched.tokens_per_layer(V1 - V0)[p]
    order = torch.sort(mass, dim=1, descending=True, stable=True).indices[:, :k]
    expected = torch.sort(order, dim=1).values + V0
    assert torch.equal(h.last.selections[p], expected)


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_greedy_generation_after_a_reduced_prefill_yields_the_oracles_tokens(family):
    model = FAMILIES[family]()
    ids, vm = inputs()
    steps = 6
    with autoprune.reduce(model, progressive(model), visual_mask=vm) as h:
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                             do_sample=False, use_cache=True)
    # Oracle: no cache; the same visual tokens deleted at the same layers, text and
    # generated tokens kept, every token at its original position.
    seq = ids
    for _ in range(steps):
        logits, _ = oracle_forward(model, seq, deletions_of(h, seq, vm))
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(gen[:, L:], seq[:, L:])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_batch_of_two_equals_two_runs_of_one(family):
    model = FAMILIES[family]()
    ids, vm = inputs(b=2, seed=3)
    sched = progressive(model, state_momentum=0.3, mamba_decay=True, head_agg="max")
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        both = model(input_ids=ids).logits
    sel2 = h.last.selections
    for r in range(2):
        with autoprune.reduce(model, sched, visual_mask=vm[r:r + 1]) as h1:
            one = model(input_ids=ids[r:r + 1]).logits
        assert (both[r:r + 1] - one).abs().max() <= 1e-5
        for p in sel2:
            assert torch.equal(sel2[p][r:r + 1], h1.last.selections[p])


@torch.no_grad()
def test_left_padded_rows_with_different_query_lengths_match_unpadded_runs():
    model = tiny_nemotron_h()
    sched = progressive(model)
    ids, vm = inputs(b=2, seed=5)
    short = ids[1:, 3:]  # row 1 is 3 tokens shorter (its prefix), then padded on the left
    padded = torch.cat([torch.zeros(1, 3, dtype=ids.dtype), short], dim=1)
    batch = torch.cat([ids[:1], padded])
    am = torch.ones_like(batch)
    am[1, :3] = 0
    vm_b = vm.clone()
    with autoprune.reduce(model, sched, visual_mask=vm_b) as h:
        out = model(input_ids=batch, attention_mask=am).logits[:, -1]
    with autoprune.reduce(model, sched, visual_mask=vm[1:, 3:]) as h1:
        ref1 = model(input_ids=short).logits[:, -1]
    with autoprune.reduce(model, sched, visual_mask=vm[:1]):
        ref0 = model(input_ids=ids[:1]).logits[:, -1]
    assert torch.allclose(out[1:], ref1, atol=1e-5) and torch.allclose(out[:1], ref0, atol=1e-5)
    assert torch.equal(h.last.selections[2][1:] - 3, h1.last.selections[2])


# ---------------------------------------------------------------- selectors
@torch.no_grad()
def test_uniform_stride_selector_keeps_evenly_spaced_visual_tokens():
    model = tiny_nemotron_h()
    sched = progressive(model, selector="uniform_stride")
    ids, vm = inputs()
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        model(input_ids=ids)
    assert h.plan.evidence_layers == {}
    assert h.last.selections[2][0].tolist() == [V0 + i for i in range(1, 28, 2)]


@torch.no_grad()
def test_a_prefilter_removes_tokens_before_layer_zero():
    model = tiny_nemotron_h()
    ad = get_adapter(model)
    keep = tuple([0.5] * ad.num_layers)
    sched = Schedule(keep=keep, model=ad.signature(), min_tokens=1, prefilter="uniform_stride")
    ids, vm = inputs()
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        out = model(input_ids=ids).logits
    assert out.shape[1] == L - 14 and list(h.last.selections) == [0]


@torch.no_grad()
def test_random_selector_is_reproducible_and_seed_dependent():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    sels = []
    for seed in (1, 1, 2):
        with autoprune.reduce(model, progressive(model, selector="random", seed=seed), visual_mask=vm) as h:
            model(input_ids=ids)
        sels.append(h.last.selections[2])
    assert torch.equal(sels[0], sels[1]) and not torch.equal(sels[0], sels[2])


# -------------------------------------------------------------- restoration
@torch.no_grad()
def test_removing_the_handle_restores_the_model_exactly(model):
    ids, vm = inputs()
    before = model(input_ids=ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = all_hooks(model)
    h = autoprune.reduce(model, progressive(model), visual_mask=vm)
    assert all_hooks(model) > hooks
    model(input_ids=ids)
    h.remove()
    assert all_hooks(model) == hooks
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(input_ids=ids).logits, before)


# ------------------------------------------------------------------- errors
def test_a_schedule_for_another_model_is_refused_and_installs_nothing():
    model = tiny_nemotron_h()
    other = autoprune.ModelSignature(family="bamba", layer_kinds="MM*MM*MM")
    _, vm = inputs()
    with pytest.raises(ModelMismatchError, match="bamba"):
        autoprune.reduce(model, Schedule(keep=(1.0,) * 8, model=other), visual_mask=vm)
    assert all_hooks(model) == 0


def test_a_prune_point_without_evidence_before_it_is_refused_and_installs_nothing():
    model = tiny_nemotron_h()  # layer kinds "M-*ME*M-": layer 0 is Mamba
    ad = get_adapter(model)
    sched = Schedule(keep=(1.0, 0.5) + (0.5,) * 6, model=ad.signature(), scorer=ScorerConfig(w_mamba=0.0))
    _, vm = inputs()
    with pytest.raises(ReductionInputError, match="layer 1"):
        autoprune.reduce(model, sched, visual_mask=vm)
    assert all_hooks(model) == 0


@pytest.mark.parametrize("make_mask,match", [
    (lambda vm: vm[:, :, None], "batch, seq_len"),
    (lambda vm: torch.cat([vm[:1], torch.roll(vm[1:], 1) & (torch.arange(L) > 5)]), "same number"),
    (lambda vm: torch.zeros_like(vm), "without visual"),
    (lambda vm: torch.arange(L)[None].expand(2, -1) >= 20, "no query"),
])
def test_bad_visual_masks_are_refused(make_mask, match):
    model = tiny_nemotron_h()
    _, vm = inputs()
    with pytest.raises(ReductionInputError, match=match):
        autoprune.reduce(model, progressive(model), visual_mask=make_mask(vm))
    assert all_hooks(model) == 0


def test_query_tokens_inside_the_video_are_refused():
    model = tiny_nemotron_h()
    _, vm = inputs()
    qm = torch.zeros_like(vm)
    qm[:, 2] = True
    with pytest.raises(ReductionInputError, match="after the last visual"):
        autoprune.reduce(model, progressive(model), visual_mask=vm, query_mask=qm)


@torch.no_grad()
def test_calling_the_model_with_another_length_is_refused():
    model = tiny_nemotron_h()
    ids, vm = inputs()
    with autoprune.reduce(model, progressive(model), visual_mask=vm):
        with pytest.raises(ReductionInputError, match="length 39"):
            model(input_ids=ids[:, :-1])


def test_a_model_without_adapter_is_refused():
    with pytest.raises(autoprune.UnsupportedModelError, match="supported"):
        autoprune.reduce(torch.nn.Linear(2, 2), Schedule.identity(2), visual_mask=torch.ones(1, 2, dtype=torch.bool))
