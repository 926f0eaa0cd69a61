"""The fused causal conv + SiLU equals what the Mamba2 mixer computes with torch's conv1d."""

import pytest
import torch

from autoprune.errors import ReductionInputError
from autoprune.kernels import causal_conv1d_act, causal_conv1d_act_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,C,K", [(1, 3, 4), (37, 130, 4), (200, 64, 2), (65, 257, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_matches_the_mixers_torch_conv_on_a_strided_channel_slice(dtype, n, C, K, bias):
    g = torch.Generator(device="cpu").manual_seed(n * 7 + C)
    full = torch.randn(2, n, C + 11, generator=g).to(DEV, dtype)
    x = full[..., 5 : 5 + C]  # a slice of in_proj's output: rows strided, channels contiguous
    w = (torch.randn(C, 1, K, generator=g) * 0.5).to(DEV, dtype)
    b = (torch.randn(C, generator=g) * 0.1).to(DEV, dtype) if bias else None
    out = causal_conv1d_act(x, w, b, "silu")
    ref = causal_conv1d_act_ref(x, w, b, "silu")
    assert out.shape == (2, n, C) and out.dtype == dtype
    assert rel(out, ref) < TOL[dtype]


def test_without_activation_it_is_the_plain_causal_conv():
    x = torch.randn(1, 20, 8, device=DEV)
    w = torch.randn(8, 1, 4, device=DEV)
    assert rel(causal_conv1d_act(x, w, None, None), causal_conv1d_act_ref(x, w, None, None)) < 1e-5


def test_the_first_outputs_see_only_zero_padding_not_the_future():
    x = torch.zeros(1, 10, 4, device=DEV)
    x[0, 5] = 1.0
    w = torch.ones(4, 1, 4, device=DEV)
    out = causal_conv1d_act(x, w, None, None)
    assert out[0, :5].abs().max() == 0 and torch.all(out[0, 5:9] == 1) and out[0, 9].abs().max() == 0


def test_float64_inputs_are_refused_by_the_triton_op():
    x = torch.randn(1, 20, 8, device=DEV, dtype=torch.float64)
    w = torch.randn(8, 1, 4, device=DEV, dtype=torch.float64)
    with pytest.raises(ReductionInputError, match="takes x and weight"):
        causal_conv1d_act(x, w, None, "silu")
