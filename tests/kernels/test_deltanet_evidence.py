"""Specification of the Gated DeltaNet proxy kernel (``autoprune.kernels.deltanet_evidence``).

Each check compares with the torch reference in float64 on the same (already rounded) inputs,
by ‖out − ref‖ / ‖ref‖. On a machine without CUDA the kernel runs under Triton's interpreter
(tests/conftest.py), with small blocks so that every loop runs more than once.
"""

from __future__ import annotations

import pytest
import torch

from autoprune import delta_rule
from autoprune.errors import ReductionInputError
from autoprune.kernels import dispatch
from autoprune.kernels.deltanet_evidence import _deltanet_evidence, deltanet_evidence, deltanet_evidence_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-3, torch.float16: 5e-3}
SMALL = dict(block_q=16, block_v=16)


def make_case(*, b=2, L=70, Hk=2, Hv=6, dk=12, Q=19, V=37, dtype=torch.float32, pad=False, seed=0):
    """Sample ``i`` has its query rows end ``3·i`` before ``L`` (different ``q0``), ``V`` sorted visual
    positions before them; ``dk`` and ``Hv/Hk`` are not powers of two."""
    g = torch.Generator().manual_seed(seed)
    q = (delta_rule.l2norm(torch.randn(b, L, Hk, dk, generator=g)) * dk ** -0.5).to(dtype)
    k = delta_rule.l2norm(torch.randn(b, L, Hk, dk, generator=g)).to(dtype)
    beta = torch.rand(b, L, Hv, generator=g)
    gate = -torch.rand(b, L, Hv, generator=g) * 0.2
    ends = [L - 3 * i for i in range(b)]
    qi = torch.stack([torch.arange(e - Q, e) for e in ends])
    vi = torch.stack([torch.sort(torch.randperm(e - Q, generator=g)[:V]).values for e in ends])
    valid = None
    if pad:
        valid = torch.ones(b, Q, dtype=torch.bool)
        valid[0, :5] = False
    to = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return tuple(map(to, (q, k, beta, gate, qi, vi, valid)))


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("head_agg", ["mean", "max"])
@pytest.mark.parametrize("pad", [False, True])
def test_kernel_equals_the_reference(dtype, decay, head_agg, pad):
    q, k, beta, gate, qi, vi, valid = make_case(dtype=dtype, pad=pad, seed=int(decay) + 2 * int(pad))
    lam = delta_rule.log_decay_from_q0(gate, qi) if decay else None
    out = _deltanet_evidence(q, k, beta, lam, qi, vi, head_agg=head_agg, query_valid=valid, **SMALL)
    ref = deltanet_evidence_ref(q.double(), k.double(), beta.double(), None if lam is None else lam.double(), qi, vi,
                                head_agg=head_agg, query_valid=valid)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel(out, ref) <= TOL[dtype]


def test_group_splits_fold_to_the_same_result():
    q, k, beta, gate, qi, vi, _ = make_case(Hk=4, Hv=8, seed=5)
    lam = delta_rule.log_decay_from_q0(gate, qi)
    one = _deltanet_evidence(q, k, beta, lam, qi, vi, group_splits=1, **SMALL)
    four = _deltanet_evidence(q, k, beta, lam, qi, vi, group_splits=4, **SMALL)
    assert rel(four, one) <= 1e-6


def test_the_kernel_refuses_float64_and_dispatch_sends_it_to_the_reference():
    q, k, beta, gate, qi, vi, _ = make_case(seed=7)
    with pytest.raises(ReductionInputError, match="dtype"):
        deltanet_evidence(q.double(), k.double(), beta, None, qi, vi)
    out = dispatch.deltanet_evidence(q.double(), k.double(), beta.double(), None, qi, vi, use_kernels=True)
    assert out.dtype == torch.float64


def test_mismatched_heads_are_refused():
    q, k, beta, gate, qi, vi, _ = make_case(seed=8)
    with pytest.raises(ReductionInputError, match="multiple"):
        deltanet_evidence_ref(q, k, beta[..., :5], None, qi, vi)
