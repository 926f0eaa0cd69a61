"""The execution stack of a serving prefill: compiled hook-free blocks, the Triton causal conv, CUDA graphs.

``benchmarks/prefill_stack.py`` found the fastest stack for a reduced prefill (NemotronH-8B shape,
H100/H200): ``torch.compile`` of the modules that never carry an autoprune hook (RMSNorms, the
Mamba2 gated RMSNorm, the MLPs), the mixers' depthwise causal conv served by autoprune's Triton
kernel (transformers falls back to a torch conv when causal-conv1d is absent), and one CUDA graph
per prefill shape. This module holds those three pieces; :class:`autoprune.serving.ReducedPrefill`
puts them together.

Which modules are hook-free, where a family's conv function lives and how its decoder takes
per-layer masks is registered per model family (:func:`register_stack`): a new family is one
:class:`StackSpec`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedModelError

__all__ = ["StackSpec", "register_stack", "stack_spec", "hook_free_modules", "compiled_blocks", "triton_conv",
           "make_triton_conv_fn", "contiguous_dt", "serving_stack", "capture_graph"]


@dataclass(frozen=True)
class StackSpec:
    """What the stack needs to know of one model family (transformers modeling module).

    ``hook_free``: class names whose instances autoprune never hooks (safe to compile);
    ``conv_fn``: the module-level causal conv function the Mamba2 mixer calls; ``scan_fn``: its SSD scan;
    ``mask_keys``: keys of the per-block-type mask dict the decoder accepts instead of building masks.
    """

    modeling_module: str
    hook_free: tuple[str, ...]
    conv_fn: str = "causal_conv1d_fn"
    scan_fn: str = "mamba2_chunk_scan"
    mask_keys: tuple[str, ...] = ("full_attention", "linear_attention")

    def __post_init__(self):
        if not self.modeling_module or not self.hook_free:
            raise UnsupportedModelError("StackSpec needs a modeling module and at least one hook-free class")

    def module(self):
        return importlib.import_module(self.modeling_module)

    def no_masks(self) -> dict:
        """The decoder's mask argument meaning "causal, no padding" (no mask is built or inspected)."""
        return {k: None for k in self.mask_keys}


_STACKS: dict[str, StackSpec] = {}


def register_stack(model_type: str, spec: StackSpec) -> None:
    _STACKS[model_type] = spec


def stack_spec(model: nn.Module) -> StackSpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = _STACKS.get(model_type)
    if spec is None:
        raise UnsupportedModelError(f"no serving stack for model type {model_type!r}; registered: "
                                    f"{', '.join(sorted(_STACKS))}")
    return spec


register_stack("nemotron_h", StackSpec("transformers.models.nemotron_h.modeling_nemotron_h",
                                       ("NemotronHRMSNorm", "NemotronHRMSNormGated", "NemotronHMLP")))
register_stack("bamba", StackSpec("transformers.models.bamba.modeling_bamba",
                                  ("BambaRMSNorm", "BambaRMSNormGated", "BambaMLP")))


# ------------------------------------------------------------------ compile
def hook_free_modules(model: nn.Module, spec: StackSpec) -> list[tuple[str, nn.Module]]:
    mod = spec.module()
    kinds = tuple(getattr(mod, n) for n in spec.hook_free if hasattr(mod, n))
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


_COMPILED: dict = {}  # (class, dynamic) -> compiled forward, shared by every instance


@contextlib.contextmanager
def compiled_blocks(model: nn.Module, spec: StackSpec, *, dynamic: bool = True):
    """Within the block, each hook-free module's ``forward`` is its class's compiled ``forward``.

    A module that carries a hook is refused (compiling it would run the hook once, at trace
    time). One compiled function per class; ``dynamic=True`` keeps token counts symbolic, so a
    reduced prefill (fewer tokens per layer) does not recompile.
    """
    targets = hook_free_modules(model, spec)
    hooked = [name for name, m in targets if m._forward_hooks or m._forward_pre_hooks]
    if hooked:
        raise UnsupportedModelError(f"modules to compile carry hooks: {hooked[:3]}")
    for _, m in targets:
        key = (type(m), dynamic)
        fn = _COMPILED.get(key)
        if fn is None:
            fn = _COMPILED[key] = torch.compile(type(m).forward, dynamic=dynamic)
        m.forward = functools.partial(fn, m)
    try:
        yield [name for name, _ in targets]
    finally:
        for _, m in targets:
            m.__dict__.pop("forward", None)


# -------------------------------------------------------------- Triton conv
def make_triton_conv_fn(orig):
    """``causal_conv1d_fn(x (b, C, n), weight (C, K), bias, activation)`` as the mixers call it, served
    by :func:`autoprune.kernels.causal_conv1d_act` (which takes ``(b, n, C)``); anything it does not
    take (``seq_idx``, other activations) goes to ``orig``."""
    from ..kernels import causal_conv1d_act

    def triton_causal_conv1d_fn(hidden_states, weight, bias=None, activation=None, **kwargs):
        if (kwargs.get("seq_idx") is not None or kwargs.get("cu_seqlens") is not None
                or activation not in (None, "silu", "swish")):
            return orig(hidden_states, weight, bias, activation=activation, **kwargs)
        xt = hidden_states.transpose(1, 2)  # (b, n, C): a strided view of in_proj's output
        if xt.stride(-1) != 1:
            xt = xt.contiguous()
        y = causal_conv1d_act(xt, weight, bias, "silu" if activation else None)
        return y.transpose(1, 2).to(hidden_states.dtype)

    triton_causal_conv1d_fn.autoprune_orig = orig
    return triton_causal_conv1d_fn


@contextlib.contextmanager
def triton_conv(spec: StackSpec):
    """Within the block, the family's mixers call the Triton causal conv (module attribute swapped back after)."""
    mod = spec.module()
    orig = getattr(mod, spec.conv_fn)
    if getattr(orig, "autoprune_orig", None) is not None:  # already inside (nested runners)
        yield
        return
    setattr(mod, spec.conv_fn, make_triton_conv_fn(orig))
    try:
        yield
    finally:
        setattr(mod, spec.conv_fn, orig)


@contextlib.contextmanager
def contiguous_dt(spec: StackSpec):
    """Within the block, the mixers hand their SSD scan a contiguous ``dt``.

    ``dt`` is a strided view of ``in_proj``'s output, and mamba-ssm 2.3.2's kernels compute its
    offsets (batch index x batch stride + chunk offset) in int32: a batch whose ``in_proj`` output
    reaches 2^31 elements (8 x 16.5k tokens of the NemotronH-8B shape) reads out of bounds. A copy of
    ``dt`` (``heads`` values per token) moves that limit to the scan's own tensors (``x``, ``B``, ``C``:
    ``I + 2GN`` per token). The values are unchanged.
    """
    mod = spec.module()
    orig = getattr(mod, spec.scan_fn)
    if getattr(orig, "autoprune_orig", None) is not None:
        yield
        return

    def scan_with_contiguous_dt(hidden_states, dt, *args, **kwargs):
        return orig(hidden_states, dt.contiguous(), *args, **kwargs)

    scan_with_contiguous_dt.autoprune_orig = orig
    setattr(mod, spec.scan_fn, scan_with_contiguous_dt)
    try:
        yield
    finally:
        setattr(mod, spec.scan_fn, orig)


@contextlib.contextmanager
def serving_stack(module: nn.Module, *, compile: bool = True, conv: bool = True, dynamic: bool = True,
                  dt_copy: bool = True):
    """Within the block, ``module`` (a model, or one decoder block) runs on the compiled stack:
    its hook-free modules compiled, its family's mixers on the Triton causal conv (and a contiguous
    ``dt`` for the scan, :func:`contiguous_dt`)."""
    spec = stack_spec(module)
    with contextlib.ExitStack() as es:
        if dt_copy:
            es.enter_context(contiguous_dt(spec))
        if conv:
            es.enter_context(triton_conv(spec))
        if compile:
            es.enter_context(compiled_blocks(module, spec, dynamic=dynamic))
        yield


# --------------------------------------------------------------- CUDA graph
def capture_graph(body, warmup: int = 2, pool=None):
    """Warm ``body`` up on a side stream, capture it in a CUDA graph, return ``(graph, body's output)``.

    Captures on the warmed-up stream: cuBLAS(Lt) caches its workspace per stream, and a capture
    on a fresh stream may run GEMMs without one (slower algorithms).
    """
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            body()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s, pool=pool):
        out = body()
    torch.cuda.synchronize()
    return g, out
