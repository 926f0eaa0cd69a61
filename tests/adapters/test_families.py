"""reduce() on GraniteMoeHybrid, Falcon-H1, Zamba2 and Jamba: equal to the unmodified model when
nothing is removed, equal to a physical-deletion oracle when tokens are removed, greedy decoding
after a reduced prefill equal to the oracle's, a batch of two equal to two runs of one, schedules
of one family refused on another, and the layer kinds each family declares."""

import pytest
import torch
from tiny_hybrids import FAMILIES, oracle_forward, tiny_granitemoehybrid

import autoprune
from autoprune import ModelMismatchError, Schedule, ScorerConfig
from autoprune.adapters import get_adapter

L, V0, V1 = 40, 4, 32  # visual tokens at [4, 32): 28 of them; 8 query tokens


def inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (b, L), generator=g)
    vm = torch.zeros(b, L, dtype=torch.bool)
    vm[:, V0:V1] = True
    return ids, vm


def progressive(model, **scorer):
    ad = get_adapter(model)
    n = ad.num_layers
    keep = [1.0, 1.0] + [0.5] + [0.25] * (n - 3)
    return Schedule(keep=tuple(keep), model=ad.signature(), min_tokens=2, scorer=ScorerConfig(**scorer))


def deletions_of(handle, ids, vm):
    """Oracle input: per prune layer, the original positions that enter it."""
    b, n = ids.shape
    nonvis = torch.arange(n)[None].expand(b, -1)[~torch.cat([vm, torch.zeros(b, n - vm.shape[1], dtype=torch.bool)],
                                                            1)].view(b, -1)
    return {p: torch.sort(torch.cat([nonvis, sel], 1), 1).values for p, sel in handle.last.selections.items()}


@pytest.mark.parametrize("family,kinds", [("granitemoehybrid", "M*MM*"), ("falcon_h1", "PPPP"),
                                          ("zamba2", "MSMSMS"), ("jamba", "A*AA*A")])
def test_each_family_declares_its_layer_kinds(family, kinds):
    sig = autoprune.model_signature(FAMILIES[family]())
    assert (sig.family, sig.layer_kinds) == (family, kinds)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_an_all_ones_schedule_gives_the_unmodified_logits(family):
    model = FAMILIES[family]()
    ids, vm = inputs()
    ref = model(input_ids=ids).logits
    sched = Schedule.identity(get_adapter(model).num_layers, model=autoprune.model_signature(model))
    with autoprune.reduce(model, sched, visual_mask=vm):
        out = model(input_ids=ids).logits
    assert (out - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("family,attn", [(f, "sdpa") for f in FAMILIES] + [("falcon_h1", "eager"),
                                                                           ("zamba2", "eager")])
@torch.no_grad()
def test_removing_tokens_equals_running_the_prefix_in_full_and_deleting_them_physically(family, attn):
    model = FAMILIES[family](attn=attn)
    ids, vm = inputs()
    with autoprune.reduce(model, progressive(model), visual_mask=vm) as h:
        out = model(input_ids=ids).logits
    assert sorted(h.last.selections) == [2, 3]
    ref, pos = oracle_forward(model, ids, deletions_of(h, ids, vm))
    assert torch.equal(pos, h.last.pos)
    assert (out - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_granite_with_rope_keeps_the_original_positions_of_the_kept_tokens():
    model = tiny_granitemoehybrid(rope=True)
    ids, vm = inputs()
    with autoprune.reduce(model, progressive(model), visual_mask=vm) as h:
        out = model(input_ids=ids).logits
    ref, _ = oracle_forward(model, ids, deletions_of(h, ids, vm))
    assert (out - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_greedy_generation_after_a_reduced_prefill_yields_the_oracles_tokens(family):
    model = FAMILIES[family]()
    model.generation_config.eos_token_id = None  # the oracle does not stop at an end token
    ids, vm = inputs()
    steps = 5
    with autoprune.reduce(model, progressive(model), visual_mask=vm) as h:
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                             do_sample=False, use_cache=True)
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


@pytest.mark.parametrize("mine,other", [("falcon_h1", "zamba2"), ("jamba", "granitemoehybrid")])
def test_a_schedule_for_one_family_is_refused_on_another_naming_both(mine, other):
    sched = progressive(FAMILIES[mine]())
    model = FAMILIES[other]()
    _, vm = inputs()
    with pytest.raises(ModelMismatchError, match=f"{mine}.*{other}"):
        autoprune.reduce(model, sched, visual_mask=vm)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_removing_the_handle_restores_the_model_exactly(family):
    model = FAMILIES[family]()
    ids, vm = inputs()
    before = model(input_ids=ids).logits
    h = autoprune.reduce(model, progressive(model), visual_mask=vm)
    model(input_ids=ids)
    h.remove()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    assert torch.equal(model(input_ids=ids).logits, before)


@pytest.mark.parametrize("family", ["falcon_h1", "zamba2", "jamba"])
@torch.no_grad()
def test_left_padded_rows_match_unpadded_runs(family):
    # Falcon-H1's separate mamba_attention_mask, Zamba2's positional masks, Jamba's Mamba1 masking
    model = FAMILIES[family]()
    sched = progressive(model)
    ids, vm = inputs(b=2, seed=5)
    short = ids[1:, 3:]  # row 1 is 3 tokens shorter (its prefix), then padded on the left
    batch = torch.cat([ids[:1], torch.cat([torch.zeros(1, 3, dtype=ids.dtype), short], dim=1)])
    am = torch.ones_like(batch)
    am[1, :3] = 0
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        out = model(input_ids=batch, attention_mask=am).logits[:, -1]
    with autoprune.reduce(model, sched, visual_mask=vm[1:, 3:]) as h1:
        ref1 = model(input_ids=short).logits[:, -1]
    with autoprune.reduce(model, sched, visual_mask=vm[:1]):
        ref0 = model(input_ids=ids[:1]).logits[:, -1]
    assert torch.allclose(out[:1], ref0, atol=1e-5) and torch.allclose(out[1:], ref1, atol=1e-4)
    assert torch.equal(h.last.selections[2][1:] - 3, h1.last.selections[2])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_schedule_of_each_family_survives_its_json_round_trip(family, tmp_path):
    sched = progressive(FAMILIES[family]())
    back = Schedule.load(sched.save(tmp_path / "s.json"))
    assert back == sched and back.model.layer_kinds == sched.model.layer_kinds
