"""Tiny random-weight hybrids of the supported families, and an independent oracle.

The oracle runs the decoder layers by hand and deletes tokens *physically* at the
given layers, building fresh inputs for the shorter sequence; it shares no code
with ``autoprune.runtime``.
"""

from __future__ import annotations

import torch

VOCAB = 64


def tiny_nemotron_h(seed=0, attn="sdpa", dtype=torch.float32, kinds=("linear_attention", "mlp", "full_attention",
                                                                     "linear_attention", "moe", "full_attention",
                                                                     "linear_attention", "mlp")):
    from transformers import NemotronHConfig, NemotronHForCausalLM

    torch.manual_seed(seed)
    cfg = NemotronHConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=len(kinds), layers_block_type=list(kinds),
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, mamba_num_heads=4, mamba_head_dim=8,
        n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=16, intermediate_size=48,
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, moe_shared_expert_intermediate_size=16,
        n_group=1, topk_group=1, use_cache=False, attn_implementation=attn,
    )
    model = NemotronHForCausalLM(cfg).to(dtype).eval()
    _randomise_ssm(model)
    return model


def tiny_bamba(seed=0, attn="sdpa", dtype=torch.float32):
    from transformers import BambaConfig, BambaForCausalLM

    torch.manual_seed(seed)
    cfg = BambaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
        attn_layer_indices=[1, 4], mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=8,
        mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16, intermediate_size=48, use_cache=False,
        attn_implementation=attn, max_position_embeddings=512,
    )
    model = BambaForCausalLM(cfg).to(dtype).eval()
    _randomise_ssm(model)
    return model


def _randomise_ssm(model):
    # The default init gives every head the same dt and A (arange); spread them so
    # that tests see per-head differences.
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("dt_bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 - 1.0)
            elif name.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=g) * 2.0 - 1.0)
            elif name.endswith(".D") or name.endswith("mixer.D") or name.endswith("mamba.D"):
                p.copy_(torch.randn(p.shape, generator=g))


def decoder(model):
    return model.model


def oracle_forward(model, input_ids, deletions: dict[int, torch.Tensor], extra_ids=None, inputs_embeds=None):
    """Logits of ``model`` when, before layer ``i``, only the tokens at original positions
    ``deletions[i]`` (plus all non-visual ones, given by the caller in that set) remain.

    ``deletions[i]``: (b, n_i) original positions that *enter* layer ``i``. Positions
    stay original (RoPE families); no cache, no padding; attention layers get a causal
    mask built for the shortened sequence.
    """
    dec = decoder(model)
    emb = dec.embeddings if hasattr(dec, "embeddings") else dec.embed_tokens
    h = emb(input_ids) if inputs_embeds is None else inputs_embeds
    b, L = h.shape[:2]
    pos = torch.arange(L, device=h.device)[None].expand(b, -1)
    for i, layer in enumerate(dec.layers):
        if i in deletions:
            keep = deletions[i]
            cur = torch.searchsorted(pos.contiguous(), keep.contiguous())
            h = torch.gather(h, 1, cur[..., None].expand(-1, -1, h.shape[-1]))
            pos = keep
        mask = None
        if layer.block_type == "full_attention":  # a fresh causal mask for the shorter sequence
            n = h.shape[1]
            mask = torch.full((n, n), torch.finfo(h.dtype).min, dtype=h.dtype, device=h.device).triu(1)[None, None]
        kw = dict(attention_mask=mask, position_ids=pos)
        if hasattr(dec, "rotary_emb"):
            kw["position_embeddings"] = dec.rotary_emb(h, position_ids=pos)
        out = layer(h, **kw)
        h = out[0] if isinstance(out, tuple) else out
    norm = dec.norm_f if hasattr(dec, "norm_f") else dec.final_layernorm
    return model.lm_head(norm(h)).float(), pos


# The layout the runtime tests share: L tokens, visual ones at [V0, V1) (28), then 8 query tokens.
L, V0, V1 = 40, 4, 32


def inputs(b=2, seed=0):
    """Random ids ``(b, L)`` and the visual mask of the shared layout."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (b, L), generator=g)
    vm = torch.zeros(b, L, dtype=torch.bool)
    vm[:, V0:V1] = True
    return ids, vm


def progressive(model, **scorer):
    """Two full layers, two at 0.5, the rest at 0.25 (28 -> 14 -> 7 visual tokens)."""
    from autoprune import Schedule, ScorerConfig
    from autoprune.adapters import get_adapter

    ad = get_adapter(model)
    n = ad.num_layers
    keep = [1.0, 1.0] + [0.5] * 2 + [0.25] * (n - 4)
    return Schedule(keep=tuple(keep), model=ad.signature(), min_tokens=2, scorer=ScorerConfig(**scorer))
