"""transformers Zamba2 (``zamba2``): Mamba2 layers (``M``) and hybrid layers (``S``) that first
run a weight-tied *shared* attention block on ``concat(hidden, original embeddings)`` (2×hidden
wide; its output, through a per-layer linear, is added to the input of the layer's Mamba2).

Layers are called positionally: ``layer(hidden, original_hidden_states, layer_idx,
linear_attention_mask, full_attention_mask, ...)``; arguments 1, 3 and 4 follow the kept tokens.
Evidence of an ``S`` layer blends its shared attention's and its Mamba2's. The attention's q/k are
those of its 2×hidden input: ``q_proj``/``k_proj`` outputs, or, with ``use_shared_attention_adapter``
(per-layer LoRA adapters added to q/k), recomputed from the normalised concatenated input the
attention is called with (one extra k projection per evidence layer).
"""

from __future__ import annotations

from .base import AttentionParts, HybridAdapter, Mamba2Parts, register_adapter


def _rotary(q, k, cos, sin):
    from transformers.models.zamba2.modeling_zamba2 import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin)


def _projection(proj, adapter):
    return lambda x: proj(x) + adapter(x)


@register_adapter("zamba2")
class Zamba2Adapter(HybridAdapter):
    decoder_classes = ("Zamba2Model",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "attention_head_dim", "n_mamba_heads",
        "mamba_headdim", "mamba_ngroups", "mamba_d_state", "mamba_d_conv", "mamba_expand", "intermediate_size",
        "num_mem_blocks", "use_shared_attention_adapter", "adapter_rank", "use_mem_rope", "vocab_size",
    )
    per_token_kwargs = ("position_ids", "position_embeddings", "attention_mask", "causal_mask",
                        "original_hidden_states")
    per_token_args = (1, 3, 4)

    @property
    def layers(self):
        return list(self.decoder.layers)

    @property
    def layer_kinds(self) -> str:
        return "".join("S" if t == "hybrid" else "M" for t in self.config.layers_block_type)

    def attention_parts(self, layer_idx):
        attn = self.decoder.layers[layer_idx].shared_transformer.self_attn
        project_q = project_k = None
        if self.config.use_shared_attention_adapter:
            # q/k = projection + the layer's own LoRA adapter: recomputed from the attention's input
            slot = attn.layer_dic[layer_idx]
            project_q = _projection(attn.q_proj, attn.linear_q_adapter_list[slot])
            project_k = _projection(attn.k_proj, attn.linear_k_adapter_list[slot])
        return AttentionParts(
            module=attn, q_proj=attn.q_proj, k_proj=attn.k_proj,
            num_heads=self.config.num_attention_heads, num_kv_heads=self.config.num_key_value_heads,
            head_dim=attn.head_dim, scaling=attn.scaling, rotary=_rotary if self.config.use_mem_rope else None,
            project_q=project_q, project_k=project_k,
        )

    def mamba2_parts(self, layer_idx):
        layer = self.decoder.layers[layer_idx]
        mamba = layer.mamba_decoder if hasattr(layer, "mamba_decoder") else layer
        return Mamba2Parts.from_mixer(mamba.mamba)
