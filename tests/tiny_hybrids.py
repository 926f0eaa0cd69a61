"""Tiny random-weight models of the GraniteMoeHybrid, Falcon-H1, Zamba2 and Jamba families, and an
oracle per family that runs its decoder layers by hand, deleting tokens *physically*.

Each oracle builds fresh inputs for the shorter sequence the way the family's own model does
(a causal mask, RoPE at the kept tokens' original positions, Zamba2's original embeddings, the
family's multipliers on embeddings and logits); it shares no code with ``autoprune.runtime``.
The configs use non-trivial multipliers (Granite's attention/residual/embedding multipliers,
Falcon-H1's µP vector and key multiplier) so that evidence that ignored one would be caught.
"""

from __future__ import annotations

import torch
from tiny_models import VOCAB


def randomise_ssm(model, seed=1234):
    """Spread the SSM parameters (the default init gives every head the same dt and A)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("dt_bias", "dt_proj.bias")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 - 1.0)
            elif name.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=g) * 2.0 - 1.0)
            elif name.endswith(".D"):
                p.copy_(torch.randn(p.shape, generator=g))


# torch's grouped matmul (MoE experts) has no float64 kernel: float64 tests pass experts=0 (dense).
def tiny_granitemoehybrid(seed=0, attn="sdpa", dtype=torch.float32, rope=False, experts=4, vocab=VOCAB):
    from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM

    torch.manual_seed(seed)
    cfg = GraniteMoeHybridConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=16, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, layer_types=["mamba", "attention", "mamba", "mamba", "attention"],
        mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
        mamba_chunk_size=16, num_local_experts=experts, num_experts_per_tok=2, shared_intermediate_size=24,
        embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3, logits_scaling=1.5,
        position_embedding_type="rope" if rope else None, max_position_embeddings=512, use_cache=False,
        attn_implementation=attn,
    )
    model = GraniteMoeHybridForCausalLM(cfg).to(dtype).eval()
    randomise_ssm(model)
    return model


def tiny_falcon_h1(seed=0, attn="sdpa", dtype=torch.float32, vocab=VOCAB):
    from transformers import FalconH1Config, FalconH1ForCausalLM

    torch.manual_seed(seed)
    cfg = FalconH1Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, mamba_d_ssm=48, mamba_n_heads=4, mamba_d_head=12, mamba_n_groups=2,
        mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16, mamba_rms_norm=True,
        key_multiplier=0.7, attention_in_multiplier=1.3, attention_out_multiplier=0.8,
        ssm_multipliers=[0.9, 1.2, 0.6, 1.4, 0.8], ssm_in_multiplier=1.1, ssm_out_multiplier=0.9,
        mlp_multipliers=[1.2, 0.7], embedding_multiplier=1.5, lm_head_multiplier=0.8,
        max_position_embeddings=512, use_cache=False, attn_implementation=attn,
    )
    model = FalconH1ForCausalLM(cfg).to(dtype).eval()
    randomise_ssm(model)
    return model


def tiny_zamba2(seed=0, attn="sdpa", dtype=torch.float32, vocab=VOCAB, adapters=True):
    from transformers import Zamba2Config, Zamba2ForCausalLM

    torch.manual_seed(seed)
    cfg = Zamba2Config(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=6,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "mamba", "hybrid"],
        mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_ngroups=2, n_mamba_heads=4, chunk_size=16,
        intermediate_size=48, num_attention_heads=4, num_key_value_heads=4, num_mem_blocks=2,
        use_shared_attention_adapter=adapters, adapter_rank=4, use_mem_rope=True, max_position_embeddings=512,
        use_cache=False, attn_implementation=attn,
    )
    model = Zamba2ForCausalLM(cfg).to(dtype).eval()
    randomise_ssm(model)
    return model


def tiny_jamba(seed=0, attn="sdpa", dtype=torch.float32, experts=4, vocab=VOCAB):
    from transformers import JambaConfig, JambaForCausalLM

    torch.manual_seed(seed)
    cfg = JambaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2, attn_layer_period=3, attn_layer_offset=1, expert_layer_period=2,
        expert_layer_offset=1, num_experts=max(1, experts), num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4,
        mamba_expand=2, mamba_dt_rank=4, max_position_embeddings=512, use_cache=False,
        attn_implementation=attn,
    )
    model = JambaForCausalLM(cfg).to(dtype).eval()
    randomise_ssm(model)
    return model


def save_checkpoint(folder, family: str, seed: int = 0):
    """A tiny ``family`` causal LM with the word-level test tokenizer, written with ``save_pretrained``."""
    from hf_checkpoints import VOCAB as TOKENIZER_VOCAB
    from hf_checkpoints import write_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(folder)
    FAMILIES[family](seed=seed, vocab=TOKENIZER_VOCAB).save_pretrained(folder)
    return folder


FAMILIES = {"granitemoehybrid": tiny_granitemoehybrid, "falcon_h1": tiny_falcon_h1, "zamba2": tiny_zamba2,
            "jamba": tiny_jamba}


# ------------------------------------------------------------------------ oracle
def _causal(n, dtype, device):
    return torch.full((n, n), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)[None, None]


def _granite_layer(model, i, layer, h, pos, orig):
    dec = model.model
    mask = None if layer.mamba is not None else _causal(h.shape[1], h.dtype, h.device)
    pe = dec.rotary_emb(h, pos) if dec.rotary_emb is not None else None
    return layer(h, attention_mask=mask, position_embeddings=pe)


def _falcon_layer(model, i, layer, h, pos, orig):
    pe = model.model.rotary_emb(h, position_ids=pos)
    return layer(h, attention_mask=_causal(h.shape[1], h.dtype, h.device), mamba_attention_mask=None,
                 position_ids=pos, position_embeddings=pe)[0]


def _zamba2_layer(model, i, layer, h, pos, orig):
    dec = model.model
    pe = dec.rotary_emb(h, position_ids=pos) if model.config.use_mem_rope else None
    return layer(h, orig, i, None, _causal(h.shape[1], h.dtype, h.device), position_embeddings=pe, position_ids=pos)


def _jamba_layer(model, i, layer, h, pos, orig):
    attn = model.config.layers_block_type[i] == "attention"
    return layer(h, attention_mask=_causal(h.shape[1], h.dtype, h.device) if attn else None, position_ids=pos)


def oracle_forward(model, input_ids, deletions: dict[int, torch.Tensor]):
    """Logits of ``model`` when, before layer ``i``, only the tokens at original positions
    ``deletions[i]`` (b, n_i) remain (non-visual ones included by the caller); positions stay
    original; no cache, no padding. Returns ``(logits fp32, positions reaching the last layer)``."""
    mt = model.config.model_type
    dec = model.model
    h = dec.embed_tokens(input_ids)
    if mt in ("granitemoehybrid", "falcon_h1"):
        h = h * dec.embedding_multiplier
    orig = h.clone()  # Zamba2: the embeddings the shared attention reads, deleted alongside
    b, L = h.shape[:2]
    pos = torch.arange(L, device=h.device)[None].expand(b, -1)
    run = {"granitemoehybrid": _granite_layer, "falcon_h1": _falcon_layer, "zamba2": _zamba2_layer,
           "jamba": _jamba_layer}[mt]
    for i, layer in enumerate(dec.layers):
        if i in deletions:
            keep = deletions[i]
            cur = torch.searchsorted(pos.contiguous(), keep.contiguous())
            h = torch.gather(h, 1, cur[..., None].expand(-1, -1, h.shape[-1]))
            orig = torch.gather(orig, 1, cur[..., None].expand(-1, -1, orig.shape[-1]))
            pos = keep
        h = run(model, i, layer, h, pos, orig)
    h = dec.norm(h) if mt == "granitemoehybrid" else dec.final_layernorm(h)
    logits = model.lm_head(h)
    if mt == "granitemoehybrid":
        logits = logits / model.config.logits_scaling
    if mt == "falcon_h1":
        logits = logits * dec.lm_head_multiplier
    return logits.float(), pos
