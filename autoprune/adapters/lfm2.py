"""transformers LFM2 (``lfm2``, the language model of ``Lfm2VlForConditionalGeneration``).

Every layer is a mixer plus its MLP: a gated short convolution (``C``) or grouped-query
attention (``*``) with per-head ``q_layernorm``/``k_layernorm`` and RoPE.

Short convolutions give no query-conditioned evidence: a depthwise conv of kernel 3 mixes each
token with its two predecessors only, so the query rows (after the video) never read a visual
token through it. Those layers compute nothing for the score; the importance state passes
through them unchanged and prune points after them use the attention layers' evidence.
"""

from __future__ import annotations

from .base import AttentionParts, HybridAdapter, register_adapter

__all__ = ["Lfm2Adapter"]


def _rotary(q, k, cos, sin):
    from transformers.models.lfm2.modeling_lfm2 import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin)


@register_adapter("lfm2")
class Lfm2Adapter(HybridAdapter):
    decoder_classes = ("Lfm2Model",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "conv_L_cache", "intermediate_size",
        "block_ff_dim", "block_auto_adjust_ff_dim", "block_multiple_of", "block_ffn_dim_multiplier", "vocab_size",
    )
    per_token_kwargs = ("attention_mask", "position_ids", "position_embeddings")

    @property
    def layers(self):
        return list(self.decoder.layers)

    @property
    def layer_kinds(self) -> str:
        return "".join("*" if layer.is_attention_layer else "C" for layer in self.decoder.layers)

    def attention_parts(self, layer_idx):
        attn = self.decoder.layers[layer_idx].self_attn
        return AttentionParts(
            module=attn, q_proj=attn.q_proj, k_proj=attn.k_proj,
            num_heads=self.config.num_attention_heads, num_kv_heads=self.config.num_key_value_heads,
            head_dim=attn.head_dim, scaling=attn.scaling, rotary=_rotary,
            q_norm=attn.q_layernorm, k_norm=attn.k_layernorm,
        )
