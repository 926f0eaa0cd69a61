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

__all__ = ["ModelShape", "TokenLayout", "PRESETS", "get_shape", "layer_flops", "prefill_flops"]

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
    """Cost-relevant architecture of a hybrid decoder (one letter per layer in ``layer_kinds``)."""

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

    def __post_init__(self):
        if not self.layer_kinds or set(self.layer_kinds) - set("M*-E"):
            raise ConfigError(f"ModelShape.layer_kinds must use letters M * - E, got {self.layer_kinds!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ConfigError(f"ModelShape.{f.name} must be a non-negative integer, got {v!r}")
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
        """From a transformers ``NemotronHConfig`` (or Bamba config)."""
        mt = getattr(config, "model_type", "")
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


# NemotronH-8B (nvidia/Nemotron-H-8B-Base-8K): transformers' NemotronHConfig defaults
# for the widths, and the 52-layer hybrid pattern of the released model.
NEMOTRON_H_8B = ModelShape(
    name="nemotron-h-8b", family="nemotron_h",
    layer_kinds="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
    hidden_size=4096, num_attention_heads=32, num_kv_heads=8, head_dim=128, mamba_num_heads=128,
    mamba_head_dim=64, n_groups=8, ssm_state_size=128, conv_kernel=4, mlp_intermediate_size=21504,
    vocab_size=131072, chunk_size=128,
)

PRESETS: dict[str, ModelShape] = {NEMOTRON_H_8B.name: NEMOTRON_H_8B}


def get_shape(name: str) -> ModelShape:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model shape {name!r}; known: {sorted(PRESETS)}") from None


def layer_flops(shape: ModelShape, kind: str, tokens: int, kv_tokens: int | None = None) -> float:
    """Forward FLOPs of one layer of ``kind`` (a layer-kind letter) over ``tokens`` tokens.

    Attention is causal prefill: ``tokens`` queries over ``kv_tokens`` (default: the same)
    keys, half the score matrix. SSD uses the chunked algorithm's count
    ``2·n·H·(chunk·(N+P)/2 + 2·N·P)``.
    """
    n, h = tokens, shape.hidden_size
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
        proj = 2 * n * h * (Hq * d + 2 * Hk * d) + 2 * n * Hq * d * h
        causal_pairs = n * kv - n * (n - 1) / 2 if kv >= n else n * kv / 2
        scores = 2 * 2 * Hq * d * causal_pairs
        return float(proj + scores)
    if kind == "-":
        return float(2 * 2 * n * h * shape.mlp_intermediate_size)
    if kind == "E":
        experts = shape.moe_top_k * shape.moe_intermediate_size + shape.moe_shared_intermediate_size
        return float(2 * 2 * n * h * experts)
    raise ConfigError(f"unknown layer kind {kind!r}")


def prefill_flops(shape: ModelShape, layout: TokenLayout, visual_per_layer=None) -> float:
    """Total prefill FLOPs; ``visual_per_layer[i]`` visual tokens enter layer ``i`` (default: all)."""
    counts = visual_per_layer if visual_per_layer is not None else [layout.visual] * shape.num_layers
    if len(counts) != shape.num_layers:
        raise ConfigError(f"visual_per_layer has {len(counts)} entries, the shape {shape.num_layers} layers")
    return sum(layer_flops(shape, k, layout.text + v) for k, v in zip(shape.layer_kinds, counts))
