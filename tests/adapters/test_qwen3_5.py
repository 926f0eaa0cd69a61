"""reduce() on ``Qwen3_5ForConditionalGeneration`` called with video: the runtime contract with
M-RoPE's 3-D positions — all-ones exact, deletion oracle, greedy generation after a reduced
prefill (decode positions continue from the original length), batch 2 = 2 × batch 1."""

import torch

import autoprune
from autoprune import Schedule, ScorerConfig
from autoprune.adapters import get_adapter
from tiny_linear_models import VIDEO_ID, language_model, oracle_forward, qwen3_5_video_inputs, tiny_qwen3_5_vlm


def schedule(model, **scorer):
    keep = (1.0, 1.0, 1.0, 0.5, 0.5, 0.25)
    return Schedule(keep=keep, model=get_adapter(model).signature(), min_tokens=2, scorer=ScorerConfig(**scorer))


def decoder_inputs(model, inputs):
    """``inputs_embeds`` (video merged in) and the 3-D positions the model hands its decoder."""
    got = {}

    def pre(module, args, kwargs):
        got.update(embeds=kwargs["inputs_embeds"], pos=kwargs["position_ids"])

    h = language_model(model).register_forward_pre_hook(pre, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        h.remove()
    return got["embeds"], got["pos"]


def deletions_of(handle, vm, n):
    b = vm.shape[0]
    vm = torch.cat([vm, torch.zeros(b, n - vm.shape[1], dtype=torch.bool)], 1)
    nonvis = torch.arange(n)[None].expand(b, -1)[~vm].view(b, -1)
    return {p: torch.sort(torch.cat([nonvis, sel], 1), 1).values for p, sel in handle.last.selections.items()}


@torch.no_grad()
def test_video_positions_are_three_dimensional_and_an_all_ones_schedule_is_exact():
    model = tiny_qwen3_5_vlm()
    inp = qwen3_5_video_inputs(b=2, frames=6)
    _, pos = decoder_inputs(model, inp)
    assert pos.shape[0] == 3 and not torch.equal(pos[1], pos[2])  # height and width differ inside a frame
    ref = model(**inp).logits
    vm = inp["input_ids"] == VIDEO_ID
    with autoprune.reduce(model, Schedule.identity(6, model=autoprune.model_signature(model)), visual_mask=vm):
        out = model(**inp).logits
    assert (out - ref).abs().max() <= 1e-6


@torch.no_grad()
def test_removing_video_tokens_equals_deleting_them_physically_at_their_original_3d_positions():
    model = tiny_qwen3_5_vlm()
    inp = qwen3_5_video_inputs(b=2, frames=6)
    vm = inp["input_ids"] == VIDEO_ID
    with autoprune.reduce(model, schedule(model, mamba_decay=True), visual_mask=vm) as h:
        out = model(**inp).logits
    assert sorted(h.last.selections) == [3, 5]
    embeds, pos3 = decoder_inputs(model, inp)
    ref, pos = oracle_forward(model, embeds, deletions_of(h, vm, vm.shape[1]), rope_positions=pos3)
    assert torch.equal(pos, h.last.pos)
    assert (out - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_greedy_generation_with_video_after_a_reduced_prefill_yields_the_oracles_tokens():
    model = tiny_qwen3_5_vlm()
    inp = qwen3_5_video_inputs(b=2, frames=6)
    ids, vm = inp["input_ids"], inp["input_ids"] == VIDEO_ID
    L, steps = ids.shape[1], 5
    with autoprune.reduce(model, schedule(model, delta_correction=True), visual_mask=vm) as h:
        gen = model.generate(**inp, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False,
                             use_cache=True)
    seq = ids
    for _ in range(steps):
        step = dict(inp, input_ids=seq, mm_token_type_ids=torch.nn.functional.pad(inp["mm_token_type_ids"],
                                                                                  (0, seq.shape[1] - L)))
        model.model.rope_deltas = None  # a fresh prompt each step (no cache): positions from get_rope_index
        embeds, pos3 = decoder_inputs(model, step)
        logits, _ = oracle_forward(model, embeds, deletions_of(h, vm, seq.shape[1]), rope_positions=pos3)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(gen[:, L:], seq[:, L:])


@torch.no_grad()
def test_a_batch_of_two_videos_equals_two_runs_of_one():
    model = tiny_qwen3_5_vlm()
    inp = qwen3_5_video_inputs(b=2, frames=6, seed=3)
    vm = inp["input_ids"] == VIDEO_ID
    sched = schedule(model, state_momentum=0.3, head_agg="max")
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        both = model(**inp).logits
    per = inp["pixel_values_videos"].shape[0] // 2
    for r in range(2):
        one_in = dict(input_ids=inp["input_ids"][r:r + 1], mm_token_type_ids=inp["mm_token_type_ids"][r:r + 1],
                      pixel_values_videos=inp["pixel_values_videos"][r * per:(r + 1) * per],
                      video_grid_thw=inp["video_grid_thw"][r:r + 1])
        with autoprune.reduce(model, sched, visual_mask=vm[r:r + 1]) as h1:
            one = model(**one_in).logits
        assert (both[r:r + 1] - one).abs().max() <= 1e-5
        for p in h.last.selections:
            assert torch.equal(h.last.selections[p][r:r + 1], h1.last.selections[p])
