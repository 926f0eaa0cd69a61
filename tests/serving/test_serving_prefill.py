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


class FakeGraph:
    """Stands in for a CUDA graph on the CPU: a replay reruns the captured body with the reduction's
    hooks back on, and writes its results into the captured outputs (as a replay writes its memory)."""

    def __init__(self, body, handle):
        self.body, self.handle = body, handle
        self.out = body()

    def replay(self):
        if self.handle is not None:
            self.handle._install()
        try:
            new = self.body()
        finally:
            if self.handle is not None:
                self.handle.remove()
        copy_into(self.out, new)


def copy_into(dst, src):
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, (list, tuple)):
        for a, b in zip(dst, src):
            copy_into(a, b)
    elif isinstance(dst, dict):
        for k in dst:
            copy_into(dst[k], src[k])
    elif hasattr(dst, "__dict__"):
        for k, v in vars(dst).items():
            if isinstance(v, (torch.Tensor, list, tuple, dict)) or hasattr(v, "__dict__"):
                copy_into(v, getattr(src, k))


@pytest.mark.parametrize("ragged", [True, False], ids=["ragged", "one-row"])
@torch.no_grad()
def test_graph_replays_rebind_each_batch_into_the_captured_buffers(monkeypatch, ragged):
    """The bookkeeping of CUDA-graph replays, on the CPU: static inputs, rebound masks, copied outputs."""
    from autoprune.runtime import ReductionHandle
    from autoprune.serving import prefill as prefill_module

    created = []
    init = ReductionHandle.__init__

    def recording_init(self, *a, **kw):
        init(self, *a, **kw)
        created.append(self)

    monkeypatch.setattr(ReductionHandle, "__init__", recording_init)
    monkeypatch.setattr(prefill_module, "capture_graph", lambda body, **kw: (g := FakeGraph(body, created[-1]), g.out))
    model = model_of("bamba")
    sched = schedule(model)
    prefill = ReducedPrefill(model, sched)
    prefill.graphs = True  # the graph path, with the fake graph
    eager = ReducedPrefill(model, sched)
    if ragged:
        first = RaggedBatch.from_rows(*requests(n=4, seed=1))
        rows, masks = requests(n=4, seed=2)
        rows[0], masks[0] = rows[0][1:], masks[0][1:]  # a shorter prompt, the same visual counts
        second = RaggedBatch.from_rows(rows, masks, length=first.length)
    else:  # one request, no pads: the plain path; the second has one prefix token less, one query token more
        (x, vm), = zip(*requests(n=1, seed=1))
        first = RaggedBatch.from_rows([x], [vm])
        second = RaggedBatch.from_rows([x.flip(0)], [torch.cat([vm[1:], vm[:1]])])
        assert second.row_visual == first.row_visual and second.num_query == first.num_query + 1
    outs = [prefill(b) for b in (first, second, first)]
    assert prefill.stats["captures"] == 1 and prefill.stats["replays"] == 3 and all(o.graphed for o in outs)
    for out, batch in zip(outs, (first, second, first)):
        ref = eager(batch)
        assert torch.equal(out.logits, ref.logits)
        assert torch.equal(prefill.generate(out, STEPS), eager.generate(ref, STEPS))
