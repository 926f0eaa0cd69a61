"""transformers Jamba (``jamba``): Mamba1 layers (kind ``A``) and attention layers (no position
encoding), each followed by an MLP or (every other layer in the released models) an MoE."""

from __future__ import annotations

from .base import AttentionParts, HybridAdapter, Mamba1Parts, register_adapter


@register_adapter("jamba")
class JambaAdapter(HybridAdapter):
    decoder_classes = ("JambaModel",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "mamba_d_state", "mamba_d_conv",
        "mamba_expand", "mamba_dt_rank", "intermediate_size", "num_experts", "num_experts_per_tok",
        "expert_layer_period", "expert_layer_offset", "vocab_size",
    )

    @property
    def layers(self):
        return list(self.decoder.layers)

    @property
    def layer_kinds(self) -> str:
        return "".join("A" if t == "mamba" else "*" for t in self.config.layers_block_type)

    def attention_parts(self, layer_idx):
        attn = self.decoder.layers[layer_idx].self_attn
        return AttentionParts(
            module=attn, q_proj=attn.q_proj, k_proj=attn.k_proj,
            num_heads=self.config.num_attention_heads, num_kv_heads=self.config.num_key_value_heads,
            head_dim=attn.head_dim, scaling=attn.scaling, rotary=None,
        )

    def mamba1_parts(self, layer_idx):
        return Mamba1Parts.from_jamba_mixer(self.decoder.layers[layer_idx].mamba)
