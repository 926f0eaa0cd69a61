"""transformers NemotronH (``nemotron_h``): one mixer per block, no RoPE."""

from __future__ import annotations

from .base import AttentionParts, HybridAdapter, Mamba2Parts, register_adapter

# transformers 5.10 used "mamba"/"attention"; 5.17+ use the *_attention names.
_LETTER = {
    "linear_attention": "M", "mamba": "M",
    "full_attention": "*", "attention": "*",
    "mlp": "-", "moe": "E",
}


@register_adapter("nemotron_h")
class NemotronHAdapter(HybridAdapter):
    decoder_classes = ("NemotronHModel",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "mamba_num_heads",
        "mamba_head_dim", "n_groups", "ssm_state_size", "conv_kernel", "intermediate_size",
        "moe_intermediate_size", "n_routed_experts", "vocab_size",
    )

    @property
    def layers(self):
        return list(self.decoder.layers)

    @property
    def layer_kinds(self) -> str:
        return "".join(_LETTER[layer.block_type] for layer in self.decoder.layers)

    def attention_parts(self, layer_idx):
        attn = self.decoder.layers[layer_idx].mixer
        return AttentionParts(
            module=attn, q_proj=attn.q_proj, k_proj=attn.k_proj,
            num_heads=self.config.num_attention_heads, num_kv_heads=self.config.num_key_value_heads,
            head_dim=attn.head_dim, scaling=attn.scaling, rotary=None,
        )

    def mamba2_parts(self, layer_idx):
        return Mamba2Parts.from_mixer(self.decoder.layers[layer_idx].mixer)
