"""The stack's pieces: compiled hook-free blocks (refused where hooked, restored after), the Triton conv swap."""

import pytest
import torch

from autoprune import UnsupportedModelError
from autoprune.serving import stack
from tiny_models import tiny_nemotron_h


def test_hook_free_modules_are_norms_and_mlps_only():
    model = tiny_nemotron_h()
    names = [type(m).__name__ for _, m in stack.hook_free_modules(model, stack.stack_spec(model))]
    assert set(names) == {"NemotronHRMSNorm", "NemotronHRMSNormGated", "NemotronHMLP"}


def test_a_hooked_module_is_not_compiled_and_forward_is_restored():
    model = tiny_nemotron_h()
    spec = stack.stack_spec(model)
    norm = model.model.norm_f
    h = norm.register_forward_hook(lambda *a: None)
    with pytest.raises(UnsupportedModelError, match="hooks"):
        with stack.compiled_blocks(model, spec):
            pass
    h.remove()
    with stack.compiled_blocks(model, spec):
        assert "forward" in norm.__dict__
    assert "forward" not in norm.__dict__


def test_an_unregistered_family_is_refused():
    with pytest.raises(UnsupportedModelError, match="nemotron_h"):
        stack.stack_spec(torch.nn.Linear(2, 2))


def test_the_triton_conv_swap_matches_the_torch_conv_and_is_undone():
    from transformers.models.nemotron_h import modeling_nemotron_h as mn

    spec = stack.stack_spec(tiny_nemotron_h())
    orig = mn.causal_conv1d_fn
    x = torch.randn(2, 9, 12).transpose(1, 2)  # (b, C, n) as a strided view, like in_proj's output
    w, b = torch.randn(12, 4), torch.randn(12)
    ref = orig(x, w, b, activation="silu")
    with stack.triton_conv(spec):
        assert mn.causal_conv1d_fn is not orig
        with stack.triton_conv(spec):  # nested: the same swap
            got = mn.causal_conv1d_fn(x, w, b, activation="silu")
    assert mn.causal_conv1d_fn is orig
    assert (got - ref).abs().max() <= 1e-5


def test_the_triton_conv_leaves_what_it_does_not_take_to_the_original():
    seen = []

    def orig(x, w, b=None, activation=None, **kw):
        seen.append(kw)
        return x

    fast = stack.make_triton_conv_fn(orig)
    x = torch.randn(1, 4, 6)
    fast(x, torch.randn(4, 4), None, activation="silu", seq_idx=torch.zeros(1, 6, dtype=torch.int32))
    assert seen and "seq_idx" in seen[0]


def test_the_scan_gets_a_contiguous_dt_and_the_swap_is_undone():
    from transformers.models.nemotron_h import modeling_nemotron_h as mn

    spec = stack.stack_spec(tiny_nemotron_h())
    orig = mn.mamba2_chunk_scan
    seen = []

    def stub(x, dt, *a, **kw):
        seen.append(dt.is_contiguous())

    mn.mamba2_chunk_scan = stub
    try:
        with stack.contiguous_dt(spec):
            assert mn.mamba2_chunk_scan is not stub
            mn.mamba2_chunk_scan(None, torch.zeros(2, 5, 12)[..., :4])  # a strided view, like in_proj's dt
        assert seen == [True]
        assert mn.mamba2_chunk_scan is stub
    finally:
        mn.mamba2_chunk_scan = orig
