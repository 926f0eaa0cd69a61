"""Specification of the Mamba2 evidence kernel (``autoprune.kernels.mamba2_evidence``).

Every check compares with the torch reference run in float64 on the same (already rounded)
inputs, by ‖out − ref‖ / ‖ref‖; inputs are drawn fresh for every case. On a machine without
CUDA the kernels run under Triton's interpreter (tests/conftest.py), with small shapes and
small blocks so that every loop runs more than once.
"""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import autoprune.kernels as K
from autoprune import scoring
from autoprune.errors import ReductionInputError
from autoprune.kernels import dispatch
from autoprune.kernels.mamba2_evidence import (
    _mamba2_evidence,
    _mamba2_logdecay,
    mamba2_evidence,
    mamba2_evidence_ref,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# fp32: "ieee" dots, fp32 rounding only. bf16/fp16 inputs: exact 16-bit products, fp32
# accumulation, tf32 for the W·P contraction on a GPU; METHOD.md's band for 16-bit operands.
TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-3, torch.float16: 5e-3}
SMALL = dict(block_q=16, block_v=16, chunk=16)


def _gen(*key) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def make_case(*, b=2, L=90, G=2, H=6, N=16, Q=7, V=50, dtype=torch.float32, pad=False, seed=0,
              dt_scale=1.0, a_scale=2.0):
    """Fresh inputs: sample ``i`` has its ``Q`` query rows ending ``3·i`` before ``L`` (so the
    two samples have different ``q0``) and ``V`` sorted visual positions before them."""
    g = _gen(b, L, G, H, N, Q, V, str(dtype), pad, seed, dt_scale, a_scale)
    B = torch.randn(b, L, G, N, generator=g).to(dtype)
    C = torch.randn(b, L, G, N, generator=g).to(dtype)
    dt = (F.softplus(torch.randn(b, L, H, generator=g) - 1.0) * dt_scale).clamp(1e-3, 10).to(dtype)
    A = -(torch.rand(H, generator=g) * a_scale + 0.05)
    ends = [L - 3 * i for i in range(b)]
    query_index = torch.stack([torch.arange(e - Q, e) for e in ends])
    visual_index = torch.stack([torch.sort(torch.randperm(e - Q, generator=g)[:V]).values for e in ends])
    valid = None
    if pad:
        valid = torch.ones(b, Q, dtype=torch.bool)
        valid[0, : max(1, Q // 3)] = False
        if b > 1:
            valid[1, -1] = False
    to = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return tuple(map(to, (B, C, dt, A, query_index, visual_index, valid)))


def reference(B, C, dt, A, qi, vi, valid, *, decay=False, head_agg="mean"):
    return mamba2_evidence_ref(B.double(), C.double(), dt.double(), A.double(), qi, vi, decay=decay,
                               head_agg=head_agg, query_valid=valid)


def rel_err(out, ref):
    assert torch.isfinite(out).all(), "NaN/inf in the kernel output"
    return ((out.double() - ref).norm() / ref.norm()).item()


def run(B, C, dt, A, qi, vi, valid, *, decay=False, head_agg="mean", out=None, **knobs):
    return _mamba2_evidence(B, C, dt, A, qi, vi, decay=decay, head_agg=head_agg, query_valid=valid, out=out,
                            **{**SMALL, **knobs})


@pytest.mark.parametrize("decay", [False, True], ids=["nodecay", "decay"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "shape",
    [
        dict(L=90, Q=7, V=50),  # nothing a multiple of a block
        dict(L=40, Q=1, V=17),  # one query row
        dict(L=60, Q=19, V=1),  # one visual token, Q over one block
        dict(L=64, Q=16, V=32),  # everything a multiple of a block
    ],
    ids=["odd", "Q1", "V1", "aligned"],
)
def test_matches_reference_on_odd_shapes(shape, dtype, decay):
    case = make_case(dtype=dtype, **shape)
    assert rel_err(run(*case, decay=decay), reference(*case, decay=decay)) < TOL[dtype]


@pytest.mark.parametrize("decay", [False, True], ids=["nodecay", "decay"])
@pytest.mark.parametrize("G,H", [(1, 4), (4, 4), (2, 8), (1, 20)], ids=["G1", "G=H", "hpg4", "hpg20"])
def test_heads_read_their_group(G, H, decay):
    # hpg20 with block_h=16 also covers the loop over head blocks inside a group.
    case = make_case(G=G, H=H, dtype=torch.bfloat16)
    out = run(*case, decay=decay, block_h=16)
    assert rel_err(out, reference(*case, decay=decay)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("decay", [False, True], ids=["nodecay", "decay"])
@pytest.mark.parametrize("head_agg", ["mean", "max"])
def test_head_aggregation(head_agg, decay):
    case = make_case(G=2, H=8)
    out = run(*case, decay=decay, head_agg=head_agg)
    assert rel_err(out, reference(*case, decay=decay, head_agg=head_agg)) < TOL[torch.float32]


@pytest.mark.parametrize("decay", [False, True], ids=["nodecay", "decay"])
def test_padded_query_rows_add_nothing(decay):
    B, C, dt, A, qi, vi, valid = make_case(pad=True, Q=7)
    out = run(B, C, dt, A, qi, vi, valid, decay=decay)
    assert rel_err(out, reference(B, C, dt, A, qi, vi, valid, decay=decay)) < TOL[torch.float32]
    # Sample 1 without its invalid last row: same evidence (q0 is unchanged: the dropped row is
    # the last one).
    keep = valid[1]
    alone = run(B[1:], C[1:], dt[1:], A, qi[1:, keep], vi[1:], None, decay=decay)
    assert rel_err(alone, out[1:].double()) < 1e-5


@pytest.mark.parametrize("decay", [False, True], ids=["nodecay", "decay"])
@pytest.mark.parametrize("head_agg", ["mean", "max"])
@pytest.mark.parametrize("group_splits", [1, 2])
def test_every_output_element_is_written(group_splits, head_agg, decay):
    case = make_case(G=2, H=6, V=37)
    out = torch.full((2, 37), float("nan"), device=DEVICE)
    run(*case, decay=decay, head_agg=head_agg, out=out, group_splits=group_splits)
    assert torch.isfinite(out).all()
    assert rel_err(out, reference(*case, decay=decay, head_agg=head_agg)) < TOL[torch.float32]


@pytest.mark.parametrize("chunk", [16, 32, 256])
def test_log_decay_is_minus_the_decay_distance_to_q0(chunk):
    # λ[b, x, h] = −|cum_x − cum_q0| with cum = cumsum(Δ·A), q0 = min Q per sample: the log of
    # the decay between x and q0, at every position (before and after q0).
    B, C, dt, A, qi, vi, _ = make_case(L=101, H=5)
    poison = torch.full((2, 101, 5), float("nan"), device=DEVICE)
    lg = _mamba2_logdecay(dt, A, qi, chunk=chunk, out=poison)
    assert lg is poison and torch.isfinite(lg).all()
    cum = torch.cumsum(dt.double() * A.double(), dim=1)  # (b, L, H)
    q0 = qi.min(dim=1).values
    want = -(cum - cum[torch.arange(2, device=DEVICE), q0][:, None, :]).abs()
    torch.testing.assert_close(lg.double(), want, rtol=1e-5, atol=1e-5)
    assert (lg <= 0).all()


def test_decay_keeps_precision_far_from_the_sequence_start():
    # |cumsum(Δ·A)| reaches ~2e4 here, where one fp32 ulp is 2e-3 of exponent: a forward fp32
    # cumsum puts ~1e-3 of error on decay factors near q0. λ is summed outwards from q0.
    B, C, dt, A, qi, vi, _ = make_case(b=1, L=3000, Q=4, V=64, G=1, H=4, dt_scale=3.0, a_scale=6.0)
    vi = torch.arange(3000 - 4 - 64, 3000 - 4, device=DEVICE)[None]  # the tokens right before q0
    cum = torch.cumsum(dt.double() * A.double(), dim=1)
    assert cum.abs().max() > 1e4
    out = run(B, C, dt, A, qi, vi, None, decay=True, chunk=512, block_v=64)
    assert rel_err(out, reference(B, C, dt, A, qi, vi, None, decay=True)) < 1e-5


def test_non_contiguous_views_of_the_mixer_projection():
    # The adapter slices x, B, C and dt out of one projection: (b, L, conv_dim) views.
    b, L, G, N, H, Qn = 2, 70, 2, 16, 4, 5
    g = _gen("views")
    xBC = torch.randn(b, L, 32 + 2 * G * N + H, generator=g).to(DEVICE)
    B = xBC[..., 32:32 + G * N].view(b, L, G, N)
    C = xBC[..., 32 + G * N:32 + 2 * G * N].view(b, L, G, N)
    dt = F.softplus(xBC)[..., 32 + 2 * G * N:]
    assert not (B.is_contiguous() or C.is_contiguous() or dt.is_contiguous())
    A = -torch.rand(H, generator=g).to(DEVICE) - 0.1
    qi = torch.arange(L - Qn, L, device=DEVICE)[None].repeat(b, 1)
    vi = torch.arange(2, 50, 2, device=DEVICE)[None].repeat(b, 1)
    for decay in (False, True):
        out = run(B, C, dt, A, qi, vi, None, decay=decay)
        assert rel_err(out, reference(B, C, dt, A, qi, vi, None, decay=decay)) < TOL[torch.float32]


@pytest.mark.parametrize("decay", [False, True], ids=["nodecay", "decay"])
def test_default_launch_configuration(decay):
    case = make_case(L=200, G=2, H=8, N=32, Q=9, V=150, dtype=torch.bfloat16, pad=True)
    out = mamba2_evidence(*case[:6], decay=decay, head_agg="max", query_valid=case[6])
    assert rel_err(out, reference(*case, decay=decay, head_agg="max")) < TOL[torch.bfloat16]


def test_float64_inputs_are_refused_by_the_triton_op():
    B, C, dt, A, qi, vi, _ = make_case()
    with pytest.raises(ReductionInputError, match="dtype"):
        mamba2_evidence(B.double(), C.double(), dt.double(), A.double(), qi, vi, decay=True)


def test_float64_inputs_use_the_reference():
    B, C, dt, A, qi, vi, _ = make_case()
    args = (B.double(), C.double(), dt.double(), A.double(), qi, vi)
    out = dispatch.mamba2_evidence(*args, decay=True, use_kernels=True)
    torch.testing.assert_close(out, mamba2_evidence_ref(*args, decay=True), rtol=0, atol=0)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: {**a, "head_agg": "sum"}, "head_agg"),
        (lambda a: {**a, "dt": a["dt"][..., :5], "A": a["A"][:5]}, "multiple"),
        (lambda a: {**a, "A": a["A"][:3]}, "A must be"),
        (lambda a: {**a, "C": a["C"][:, :-1]}, "B and C"),
        (lambda a: {**a, "query_valid": a["query_index"][:1] > 0}, "query_valid"),
        (lambda a: {**a, "visual_index": a["visual_index"].float()}, "int64"),
    ],
    ids=["head_agg", "groups", "A", "C", "query_valid", "index_dtype"],
)
def test_rejects_inconsistent_arguments(mutate, match):
    B, C, dt, A, qi, vi, _ = make_case(G=2, H=6)
    a = mutate(dict(B=B, C=C, dt=dt, A=A, query_index=qi, visual_index=vi, head_agg="mean", query_valid=None))
    with pytest.raises(ReductionInputError, match=match):
        mamba2_evidence(a.pop("B"), a.pop("C"), a.pop("dt"), a.pop("A"), a.pop("query_index"),
                        a.pop("visual_index"), **a)


def test_scoring_dispatch_reaches_the_kernel(monkeypatch):
    # The dispatch picks the kernel only for CUDA tensors; force it here and check that
    # scoring.mamba2_evidence calls autoprune.kernels.mamba2_evidence with its keyword arguments.
    calls = []
    real = K.mamba2_evidence

    def spy(*args, **kwargs):
        calls.append(sorted(kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(dispatch, "use_triton", lambda x, use_kernels, **kw: use_kernels is not False)
    monkeypatch.setattr(dispatch, "mamba2_evidence_triton", spy)
    B, C, dt, A, qi, vi, valid = make_case(pad=True)
    kw = dict(decay=True, head_agg="max", query_valid=valid)
    out = scoring.mamba2_evidence(B, C, dt, A, qi, vi, **kw)
    assert calls == [["decay", "head_agg", "query_valid"]]
    torch.testing.assert_close(out, scoring.mamba2_evidence(B, C, dt, A, qi, vi, use_kernels=False, **kw),
                               rtol=1e-5, atol=1e-7)


@settings(max_examples=8, deadline=None)
@given(
    b=st.integers(1, 2), G=st.integers(1, 3), hpg=st.integers(1, 4), N=st.sampled_from([8, 16, 24]),
    Q=st.integers(1, 20), pre=st.integers(1, 60), decay=st.booleans(),
    head_agg=st.sampled_from(["mean", "max"]), seed=st.integers(0, 2**16),
)
def test_matches_reference_on_random_shapes(b, G, hpg, N, Q, pre, decay, head_agg, seed):
    V = 1 + seed % pre
    case = make_case(b=b, L=pre + Q + 3 * (b - 1), G=G, H=G * hpg, N=N, Q=Q, V=V, pad=Q > 2, seed=seed)
    out = run(*case, decay=decay, head_agg=head_agg)
    assert rel_err(out, reference(*case, decay=decay, head_agg=head_agg)) < TOL[torch.float32]
