"""transformers Qwen3.5 (``qwen3_5_text``, the language model of ``Qwen3_5ForConditionalGeneration``).

Every layer is a mixer plus its MLP: Gated DeltaNet (``L``) or gated softmax attention (``*``)
with QK-norm and partial, 3-D (M-RoPE) rotary embeddings. ``q_proj`` packs ``[q, gate]`` per head.
The decoder receives M-RoPE's ``(cos, sin)`` per token ``(b, L, rotary_dim)`` and the text
positions ``(b, L)``: both are sliced per token, so kept tokens keep their original (3-D) positions.
"""

from __future__ import annotations

from .base import AttentionParts, GatedDeltaNetParts, HybridAdapter, register_adapter

__all__ = ["Qwen3_5Adapter", "deltanet_parts_of", "packed_query_selector"]


def packed_query_selector(head_dim: int):
    """``q_proj`` output ``(b, n, H·2d)`` packing ``[q_h, gate_h]`` per head → the queries ``(b, n, H·d)``."""

    def select(out):
        b, n, _ = out.shape
        return out.view(b, n, -1, 2 * head_dim)[..., :head_dim].reshape(b, n, -1)

    return select


def _rotary(q, k, cos, sin):
    from transformers.models.qwen3_5.modeling_qwen3_5 import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin)


class QwenGatedAttentionMixin:
    """Attention parts shared by the Qwen gated-attention families (layers hold ``self_attn``)."""

    @staticmethod
    def _rotary_fn(q, k, cos, sin):
        return _rotary(q, k, cos, sin)

    def attention_parts(self, layer_idx):
        attn = self.decoder.layers[layer_idx].self_attn
        return AttentionParts(
            module=attn, q_proj=attn.q_proj, k_proj=attn.k_proj,
            num_heads=self.config.num_attention_heads, num_kv_heads=self.config.num_key_value_heads,
            head_dim=attn.head_dim, scaling=attn.scaling, rotary=type(self)._rotary_fn,
            q_select=packed_query_selector(attn.head_dim), q_norm=attn.q_norm, k_norm=attn.k_norm,
        )

    @property
    def layers(self):
        return list(self.decoder.layers)

    @property
    def layer_kinds(self) -> str:
        return "".join("L" if t == "linear_attention" else "*" for t in self.config.layer_types)


@register_adapter("qwen3_5_text")
class Qwen3_5Adapter(QwenGatedAttentionMixin, HybridAdapter):
    decoder_classes = ("Qwen3_5TextModel",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "linear_num_key_heads",
        "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim",
        "intermediate_size", "vocab_size", "rope_parameters",
    )
    per_token_kwargs = ("attention_mask", "position_ids", "position_embeddings")

    def deltanet_parts(self, layer_idx):
        return deltanet_parts_of(self.decoder.layers[layer_idx].linear_attn)


def deltanet_parts_of(m) -> GatedDeltaNetParts:
    """The evidence parts of a ``Qwen3_5GatedDeltaNet``: ``in_proj_qkv`` (``[q | k | v]``), ``in_proj_b``, ``in_proj_a``."""
    kd = m.key_dim
    return GatedDeltaNetParts(
        module=m, projections=(m.in_proj_qkv, m.in_proj_b, m.in_proj_a),
        split=lambda outs: (outs[0][..., : 2 * kd], outs[1], outs[2]),
        conv_weight=m.conv1d.weight, conv_bias=m.conv1d.bias, num_k_heads=m.num_k_heads,
        num_v_heads=m.num_v_heads, head_k_dim=m.head_k_dim, dt_bias=m.dt_bias, A_log=m.A_log,
    )
