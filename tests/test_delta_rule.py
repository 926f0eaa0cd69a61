"""Gated DeltaNet evidence: the exact form rebuilds the layer's own output; the chunked query-row
scan, the proxies and the log-decay agree with the materialised implicit attention."""

import pytest
import torch

from autoprune import delta_rule
from autoprune.adapters import get_adapter
from tiny_linear_models import tiny_qwen3_5_lm, tiny_qwen3_next


def _capture(model, layer):
    """Run ``model`` once; return the layer's DeltaNet parts, its projections' outputs and the
    core output it hands to its gated norm (``o_t`` of every head, before norm/gate/out_proj)."""
    parts = get_adapter(model).deltanet_parts(layer)
    outs, core = [], []
    hs = [p.register_forward_hook(lambda m, a, o: outs.append(o)) for p in parts.projections]
    hs.append(parts.module.norm.register_forward_pre_hook(lambda m, a: core.append(a[0])))
    return parts, outs, core, hs


def _values(parts, outs, model_family):
    """``v (b, L, Hv, dv)`` after the conv + SiLU, as the layer computes it (for the oracle only)."""
    m = parts.module
    if model_family == "qwen3_next":
        q, k, v, _, _, _ = m.fix_query_key_value_ordering(outs[0], outs[1])
        mixed = torch.cat([x.reshape(*x.shape[:2], -1) for x in (q, k, v)], dim=-1)
    else:
        mixed = outs[0]
    x = torch.nn.functional.conv1d(mixed.transpose(1, 2), m.conv1d.weight, None, padding=m.conv_kernel_size - 1,
                                   groups=m.conv_dim)[..., : mixed.shape[1]]
    x = torch.nn.functional.silu(x).transpose(1, 2)
    b, n, _ = x.shape
    return x[..., 2 * m.key_dim:].reshape(b, n, m.num_v_heads, m.head_v_dim)


@pytest.mark.parametrize("family,make", [("qwen3_5", tiny_qwen3_5_lm),
                                         ("qwen3_next", lambda dtype: tiny_qwen3_next(dtype=dtype, moe=False))])
@torch.no_grad()
def test_the_exact_form_rebuilds_the_layers_own_output(family, make):
    model = make(dtype=torch.float64)
    ids = torch.randint(0, 50, (2, 23), generator=torch.Generator().manual_seed(0))
    parts, outs, core, hs = _capture(model, 1)
    model(input_ids=ids)
    for h in hs:
        h.remove()
    q, k, beta, g = delta_rule.gated_deltanet_inputs(parts, tuple(outs))
    assert q.dtype == torch.float64
    v = _values(parts, outs, family)
    rows = torch.arange(23)[None].expand(2, -1)
    w = delta_rule.gated_deltanet_alpha(q, k, beta, g, rows)  # (b, Hv, L, L)
    rebuilt = torch.einsum("bhts,bshd->bthd", w, v)
    own = core[0].view(rebuilt.shape)
    # transformers' torch delta rule computes in fp32 whatever the model's dtype
    assert (rebuilt - own).abs().max() <= 1e-5 * own.abs().max()
    # and the proxy without the delta correction does not rebuild it
    w_proxy = delta_rule.gated_deltanet_alpha(q, k, beta, g, rows, correction=False)
    assert (torch.einsum("bhts,bshd->bthd", w_proxy, v) - own).abs().max() > 1e-2 * own.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_inputs_at_the_query_rows_only_give_the_same_q_there_and_the_same_k(dtype):
    model = tiny_qwen3_5_lm(dtype=dtype)
    ids = torch.randint(0, 50, (2, 23), generator=torch.Generator().manual_seed(0))
    parts, outs, _, hs = _capture(model, 1)
    model(input_ids=ids)
    for h in hs:
        h.remove()
    rows = torch.tensor([[17, 19, 22], [18, 20, 21]])
    q, k, beta, g = delta_rule.gated_deltanet_inputs(parts, tuple(outs))
    qr, kr, br, gr = delta_rule.gated_deltanet_inputs(parts, tuple(outs), rows=rows)
    assert torch.equal(k, kr) and torch.equal(beta, br) and torch.equal(g, gr) and qr.dtype == q.dtype
    at = rows[:, :, None, None].expand(-1, -1, *q.shape[2:])
    torch.testing.assert_close(torch.gather(qr, 1, at), torch.gather(q, 1, at))  # the norm's sum, reordered
    assert not qr.scatter(1, at, 0.0).any()  # nothing written elsewhere


def _random_inputs(b=2, L=29, Hk=2, Hv=4, dk=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = delta_rule.l2norm(torch.randn(b, L, Hk, dk, generator=g, dtype=dtype)) * dk ** -0.5
    k = delta_rule.l2norm(torch.randn(b, L, Hk, dk, generator=g, dtype=dtype))
    beta = torch.rand(b, L, Hv, generator=g, dtype=dtype)
    gg = -torch.rand(b, L, Hv, generator=g, dtype=dtype) * 0.3
    return q, k, beta, gg


@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("chunk", [3, 7, 64])
@pytest.mark.parametrize("head_agg", ["mean", "max"])
def test_the_chunked_query_scan_equals_the_materialised_exact_form(decay, chunk, head_agg):
    q, k, beta, g = _random_inputs()
    qi = torch.tensor([[22, 24, 25, 27, 28], [21, 23, 26, 27, 28]])
    vi = torch.tensor([[2, 5, 6, 9, 13, 17, 20], [0, 3, 4, 8, 11, 15, 19]])
    valid = torch.tensor([[True] * 5, [True, True, False, True, True]])
    alpha = delta_rule.gated_deltanet_alpha(q, k, beta, g, qi, decay=decay)  # (b, H, Q, L)
    a = (alpha.abs() * valid[:, None, :, None]).sum(2)
    a = torch.gather(a, 2, vi[:, None, :].expand(-1, 4, -1))
    want = a.mean(1) if head_agg == "mean" else a.amax(1)
    got = delta_rule.gated_deltanet_exact_evidence(q, k, beta, g, qi, vi, decay=decay, head_agg=head_agg,
                                                   query_valid=valid, chunk=chunk)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("decay", [True, False])
def test_the_proxy_is_the_delta_rule_without_its_correction(decay):
    q, k, beta, g = _random_inputs(seed=1)
    qi = torch.tensor([[24, 26, 28], [25, 27, 28]])
    vi = torch.tensor([[1, 4, 9, 16], [0, 2, 10, 20]])
    alpha = delta_rule.gated_deltanet_alpha(q, k, beta, g, qi, decay=decay, correction=False)
    want = torch.gather(alpha.abs().sum(2), 2, vi[:, None, :].expand(-1, 4, -1)).mean(1)
    got = delta_rule.gated_deltanet_evidence(q, k, beta, g, qi, vi, decay=decay, use_kernels=False)
    assert torch.allclose(got, want, rtol=1e-10)


def test_the_proxy_and_the_exact_form_rank_tokens_differently_on_a_trained_like_layer():
    # with strong writes (β near 1) and repeated keys, the delta rule overwrites what an earlier
    # token wrote under the same key: the exact form gives the overwritten token ~0, the proxy not
    dk = 4
    k = torch.zeros(1, 6, 1, dk, dtype=torch.float64)
    k[0, 1, 0, 0] = k[0, 3, 0, 0] = 1.0  # tokens 1 and 3 share a key
    k[0, 2, 0, 1] = 1.0
    q = torch.zeros_like(k)
    q[0, 5, 0, 0] = 1.0
    beta = torch.ones(1, 6, 1, dtype=torch.float64)
    g = torch.zeros(1, 6, 1, dtype=torch.float64)
    qi, vi = torch.tensor([[5]]), torch.tensor([[1, 2, 3]])
    exact = delta_rule.gated_deltanet_evidence(q, k, beta, g, qi, vi, decay=True, correction=True)
    proxy = delta_rule.gated_deltanet_evidence(q, k, beta, g, qi, vi, decay=True, correction=False,
                                               use_kernels=False)
    assert exact.tolist() == [[0.0, 0.0, 1.0]] and proxy.tolist() == [[1.0, 0.0, 1.0]]


def test_log_decay_from_q0_is_the_decay_between_each_position_and_the_first_query_row():
    _, _, _, g = _random_inputs(b=2, L=17)
    qi = torch.tensor([[12, 14], [9, 16]])
    lam = delta_rule.log_decay_from_q0(g, qi)
    G = torch.cumsum(g, dim=1)
    for r, q0 in enumerate((12, 9)):
        want = torch.where(torch.arange(17)[:, None] <= q0, G[r, q0] - G[r], G[r] - G[r, q0])
        assert torch.allclose(lam[r], want, atol=1e-12)
    assert bool((lam <= 0).all())
