"""Specification of the Gated DeltaNet exact-form kernel (``autoprune.kernels.deltanet_exact_evidence``).

Each check compares with the torch reference in float64 on the same (already rounded) inputs,
by ‖out − ref‖ / ‖ref‖, or with the materialised implicit attention
(:func:`autoprune.delta_rule.gated_deltanet_alpha`, which rebuilds the layer's own output). On a
machine without CUDA the kernel runs under Triton's interpreter (tests/conftest.py), with small
blocks so that the query rows span several programs and the scan several chunks.
"""

from __future__ import annotations

import pytest
import torch

from autoprune import delta_rule
from autoprune.errors import ReductionInputError
from autoprune.kernels import dispatch
from autoprune.kernels.deltanet_exact_evidence import (
    MAX_DK,
    _deltanet_exact_evidence,
    deltanet_exact_evidence,
    deltanet_exact_evidence_ref,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-3}
SMALL = dict(chunk=16, block_q=16)


def make_case(*, L=70, Hk=2, hpg=2, dk=12, dtype=torch.float32, seed=0):
    """Two batch rows with different query positions: row 0's 18 rows in ``[46, 69]`` with gaps,
    row 1's ending 3 earlier and starting 6 earlier; visual tokens interleaved with text before
    them. Row 1 has three padding rows (``query_valid`` False). 18 rows are two row blocks of 16;
    L = 70 is not a multiple of the chunk, and ``dk`` is not a power of two."""
    g = torch.Generator().manual_seed(seed)
    Hv = Hk * hpg
    q = (delta_rule.l2norm(torch.randn(2, L, Hk, dk, generator=g)) * dk ** -0.5).to(dtype)
    k = delta_rule.l2norm(torch.randn(2, L, Hk, dk, generator=g)).to(dtype)
    beta = torch.rand(2, L, Hv, generator=g)
    gate = -torch.rand(2, L, Hv, generator=g) * 0.2
    span = torch.tensor([0, 1, 2, 4, 5, 7, 8, 9, 11, 12, 13, 15, 17, 18, 19, 21, 22, 23])
    qi = torch.stack([L - 24 + span, L - 30 + torch.cat([span[:-3] + 3, span[-3:] + 4])])
    q0 = qi.min(dim=1).values
    vi = torch.stack([torch.arange(0, int(r), 3)[:13] for r in q0])  # every third position: text between
    valid = torch.ones(2, qi.shape[1], dtype=torch.bool)
    valid[1, [0, 7, 17]] = False
    return tuple(t.to(DEVICE) for t in (q, k, beta, gate, qi, vi, valid))


def rel(a, b):
    assert torch.isfinite(a).all()
    return float((a.double() - b.double()).norm() / b.double().norm())


def reference(q, k, beta, lam, qi, vi, **kw):
    return deltanet_exact_evidence_ref(q.double(), k.double(), beta.double(), None if lam is None else lam.double(),
                                       qi, vi, **kw)


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("head_agg", ["mean", "max"])
@pytest.mark.parametrize("hpg", [1, 2])
def test_kernel_equals_the_reference_with_padding_rows_gaps_and_per_row_query_positions(decay, head_agg, hpg):
    q, k, beta, gate, qi, vi, valid = make_case(hpg=hpg, seed=int(decay) + 2 * hpg)
    lam = delta_rule.log_decay_from_q0(gate, qi) if decay else None
    out = _deltanet_exact_evidence(q, k, beta, lam, qi, vi, head_agg=head_agg, query_valid=valid, **SMALL)
    ref = reference(q, k, beta, lam, qi, vi, head_agg=head_agg, query_valid=valid)
    assert out.dtype == torch.float32 and out.shape == ref.shape == vi.shape
    assert rel(out, ref) <= TOL[torch.float32]


@pytest.mark.parametrize("decay", [False, True])
def test_kernel_equals_the_materialised_implicit_attention(decay):
    q, k, beta, gate, qi, vi, valid = make_case(seed=11)
    lam = delta_rule.log_decay_from_q0(gate, qi) if decay else None
    out = _deltanet_exact_evidence(q, k, beta, lam, qi, vi, query_valid=valid, **SMALL)
    alpha = delta_rule.gated_deltanet_alpha(q.double(), k.double(), beta.double(), gate.double(), qi,
                                            decay=decay)  # (b, Hv, Q, L)
    summed = (alpha.abs() * valid[:, None, :, None]).sum(2)
    want = torch.gather(summed, 2, vi[:, None, :].expand(-1, alpha.shape[1], -1)).mean(1)
    assert rel(out, want) <= TOL[torch.float32]


def test_bf16_inputs_are_within_bf16_tolerance_of_the_reference_on_the_same_rounded_inputs():
    q, k, beta, gate, qi, vi, valid = make_case(dtype=torch.bfloat16, seed=5)
    lam = delta_rule.log_decay_from_q0(gate, qi)
    out = _deltanet_exact_evidence(q, k, beta, lam, qi, vi, head_agg="max", query_valid=valid, **SMALL)
    assert rel(out, reference(q, k, beta, lam, qi, vi, head_agg="max", query_valid=valid)) <= TOL[torch.bfloat16]


def test_default_launch_configuration_equals_the_reference():
    q, k, beta, gate, qi, vi, valid = make_case(L=96, dk=32, seed=6)
    lam = delta_rule.log_decay_from_q0(gate, qi)
    out = deltanet_exact_evidence(q, k, beta, lam, qi, vi, query_valid=valid)
    assert rel(out, reference(q, k, beta, lam, qi, vi, query_valid=valid)) <= TOL[torch.float32]


def tiny_case(*, L=9, dk=8, seed=7):
    """One batch row, one key head with two value heads, query rows 6 and 8, visual 0, 2, 5."""
    g = torch.Generator().manual_seed(seed)
    q = delta_rule.l2norm(torch.randn(1, L, 1, dk, generator=g)) * dk ** -0.5
    k = delta_rule.l2norm(torch.randn(1, L, 1, dk, generator=g))
    beta, gate = torch.rand(1, L, 2, generator=g), -torch.rand(1, L, 2, generator=g)
    qi, vi = torch.tensor([[L - 3, L - 1]]), torch.tensor([[0, 2, 5]])
    return tuple(t.to(DEVICE) for t in (q, k, beta, gate, qi, vi))


def test_fewer_positions_than_a_chunk_leave_only_the_position_by_position_scan():
    q, k, beta, gate, qi, vi = tiny_case()
    lam = delta_rule.log_decay_from_q0(gate, qi)
    out = _deltanet_exact_evidence(q, k, beta, lam, qi, vi, **SMALL)
    assert rel(out, reference(q, k, beta, lam, qi, vi)) <= TOL[torch.float32]


def test_the_exact_form_of_gated_deltanet_evidence_runs_the_kernel_when_dispatch_picks_it(monkeypatch):
    q, k, beta, gate, qi, vi, valid = make_case(seed=8)
    calls = []
    kernel = dispatch.deltanet_exact_evidence_triton
    monkeypatch.setattr(dispatch, "use_triton", lambda x, use_kernels, **kw: True)
    monkeypatch.setattr(dispatch, "deltanet_exact_evidence_triton",
                        lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    got = delta_rule.gated_deltanet_evidence(q, k, beta, gate, qi, vi, decay=True, correction=True,
                                             query_valid=valid)
    want = delta_rule.gated_deltanet_exact_evidence(q.double(), k.double(), beta.double(), gate.double(), qi, vi,
                                                    decay=True, query_valid=valid)
    assert calls == [1] and rel(got, want) <= TOL[torch.float32]


def test_the_kernel_refuses_float64_and_dispatch_sends_it_to_the_reference():
    q, k, beta, gate, qi, vi, _ = make_case(seed=9)
    with pytest.raises(ReductionInputError, match="dtype"):
        deltanet_exact_evidence(q.double(), k.double(), beta, None, qi, vi)
    out = dispatch.deltanet_exact_evidence(q.double(), k.double(), beta.double(), None, qi, vi, use_kernels=True)
    assert out.dtype == torch.float64


def test_heads_wider_than_the_register_tiles_are_refused_and_dispatch_sends_them_to_the_reference(monkeypatch):
    q, k, beta, gate, qi, vi = tiny_case(dk=MAX_DK + 8)
    with pytest.raises(ReductionInputError, match="dk="):
        deltanet_exact_evidence(q, k, beta, None, qi, vi)
    monkeypatch.setattr(dispatch, "use_triton", lambda x, use_kernels, **kw: True)
    out = dispatch.deltanet_exact_evidence(q, k, beta, None, qi, vi)
    torch.testing.assert_close(out, deltanet_exact_evidence_ref(q, k, beta, None, qi, vi), rtol=0, atol=0)


def test_mismatched_heads_are_refused():
    q, k, beta, gate, qi, vi, _ = make_case(seed=12)
    with pytest.raises(ReductionInputError, match="multiple"):
        deltanet_exact_evidence_ref(q, k, beta[..., :3], None, qi, vi)
