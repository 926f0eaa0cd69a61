"""The evidence kernels at the widths of the new families' presets (Falcon-H1-7B, Zamba2-7B,
Granite-4.0-H-Small, Jamba-Mini's attention), with the kernels' default launch configuration:
equal to the float64 torch reference. Head dims that are not powers of two (Zamba2's 224 on
its 2×hidden shared attention) and large state sizes (Falcon-H1's N = 256) are the new cases.

On the GPU machine: ``. scripts/device_env.sh && python3 -P -m pytest -q tests/kernels/test_family_widths.py``
(on the CPU the same checks run under Triton's interpreter, marked slow).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoprune.cost.shapes import get_shape
from autoprune.kernels.attention_evidence import attention_evidence, attention_evidence_ref
from autoprune.kernels.mamba2_evidence import mamba2_evidence, mamba2_evidence_ref

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
maybe_slow = pytest.mark.slow if not CUDA else pytest.mark.gpu
L, Q, V = 300, 16, 200  # longer than the kernels' blocks and chunks
PRESETS = ["falcon-h1-7b", "zamba2-7b", "granite-4.0-h-small", "jamba-mini"]


def _positions(b):
    q = torch.arange(L - Q, L)[None].expand(b, -1)
    v = torch.arange(40, 40 + V)[None].expand(b, -1)
    return q.to(DEVICE), v.to(DEVICE)


def rel(out, ref):
    assert torch.isfinite(out).all()
    return ((out.double() - ref).norm() / ref.norm()).item()


@maybe_slow
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("head_agg", ["mean", "max"])
def test_attention_evidence_at_the_presets_head_widths(preset, head_agg):
    s = get_shape(preset)
    g = torch.Generator().manual_seed(0)
    H, Hkv, d = s.num_attention_heads, s.num_kv_heads, s.head_dim
    q = torch.randn(1, H, Q, d, generator=g).to(torch.bfloat16).to(DEVICE)
    k = torch.randn(1, Hkv, L, d, generator=g).to(torch.bfloat16).to(DEVICE)
    qi, vi = _positions(1)
    out = attention_evidence(q, k, qi, vi, scaling=d ** -0.5, head_agg=head_agg)
    ref = attention_evidence_ref(q.double(), k.double(), qi, vi, scaling=d ** -0.5, head_agg=head_agg)
    assert rel(out, ref) < 5e-3


@maybe_slow
@pytest.mark.parametrize("preset", ["falcon-h1-7b", "zamba2-7b", "granite-4.0-h-small"])
@pytest.mark.parametrize("decay", [False, True], ids=["nodecay", "decay"])
def test_mamba2_evidence_at_the_presets_state_widths(preset, decay):
    s = get_shape(preset)
    g = torch.Generator().manual_seed(1)
    G, H, N = s.n_groups, s.mamba_num_heads, s.ssm_state_size
    B = torch.randn(1, L, G, N, generator=g).to(torch.bfloat16).to(DEVICE)
    C = torch.randn(1, L, G, N, generator=g).to(torch.bfloat16).to(DEVICE)
    dt = F.softplus(torch.randn(1, L, H, generator=g) - 1.0).clamp(1e-3, 10).to(DEVICE)
    A = -(torch.rand(H, generator=g) * 2.0 + 0.05).to(DEVICE)
    qi, vi = _positions(1)
    out = mamba2_evidence(B, C, dt, A, qi, vi, decay=decay)
    ref = mamba2_evidence_ref(B.double(), C.double(), dt.double(), A.double(), qi, vi, decay=decay)
    assert rel(out, ref) < 5e-3
