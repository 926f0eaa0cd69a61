"""Evidence of the new mixer kinds against oracles nobody here wrote: transformers' eager attention
weights (Granite's attention multiplier, Falcon-H1's key multiplier, Zamba2's shared attention on
the concatenated input with its LoRA adapters), the Mamba2 mixers' own SSM outputs (Falcon-H1's µP
vector), Jamba's Mamba1 mixer's own output; and the blend of a two-mixer layer."""

import pytest
import torch
from tiny_hybrids import FAMILIES, tiny_zamba2

import autoprune
from autoprune import scoring
from autoprune.adapters import get_adapter
from autoprune.runtime import mamba1_inputs, mamba2_inputs

L, VIS = 37, slice(3, 29)  # 26 visual tokens, 8 query tokens
ATTENTION_LETTERS = "*PS"


def _layout(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (b, L), generator=g)
    vm = torch.zeros(b, L, dtype=torch.bool)
    vm[:, VIS] = True
    return ids, vm


def _recorded(model, vm, ids, **scorer):
    sched = autoprune.Schedule.identity(get_adapter(model).num_layers, scorer=autoprune.ScorerConfig(**scorer))
    with torch.no_grad(), autoprune.reduce(model, sched, visual_mask=vm, record_evidence=True) as h:
        model(input_ids=ids)
    return h.last.evidence


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head_agg", ["mean", "max"])
def test_recorded_attention_evidence_of_an_sdpa_model_equals_eager_attention_weights(family, head_agg):
    # w_mamba = 0: a two-mixer layer (P, S) records its attention evidence alone
    sdpa, eager = FAMILIES[family](attn="sdpa"), FAMILIES[family](attn="eager")
    kinds = get_adapter(sdpa).layer_kinds
    ids, vm = _layout()
    rec = _recorded(sdpa, vm, ids, head_agg=head_agg, w_mamba=0.0)
    with torch.no_grad():
        attns = eager(input_ids=ids, output_attentions=True).attentions
    layers = [i for i, k in enumerate(kinds) if k in ATTENTION_LETTERS]
    assert len(attns) == len(layers) >= 2
    for n, layer in enumerate(layers):
        e = attns[n][:, :, VIS.stop:, VIS].sum(dim=2)  # (b, H, V)
        e = e.mean(dim=1) if head_agg == "mean" else e.amax(dim=1)
        torch.testing.assert_close(rec[layer]["evidence"], scoring.normalise(e), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("adapters", [True, False])
def test_zamba2_shared_attention_evidence_with_and_without_lora_adapters_equals_eager_weights(adapters):
    sdpa, eager = tiny_zamba2(attn="sdpa", adapters=adapters), tiny_zamba2(attn="eager", adapters=adapters)
    parts = get_adapter(sdpa).attention_parts(1)
    assert (parts.project_q is not None) == adapters  # no adapters: the projections' own outputs suffice
    ids, vm = _layout()
    rec = _recorded(sdpa, vm, ids, w_mamba=0.0)
    with torch.no_grad():
        attns = eager(input_ids=ids, output_attentions=True).attentions
    for n, layer in enumerate((1, 3, 5)):
        e = attns[n][:, :, VIS.stop:, VIS].sum(dim=2).mean(dim=1)
        torch.testing.assert_close(rec[layer]["evidence"], scoring.normalise(e), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["granitemoehybrid", "falcon_h1", "zamba2"])
def test_mamba2_implicit_attention_reproduces_the_mixers_ssm_output_in_float64(family):
    model = FAMILIES[family](dtype=torch.float64, **({"experts": 0} if family == "granitemoehybrid" else {}))
    ad = get_adapter(model)
    layer = [i for i, k in enumerate(ad.layer_kinds) if k in "MPS"][-1]
    parts = ad.mamba2_parts(layer)
    ids, _ = _layout()
    seen = {}
    hooks = [parts.in_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("zxbcdt", o)),
             parts.module.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("y", a[0]))]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    B, C, dt, A = mamba2_inputs(parts, seen["zxbcdt"])
    # x: the mixer's own conv + activation on its xBC channels, after Falcon-H1's µP vector
    zxbcdt = seen["zxbcdt"] * getattr(parts.module, "mup_vector", 1.0)
    I = parts.intermediate_size
    xbc = zxbcdt[..., I: 2 * I + 2 * parts.n_groups * parts.state_size]
    x = parts.activation(parts.module.conv1d(xbc.transpose(1, 2))[..., :L]).transpose(1, 2)[..., :I]
    b, H = x.shape[0], parts.num_heads
    x = x.reshape(b, L, H, -1)
    alpha = scoring.mamba2_alpha(B, C, dt, A, torch.arange(L)[None].expand(b, -1), decay=True)
    y = torch.einsum("bhts,bshp->bthp", alpha, x) + parts.module.D[None, None, :, None] * x
    rel = (y.reshape(b, L, -1) - seen["y"]).norm() / seen["y"].norm()
    assert rel < 1e-6, rel


def test_mamba1_inputs_of_jamba_reproduce_the_mixers_output_in_float64():
    model = FAMILIES["jamba"](dtype=torch.float64, experts=0)
    ad = get_adapter(model)
    layer = ad.layer_kinds.index("A")
    parts = ad.mamba1_parts(layer)
    mixer = parts.module
    ids, _ = _layout()
    seen = {}
    hooks = [mixer.in_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("xz", o)),
             mixer.x_proj.register_forward_hook(lambda m, a, o: seen.update(x=a[0], dbc=o)),
             mixer.out_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("y_gated", a[0]))]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    B, C, dt, A = mamba1_inputs(parts, seen["dbc"])
    x, z = seen["x"], seen["xz"].chunk(2, dim=-1)[1]
    b = x.shape[0]
    alpha = scoring.mamba1_alpha(B, C, dt, A, torch.arange(L)[None].expand(b, -1), decay=True)  # (b, D, L, L)
    y = (torch.einsum("bdts,bsd->btd", alpha, x) + mixer.D * x) * mixer.act(z)
    rel = (y - seen["y_gated"]).norm() / seen["y_gated"].norm()
    assert rel < 1e-6, rel


@pytest.mark.parametrize("decay", [True, False])
def test_recorded_mamba1_evidence_of_jamba_is_the_sum_of_absolute_implicit_attention(decay):
    model = FAMILIES["jamba"]()
    ad = get_adapter(model)
    ids, vm = _layout()
    seen = {}
    hooks = [ad.mamba1_parts(j).x_proj.register_forward_hook(lambda m, a, o, j=j: seen.__setitem__(j, o))
             for j, k in enumerate(ad.layer_kinds) if k == "A"]
    rec = _recorded(model, vm, ids, mamba_decay=decay)
    for h in hooks:
        h.remove()
    q = torch.arange(VIS.stop, L)[None].expand(2, -1)
    for j, dbc in seen.items():
        B, C, dt, A = mamba1_inputs(ad.mamba1_parts(j), dbc)
        alpha = scoring.mamba1_alpha(B, C, dt, A, q, decay=decay)  # (b, D, Q, L)
        e = alpha[..., VIS].abs().sum(dim=2).mean(dim=1)
        assert rec[j]["kind"] == "mamba"
        torch.testing.assert_close(rec[j]["evidence"], scoring.normalise(e), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("family", ["falcon_h1", "zamba2"])
def test_a_two_mixer_layer_blends_its_attention_and_mamba_evidence_by_their_weights(family):
    model = FAMILIES[family]()
    kinds = get_adapter(model).layer_kinds
    ids, vm = _layout()
    attn = _recorded(model, vm, ids, w_mamba=0.0)
    mamba = _recorded(model, vm, ids, w_attn=0.0)
    both = _recorded(model, vm, ids, w_attn=0.6, w_mamba=0.3)
    two = [i for i, k in enumerate(kinds) if k in "PS"]
    assert two
    for j in two:
        assert both[j]["kind"] == "attention+mamba"
        assert not torch.allclose(attn[j]["evidence"], mamba[j]["evidence"])
        blend = scoring.normalise(0.6 * attn[j]["evidence"] + 0.3 * mamba[j]["evidence"])
        torch.testing.assert_close(both[j]["evidence"], blend, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("w_attn,w_mamba,kind", [(1.0, 0.0, "attention"), (0.0, 1.0, "mamba"),
                                                 (0.5, 0.5, "attention+mamba")])
def test_a_zero_weight_skips_that_mixer_of_a_parallel_layer(w_attn, w_mamba, kind):
    model = FAMILIES["falcon_h1"]()
    sig = get_adapter(model).signature()
    sched = autoprune.Schedule(keep=(1.0, 1.0, 0.5, 0.5), model=sig,
                               scorer=autoprune.ScorerConfig(w_attn=w_attn, w_mamba=w_mamba, evidence_window=1))
    _, vm = _layout()
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        assert h.plan.evidence_layers == {1: kind}
