"""ReducedPrefill on the CPU: a ragged batch equals its rows run one at a time by the eager runtime
(logits, and greedy tokens against transformers' generate), reduced or not."""

import pytest
import torch

import autoprune
from autoprune import ConfigError, ModelMismatchError, RaggedBatch, ReducedPrefill, Schedule, ScorerConfig
from autoprune.adapters import get_adapter
from tiny_models import tiny_bamba, tiny_nemotron_h

FAMILIES = {"nemotron_h": tiny_nemotron_h, "bamba": tiny_bamba}
STEPS = 6


def requests(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    for r in range(n):
        P, V, Q = 2 + r % 3, 8 + 5 * r, 3 + r % 4
        rows.append(torch.randint(0, 64, (P + V + Q,), generator=g))
        vm = torch.zeros(P + V + Q, dtype=torch.bool)
        vm[P:P + V] = True
        masks.append(vm)
    return rows, masks


def schedule(model, **scorer):
    ad = get_adapter(model)
    n = ad.num_layers
    return Schedule(keep=(1.0, 1.0) + (0.5,) * 2 + (0.25,) * (n - 4), model=ad.signature(), min_tokens=2,
                    scorer=ScorerConfig(**scorer))


def model_of(family):
    model = FAMILIES[family]()
    model.generation_config.eos_token_id = None  # compare STEPS tokens, never cut short
    return model


def eager_single(model, sched, x, vm):
    """The eager runtime on one request: last-token logits and generate's greedy tokens."""
    ids, am = x[None], torch.ones(1, len(x), dtype=torch.long)
    ctx = autoprune.reduce(model, sched, visual_mask=vm[None]) if sched is not None else torch.no_grad()
    with ctx:
        logits = model(input_ids=ids).logits[0, -1]
        gen = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=STEPS, do_sample=False, use_cache=True)
    return logits, gen[0, len(x):]


@pytest.mark.parametrize("reduced", [True, False], ids=["reduced", "unreduced"])
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_ragged_batch_of_eight_equals_eight_single_runs_of_the_eager_runtime(family, reduced):
    model = model_of(family)
    sched = schedule(model) if reduced else None
    rows, masks = requests()
    prefill = ReducedPrefill(model, sched)
    out = prefill(RaggedBatch.from_rows(rows, masks))
    tokens = prefill.generate(out, STEPS)
    assert not out.graphed and prefill.stats["eager"] == 1
    for r, (x, vm) in enumerate(zip(rows, masks)):
        logits, gen = eager_single(model, sched, x, vm)
        assert (out.logits[r] - logits).abs().max() <= 1e-5, r
        assert torch.equal(tokens[r], gen), (r, tokens[r].tolist(), gen.tolist())


@torch.no_grad()
def test_one_request_without_padding_takes_the_plain_path_and_matches():
    model = model_of("bamba")
    sched = schedule(model, mamba_decay=True)
    rows, masks = requests(n=1)
    prefill = ReducedPrefill(model, sched)
    out = prefill(RaggedBatch.from_rows(rows, masks))
    assert out.cache_valid is None  # no pads: every cache entry is real
    logits, gen = eager_single(model, sched, rows[0], masks[0])
    assert (out.logits[0] - logits).abs().max() <= 1e-5
    assert torch.equal(prefill.generate(out, STEPS)[0], gen)


@torch.no_grad()
def test_the_prefill_leaves_no_hook_behind():
    model = model_of("nemotron_h")
    rows, masks = requests(n=3)
    ReducedPrefill(model, schedule(model))(RaggedBatch.from_rows(rows, masks))
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_graphs_without_cuda_and_bad_settings_are_refused():
    model = model_of("nemotron_h")
    with pytest.raises(ConfigError, match="CUDA"):
        ReducedPrefill(model, graphs=True)
    with pytest.raises(ConfigError, match="buckets"):
        ReducedPrefill(model, buckets=(0,))
    with pytest.raises(ConfigError, match="RaggedBatch"):
        ReducedPrefill(model)(torch.zeros(1, 4, dtype=torch.long))
    other = Schedule(keep=(1.0,) * 5, model=autoprune.ModelSignature(family="bamba", layer_kinds="M*MM*"))
    with pytest.raises(ModelMismatchError):
        ReducedPrefill(model, other)


@pytest.mark.slow
@torch.no_grad()
def test_the_compiled_stack_gives_the_eager_results():
    model = model_of("nemotron_h")
    sched = schedule(model)
    rows, masks = requests(n=4)
    batch = RaggedBatch.from_rows(rows, masks)
    ref = ReducedPrefill(model, sched)(batch)
    compiled = ReducedPrefill(model, sched, compile=True)
    out = compiled(batch)
    assert (out.logits - ref.logits).abs().max() <= 1e-5
    assert torch.equal(compiled.generate(out, STEPS), ReducedPrefill(model, sched).generate(ref, STEPS))
