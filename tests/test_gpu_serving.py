"""On a GPU (mamba-ssm Triton kernels, CUDA graphs): ReducedPrefill's graph replays equal the eager runtime.

Skipped without CUDA. On the device: ``. scripts/device_env.sh && python3 -P -m pytest -q tests/test_gpu_serving.py``.
"""

import os
import warnings

# Exact fp32 everywhere, so that a row of a padded batch (whose scan chunks fall elsewhere) matches
# its single run to float rounding: Triton's fp32 dots default to tf32 (mamba-ssm's scan), cuDNN's
# convs (transformers' torch conv in the single runs) allow tf32 by default.
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest  # noqa: E402
import torch  # noqa: E402

import autoprune
from autoprune import RaggedBatch, ReducedPrefill, Schedule, ScorerConfig
from autoprune.adapters import get_adapter
from tiny_models import tiny_bamba, tiny_nemotron_h

pytestmark = pytest.mark.gpu
# transformers' MoE dispatch copies routing counts to the host, which no CUDA graph can capture:
# the NemotronH here has dense MLPs only (as the NemotronH-8B shape has).
DENSE = ("linear_attention", "mlp", "full_attention", "linear_attention", "mlp", "full_attention",
         "linear_attention", "mlp")
FAMILIES = {"nemotron_h": lambda: tiny_nemotron_h(kinds=DENSE), "bamba": tiny_bamba}
STEPS = 6


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def setup(family, seed=0):
    model = FAMILIES[family]().cuda()
    model.generation_config.eos_token_id = None
    ad = get_adapter(model)
    n = ad.num_layers
    sched = Schedule(keep=(1.0, 1.0) + (0.5,) * 2 + (0.25,) * (n - 4), model=ad.signature(), min_tokens=2,
                     scorer=ScorerConfig(mamba_decay=True))
    return model, sched


def requests(n=8, seed=0, scale=10):
    """Rows longer than the Triton chunk size: prefix 2-4, visual 100 + 10·r·scale/10, query 3-6."""
    g = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    for r in range(n):
        P, V, Q = 2 + r % 3, 100 + scale * r, 3 + r % 4
        rows.append(torch.randint(0, 64, (P + V + Q,), generator=g).cuda())
        vm = torch.zeros(P + V + Q, dtype=torch.bool)
        vm[P:P + V] = True
        masks.append(vm)
    return rows, masks


def eager_single(model, sched, x, vm):
    ids, am = x[None], torch.ones(1, len(x), dtype=torch.long, device=x.device)
    with autoprune.reduce(model, sched, visual_mask=vm[None]):
        logits = model(input_ids=ids).logits[0, -1].float()
        gen = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=STEPS, do_sample=False, use_cache=True)
    return logits, gen[0, len(x):]


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_graph_replayed_ragged_batch_of_eight_equals_eight_single_eager_runs(family):
    model, sched = setup(family)
    rows, masks = requests()
    prefill = ReducedPrefill(model, sched, compile=False)  # graphs + Triton conv (the defaults on CUDA)
    batch = RaggedBatch.from_rows(rows, masks)
    out = prefill(batch)
    assert out.graphed and prefill.stats["captures"] == 1
    tokens = prefill.generate(out, STEPS)
    for r, (x, vm) in enumerate(zip(rows, masks)):
        logits, gen = eager_single(model, sched, x, vm)
        assert (out.logits[r] - logits).abs().max() <= 1e-3, r
        assert torch.equal(tokens[r], gen), (r, tokens[r].tolist(), gen.tolist())


@torch.no_grad()
def test_another_batch_of_the_same_shape_replays_the_graph_with_its_own_inputs():
    model, sched = setup("nemotron_h")
    prefill = ReducedPrefill(model, sched, compile=False)
    eager = ReducedPrefill(model, sched, graphs=False, compile=False)
    first = RaggedBatch.from_rows(*requests(n=4, seed=1))
    rows, masks = requests(n=4, seed=2)  # other tokens, same lengths and visual counts
    rows[1] = rows[1][1:]  # and a shorter prompt: left padding absorbs it
    masks[1] = masks[1][1:]
    second = RaggedBatch.from_rows(rows, masks, length=first.length)
    a = prefill(first)
    b = prefill(second)
    assert prefill.stats["captures"] == 1 and prefill.stats["replays"] == 2
    assert (b.logits - eager(second).logits).abs().max() <= 1e-3
    assert (a.logits - eager(first).logits).abs().max() <= 1e-3
    assert torch.equal(prefill.generate(b, STEPS), eager.generate(eager(second), STEPS))


@torch.no_grad()
def test_buckets_pad_to_the_bucket_and_a_longer_batch_runs_eagerly_saying_so_once():
    model, sched = setup("bamba")
    rows, masks = requests(n=2)
    batch = RaggedBatch.from_rows(rows, masks)
    prefill = ReducedPrefill(model, sched, compile=False, buckets=(batch.length + 5,))
    ref = ReducedPrefill(model, sched, graphs=False, compile=False)(batch)
    out = prefill(batch)
    assert out.graphed and out.length == batch.length + 5
    assert (out.logits - ref.logits).abs().max() <= 1e-3
    longer = RaggedBatch.from_rows(*requests(n=2, scale=20))
    with pytest.warns(UserWarning, match="longer than every bucket"):
        assert not prefill(longer).graphed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not prefill(longer).graphed
    assert prefill.stats["outside_buckets"] == 2


@torch.no_grad()
def test_the_compiled_stack_with_graphs_gives_the_eager_tokens():
    model, sched = setup("nemotron_h")
    rows, masks = requests(n=3)
    batch = RaggedBatch.from_rows(rows, masks)
    fast = ReducedPrefill(model, sched)  # compile + Triton conv + graphs
    out = fast(batch)
    assert out.graphed and fast.stats["capture_failures"] == []
    for r, (x, vm) in enumerate(zip(rows, masks)):
        logits, gen = eager_single(model, sched, x, vm)
        assert (out.logits[r] - logits).abs().max() <= 1e-3
        assert torch.equal(fast.generate(out, STEPS)[r], gen)


@torch.no_grad()
def test_an_unreduced_graph_equals_the_plain_model():
    model, _ = setup("nemotron_h")
    rows, masks = requests(n=4)
    prefill = ReducedPrefill(model, None, compile=False)
    out = prefill(RaggedBatch.from_rows(rows, masks))
    assert out.graphed
    for r, x in enumerate(rows):
        assert (out.logits[r] - model(input_ids=x[None]).logits[0, -1].float()).abs().max() <= 1e-3
