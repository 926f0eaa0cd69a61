"""ModelShape conversions of GraniteMoeHybrid, Falcon-H1, Zamba2 and Jamba (both ways).

``from_config``: the cost-relevant widths of a transformers config (``autoprune profile --model``,
the hf source's latency); ``to_config``: a transformers config of a shape, for random-weight
benchmarks (``benchmarks/prefill_speed.py --shape``). Registered with
:func:`autoprune.cost.shapes.register_shape_family` when :mod:`autoprune.cost` is imported.
"""

from __future__ import annotations

from .shapes import register_shape_family

__all__ = ["FAMILIES"]


def _granite_from(cls, c, name, dtype):
    kinds = "".join("M" if t == "linear_attention" else "*" for t in c.layers_block_type)
    experts = (c.num_local_experts or 0) > 0
    return cls(
        name=name or f"granitemoehybrid-{c.hidden_size}x{len(kinds)}", family="granitemoehybrid", layer_kinds=kinds,
        hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads, num_kv_heads=c.num_key_value_heads,
        head_dim=c.hidden_size // c.num_attention_heads, mamba_num_heads=c.mamba_n_heads,
        mamba_head_dim=c.mamba_d_head, n_groups=c.mamba_n_groups, ssm_state_size=c.mamba_d_state,
        conv_kernel=c.mamba_d_conv, mlp_intermediate_size=c.intermediate_size, vocab_size=c.vocab_size,
        chunk_size=c.mamba_chunk_size, moe_intermediate_size=c.intermediate_size if experts else 0,
        moe_top_k=c.num_experts_per_tok if experts else 0, moe_shared_intermediate_size=c.shared_intermediate_size,
        dtype=dtype,
    )


def _granite_to(shape, **kw):
    from transformers import GraniteMoeHybridConfig

    args = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        layer_types=["attention" if k == "*" else "mamba" for k in shape.layer_kinds],
        num_attention_heads=shape.num_attention_heads, num_key_value_heads=shape.num_kv_heads,
        mamba_n_heads=shape.mamba_num_heads, mamba_d_head=shape.mamba_head_dim, mamba_n_groups=shape.n_groups,
        mamba_d_state=shape.ssm_state_size, mamba_d_conv=shape.conv_kernel,
        mamba_expand=shape.mamba_intermediate // shape.hidden_size, mamba_chunk_size=shape.chunk_size,
        intermediate_size=shape.moe_intermediate_size or shape.mlp_intermediate_size,
        # the expert count is not part of the shape (the cost follows top-k): Granite-4.0-H-Small's 72
        num_local_experts=72 if shape.moe_top_k else 0, num_experts_per_tok=shape.moe_top_k or 1,
        shared_intermediate_size=shape.moe_shared_intermediate_size or shape.mlp_intermediate_size,
    )
    args.update(kw)
    return GraniteMoeHybridConfig(**args)


def _falcon_from(cls, c, name, dtype):
    return cls(
        name=name or f"falcon_h1-{c.hidden_size}x{c.num_hidden_layers}", family="falcon_h1",
        layer_kinds="P" * c.num_hidden_layers, hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        mamba_num_heads=c.mamba_n_heads, mamba_head_dim=c.mamba_d_head, n_groups=c.mamba_n_groups,
        ssm_state_size=c.mamba_d_state, conv_kernel=c.mamba_d_conv, mlp_intermediate_size=c.intermediate_size,
        vocab_size=c.vocab_size, chunk_size=c.mamba_chunk_size, dtype=dtype,
    )


def _falcon_to(shape, **kw):
    from transformers import FalconH1Config

    args = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_attention_heads, num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim, mamba_d_ssm=shape.mamba_intermediate, mamba_n_heads=shape.mamba_num_heads,
        mamba_d_head=shape.mamba_head_dim, mamba_n_groups=shape.n_groups, mamba_d_state=shape.ssm_state_size,
        mamba_d_conv=shape.conv_kernel, mamba_chunk_size=shape.chunk_size,
        intermediate_size=shape.mlp_intermediate_size,
    )
    args.update(kw)
    return FalconH1Config(**args)


def _zamba2_from(cls, c, name, dtype):
    kinds = "".join("S" if t == "hybrid" else "M" for t in c.layers_block_type)
    return cls(
        name=name or f"zamba2-{c.hidden_size}x{len(kinds)}", family="zamba2", layer_kinds=kinds,
        hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads, num_kv_heads=c.num_key_value_heads,
        head_dim=c.attention_head_dim, mamba_num_heads=c.n_mamba_heads, mamba_head_dim=c.mamba_headdim,
        n_groups=c.mamba_ngroups, ssm_state_size=c.mamba_d_state, conv_kernel=c.mamba_d_conv,
        mlp_intermediate_size=c.intermediate_size, vocab_size=c.vocab_size, chunk_size=c.chunk_size, dtype=dtype,
    )


def _zamba2_to(shape, **kw):
    from transformers import Zamba2Config

    args = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        layers_block_type=["hybrid" if k == "S" else "mamba" for k in shape.layer_kinds],
        num_attention_heads=shape.num_attention_heads, num_key_value_heads=shape.num_kv_heads,
        n_mamba_heads=shape.mamba_num_heads, mamba_ngroups=shape.n_groups, mamba_d_state=shape.ssm_state_size,
        mamba_d_conv=shape.conv_kernel, mamba_expand=shape.mamba_intermediate // shape.hidden_size,
        chunk_size=shape.chunk_size, intermediate_size=shape.mlp_intermediate_size, num_mem_blocks=2,
        use_mem_rope=True,
    )
    args.update(kw)
    return Zamba2Config(**args)


def _jamba_from(cls, c, name, dtype):
    kinds = "".join("A" if t == "mamba" else "*" for t in c.layers_block_type)
    D = c.mamba_expand * c.hidden_size
    return cls(
        name=name or f"jamba-{c.hidden_size}x{len(kinds)}", family="jamba", layer_kinds=kinds,
        hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads, num_kv_heads=c.num_key_value_heads,
        head_dim=c.hidden_size // c.num_attention_heads, mamba_num_heads=D, mamba_head_dim=1, n_groups=1,
        ssm_state_size=c.mamba_d_state, conv_kernel=c.mamba_d_conv, mlp_intermediate_size=c.intermediate_size,
        vocab_size=c.vocab_size, mamba_dt_rank=c.mamba_dt_rank, moe_intermediate_size=c.intermediate_size,
        moe_top_k=c.num_experts_per_tok if c.num_experts > 1 else 0, dtype=dtype,
    )


def _jamba_to(shape, **kw):
    from transformers import JambaConfig

    attn = [i for i, k in enumerate(shape.layer_kinds) if k == "*"]
    period = attn[1] - attn[0] if len(attn) > 1 else shape.num_layers
    args = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_attention_heads, num_key_value_heads=shape.num_kv_heads,
        attn_layer_period=period, attn_layer_offset=attn[0] if attn else shape.num_layers,
        mamba_d_state=shape.ssm_state_size, mamba_d_conv=shape.conv_kernel,
        mamba_expand=shape.mamba_intermediate // shape.hidden_size, mamba_dt_rank=shape.mamba_dt_rank or "auto",
        intermediate_size=shape.mlp_intermediate_size,
    )
    args.update(kw)
    return JambaConfig(**args)


FAMILIES = {"granitemoehybrid": (_granite_from, _granite_to), "falcon_h1": (_falcon_from, _falcon_to),
            "zamba2": (_zamba2_from, _zamba2_to), "jamba": (_jamba_from, _jamba_to)}
for _mt, (_from, _to) in FAMILIES.items():
    register_shape_family(_mt, _from, _to)
