"""Helpers shared by the evidence kernels' launchers and their torch references (no Triton code here)."""

from __future__ import annotations

import functools
import os

import torch

from autoprune.errors import ReductionInputError

# Dtypes the kernels take as operands. The Triton ops refuse anything else (float64 in
# particular); :mod:`autoprune.kernels.dispatch` sends those to the torch reference, which
# computes in float64 when given float64.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Finite stand-in for -inf as the initial running maximum of an online softmax: a row that
# sees no key in a block then keeps exp2(-inf - (-1e30)) = 0 and a rescale factor of 1, where
# -inf - (-inf) would give NaN.
NEG_BIG = -1.0e30


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def upcast_dots(dtype: torch.dtype) -> bool:
    """Whether to cast 16-bit dot operands to fp32 inside the kernel.

    Triton 3.9's interpreter returns garbage for a ``tl.dot`` of bfloat16 operands (it stores
    bf16 as uint16 and multiplies those). A product of two bf16/fp16 numbers is exact in fp32,
    so upcasting computes the same function as the tensor-core path (16-bit products, fp32
    accumulation); on a GPU the operands stay 16-bit.
    """
    return interpreting() and dtype != torch.float32


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_programs_target(device: torch.device) -> int:
    """How many programs fill the device: about four per multiprocessor on a GPU.

    Under the interpreter every program is a Python loop, so a handful is the right size.
    """
    if device.type == "cuda":
        return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4


def pow2_at_least(n: int, lo: int = 16) -> int:
    """Next power of two ``>= max(n, lo)`` (tl.arange needs a power of two, tl.dot >= 16)."""
    n = max(int(n), lo)
    return 1 << (n - 1).bit_length()


def largest_divisor_at_most(n: int, cap: int) -> int:
    cap = max(1, min(n, cap))
    for s in range(cap, 0, -1):
        if n % s == 0:
            return s
    return 1


def check_head_agg(head_agg: str) -> bool:
    """Returns True for ``"max"``, False for ``"mean"``; raises on anything else."""
    if head_agg not in ("mean", "max"):
        raise ReductionInputError(f"head_agg must be 'mean' or 'max', got {head_agg!r}")
    return head_agg == "max"


def aggregate_heads(ev: torch.Tensor, head_agg: str) -> torch.Tensor:
    """``ev (b, H, V)`` → ``(b, V)``: mean or max over the head axis (the references' aggregation)."""
    if check_head_agg(head_agg):
        return ev.amax(dim=1)
    return ev.mean(dim=1)


def heads_per_group(B: torch.Tensor, dt: torch.Tensor) -> int:
    """Mamba2 heads sharing one B/C group: ``H / G`` for ``B (b, L, G, N)``, ``dt (b, L, H)``."""
    G, H = B.shape[2], dt.shape[2]
    if H % G:
        raise ReductionInputError(f"{H} Mamba heads are not a multiple of {G} groups")
    return H // G


def check_index(name: str, idx: torch.Tensor, batch: int, device: torch.device) -> None:
    if idx.dim() != 2 or idx.shape[0] != batch:
        raise ReductionInputError(f"{name} must have shape (batch={batch}, n), got {tuple(idx.shape)}")
    if idx.dtype not in (torch.int64, torch.int32):
        raise ReductionInputError(f"{name} must be int64 or int32, got {idx.dtype}")
    if idx.device != device:
        raise ReductionInputError(f"{name} is on {idx.device}, the activations on {device}")


def valid_as_uint8(query_valid: torch.Tensor | None, batch: int, n_query: int, device: torch.device):
    """``query_valid (b, Q)`` as a uint8 tensor the kernel can load (a view for bool), or None."""
    if query_valid is None:
        return None
    if tuple(query_valid.shape) != (batch, n_query):
        raise ReductionInputError(
            f"query_valid must have shape {(batch, n_query)}, got {tuple(query_valid.shape)}"
        )
    if query_valid.device != device:
        raise ReductionInputError(f"query_valid is on {query_valid.device}, the activations on {device}")
    if query_valid.dtype == torch.bool:
        return query_valid.view(torch.uint8)
    return (query_valid != 0).view(torch.uint8)


def prepare_out(out: torch.Tensor | None, batch: int, n_visual: int, device: torch.device) -> torch.Tensor:
    if out is None:
        return torch.empty(batch, n_visual, dtype=torch.float32, device=device)
    if tuple(out.shape) != (batch, n_visual) or out.dtype != torch.float32 or out.device != device:
        raise ReductionInputError(
            f"out must be float32 of shape {(batch, n_visual)} on {device}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    return out


def combine_splits(partial: torch.Tensor, out: torch.Tensor, agg_max: bool) -> torch.Tensor:
    """Fold per-split partial results ``(splits, …)`` into ``out`` (max or sum over splits)."""
    if agg_max:
        return torch.amax(partial, dim=0, out=out)
    return torch.sum(partial, dim=0, out=out)


def launch_buffers(query_valid, out, batch: int, n_query: int, n_visual: int, length: int, device):
    """``(valid, out, done)`` of a launcher: the query mask as uint8 (or None), ``out (b, V)`` fp32
    ready to write, and ``done`` when there is nothing to compute — no visual token or no row
    (``out`` as it is) or no query / empty sequence (``out`` zeroed): then ``out`` is the result."""
    valid = valid_as_uint8(query_valid, batch, n_query, device)
    out = prepare_out(out, batch, n_visual, device)
    if n_visual == 0 or batch == 0:
        return valid, out, True
    if n_query == 0 or length == 0:
        return valid, out.zero_(), True
    return valid, out, False


def check_deltanet_inputs(q, k, beta, lam, query_index, visual_index) -> None:
    """Shapes and devices of the Gated DeltaNet evidence ops' inputs (the proxy's and the exact form's)."""
    if q.dim() != 4 or k.shape != q.shape:
        raise ReductionInputError(f"q and k must both be (b, L, Hk, dk); got {tuple(q.shape)}, {tuple(k.shape)}")
    b, L, Hk, _ = q.shape
    if beta.dim() != 3 or beta.shape[:2] != (b, L) or beta.shape[2] % Hk:
        raise ReductionInputError(f"beta must be (b={b}, L={L}, Hv) with Hv a multiple of {Hk}, "
                                  f"got {tuple(beta.shape)}")
    if lam is not None and lam.shape != beta.shape:
        raise ReductionInputError(f"lam must have beta's shape {tuple(beta.shape)}, got {tuple(lam.shape)}")
    for name, t in (("k", k), ("beta", beta), ("lam", lam)):
        if t is not None and t.device != q.device:
            raise ReductionInputError(f"{name} is on {t.device}, q on {q.device}")
    check_index("query_index", query_index, b, q.device)
    check_index("visual_index", visual_index, b, q.device)
