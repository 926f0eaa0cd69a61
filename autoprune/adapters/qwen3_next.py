"""transformers Qwen3-Next (``qwen3_next``): the Qwen3.5 mixers (Gated DeltaNet ``L``, gated
attention ``*`` with QK-norm and partial RoPE) with MoE or dense MLPs, a language model.

Its DeltaNet projects ``[q, k, v, z]`` and ``[b, a]`` in one matrix each, interleaved per key
head; the mixer's own ``fix_query_key_value_ordering`` un-interleaves them for the evidence.
"""

from __future__ import annotations

import torch

from .base import GatedDeltaNetParts, HybridAdapter, register_adapter
from .qwen3_5 import QwenGatedAttentionMixin

__all__ = ["Qwen3NextAdapter", "deltanet_parts_of"]


def _rotary(q, k, cos, sin):
    from transformers.models.qwen3_next.modeling_qwen3_next import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin)


@register_adapter("qwen3_next")
class Qwen3NextAdapter(QwenGatedAttentionMixin, HybridAdapter):
    decoder_classes = ("Qwen3NextModel",)
    shape_fields = (
        "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "linear_num_key_heads",
        "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim",
        "intermediate_size", "moe_intermediate_size", "num_experts", "num_experts_per_tok",
        "shared_expert_intermediate_size", "vocab_size", "partial_rotary_factor",
    )
    per_token_kwargs = ("attention_mask", "position_ids", "position_embeddings")

    @staticmethod
    def _rotary_fn(q, k, cos, sin):
        return _rotary(q, k, cos, sin)

    def deltanet_parts(self, layer_idx):
        return deltanet_parts_of(self.decoder.layers[layer_idx].linear_attn)


def deltanet_parts_of(m) -> GatedDeltaNetParts:
    """The evidence parts of a ``Qwen3NextGatedDeltaNet`` (``in_proj_qkvz``, ``in_proj_ba``, un-interleaved
    by the mixer's own ``fix_query_key_value_ordering``)."""

    def split(outs):
        q, k, _, _, b, a = m.fix_query_key_value_ordering(outs[0], outs[1])
        n = q.shape[:2]
        return torch.cat([q.reshape(*n, -1), k.reshape(*n, -1)], dim=-1), b, a

    return GatedDeltaNetParts(
        module=m, projections=(m.in_proj_qkvz, m.in_proj_ba), split=split,
        conv_weight=m.conv1d.weight, conv_bias=m.conv1d.bias, num_k_heads=m.num_k_heads,
        num_v_heads=m.num_v_heads, head_k_dim=m.head_k_dim, dt_bias=m.dt_bias, A_log=m.A_log,
    )
