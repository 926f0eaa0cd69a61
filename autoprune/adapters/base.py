"""Adapter interface and registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..schedule import LAYER_KIND_LETTERS, ModelSignature

_REGISTRY: dict[str, type[HybridAdapter]] = {}
# Wrappers whose decoder receives another sequence than the wrapper's input (EVS), by model_type.
_STAGES: dict[str, type] = {}


def register_adapter(model_type: str):
    """Class decorator: ``@register_adapter("nemotron_h")``."""

    def deco(cls: type[HybridAdapter]) -> type[HybridAdapter]:
        cls.model_type = model_type
        _REGISTRY[model_type] = cls
        return cls

    return deco


def registered_families() -> list[str]:
    return sorted(_REGISTRY)


def register_input_stage(model_type: str):
    """Class decorator: ``@register_input_stage("nemotron_h_omni")`` for a wrapper (``config.model_type``)
    whose decoder receives another sequence than the wrapper's own input (see :mod:`autoprune.adapters.evs`).

    A stage class is built as ``cls(model)`` and provides ``install() -> [hook handles]`` and
    ``take() -> (b, L_in) bool | None``: which of the wrapper's input tokens reach the decoder in the
    call now starting (``None``: all of them)."""

    def deco(cls):
        _STAGES[model_type] = cls
        return cls

    return deco


def get_input_stage(model: nn.Module):
    """The input stage of ``model`` itself (not of a module inside it), or ``None``."""
    cls = _STAGES.get(getattr(getattr(model, "config", None), "model_type", None))
    return None if cls is None else cls(model)


def get_adapter(model: nn.Module) -> HybridAdapter:
    """Find the hybrid decoder stack inside ``model`` (itself, a ``*ForCausalLM`` or a VLM wrapper)."""
    for module in model.modules():
        cfg = getattr(module, "config", None)
        cls = _REGISTRY.get(getattr(cfg, "model_type", None))
        if cls is not None and type(module).__name__ in cls.decoder_classes:
            return cls(module)
    kinds = sorted({getattr(getattr(m, "config", None), "model_type", None) for m in model.modules()} - {None})
    raise UnsupportedModelError(
        f"no autoprune adapter for {type(model).__name__} (model types seen: {kinds or 'none'}); "
        f"supported: {registered_families()}"
    )


def fingerprint(family: str, layer_kinds: str, config, fields: tuple[str, ...]) -> str:
    """``sha256:`` of the architecture: family, layer kinds and the shape fields of the config.

    Weights are not hashed: a schedule applies to any checkpoint of one architecture.
    """
    shape = {f: getattr(config, f, None) for f in fields}
    blob = json.dumps({"family": family, "layer_kinds": layer_kinds, "shape": shape}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class AttentionParts:
    """What evidence needs from an attention layer (its own modules and shape)."""

    module: nn.Module
    q_proj: nn.Module
    k_proj: nn.Module
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    # (q, k, cos, sin) -> (q, k) for RoPE families; None where keys carry no positions.
    rotary: Callable | None = None
    # q_proj output (b, n, ·) -> (b, n, H·d) of queries, for a q_proj that packs more than the
    # queries (Qwen3.5/Qwen3-Next pack [q, gate] per head); None: the output is the queries.
    q_select: Callable | None = None
    # Per-head norms applied to (b, n, heads, d) before RoPE (QK-norm: Qwen's q_norm/k_norm,
    # LFM2's q_layernorm/k_layernorm); None where the family has none.
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None
    # Where q/k are not the outputs of q_proj/k_proj alone (Zamba2's per-layer LoRA adapters on
    # its shared attention): hidden (b, n, D) -> (b, n, H*d) and -> (b, n, Hkv*d), computed from
    # the input the attention module is called with (a pre-hook captures it); q only for query rows.
    project_q: Callable | None = None
    project_k: Callable | None = None


@dataclass(frozen=True)
class Mamba2Parts:
    """What evidence needs from a Mamba2 mixer: ``in_proj`` output splits as [z, xBC, dt]."""

    module: nn.Module
    in_proj: nn.Module
    conv_weight: torch.Tensor  # (conv_dim, 1, K)
    conv_bias: torch.Tensor | None
    activation: Callable
    intermediate_size: int
    n_groups: int
    state_size: int
    num_heads: int
    dt_bias: torch.Tensor
    A_log: torch.Tensor
    dt_limit: tuple[float, float]
    activation_name: str = "silu"  # the config's name for ``activation`` (kernels know "silu")
    # Multiplies in_proj's output before it is split (Falcon-H1's µP ``mup_vector``); None: none.
    in_proj_scale: torch.Tensor | None = None

    @classmethod
    def from_mixer(cls, m: nn.Module) -> Mamba2Parts:
        """From a transformers Mamba2 mixer (NemotronH, Bamba and their copies share these names)."""
        return cls(
            module=m, in_proj=m.in_proj, conv_weight=m.conv1d.weight, conv_bias=m.conv1d.bias,
            activation=m.act, intermediate_size=m.intermediate_size, n_groups=m.n_groups,
            state_size=m.ssm_state_size, num_heads=m.num_heads, dt_bias=m.dt_bias, A_log=m.A_log,
            dt_limit=tuple(m.time_step_limit), activation_name=m.activation,
            in_proj_scale=getattr(m, "mup_vector", None),
        )


@dataclass(frozen=True)
class Mamba1Parts:
    """What evidence needs from a Mamba1 mixer (Jamba): ``x_proj``'s output splits as [dt, B, C].

    ``x_proj`` reads the post-conv, post-activation (and padding-masked) channels; ``dt`` goes
    through ``dt_norm`` and ``dt_proj`` (weight and bias, then softplus), ``B``/``C`` through
    their norms (Jamba's RMSNorms; None where a family has none).
    """

    module: nn.Module
    x_proj: nn.Module
    dt_rank: int
    state_size: int
    dt_proj_weight: torch.Tensor  # (D, R)
    dt_proj_bias: torch.Tensor | None
    A_log: torch.Tensor  # (D, N)
    dt_norm: Callable | None = None
    b_norm: Callable | None = None
    c_norm: Callable | None = None

    @classmethod
    def from_jamba_mixer(cls, m: nn.Module) -> Mamba1Parts:
        return cls(
            module=m, x_proj=m.x_proj, dt_rank=m.time_step_rank, state_size=m.ssm_state_size,
            dt_proj_weight=m.dt_proj.weight, dt_proj_bias=m.dt_proj.bias, A_log=m.A_log,
            dt_norm=m.dt_layernorm, b_norm=m.b_layernorm, c_norm=m.c_layernorm,
        )


@dataclass(frozen=True)
class GatedDeltaNetParts:
    """What evidence needs from a Gated DeltaNet mixer (see :mod:`autoprune.delta_rule`).

    ``projections``: the modules whose outputs hold q/k (pre-conv), ``b`` and ``a``, in the order
    the mixer calls them; evidence runs when the last one returns. ``split(outputs) -> (qk, b, a)``
    with ``qk (b, n, 2·Hk·dk)`` the pre-conv ``[q | k]`` channels in the conv's channel order and
    ``b, a (b, n, Hv)``. ``conv_weight (conv_dim, 1, K)``: the mixer's depthwise conv, whose first
    ``2·Hk·dk`` channels are ``[q | k]``.
    """

    module: nn.Module
    projections: tuple
    split: Callable
    conv_weight: torch.Tensor
    conv_bias: torch.Tensor | None
    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    dt_bias: torch.Tensor
    A_log: torch.Tensor


class HybridAdapter:
    """Base class. Subclasses name their decoder classes and describe each layer."""

    model_type: ClassVar[str] = ""
    decoder_classes: ClassVar[tuple[str, ...]] = ()
    shape_fields: ClassVar[tuple[str, ...]] = ()
    # Layer kwargs that carry one entry per token and must follow the kept tokens.
    per_token_kwargs: ClassVar[tuple[str, ...]] = ("attention_mask", "position_ids")
    # Positional layer arguments after the hidden states that do too (Zamba2 passes its original
    # embeddings and both masks positionally), by index into ``args``.
    per_token_args: ClassVar[tuple[int, ...]] = ()

    def __init__(self, decoder: nn.Module):
        self.decoder = decoder
        self.config = decoder.config
        if getattr(self.config, "_attn_implementation", None) == "flex_attention":
            raise UnsupportedModelError(
                "flex attention masks (BlockMask) cannot be sliced per token; load the model with "
                "attn_implementation='sdpa', 'eager' or 'flash_attention_2'"
            )

    # -- required by subclasses
    @property
    def layers(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def layer_kinds(self) -> str:
        raise NotImplementedError

    def attention_parts(self, layer_idx: int) -> AttentionParts:
        raise NotImplementedError

    def mamba2_parts(self, layer_idx: int) -> Mamba2Parts:
        raise NotImplementedError

    def deltanet_parts(self, layer_idx: int) -> GatedDeltaNetParts:
        raise NotImplementedError(f"{type(self).__name__} has no Gated DeltaNet layers")

    def mamba1_parts(self, layer_idx: int) -> Mamba1Parts:
        raise NotImplementedError(f"{type(self).__name__} has no Mamba1 layers")

    # -- shared
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def signature(self) -> ModelSignature:
        kinds = self.layer_kinds
        return ModelSignature(
            family=self.model_type,
            layer_kinds=kinds,
            fingerprint=fingerprint(self.model_type, kinds, self.config, self.shape_fields),
        )

    def kind(self, layer_idx: int) -> str:
        """``attention``, ``mamba``, ``mlp``, ``moe``, ``parallel``, ``shared_attention``, ``mamba1``,
        ``linear_attention`` (Gated DeltaNet) or ``short_conv`` (short convolution)."""
        return LAYER_KIND_LETTERS[self.layer_kinds[layer_idx]]
