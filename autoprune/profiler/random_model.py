"""Random-weight NemotronH blocks and models of a :class:`~autoprune.cost.shapes.ModelShape`.

What the profiler times (one block per layer kind) and what ``--measure`` on a GPU prefills
(a whole model of the latency shape): weights are random, built directly on the device in
the target dtype, with the SSM parameters spread as a trained model's are (so per-head costs
and scores are real).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..cost.shapes import ModelShape, to_transformers_config
from ..errors import ConfigError

__all__ = ["build_block", "build_random_model", "mamba2_parts_of", "spread_ssm_parameters_"]

# Families whose layers are ``*DecoderLayer(config, layer_idx)`` taking RoPE (cos, sin): class names
# in transformers (the layer class, the CausalLM class, the rotary-embedding class).
_LAYERED = {
    "qwen3_5_text": ("qwen3_5", "Qwen3_5DecoderLayer", "Qwen3_5ForCausalLM", "Qwen3_5TextRotaryEmbedding"),
    "qwen3_next": ("qwen3_next", "Qwen3NextDecoderLayer", "Qwen3NextForCausalLM", "Qwen3NextRotaryEmbedding"),
    "lfm2": ("lfm2", "Lfm2DecoderLayer", "Lfm2ForCausalLM", "Lfm2RotaryEmbedding"),
}


def _layered_block(shape, kind, device, dtype):
    """One decoder layer of a Qwen3.5/Qwen3-Next/LFM2 shape, called as ``block(hidden)`` (prefill:
    causal, no cache; its RoPE cos/sin for positions ``0..n-1`` computed in the call)."""
    import importlib

    import torch
    from torch import nn

    mod, layer_cls, _, rope_cls = _LAYERED[shape.family]
    m = importlib.import_module(f"transformers.models.{mod}.modeling_{mod}")
    config = to_transformers_config(shape, use_cache=False)
    config._attn_implementation = "sdpa"
    idx = shape.layer_kinds.index(kind)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = getattr(m, layer_cls)(config, layer_idx=idx)
            self.rotary = getattr(m, rope_cls)(config=config)

        def forward(self, x):
            pos = torch.arange(x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
            out = self.layer(x, position_embeddings=self.rotary(x, pos), attention_mask=None, position_ids=pos)
            return out[0] if isinstance(out, tuple) else out

    prev = torch.get_default_dtype()
    torch.manual_seed(1234 + idx)
    try:
        torch.set_default_dtype(dtype if dtype.is_floating_point else prev)
        with torch.device(device):
            block = Block()
    finally:
        torch.set_default_dtype(prev)
    return spread_ssm_parameters_(block.to(device=device, dtype=dtype).eval()), config


def build_block(shape: ModelShape, kind: str, device, dtype):
    """One ``NemotronHBlock`` of ``kind`` (letter) with random weights, on ``device`` in ``dtype``."""
    import torch
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHBlock

    if kind not in shape.layer_kinds:
        raise ConfigError(f"shape {shape.name!r} has no layer of kind {kind!r}")
    if shape.family in _LAYERED:
        return _layered_block(shape, kind, device, dtype)
    if kind in "PSA":  # kinds NemotronH has no block for: the family's own layer
        from .family_blocks import build_family_block

        block, config = build_family_block(shape, kind, device, dtype)
        return spread_ssm_parameters_(block), config
    overrides: dict[str, Any] = {}
    if "E" in shape.layer_kinds:
        overrides.update(moe_intermediate_size=shape.moe_intermediate_size, num_experts_per_tok=shape.moe_top_k,
                         moe_shared_expert_intermediate_size=shape.moe_shared_intermediate_size)
    idx = shape.layer_kinds.index(kind)
    if shape.family != "nemotron_h":
        # Mamba2 / attention / MLP / MoE of another family: NemotronH's block of that kind at the
        # shape's widths (the same ops); the other family's own letters stand in as Mamba2 layers
        stand_in = shape.layer_kinds.translate(str.maketrans("PSA", "MMM"))
        shape = dataclasses.replace(shape, family="nemotron_h", layer_kinds=stand_in)
    config = shape.to_nemotron_h_config(**overrides)
    config._attn_implementation = "sdpa"
    prev = torch.get_default_dtype()
    torch.manual_seed(1234 + idx)
    try:
        # Created directly on the device in the target dtype: seconds, not minutes, for 8B widths.
        torch.set_default_dtype(dtype if dtype.is_floating_point else prev)
        with torch.device(device):
            block = NemotronHBlock(config, layer_idx=idx)
    finally:
        torch.set_default_dtype(prev)
    block = spread_ssm_parameters_(block.to(device=device, dtype=dtype).eval())
    return block, config


def build_random_model(shape: ModelShape, device, dtype, seed: int = 0):
    """Whole ``NemotronHForCausalLM`` of ``shape`` (``Qwen3_5ForCausalLM``, ``Qwen3NextForCausalLM``,
    ``Lfm2ForCausalLM``, and the CausalLM of the GraniteMoeHybrid / Falcon-H1 / Zamba2 / Jamba
    shapes, for those families) with random weights, built directly on ``device`` (SDPA
    attention, SSM/DeltaNet parameters spread like a trained model's)."""
    import importlib

    import torch

    if shape.family in _LAYERED:
        mod, _, lm_cls, _ = _LAYERED[shape.family]
        make = getattr(importlib.import_module(f"transformers.models.{mod}.modeling_{mod}"), lm_cls)
    elif shape.family != "nemotron_h":  # the families of autoprune.cost.hybrid_shapes
        from transformers import AutoModelForCausalLM

        make = AutoModelForCausalLM.from_config
    else:
        from transformers import NemotronHForCausalLM as make
    config = to_transformers_config(shape, use_cache=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = make(config)
    finally:
        torch.set_default_dtype(prev)
    return spread_ssm_parameters_(model.to(device=device, dtype=dtype).eval())


def spread_ssm_parameters_(module):
    """Random-weight models: transformers' default init gives every Mamba head the same dt
    bias and A; spread them as trained weights are, so per-head costs and scores are real."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("dt_bias"):
                p.copy_(torch.randn_like(p) * 0.5 - 1.0)
            elif name.endswith("A_log"):
                p.copy_(torch.rand_like(p) * 2.0 - 1.0)
    return module


def mamba2_parts_of(mixer):
    """:class:`~autoprune.adapters.base.Mamba2Parts` of a transformers NemotronH Mamba2 mixer
    (what the runtime's evidence hooks read), for timing the scoring on a lone block."""
    from ..adapters.base import Mamba2Parts

    return Mamba2Parts(
        module=mixer, in_proj=mixer.in_proj, conv_weight=mixer.conv1d.weight, conv_bias=mixer.conv1d.bias,
        activation=mixer.act, intermediate_size=mixer.intermediate_size, n_groups=mixer.n_groups,
        state_size=mixer.ssm_state_size, num_heads=mixer.num_heads, dt_bias=mixer.dt_bias, A_log=mixer.A_log,
        dt_limit=tuple(mixer.time_step_limit),
    )
