"""transformers GraniteMoeHybrid (``granitemoehybrid``, Granite 4.0-H): in each layer a Mamba2
mixer *or* attention, then MoE + shared MLP; attention scaled by ``attention_multiplier``, no
position encoding unless ``position_embedding_type == "rope"``."""

from __future__ import annotations

from .base import AttentionParts, HybridAdapter, Mamba2Parts, register_adapter


def _rotary(q, k, cos, sin):
    from transformers.models.granitemoehybrid.modeling_granitemoehybrid import (
        apply_rotary_pos_emb,
    )

    return apply_rotary_pos_emb(q, k, cos, sin)


@register_adapter("granitemoehybrid")
class GraniteMoeHybridAdapter(HybridAdapter):
    decoder_classes = ("GraniteMoeHybridModel",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "mamba_n_heads", "mamba_d_head",
        "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_expand", "intermediate_size",
        "shared_intermediate_size", "num_local_experts", "num_experts_per_tok", "position_embedding_type",
        "vocab_size",
    )
    per_token_kwargs = ("attention_mask", "position_ids", "position_embeddings")

    @property
    def layers(self):
        return list(self.decoder.layers)

    @property
    def layer_kinds(self) -> str:
        return "".join("M" if layer.block_type == "linear_attention" else "*" for layer in self.decoder.layers)

    def attention_parts(self, layer_idx):
        attn = self.decoder.layers[layer_idx].self_attn
        rope = getattr(self.decoder, "rotary_emb", None) is not None
        return AttentionParts(
            module=attn, q_proj=attn.q_proj, k_proj=attn.k_proj,
            num_heads=self.config.num_attention_heads, num_kv_heads=self.config.num_key_value_heads,
            head_dim=attn.head_dim, scaling=attn.scaling, rotary=_rotary if rope else None,
        )

    def mamba2_parts(self, layer_idx):
        return Mamba2Parts.from_mixer(self.decoder.layers[layer_idx].mamba)
