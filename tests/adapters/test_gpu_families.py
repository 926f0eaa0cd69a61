"""On a GPU with mamba-ssm's Triton kernels: the four new families' reductions and evidence hold.

Skipped without CUDA. On the device: ``. scripts/device_env.sh && python3 -P -m pytest -q
tests/adapters/test_gpu_families.py``. Falcon-H1, Zamba2 and Granite run their Mamba2 mixers on
mamba-ssm's Triton SSD scan and autoprune's Triton evidence kernels (attention, Mamba2, the
B/C causal conv); Jamba's Mamba1 evidence has no kernel (torch reference), and Jamba itself is
skipped where mamba-ssm is installed without its Mamba1 CUDA scan (the device set-up).
"""

import pytest
import torch
from tiny_hybrids import FAMILIES, oracle_forward

import autoprune
from autoprune import scoring
from autoprune.adapters import get_adapter
from autoprune.runtime import mamba2_inputs

pytestmark = pytest.mark.gpu
L, V0, V1 = 300, 10, 266  # longer than the Triton chunk size


def _runnable(family):
    # With mamba-ssm installed, transformers' Jamba calls mamba-ssm's Mamba1 CUDA scan; where only
    # its Python part is installed (scripts/device_env.sh), autoprune's shim stands in for the
    # extension and raises when called: Jamba's own mixer cannot run there.
    from autoprune.compat import mamba_ssm_shim

    if family == "jamba" and mamba_ssm_shim.is_installed():
        return pytest.param(family, marks=pytest.mark.skip(reason="mamba-ssm's Mamba1 CUDA scan is not built here"))
    return family


RUNNABLE = [_runnable(f) for f in FAMILIES]


def _setup(family, dtype=torch.float32):
    model = FAMILIES[family]().cuda().to(dtype)
    ad = get_adapter(model)
    n = ad.num_layers
    sched = autoprune.Schedule(keep=(1.0, 1.0, 0.5) + (0.25,) * (n - 3), model=ad.signature(), min_tokens=2,
                               scorer=autoprune.ScorerConfig(mamba_decay=True))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (2, L), generator=g).cuda()
    vm = torch.zeros(2, L, dtype=torch.bool)
    vm[:, V0:V1] = True
    return model, sched, ids, vm


@pytest.mark.parametrize("family", RUNNABLE)
@torch.no_grad()
def test_reduced_prefill_on_gpu_equals_the_deletion_oracle(family):
    model, sched, ids, vm = _setup(family)
    with autoprune.reduce(model, sched, visual_mask=vm) as h:
        out = model(input_ids=ids).logits
    nonvis = torch.arange(L, device="cuda")[None].expand(2, -1)[~vm.cuda()].view(2, -1)
    dels = {p: torch.sort(torch.cat([nonvis, s], 1), 1).values for p, s in h.last.selections.items()}
    ref, _ = oracle_forward(model, ids, dels)
    assert (out - ref).abs().max() < 1e-3


@pytest.mark.parametrize("family", ["falcon_h1", "zamba2", "granitemoehybrid"])
@torch.no_grad()
def test_kernel_evidence_selects_what_the_torch_reference_selects_in_bf16(family):
    model, sched, ids, vm = _setup(family, torch.bfloat16)
    got = {}
    for use_kernels in (True, False):
        with autoprune.reduce(model, sched, visual_mask=vm, use_kernels=use_kernels, record_evidence=True) as h:
            model(input_ids=ids)
        got[use_kernels] = h.last.evidence
    for j, rec in got[False].items():
        a, b = got[True][j]["evidence"], rec["evidence"]
        assert ((a - b).norm() / b.norm()) < 2e-2, j


@pytest.mark.parametrize("family", ["falcon_h1", "zamba2"])
@torch.no_grad()
def test_captured_mamba2_inputs_reproduce_the_triton_scan_output(family):
    model, sched, ids, vm = _setup(family)
    ad = get_adapter(model)
    parts = ad.mamba2_parts(ad.layer_kinds.index("P" if family == "falcon_h1" else "S"))
    seen = {}
    hooks = [parts.in_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("zxbcdt", o)),
             parts.module.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("y", a[0]))]
    model(input_ids=ids)
    for h in hooks:
        h.remove()
    zxbcdt, y_kernel = seen["zxbcdt"].double(), seen["y"].double()
    B, C, dt, A = mamba2_inputs(parts, zxbcdt)
    z = zxbcdt * getattr(parts.module, "mup_vector", torch.ones(1, device="cuda")).double()
    I = parts.intermediate_size
    conv = parts.module.conv1d.double()
    x = parts.activation(conv(z[..., I:2 * I + 2 * parts.n_groups * parts.state_size].transpose(1, 2))[..., :L])
    x = x.transpose(1, 2)[..., :I].reshape(2, L, parts.num_heads, -1)
    alpha = scoring.mamba2_alpha(B, C, dt, A, torch.arange(L, device="cuda")[None].expand(2, -1))
    y = torch.einsum("bhts,bshp->bthp", alpha, x) + parts.module.D.double()[None, None, :, None] * x
    rel = (y.reshape(2, L, -1) - y_kernel).norm() / y_kernel.norm()
    assert rel < 2e-3, rel  # the Triton scan runs in fp32 (tf32 dots)


@pytest.mark.parametrize("family", RUNNABLE)
@torch.no_grad()
def test_generation_after_a_reduced_prefill_runs_on_gpu_in_bf16(family):
    model, sched, ids, vm = _setup(family, torch.bfloat16)
    model.generation_config.pad_token_id = 0
    with autoprune.reduce(model, sched, visual_mask=vm):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             use_cache=True, min_new_tokens=4)
    assert out.shape == (2, L + 4)
