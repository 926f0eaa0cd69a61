"""reduce() on ``Lfm2VlForConditionalGeneration`` called with images: all-ones exact, the deletion
oracle, greedy generation after a reduced prefill, batch 2 = 2 × batch 1 — short convolutions
give no evidence, the attention layers' does."""

import torch

import autoprune
from autoprune import Schedule, ScorerConfig
from autoprune.adapters import get_adapter
from tiny_linear_models import IMAGE_ID, language_model, lfm2_vl_image_inputs, oracle_forward, tiny_lfm2_vl


def schedule(model, **scorer):
    keep = (1.0, 1.0, 1.0, 0.5, 0.5, 0.25)
    return Schedule(keep=keep, model=get_adapter(model).signature(), min_tokens=2, scorer=ScorerConfig(**scorer))


def decoder_embeds(model, inputs):
    got = {}
    h = language_model(model).register_forward_pre_hook(
        lambda m, a, k: got.update(embeds=k["inputs_embeds"]), with_kwargs=True)
    try:
        model(**inputs)
    finally:
        h.remove()
    return got["embeds"]


def deletions_of(handle, vm, n):
    b = vm.shape[0]
    vm = torch.cat([vm, torch.zeros(b, n - vm.shape[1], dtype=torch.bool)], 1)
    nonvis = torch.arange(n)[None].expand(b, -1)[~vm].view(b, -1)
    return {p: torch.sort(torch.cat([nonvis, sel], 1), 1).values for p, sel in handle.last.selections.items()}


@torch.no_grad()
def test_with_images_all_ones_is_exact_and_removing_tokens_equals_deleting_them():
    model = tiny_lfm2_vl()
    inp = lfm2_vl_image_inputs()
    vm = inp["input_ids"] == IMAGE_ID
    ref = model(**inp).logits
    with autoprune.reduce(model, Schedule.identity(6, model=autoprune.model_signature(model)), visual_mask=vm):
        assert (model(**inp).logits - ref).abs().max() <= 1e-6
    with autoprune.reduce(model, schedule(model), visual_mask=vm) as h:
        out = model(**inp).logits
    assert h.plan.evidence_layers == {2: "attention", 4: "attention"} and sorted(h.last.selections) == [3, 5]
    oracle, pos = oracle_forward(model, decoder_embeds(model, inp), deletions_of(h, vm, vm.shape[1]))
    assert torch.equal(pos, h.last.pos) and (out - oracle).abs().max() <= 1e-5


@torch.no_grad()
def test_greedy_generation_with_images_after_a_reduced_prefill_yields_the_oracles_tokens():
    model = tiny_lfm2_vl()
    inp = lfm2_vl_image_inputs()
    ids, vm = inp["input_ids"], inp["input_ids"] == IMAGE_ID
    L, steps = ids.shape[1], 5
    with autoprune.reduce(model, schedule(model), visual_mask=vm) as h:
        gen = model.generate(**inp, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False,
                             use_cache=True)
    seq = ids
    for _ in range(steps):
        embeds = decoder_embeds(model, dict(inp, input_ids=seq))
        logits, _ = oracle_forward(model, embeds, deletions_of(h, vm, seq.shape[1]))
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(gen[:, L:], seq[:, L:])


@torch.no_grad()
def test_a_batch_of_two_equals_two_runs_of_one_with_images():
    model = tiny_lfm2_vl()
    inp = lfm2_vl_image_inputs(seed=3)
    vm = inp["input_ids"] == IMAGE_ID
    sched = schedule(model, state_momentum=0.3, head_agg="max")
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        both = model(**inp).logits
    for r in range(2):
        one_in = dict(input_ids=inp["input_ids"][r:r + 1], pixel_values=inp["pixel_values"][2 * r:2 * r + 2],
                      spatial_shapes=inp["spatial_shapes"][2 * r:2 * r + 2],
                      pixel_attention_mask=inp["pixel_attention_mask"][2 * r:2 * r + 2])
        with autoprune.reduce(model, sched, visual_mask=vm[r:r + 1]) as h1:
            one = model(**one_in).logits
        assert (both[r:r + 1] - one).abs().max() <= 1e-5
        for p in h.last.selections:
            assert torch.equal(h.last.selections[p][r:r + 1], h1.last.selections[p])
