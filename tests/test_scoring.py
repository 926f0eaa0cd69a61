"""Evidence against oracles nobody here wrote: eager attention weights, the Mamba mixers' own outputs."""

import pytest
import torch

from autoprune import scoring
from autoprune.adapters import get_adapter
from autoprune.kernels import attention_query_probs, mamba2_evidence_ref
from autoprune.runtime import mamba2_inputs
from tiny_models import tiny_bamba, tiny_nemotron_h

FAMILIES = {"nemotron_h": tiny_nemotron_h, "bamba": tiny_bamba}
L, VIS = 37, slice(3, 29)  # 26 visual tokens, 8 query tokens


def _layout(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (b, L), generator=g)
    vm = torch.zeros(b, L, dtype=torch.bool)
    vm[:, VIS] = True
    q_idx = torch.arange(VIS.stop, L)[None].expand(b, -1)
    v_idx = torch.arange(VIS.start, VIS.stop)[None].expand(b, -1)
    return ids, vm, q_idx, v_idx


def _capture_attention_inputs(model, layer):
    """Input hidden states (and RoPE cos/sin) of one attention module, via a pre-hook."""
    parts = get_adapter(model).attention_parts(layer)
    seen = {}

    def pre(mod, args, kwargs):
        seen["x"] = kwargs.get("hidden_states", args[0] if args else None)
        seen["rope"] = kwargs.get("position_embeddings")

    return parts, seen, parts.module.register_forward_pre_hook(pre, with_kwargs=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_query_rows_equal_eager_attention_weights(family):
    model = FAMILIES[family](attn="eager")
    ad = get_adapter(model)
    layer = ad.layer_kinds.index("*")
    ids, vm, q_idx, v_idx = _layout()
    parts, seen, h = _capture_attention_inputs(model, layer)
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    h.remove()
    eager = out.attentions[[i for i, k in enumerate(ad.layer_kinds) if k == "*"].index(layer)]
    x = seen["x"]
    b = x.shape[0]
    q = parts.q_proj(x).view(b, L, parts.num_heads, parts.head_dim).transpose(1, 2)
    k = parts.k_proj(x).view(b, L, parts.num_kv_heads, parts.head_dim).transpose(1, 2)
    if parts.rotary is not None:
        q, k = parts.rotary(q, k, *seen["rope"])
    q_rows = torch.gather(q, 2, q_idx[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
    probs = attention_query_probs(q_rows.detach(), k.detach(), q_idx, scaling=parts.scaling)
    ref = torch.gather(eager, 2, q_idx[:, None, :, None].expand(-1, eager.shape[1], -1, L))
    torch.testing.assert_close(probs, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head_agg", ["mean", "max"])
def test_recorded_attention_evidence_of_an_sdpa_model_equals_eager_weights(family, head_agg):
    import autoprune

    sdpa = FAMILIES[family](attn="sdpa")
    eager = FAMILIES[family](attn="eager")
    ad = get_adapter(sdpa)
    ids, vm, q_idx, v_idx = _layout()
    sched = autoprune.Schedule.identity(ad.num_layers, scorer=autoprune.ScorerConfig(head_agg=head_agg))
    with torch.no_grad():
        with autoprune.reduce(sdpa, sched, visual_mask=vm, record_evidence=True) as h:
            sdpa(input_ids=ids)
        attns = eager(input_ids=ids, output_attentions=True).attentions
    attn_layers = [i for i, k in enumerate(ad.layer_kinds) if k == "*"]
    for n, layer in enumerate(attn_layers):
        w = attns[n][:, :, VIS.stop:, VIS]  # (b, H, Q, V)
        e = w.sum(dim=2)
        e = e.mean(dim=1) if head_agg == "mean" else e.amax(dim=1)
        rec = h.last.evidence[layer]
        assert rec["kind"] == "attention"
        torch.testing.assert_close(rec["evidence"], scoring.normalise(e), atol=1e-6, rtol=1e-5)
        assert torch.equal(rec["positions"], v_idx)


def _mamba2_capture(model, layer):
    parts = get_adapter(model).mamba2_parts(layer)
    seen = {}
    hooks = [
        parts.in_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("zxbcdt", o)),
        parts.module.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("y", a[0])),
    ]
    return parts, seen, hooks


@pytest.mark.parametrize("family", FAMILIES)
def test_mamba2_implicit_attention_reproduces_the_mixers_ssm_output_in_float64(family):
    # torch's grouped matmul (MoE experts) has no float64 kernel: no MoE layer here.
    kw = {"kinds": ("mlp", "linear_attention", "full_attention", "linear_attention")} if family == "nemotron_h" else {}
    model = FAMILIES[family](dtype=torch.float64, **kw)
    ad = get_adapter(model)
    layer = ad.layer_kinds.index("M")
    ids, *_ = _layout()
    parts, seen, hooks = _mamba2_capture(model, layer)
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    zxbcdt, y_mixer = seen["zxbcdt"], seen["y"]
    B, C, dt, A = mamba2_inputs(parts, zxbcdt)
    assert B.dtype == torch.float64
    # x: the mixer's own conv + activation on its xBC channels (independent of mamba2_inputs).
    I = parts.intermediate_size
    xbc = zxbcdt[..., I : 2 * I + 2 * parts.n_groups * parts.state_size]
    x = parts.activation(parts.module.conv1d(xbc.transpose(1, 2))[..., :L]).transpose(1, 2)[..., :I]
    b, H = x.shape[0], parts.num_heads
    x = x.reshape(b, L, H, -1)
    rows = torch.arange(L)[None].expand(b, -1)
    alpha = scoring.mamba2_alpha(B, C, dt, A, rows, decay=True)  # (b, H, L, L)
    y = torch.einsum("bhts,bshp->bthp", alpha, x) + parts.module.D[None, None, :, None] * x
    y = y.reshape(b, L, -1)
    rel = (y - y_mixer).norm() / y_mixer.norm()
    assert rel < 1e-6, rel


@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("head_agg", ["mean", "max"])
def test_mamba2_evidence_equals_the_sum_of_absolute_implicit_attention(decay, head_agg):
    torch.manual_seed(0)
    b, G, N, H = 2, 2, 5, 6
    B, C = torch.randn(b, L, G, N, dtype=torch.float64), torch.randn(b, L, G, N, dtype=torch.float64)
    dt = torch.rand(b, L, H, dtype=torch.float64) * 0.5 + 0.01
    A = -torch.rand(H, dtype=torch.float64) * 2
    _, _, q_idx, v_idx = _layout()
    alpha = scoring.mamba2_alpha(B, C, dt, A, q_idx, decay=decay).abs()  # (b, H, Q, L)
    ref = torch.gather(alpha.sum(dim=2), 2, v_idx[:, None, :].expand(-1, H, -1))
    ref = ref.mean(dim=1) if head_agg == "mean" else ref.amax(dim=1)
    got = mamba2_evidence_ref(B, C, dt, A, q_idx, v_idx, decay=decay, head_agg=head_agg)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_mamba2_evidence_masks_padded_query_rows():
    torch.manual_seed(1)
    b, G, N, H = 2, 1, 4, 2
    B, C = torch.randn(b, L, G, N), torch.randn(b, L, G, N)
    dt, A = torch.rand(b, L, H) + 0.1, -torch.rand(H)
    _, _, q_idx, v_idx = _layout()
    valid = torch.ones_like(q_idx, dtype=torch.bool)
    valid[1, 5:] = False
    got = mamba2_evidence_ref(B, C, dt, A, q_idx, v_idx, decay=True, query_valid=valid)
    short = mamba2_evidence_ref(B[1:], C[1:], dt[1:], A, q_idx[1:, :5], v_idx[1:], decay=True)
    torch.testing.assert_close(got[1:], short)


def _tiny_jamba():
    from transformers import JambaConfig, JambaForCausalLM

    torch.manual_seed(0)
    cfg = JambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=32, mamba_d_state=4, mamba_d_conv=4, mamba_expand=2,
                      mamba_dt_rank=4, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=100,
                      expert_layer_offset=99, num_experts=1, use_cache=False)
    model = JambaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        mixer = model.model.layers[0].mamba
        mixer.A_log.copy_(torch.randn_like(mixer.A_log) * 0.5)
        mixer.D.copy_(torch.randn_like(mixer.D))
    return model, mixer


def _mamba1_inputs(mixer, ids, model):
    seen = {}
    hooks = [mixer.in_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("xz", o)),
             mixer.dt_layernorm.register_forward_hook(lambda m, a, o: seen.__setitem__("dt", o)),
             mixer.b_layernorm.register_forward_hook(lambda m, a, o: seen.__setitem__("B", o)),
             mixer.c_layernorm.register_forward_hook(lambda m, a, o: seen.__setitem__("C", o)),
             mixer.out_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("y_gated", a[0]))]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    x_pre, z = seen["xz"].chunk(2, dim=-1)
    x = mixer.act(mixer.conv1d(x_pre.transpose(1, 2))[..., : ids.shape[1]]).transpose(1, 2)
    dt = torch.nn.functional.softplus(seen["dt"] @ mixer.dt_proj.weight.T + mixer.dt_proj.bias)
    A = -torch.exp(mixer.A_log)
    return x, z, dt, A, seen["B"], seen["C"], seen["y_gated"]


def test_mamba1_implicit_attention_reproduces_the_mixers_output_in_float64():
    model, mixer = _tiny_jamba()
    ids, *_ = _layout()
    x, z, dt, A, B, C, y_gated = _mamba1_inputs(mixer, ids, model)
    rows = torch.arange(L)[None].expand(ids.shape[0], -1)
    alpha = scoring.mamba1_alpha(B, C, dt, A, rows, decay=True)  # (b, D, L, L)
    y = torch.einsum("bdts,bsd->btd", alpha, x) + mixer.D * x
    y = y * mixer.act(z)
    rel = (y - y_gated).norm() / y_gated.norm()
    assert rel < 1e-6, rel


@pytest.mark.parametrize("decay", [True, False])
def test_mamba1_evidence_equals_the_sum_of_absolute_implicit_attention(decay):
    model, mixer = _tiny_jamba()
    ids, _, q_idx, v_idx = _layout()
    x, z, dt, A, B, C, _ = _mamba1_inputs(mixer, ids, model)
    alpha = scoring.mamba1_alpha(B, C, dt, A, q_idx, decay=decay).abs()
    ref = torch.gather(alpha.sum(dim=2), 2, v_idx[:, None, :].expand(-1, alpha.shape[1], -1)).mean(dim=1)
    got = scoring.mamba1_evidence(B, C, dt, A, q_idx, v_idx, decay=decay, channels_per_chunk=7)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------- state and select
def test_importance_state_blends_with_momentum_and_normalises():
    st = scoring.ImportanceState(1, 4, momentum=0.5)
    st.update(torch.tensor([[1.0, 1.0, 2.0, 0.0]]), weight=1.0)
    torch.testing.assert_close(st.scores, torch.tensor([[0.25, 0.25, 0.5, 0.0]]))
    st.update(torch.tensor([[0.0, 0.0, 0.0, 4.0]]), weight=3.0)
    # 0.5·[.25,.25,.5,0] + 0.5·3·[0,0,0,1] = [.125,.125,.25,1.5] → /2
    torch.testing.assert_close(st.scores, torch.tensor([[0.0625, 0.0625, 0.125, 0.75]]))


def test_keep_breaks_ties_by_earlier_position_and_preserves_order():
    st = scoring.ImportanceState(1, 6, momentum=0.0)
    st.update(torch.tensor([[1.0, 3.0, 3.0, 1.0, 3.0, 2.0]]))
    assert st.keep(3).tolist() == [[1, 2, 4]]
    st2 = scoring.ImportanceState(1, 5, momentum=0.0)
    st2.update(torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0]]))
    assert st2.keep(3).tolist() == [[0, 1, 2]]


def test_keep_drops_the_removed_tokens_state():
    st = scoring.ImportanceState(1, 4, momentum=0.0)
    st.update(torch.tensor([[4.0, 1.0, 3.0, 2.0]]))
    st.keep(2)
    torch.testing.assert_close(st.scores, torch.tensor([[0.4, 0.3]]))


def test_uniform_stride_spreads_evenly():
    assert scoring.select_uniform_stride(1, 10, 5).tolist() == [[1, 3, 5, 7, 9]]
    assert scoring.select_uniform_stride(2, 7, 7).tolist() == [list(range(7))] * 2


def test_random_selection_is_seeded_sorted_and_distinct():
    a = scoring.select_random(2, 50, 10, seed=3)
    assert torch.equal(a, scoring.select_random(2, 50, 10, seed=3))
    assert not torch.equal(a, scoring.select_random(2, 50, 10, seed=4))
    assert all(len(set(r.tolist())) == 10 and r.tolist() == sorted(r.tolist()) for r in a)


def test_normalise_leaves_a_zero_row_zero():
    out = scoring.normalise(torch.tensor([[0.0, 0.0], [1.0, 3.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [0.25, 0.75]]))
