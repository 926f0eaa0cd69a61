"""Specification of the one Triton-or-reference decision (``autoprune.kernels.dispatch``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from autoprune.kernels import causal_conv1d_act_ref, dispatch

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16


def activations(dtype, cuda=True):
    # use_triton reads only these two attributes: the table below runs without a GPU.
    return SimpleNamespace(is_cuda=cuda, dtype=dtype)


@pytest.mark.parametrize(
    "use_kernels,dtype,cuda,expected",
    [
        (None, BF16, True, True),
        (None, F16, True, True),
        (None, F32, True, False),  # exact fp32 dots: torch's tf32 matmul is faster
        (None, F64, True, False),
        (True, F32, True, True),
        (True, BF16, True, True),
        (True, F64, True, False),  # the kernels do not take float64: the reference does
        (False, BF16, True, False),
        (None, BF16, False, False),  # CPU tensors: the reference
        (True, BF16, False, False),
    ],
)
def test_evidence_kernels_run_on_cuda_for_16_bit_by_default_and_every_kernel_dtype_when_forced(
        use_kernels, dtype, cuda, expected):
    assert dispatch.use_triton(activations(dtype, cuda), use_kernels) is expected


@pytest.mark.parametrize("use_kernels,dtype,expected", [(None, F32, True), (None, BF16, True), (None, F64, False),
                                                         (False, F32, False)])
def test_the_conv_kernel_runs_by_default_for_every_dtype_it_takes(use_kernels, dtype, expected):
    got = dispatch.use_triton(activations(dtype), use_kernels, auto_dtypes=dispatch.KERNEL_DTYPES)
    assert got is expected


def test_padding_keys_send_attention_evidence_to_the_reference_even_when_forced(monkeypatch):
    monkeypatch.setattr(dispatch, "use_triton", lambda x, use_kernels, **kw: True)

    def no_kernel(*a, **kw):
        raise AssertionError("the Triton op has no key_valid")

    monkeypatch.setattr(dispatch, "attention_evidence_triton", no_kernel)
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 10, 8)
    qi, vi = torch.arange(7, 10)[None], torch.arange(0, 5)[None]
    key_valid = torch.ones(1, 10, dtype=torch.bool)
    key_valid[0, 0] = False
    out = dispatch.attention_evidence(q, k, qi, vi, scaling=0.3, key_valid=key_valid, use_kernels=True)
    assert out.shape == (1, 5) and out[0, 0] == 0


def test_the_conv_reference_runs_where_the_kernel_is_not_picked():
    x, w = torch.randn(1, 12, 6, dtype=F64), torch.randn(6, 1, 4, dtype=F64)
    torch.testing.assert_close(dispatch.causal_conv1d_act(x, w, None, "silu", use_kernels=True),
                               causal_conv1d_act_ref(x, w, None, "silu"), rtol=0, atol=0)
