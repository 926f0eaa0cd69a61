"""reduce() on the linear-attention and short-convolution hybrids (Qwen3.5, Qwen3-Next, LFM2-VL)
as language models: the runtime contract — all-ones exact, deletion oracle, greedy generation
after a reduced prefill, batch 2 = 2 × batch 1 — and which layers give evidence."""

import pytest
import torch

import autoprune
from autoprune import Schedule, ScorerConfig
from autoprune.adapters import get_adapter
from tiny_linear_models import language_model, oracle_forward, tiny_lfm2_vl, tiny_qwen3_5_lm, tiny_qwen3_next

FAMILIES = {"qwen3_5": tiny_qwen3_5_lm, "qwen3_next": tiny_qwen3_next, "lfm2_vl": tiny_lfm2_vl}
L, V0, V1 = 40, 4, 32  # visual tokens at [4, 32): 28 of them; 8 query tokens


def inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (b, L), generator=g)
    vm = torch.zeros(b, L, dtype=torch.bool)
    vm[:, V0:V1] = True
    return ids, vm


def progressive(model, **scorer):
    ad = get_adapter(model)
    keep = (1.0, 1.0, 1.0, 0.5, 0.5, 0.25)  # prunes at layers 3 and 5 (after an attention layer each)
    return Schedule(keep=keep, model=ad.signature(), min_tokens=2, scorer=ScorerConfig(**scorer))


def deletions_of(handle, n, b, vm):
    vm = torch.cat([vm, torch.zeros(b, n - vm.shape[1], dtype=torch.bool)], 1)
    nonvis = torch.arange(n)[None].expand(b, -1)[~vm].view(b, -1)
    return {p: torch.sort(torch.cat([nonvis, sel], 1), 1).values for p, sel in handle.last.selections.items()}


def embed(model, ids):
    return language_model(model).embed_tokens(ids)


def test_layer_kinds_use_L_for_gated_deltanet_and_C_for_short_convolutions():
    assert get_adapter(tiny_qwen3_5_lm()).layer_kinds == "LL*L*L"
    assert get_adapter(tiny_qwen3_next()).layer_kinds == "LL*L*L"
    assert get_adapter(tiny_lfm2_vl()).layer_kinds == "CC*C*C"


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_an_all_ones_schedule_gives_the_unmodified_logits(family):
    model = FAMILIES[family]()
    ids, vm = inputs()
    ref = model(input_ids=ids).logits
    sched = Schedule.identity(6, model=autoprune.model_signature(model))
    with autoprune.reduce(model, sched, visual_mask=vm):
        out = model(input_ids=ids).logits
    assert (out - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_removing_tokens_equals_running_the_prefix_in_full_and_deleting_them_physically(family, attn):
    model = FAMILIES[family](attn=attn)
    ids, vm = inputs()
    with autoprune.reduce(model, progressive(model, mamba_decay=True), visual_mask=vm) as h:
        out = model(input_ids=ids).logits
    assert sorted(h.last.selections) == [3, 5]
    ref, pos = oracle_forward(model, embed(model, ids), deletions_of(h, L, 2, vm))
    assert torch.equal(pos, h.last.pos)
    assert (out - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_greedy_generation_after_a_reduced_prefill_yields_the_oracles_tokens(family):
    model = FAMILIES[family]()
    ids, vm = inputs()
    steps = 5
    with autoprune.reduce(model, progressive(model, delta_correction=True), visual_mask=vm) as h:
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                             do_sample=False, use_cache=True)
    seq = ids
    for _ in range(steps):
        logits, _ = oracle_forward(model, embed(model, seq), deletions_of(h, seq.shape[1], 2, vm))
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
    for r in range(2):
        with autoprune.reduce(model, sched, visual_mask=vm[r:r + 1]) as h1:
            one = model(input_ids=ids[r:r + 1]).logits
        assert (both[r:r + 1] - one).abs().max() <= 1e-5
        for p in h.last.selections:
            assert torch.equal(h.last.selections[p][r:r + 1], h1.last.selections[p])


@torch.no_grad()
def test_deltanet_layers_give_evidence_and_short_convolutions_none():
    ids, vm = inputs()
    qwen, lfm = tiny_qwen3_5_lm(), tiny_lfm2_vl()
    with autoprune.reduce(qwen, progressive(qwen, evidence_window=3), visual_mask=vm, record_evidence=True) as h:
        qwen(input_ids=ids)
    assert h.plan.evidence_layers == {0: "linear", 1: "linear", 2: "attention", 3: "linear", 4: "attention"}
    assert {j: e["kind"] for j, e in h.last.evidence.items()} == {0: "linear", 1: "linear", 2: "attention",
                                                                  3: "linear", 4: "attention", 5: "linear"}
    with autoprune.reduce(lfm, progressive(lfm), visual_mask=vm, record_evidence=True) as h:
        lfm(input_ids=ids)
    assert h.plan.evidence_layers == {2: "attention", 4: "attention"}
    assert sorted(h.last.evidence) == [2, 4]


@pytest.mark.parametrize("family", ["qwen3_5", "lfm2_vl"])
@torch.no_grad()
def test_attention_evidence_reads_queries_after_qk_norm_as_eager_attention_weights_do(family):
    # attention-only evidence at the first attention layer (2), window 1, no momentum: the tokens
    # kept at layer 3 are the top-k of the eager attention mass of the query rows there.
    model = FAMILIES[family](attn="eager")
    ad = get_adapter(model)
    ids, vm = inputs()
    keep = (1.0, 1.0, 1.0, 0.4, 0.4, 0.4)
    sched = Schedule(keep=keep, model=ad.signature(), min_tokens=1,
                     scorer=ScorerConfig(w_mamba=0.0, evidence_window=1, state_momentum=0.0))
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        model(input_ids=ids)
    attn = model(input_ids=ids, output_attentions=True).attentions[0]
    mass = attn[:, :, V1:, V0:V1].sum(dim=2).mean(dim=1)
    k = sched.tokens_per_layer(V1 - V0)[3]
    order = torch.sort(mass, dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(h.last.selections[3], torch.sort(order, dim=1).values + V0)


@pytest.mark.parametrize("family", ["qwen3_5", "lfm2_vl"])
@torch.no_grad()
def test_left_padded_rows_match_unpadded_runs(family):
    model = FAMILIES[family]()
    sched = progressive(model, mamba_decay=True)
    ids, vm = inputs(b=2, seed=5)
    short = ids[1:, 3:]  # row 1 is 3 tokens shorter (its prefix), then padded on the left
    batch = torch.cat([ids[:1], torch.cat([torch.zeros(1, 3, dtype=ids.dtype), short], dim=1)])
    am = torch.ones_like(batch)
    am[1, :3] = 0
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        out = model(input_ids=batch, attention_mask=am).logits[:, -1]
    with autoprune.reduce(model, sched, visual_mask=vm[1:, 3:]) as h1:
        ref1 = model(input_ids=short).logits[:, -1]
    assert torch.allclose(out[1:], ref1, atol=1e-5)
    assert torch.equal(h.last.selections[3][1:] - 3, h1.last.selections[3])
