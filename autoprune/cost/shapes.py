"""Architecture shapes and token layouts: what latency and FLOPs depend on.

A :class:`ModelShape` is the part of a model's config that decides its cost; it
can be built from a transformers config or taken from the presets (the shapes the
benchmarks use, e.g. ``nemotron-h-8b``). FLOP counts here are the "FLOP-ideal"
against which measured speedups are compared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["ModelShape", "TokenLayout", "PRESETS", "ffn_flops", "get_shape", "layer_flops", "mixer_flops",
           "prefill_flops", "register_shape_family", "to_transformers_config"]

# Letters a shape may use: NemotronH's M * - E, P (attention + Mamba2 in parallel, Falcon-H1),
# S (shared attention block + Mamba2, Zamba2), A (Mamba1, Jamba), L (Gated DeltaNet, Qwen3.5 and
# Qwen3-Next), C (short convolution, LFM2); see autoprune.schedule.
SHAPE_LETTERS = "M*-EPSALC"
# model_type -> (config -> ModelShape, ModelShape -> transformers config) for families whose
# conversions live in autoprune.cost.hybrid_shapes (registered there, see register_shape_family).
_FAMILIES: dict = {}

_KIND_LETTER = {"linear_attention": "M", "mamba": "M", "full_attention": "*", "attention": "*", "mlp": "-",
                "moe": "E"}


@dataclass(frozen=True)
class TokenLayout:
    """A prefill sequence ``[prefix text][visual][query text]`` by token counts."""

    prefix: int
    visual: int
    query: int

    def __post_init__(self):
        for f in ("prefix", "visual", "query"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"TokenLayout.{f} must be a non-negative integer, got {v!r}")
        if self.query < 1:
            raise ConfigError("TokenLayout.query must be >= 1: the query text scores the video")

    @property
    def text(self) -> int:
        return self.prefix + self.query

    @property
    def total(self) -> int:
        return self.prefix + self.visual + self.query


@dataclass(frozen=True)
class ModelShape:
    """Cost-relevant architecture of a hybrid decoder (one letter per layer in ``layer_kinds``).

    Mamba1 (``A``) layers read ``mamba_num_heads × mamba_head_dim`` as their channel count
    (d_inner), ``ssm_state_size`` as N and ``mamba_dt_rank`` as the dt projection's rank. The
    MLP/MoE inside a layer whose letter names its mixer (Bamba, Granite, Falcon-H1, Jamba) is not
    counted; Zamba2's shared block (``S``) counts its attention, gated MLP and output linear.
    """

    name: str
    family: str
    layer_kinds: str
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    mamba_num_heads: int
    mamba_head_dim: int
    n_groups: int
    ssm_state_size: int
    conv_kernel: int
    mlp_intermediate_size: int
    vocab_size: int
    chunk_size: int = 128
    moe_intermediate_size: int = 0
    moe_top_k: int = 0
    moe_shared_intermediate_size: int = 0
    dtype: str = "bfloat16"
    mamba_dt_rank: int = 0
    # Gated DeltaNet ("L") widths; ``conv_kernel`` is its conv's (and a short conv's, "C") kernel.
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    # q_proj also emits a per-head output gate (Qwen3.5/Qwen3-Next attention).
    attn_output_gate: bool = False
    # Every layer is a mixer plus its SwiGLU FFN (Bamba-like families: Qwen3.5, Qwen3-Next, LFM2):
    # the FFN (dense, or MoE when ``moe_top_k`` > 0) is counted in each layer's cost.
    mixer_mlp: bool = False

    def __post_init__(self):
        if not self.layer_kinds or set(self.layer_kinds) - set(SHAPE_LETTERS):
            raise ConfigError(f"ModelShape.layer_kinds must use letters {' '.join(SHAPE_LETTERS)}, "
                              f"got {self.layer_kinds!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ConfigError(f"ModelShape.{f.name} must be a non-negative integer, got {v!r}")
        for name in ("attn_output_gate", "mixer_mlp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ModelShape.{name} must be true or false, got {getattr(self, name)!r}")
        if "L" in self.layer_kinds:
            Hk, Hv = self.linear_num_key_heads, self.linear_num_value_heads
            if min(Hk, Hv, self.linear_key_head_dim, self.linear_value_head_dim) < 1 or Hv % Hk:
                raise ConfigError(
                    f"ModelShape {self.name!r} has Gated DeltaNet layers (L) but linear heads {Hk} key / {Hv} value "
                    f"of {self.linear_key_head_dim} / {self.linear_value_head_dim}: need positive widths and value "
                    "heads a multiple of key heads")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ConfigError(f"ModelShape.dtype must be bfloat16, float16 or float32, got {self.dtype!r}")

    @property
    def num_layers(self) -> int:
        return len(self.layer_kinds)

    @property
    def mamba_intermediate(self) -> int:
        return self.mamba_num_heads * self.mamba_head_dim

    @property
    def dtype_bytes(self) -> int:
        return 4 if self.dtype == "float32" else 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def same_widths(self, other: ModelShape) -> bool:
        """True when every per-layer dimension matches (only the name and layer pattern may
        differ): a layer of a given kind then costs the same in both, so per-layer latency
        tables transfer."""
        skip = {"name", "layer_kinds"}
        return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self)
                   if f.name not in skip)

    def with_layer_kinds(self, layer_kinds: str, name: str) -> ModelShape:
        """This shape's widths with another layer pattern (e.g. a small model's pattern at 8B width)."""
        return dataclasses.replace(self, layer_kinds=layer_kinds, name=name)

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelShape:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"ModelShape: unknown key(s) {unknown}")
        return cls(**dict(d))

    @classmethod
    def from_config(cls, config, name: str | None = None, dtype: str = "bfloat16") -> ModelShape:
        """From a transformers ``NemotronHConfig``, Bamba config, a Qwen3.5 / Qwen3-Next / LFM2(-VL)
        config, or one of the families of :mod:`autoprune.cost.hybrid_shapes` (GraniteMoeHybrid,
        Falcon-H1, Zamba2, Jamba)."""
        mt = getattr(config, "model_type", "")
        if mt in _FAMILIES:
            return _FAMILIES[mt][0](cls, config, name, dtype)
        if mt == "nemotron_h":
            kinds = "".join(_KIND_LETTER[k] for k in config.layers_block_type)
            return cls(
                name=name or f"nemotron_h-{config.hidden_size}x{len(kinds)}", family=mt, layer_kinds=kinds,
                hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
                num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim,
                mamba_num_heads=config.mamba_num_heads, mamba_head_dim=config.mamba_head_dim,
                n_groups=config.n_groups, ssm_state_size=config.ssm_state_size, conv_kernel=config.conv_kernel,
                mlp_intermediate_size=config.intermediate_size, vocab_size=config.vocab_size,
                chunk_size=config.chunk_size,
                moe_intermediate_size=(getattr(config, "moe_intermediate_size", 0) or 0) if "E" in kinds else 0,
                moe_top_k=(getattr(config, "num_experts_per_tok", 0) or 0) if "E" in kinds else 0,
                moe_shared_intermediate_size=(getattr(config, "moe_shared_expert_intermediate_size", 0) or 0)
                if "E" in kinds else 0,
                dtype=dtype,
            )
        if mt == "bamba":
            kinds = "".join("M" if k == "linear_attention" else "*" for k in config.layers_block_type)
            return cls(
                name=name or f"bamba-{config.hidden_size}x{len(kinds)}", family=mt, layer_kinds=kinds,
                hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
                num_kv_heads=config.num_key_value_heads,
                head_dim=config.hidden_size // config.num_attention_heads,
                mamba_num_heads=config.mamba_n_heads, mamba_head_dim=config.mamba_d_head,
                n_groups=config.mamba_n_groups, ssm_state_size=config.mamba_d_state,
                conv_kernel=config.mamba_d_conv, mlp_intermediate_size=config.intermediate_size,
                vocab_size=config.vocab_size, chunk_size=config.mamba_chunk_size, dtype=dtype,
            )
        if mt in _FROM_CONFIG:
            return _FROM_CONFIG[mt](cls, config, name, dtype)
        raise ConfigError(f"no ModelShape conversion for model_type {mt!r}")

    def to_nemotron_h_config(self, **overrides):
        """A transformers ``NemotronHConfig`` of this shape (for random-weight benchmarks)."""
        if self.family != "nemotron_h":
            raise ConfigError(f"to_nemotron_h_config needs a nemotron_h shape, this is {self.family!r}")
        from transformers import NemotronHConfig

        inv = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}
        kw = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            layers_block_type=[inv[c] for c in self.layer_kinds], num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim, mamba_num_heads=self.mamba_num_heads,
            mamba_head_dim=self.mamba_head_dim, n_groups=self.n_groups, ssm_state_size=self.ssm_state_size,
            conv_kernel=self.conv_kernel, intermediate_size=self.mlp_intermediate_size, chunk_size=self.chunk_size,
        )
        kw.update(overrides)
        return NemotronHConfig(**kw)

    def to_family_config(self, **overrides):
        """A transformers config of this shape's own family (random-weight benchmarks), for the
        families of :mod:`autoprune.cost.hybrid_shapes`."""
        if self.family not in _FAMILIES:
            raise ConfigError(f"no transformers config conversion for family {self.family!r}; "
                              f"known: {sorted(_FAMILIES)}")
        return _FAMILIES[self.family][1](self, **overrides)


def register_shape_family(model_type: str, from_config, to_config) -> None:
    """``from_config(ModelShape, config, name, dtype) -> ModelShape`` and ``to_config(shape, **kw)``
    for ``model_type`` (used by :meth:`ModelShape.from_config` and :meth:`ModelShape.to_family_config`)."""
    _FAMILIES[model_type] = (from_config, to_config)


def _qwen_gdn_config(shape, kw, cls_name):
    import transformers

    types = ["linear_attention" if c == "L" else "full_attention" for c in shape.layer_kinds]
    args = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        layer_types=types, num_attention_heads=shape.num_attention_heads, num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim, linear_conv_kernel_dim=shape.conv_kernel,
        linear_key_head_dim=shape.linear_key_head_dim, linear_value_head_dim=shape.linear_value_head_dim,
        linear_num_key_heads=shape.linear_num_key_heads, linear_num_value_heads=shape.linear_num_value_heads,
        intermediate_size=shape.mlp_intermediate_size,
    )
    if cls_name == "Qwen3NextConfig":
        args.update(num_experts=512 if shape.moe_top_k else 0, num_experts_per_tok=shape.moe_top_k or 1,
                    moe_intermediate_size=shape.moe_intermediate_size,
                    shared_expert_intermediate_size=shape.moe_shared_intermediate_size)
    args.update(kw)
    return getattr(transformers, cls_name)(**args)


def _lfm2_config(shape, kw):
    from transformers import Lfm2Config

    args = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        layer_types=["full_attention" if c == "*" else "conv" for c in shape.layer_kinds],
        num_attention_heads=shape.num_attention_heads, num_key_value_heads=shape.num_kv_heads,
        conv_L_cache=shape.conv_kernel, intermediate_size=shape.mlp_intermediate_size,
        block_auto_adjust_ff_dim=False,
    )
    args.update(kw)
    return Lfm2Config(**args)


# ModelShape.to_transformers_config, by family (NemotronH: to_nemotron_h_config).
_TO_CONFIG = {
    "qwen3_5_text": lambda shape, kw: _qwen_gdn_config(shape, kw, "Qwen3_5TextConfig"),
    "qwen3_next": lambda shape, kw: _qwen_gdn_config(shape, kw, "Qwen3NextConfig"),
    "lfm2": _lfm2_config,
}


def to_transformers_config(shape: ModelShape, **overrides):
    """A transformers config of ``shape``'s family and widths (for random-weight benchmarks)."""
    if shape.family == "nemotron_h":
        return shape.to_nemotron_h_config(**overrides)
    if shape.family in _FAMILIES:
        return shape.to_family_config(**overrides)
    if shape.family not in _TO_CONFIG:
        raise ConfigError(f"no transformers config for ModelShape family {shape.family!r}")
    return _TO_CONFIG[shape.family](shape, overrides)


# NemotronH-8B (nvidia/Nemotron-H-8B-Base-8K): transformers' NemotronHConfig defaults
# for the widths, and the 52-layer hybrid pattern of the released model.
NEMOTRON_H_8B = ModelShape(
    name="nemotron-h-8b", family="nemotron_h",
    layer_kinds="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
    hidden_size=4096, num_attention_heads=32, num_kv_heads=8, head_dim=128, mamba_num_heads=128,
    mamba_head_dim=64, n_groups=8, ssm_state_size=128, conv_kernel=4, mlp_intermediate_size=21504,
    vocab_size=131072, chunk_size=128,
)


def _qwen_gdn_shape(cls, config, name, dtype, family):
    kinds = "".join("L" if t == "linear_attention" else "*" for t in config.layer_types)
    moe = (getattr(config, "num_experts", 0) or 0) > 0
    return cls(
        name=name or f"{family}-{config.hidden_size}x{len(kinds)}", family=family, layer_kinds=kinds,
        hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim, mamba_num_heads=0, mamba_head_dim=0,
        n_groups=0, ssm_state_size=0, conv_kernel=config.linear_conv_kernel_dim,
        mlp_intermediate_size=config.intermediate_size, vocab_size=config.vocab_size, chunk_size=64,
        moe_intermediate_size=config.moe_intermediate_size if moe else 0,
        moe_top_k=config.num_experts_per_tok if moe else 0,
        moe_shared_intermediate_size=config.shared_expert_intermediate_size if moe else 0, dtype=dtype,
        linear_num_key_heads=config.linear_num_key_heads, linear_num_value_heads=config.linear_num_value_heads,
        linear_key_head_dim=config.linear_key_head_dim, linear_value_head_dim=config.linear_value_head_dim,
        attn_output_gate=True, mixer_mlp=True,
    )


def _lfm2_shape(cls, config, name, dtype):
    kinds = "".join("*" if t == "full_attention" else "C" for t in config.layer_types)
    ff = config.intermediate_size
    if config.block_auto_adjust_ff_dim:  # what Lfm2MLP builds
        ff = int(2 * ff / 3)
        if config.block_ffn_dim_multiplier is not None:
            ff = int(config.block_ffn_dim_multiplier * ff)
            ff = config.block_multiple_of * ((ff + config.block_multiple_of - 1) // config.block_multiple_of)
    return cls(
        name=name or f"lfm2-{config.hidden_size}x{len(kinds)}", family="lfm2", layer_kinds=kinds,
        hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads, head_dim=config.hidden_size // config.num_attention_heads,
        mamba_num_heads=0, mamba_head_dim=0, n_groups=0, ssm_state_size=0, conv_kernel=config.conv_L_cache,
        mlp_intermediate_size=ff, vocab_size=config.vocab_size, dtype=dtype, mixer_mlp=True,
    )


# ModelShape.from_config for the families whose layers each hold a mixer and an FFN, by model_type.
_FROM_CONFIG = {
    "qwen3_5_text": lambda cls, c, n, d: _qwen_gdn_shape(cls, c, n, d, "qwen3_5_text"),
    "qwen3_5": lambda cls, c, n, d: _qwen_gdn_shape(cls, c.text_config, n, d, "qwen3_5_text"),
    "qwen3_next": lambda cls, c, n, d: _qwen_gdn_shape(cls, c, n, d, "qwen3_next"),
    "lfm2": _lfm2_shape,
    "lfm2_vl": lambda cls, c, n, d: _lfm2_shape(cls, c.text_config, n, d),
}

_GDN_ZERO_MAMBA = dict(mamba_num_heads=0, mamba_head_dim=0, n_groups=0, ssm_state_size=0)

# Qwen3.5-9B (Qwen/Qwen3.5-9B, text_config of its config.json; the same values are transformers
# 5.24's Qwen3_5TextConfig defaults): 32 layers, full attention every 4th, 16 query / 4 KV heads of
# 256 (q_proj packs an output gate), Gated DeltaNet 16 key / 32 value heads of 128, conv 4,
# SwiGLU FFN 12288, vocabulary 248320. The DeltaNet's chunked kernel uses chunks of 64.
QWEN3_5_9B = ModelShape(
    name="qwen3.5-9b", family="qwen3_5_text", layer_kinds="LLL*" * 8,
    hidden_size=4096, num_attention_heads=16, num_kv_heads=4, head_dim=256, conv_kernel=4,
    mlp_intermediate_size=12288, vocab_size=248320, chunk_size=64, linear_num_key_heads=16,
    linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128, attn_output_gate=True,
    mixer_mlp=True, **_GDN_ZERO_MAMBA,
)
# Qwen3.5-27B (Qwen/Qwen3.5-27B config.json text_config): 64 layers, 24 / 4 heads of 256, DeltaNet
# 16 / 48 heads of 128, FFN 17408.
QWEN3_5_27B = dataclasses.replace(
    QWEN3_5_9B, name="qwen3.5-27b", layer_kinds="LLL*" * 16, hidden_size=5120, num_attention_heads=24,
    linear_num_value_heads=48, mlp_intermediate_size=17408,
)
# Qwen3-Next-80B-A3B (Qwen/Qwen3-Next-80B-A3B-Instruct; transformers' Qwen3NextConfig defaults):
# 48 layers, full attention every 4th, 16 / 2 heads of 256, DeltaNet 16 / 32 heads of 128, MoE in
# every layer: 512 experts of 512, top 10, one shared expert of 512; vocabulary 151936.
QWEN3_NEXT_80B_A3B = ModelShape(
    name="qwen3-next-80b-a3b", family="qwen3_next", layer_kinds="LLL*" * 12,
    hidden_size=2048, num_attention_heads=16, num_kv_heads=2, head_dim=256, conv_kernel=4,
    mlp_intermediate_size=5632, vocab_size=151936, chunk_size=64, moe_intermediate_size=512, moe_top_k=10,
    moe_shared_intermediate_size=512, linear_num_key_heads=16, linear_num_value_heads=32,
    linear_key_head_dim=128, linear_value_head_dim=128, attn_output_gate=True, mixer_mlp=True, **_GDN_ZERO_MAMBA,
)
# LFM2-VL-1.6B's language model, LFM2-1.2B (LiquidAI/LFM2-1.2B config.json): 16 layers, attention at
# 2, 5, 8, 10, 12, 14 (32 / 8 heads of 64), gated short convolutions (kernel 3) elsewhere, FFN
# block_ff_dim 12288 auto-adjusted to 8192, vocabulary 65536.
LFM2_1_2B = ModelShape(
    name="lfm2-1.2b", family="lfm2", layer_kinds="CC*CC*CC*C*C*C*C",
    hidden_size=2048, num_attention_heads=32, num_kv_heads=8, head_dim=64, conv_kernel=3,
    mlp_intermediate_size=8192, vocab_size=65536, mixer_mlp=True, **_GDN_ZERO_MAMBA,
)

# Granite-4.0-H-Small (ibm-granite/granite-4.0-h-small config.json: hidden 4096, 40 layers of which
# 4 attention, 32 heads / 8 KV, 72 experts top-10 of 768, shared MLP 1536, mamba_d_state 128,
# d_conv 4, expand 2, vocab 100352). Not in the excerpt checked here, so transformers'
# GraniteMoeHybridConfig defaults: 128 Mamba heads (d_head 8192/128 = 64), 1 group, chunk 256;
# attention at layers 5, 15, 25, 35 (unverified: the pattern's cost does not depend on the positions).
GRANITE_4_H_SMALL = ModelShape(
    name="granite-4.0-h-small", family="granitemoehybrid",
    layer_kinds="".join("*" if i in (5, 15, 25, 35) else "M" for i in range(40)),
    hidden_size=4096, num_attention_heads=32, num_kv_heads=8, head_dim=128, mamba_num_heads=128,
    mamba_head_dim=64, n_groups=1, ssm_state_size=128, conv_kernel=4, mlp_intermediate_size=768,
    vocab_size=100352, chunk_size=256, moe_intermediate_size=768, moe_top_k=10, moe_shared_intermediate_size=1536,
)

# Falcon-H1-7B (tiiuae/Falcon-H1-7B-Base config.json; the table in transformers' FalconH1 docs):
# 44 parallel layers, hidden 3072, 12 heads / 2 KV of 128, 24 Mamba2 heads of 128 (d_ssm 3072),
# 1 group, d_state 256, d_conv 4, chunk 128, MLP 12288, vocab 130048.
FALCON_H1_7B = ModelShape(
    name="falcon-h1-7b", family="falcon_h1", layer_kinds="P" * 44,
    hidden_size=3072, num_attention_heads=12, num_kv_heads=2, head_dim=128, mamba_num_heads=24,
    mamba_head_dim=128, n_groups=1, ssm_state_size=256, conv_kernel=4, mlp_intermediate_size=12288,
    vocab_size=130048, chunk_size=128,
)

# Zamba2-7B (Zyphra/Zamba2-7B config.json): 81 layers, 13 of them hybrid (shared attention) at
# 6, 11, 17, ..., 77; hidden 3584, 32 heads (= KV) of 2·3584/32 = 224 on the 7168-wide concatenated
# input, Mamba2 expand 2 with head dim 64 (112 heads), 2 groups, d_state 64, d_conv 4, shared MLP
# 14336, 2 shared blocks, vocab 32000. Chunk size: transformers' default (256).
ZAMBA2_7B = ModelShape(
    name="zamba2-7b", family="zamba2",
    layer_kinds="".join("S" if i in (6,) + tuple(range(11, 81, 6)) else "M" for i in range(81)),
    hidden_size=3584, num_attention_heads=32, num_kv_heads=32, head_dim=224, mamba_num_heads=112,
    mamba_head_dim=64, n_groups=2, ssm_state_size=64, conv_kernel=4, mlp_intermediate_size=14336,
    vocab_size=32000, chunk_size=256,
)

# Jamba-Mini (ai21labs/AI21-Jamba-Mini-1.5; the widths of ai21labs/Jamba-v0.1, transformers'
# JambaConfig defaults): 32 layers, attention every 8th from layer 4, hidden 4096, 32 heads / 8 KV,
# Mamba1 expand 2 (8192 channels), d_state 16, d_conv 4, dt rank 256; MLP 14336 with 16 experts
# top-2 on every other layer from 1 (not counted, see ModelShape); vocab 65536.
JAMBA_MINI = ModelShape(
    name="jamba-mini", family="jamba", layer_kinds="".join("*" if i % 8 == 4 else "A" for i in range(32)),
    hidden_size=4096, num_attention_heads=32, num_kv_heads=8, head_dim=128, mamba_num_heads=8192,
    mamba_head_dim=1, n_groups=1, ssm_state_size=16, conv_kernel=4, mlp_intermediate_size=14336,
    vocab_size=65536, mamba_dt_rank=256, moe_intermediate_size=14336, moe_top_k=2,
)

PRESETS: dict[str, ModelShape] = {s.name: s for s in (NEMOTRON_H_8B, QWEN3_5_9B, QWEN3_5_27B, QWEN3_NEXT_80B_A3B,
                                                      LFM2_1_2B, GRANITE_4_H_SMALL, FALCON_H1_7B, ZAMBA2_7B,
                                                      JAMBA_MINI)}


def get_shape(name: str) -> ModelShape:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model shape {name!r}; known: {sorted(PRESETS)}") from None


def layer_flops(shape: ModelShape, kind: str, tokens: int, kv_tokens: int | None = None) -> float:
    """Forward FLOPs of one layer of ``kind`` (a layer-kind letter) over ``tokens`` tokens.

    Attention is causal prefill: ``tokens`` queries over ``kv_tokens`` (default: the same)
    keys, half the score matrix. SSD uses the chunked algorithm's count
    ``2·n·H·(chunk·(N+P)/2 + 2·N·P)``. For ``mixer_mlp`` shapes a layer is its mixer
    (:func:`mixer_flops`) plus its FFN (:func:`ffn_flops`).
    """
    if shape.mixer_mlp and kind in ("L", "*", "C"):
        return mixer_flops(shape, kind, tokens, kv_tokens) + ffn_flops(shape, tokens)
    return mixer_flops(shape, kind, tokens, kv_tokens)


def ffn_flops(shape: ModelShape, tokens: int) -> float:
    """SwiGLU FFN of a mixer layer (``mixer_mlp`` shapes): three matmuls, dense or the MoE's active experts."""
    width = (shape.moe_top_k * shape.moe_intermediate_size + shape.moe_shared_intermediate_size
             if shape.moe_top_k else shape.mlp_intermediate_size)
    return float(3 * 2 * tokens * shape.hidden_size * width)


def mixer_flops(shape: ModelShape, kind: str, tokens: int, kv_tokens: int | None = None) -> float:
    """Forward FLOPs of a layer's token mixer alone (the whole layer for ``M``, ``-``, ``E``).

    Gated DeltaNet (``L``): projections ``[q, k, v]``, ``z``, ``b``, ``a`` and out, the conv, and the
    chunked delta rule ``2·n·Hv·(C·(2·dk + dv) + 3·dk·dv)`` (within chunks of ``C``: ``K Kᵀ``,
    ``Q Kᵀ`` and ``A·V``; per token three ``dk × dv`` state products). Short conv (``C``, LFM2):
    ``in_proj`` to ``3h``, depthwise conv, ``out_proj``.
    """
    n, h = tokens, shape.hidden_size
    if kind == "L":
        Hk, Hv, dk, dv = (shape.linear_num_key_heads, shape.linear_num_value_heads, shape.linear_key_head_dim,
                          shape.linear_value_head_dim)
        kd, vd = Hk * dk, Hv * dv
        proj = 2 * n * h * (2 * kd + 2 * vd + 2 * Hv) + 2 * n * vd * h
        conv = 2 * n * (2 * kd + vd) * shape.conv_kernel
        rule = 2 * n * Hv * (min(n, shape.chunk_size) * (2 * dk + dv) + 3 * dk * dv)
        return float(proj + conv + rule)
    if kind == "C":
        return float(2 * n * h * 3 * h + 2 * n * h * h + 2 * n * h * shape.conv_kernel)
    if kind == "M":
        I, G, N, H, P = (shape.mamba_intermediate, shape.n_groups, shape.ssm_state_size, shape.mamba_num_heads,
                         shape.mamba_head_dim)
        proj = 2 * n * h * (2 * I + 2 * G * N + H) + 2 * n * I * h
        conv = 2 * n * (I + 2 * G * N) * shape.conv_kernel
        ssd = 2 * n * H * (min(n, shape.chunk_size) * (N + P) / 2 + 2 * N * P)
        return float(proj + conv + ssd)
    if kind == "*":
        kv = n if kv_tokens is None else kv_tokens
        Hq, Hk, d = shape.num_attention_heads, shape.num_kv_heads, shape.head_dim
        q_out = Hq * d * (2 if shape.attn_output_gate else 1)
        proj = 2 * n * h * (q_out + 2 * Hk * d) + 2 * n * Hq * d * h
        causal_pairs = n * kv - n * (n - 1) / 2 if kv >= n else n * kv / 2
        scores = 2 * 2 * Hq * d * causal_pairs
        return float(proj + scores)
    if kind == "-":
        return float(2 * 2 * n * h * shape.mlp_intermediate_size)
    if kind == "E":
        experts = shape.moe_top_k * shape.moe_intermediate_size + shape.moe_shared_intermediate_size
        return float(2 * 2 * n * h * experts)
    if kind == "P":  # both mixers on every token
        return mixer_flops(shape, "M", tokens) + mixer_flops(shape, "*", tokens, kv_tokens)
    if kind == "S":  # Mamba2 + the shared block: attention on 2h-wide input, gated MLP, output linear
        kv = n if kv_tokens is None else kv_tokens
        Hq, Hk, d = shape.num_attention_heads, shape.num_kv_heads, shape.head_dim
        proj = 2 * n * (2 * h) * (Hq * d + 2 * Hk * d) + 2 * n * Hq * d * h
        causal_pairs = n * kv - n * (n - 1) / 2 if kv >= n else n * kv / 2
        mlp = 3 * 2 * n * h * shape.mlp_intermediate_size
        return mixer_flops(shape, "M", tokens) + float(proj + 2 * 2 * Hq * d * causal_pairs + mlp + 2 * n * h * h)
    if kind == "A":  # Mamba1: in/x/dt/out projections, conv, and the selective scan (~6 FLOPs per d, N, token)
        D, N, R = shape.mamba_intermediate, shape.ssm_state_size, shape.mamba_dt_rank
        proj = 2 * n * h * 2 * D + 2 * n * D * (R + 2 * N) + 2 * n * R * D + 2 * n * D * h
        return float(proj + 2 * n * D * shape.conv_kernel + 6 * n * D * N)
    raise ConfigError(f"unknown layer kind {kind!r}")


def prefill_flops(shape: ModelShape, layout: TokenLayout, visual_per_layer=None) -> float:
    """Total prefill FLOPs; ``visual_per_layer[i]`` visual tokens enter layer ``i`` (default: all)."""
    counts = visual_per_layer if visual_per_layer is not None else [layout.visual] * shape.num_layers
    if len(counts) != shape.num_layers:
        raise ConfigError(f"visual_per_layer has {len(counts)} entries, the shape {shape.num_layers} layers")
    return sum(layer_flops(shape, k, layout.text + v) for k, v in zip(shape.layer_kinds, counts))
