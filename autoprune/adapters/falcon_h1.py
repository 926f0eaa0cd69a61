"""transformers Falcon-H1 (``falcon_h1``): attention and Mamba2 run *in parallel* on the same
normalised input of every layer (kind ``P``), their outputs summed; RoPE on attention.

µP multipliers the evidence must follow: ``key_multiplier`` scales the keys (folded into the
score scaling: RoPE is linear), ``mup_vector`` scales ``in_proj``'s output before it is split
(:attr:`Mamba2Parts.in_proj_scale`); ``ssm_in_multiplier`` and ``attention_in_multiplier`` act
on the mixers' inputs, which the hooks see already scaled. Mamba layers get their own
``mamba_attention_mask``, sliced like the attention mask.
"""

from __future__ import annotations

from .base import AttentionParts, HybridAdapter, Mamba2Parts, register_adapter


def _rotary(q, k, cos, sin):
    from transformers.models.falcon_h1.modeling_falcon_h1 import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin)


@register_adapter("falcon_h1")
class FalconH1Adapter(HybridAdapter):
    decoder_classes = ("FalconH1Model",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "mamba_n_heads", "mamba_d_head",
        "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_d_ssm", "intermediate_size",
        "vocab_size",
    )
    per_token_kwargs = ("attention_mask", "mamba_attention_mask", "position_ids", "position_embeddings")

    @property
    def layers(self):
        return list(self.decoder.layers)

    @property
    def layer_kinds(self) -> str:
        return "P" * len(self.decoder.layers)

    def attention_parts(self, layer_idx):
        attn = self.decoder.layers[layer_idx].self_attn
        return AttentionParts(
            module=attn, q_proj=attn.q_proj, k_proj=attn.k_proj,
            num_heads=self.config.num_attention_heads, num_kv_heads=self.config.num_key_value_heads,
            head_dim=attn.head_dim, scaling=attn.scaling * float(attn.key_multiplier), rotary=_rotary,
        )

    def mamba2_parts(self, layer_idx):
        return Mamba2Parts.from_mixer(self.decoder.layers[layer_idx].mamba)
