"""Tiny random-weight Qwen3.5 (VLM, video), Qwen3-Next and LFM2-VL, and an independent oracle.

The oracle runs the decoder layers by hand and deletes tokens *physically* at the given layers,
building fresh inputs for the shorter sequence (a causal mask for it, the per-token RoPE of the
kept tokens' original positions — 3-D for M-RoPE); it shares no code with ``autoprune.runtime``.
"""

from __future__ import annotations

import torch

VOCAB = 64
# Qwen3.5 VLM token ids inside the tiny vocabulary
IMAGE_ID, VIDEO_ID, VSTART_ID, VEND_ID = 60, 61, 62, 63


def _spread(model, seed=1234):
    # The default init gives every DeltaNet head similar gates; spread dt_bias/A_log, and give the
    # zero-initialised (1 + w) norms some spread, so that tests see per-head differences.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("dt_bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 - 1.0)
            elif name.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=g) * 2.0 - 1.5)
            elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(p + 0.2 * torch.randn(p.shape, generator=g))
    return model


def qwen3_5_text_config(attn="sdpa", layers=("linear_attention", "linear_attention", "full_attention",
                                              "linear_attention", "full_attention", "linear_attention")):
    from transformers import Qwen3_5TextConfig

    return Qwen3_5TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=len(layers),
        layer_types=list(layers), num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
        linear_num_value_heads=4, max_position_embeddings=512, use_cache=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                         "mrope_section": [1, 1, 0], "mrope_interleaved": True},
        attn_implementation=attn,
    )


def tiny_qwen3_5_lm(seed=0, attn="sdpa", dtype=torch.float32):
    from transformers import Qwen3_5ForCausalLM

    torch.manual_seed(seed)
    return _spread(Qwen3_5ForCausalLM(qwen3_5_text_config(attn)).to(dtype).eval())


def tiny_qwen3_5_vlm(seed=0, attn="sdpa", dtype=torch.float32):
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    torch.manual_seed(seed)
    text = qwen3_5_text_config(attn).to_dict()
    cfg = Qwen3_5Config(
        text_config=text,
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, in_channels=3, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32,
                           num_position_embeddings=16),
        image_token_id=IMAGE_ID, video_token_id=VIDEO_ID, vision_start_token_id=VSTART_ID,
        vision_end_token_id=VEND_ID,
    )
    cfg._attn_implementation = attn
    return _spread(Qwen3_5ForConditionalGeneration(cfg).to(dtype).eval())


def qwen3_5_video_inputs(b=1, frames=4, grid=4, prefix=3, query=6, seed=0):
    """``input_ids (b, L)``, ``mm_token_type_ids``, ``pixel_values_videos``, ``video_grid_thw`` for a
    Qwen3.5 video prompt ``[prefix]`` then, per tubelet, ``[timestamp][vision_start][tokens][vision_end]``
    (Qwen3.5 separates a video's tubelets by timestamps), then ``[query]``: ``frames/2`` tubelets of
    ``(grid/2)²`` merged tokens each."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = frames // 2, grid, grid
    per = (h // 2) * (w // 2)
    rows = []
    for _ in range(b):
        parts = [torch.randint(0, 50, (prefix,), generator=g)]
        for _ in range(t):
            parts += [torch.randint(0, 50, (1,), generator=g), torch.tensor([VSTART_ID]),
                      torch.full((per,), VIDEO_ID), torch.tensor([VEND_ID])]
        parts.append(torch.randint(0, 50, (query,), generator=g))
        rows.append(torch.cat(parts))
    ids = torch.stack(rows)
    mm = (ids == VIDEO_ID).int() * 2  # 2 = video in mm_token_type_ids
    patch_dim = 3 * 2 * 4 * 4
    pvv = torch.randn(b * t * h * w, patch_dim, generator=g)
    thw = torch.tensor([[t, h, w]] * b)
    return dict(input_ids=ids, mm_token_type_ids=mm, pixel_values_videos=pvv, video_grid_thw=thw)


def tiny_qwen3_next(seed=0, attn="sdpa", dtype=torch.float32, moe=True):
    """``moe=False``: dense MLPs only (torch's grouped matmul of the experts has no float64)."""
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3NextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=6,
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention",
                     "full_attention", "linear_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, linear_conv_kernel_dim=4,
        linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
        num_experts=4 if moe else 0, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16,
        decoder_sparse_step=2, mlp_only_layers=[], max_position_embeddings=512, use_cache=False,
        attn_implementation=attn,
    )
    return _spread(Qwen3NextForCausalLM(cfg).to(dtype).eval())


def tiny_lfm2_vl(seed=0, attn="sdpa", dtype=torch.float32):
    from transformers import Lfm2VlConfig, Lfm2VlForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Lfm2VlConfig(
        text_config=dict(model_type="lfm2", vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, conv_L_cache=3,
                         layer_types=["conv", "conv", "full_attention", "conv", "full_attention", "conv"],
                         max_position_embeddings=512, use_cache=False, block_auto_adjust_ff_dim=False),
        vision_config=dict(model_type="siglip2_vision_model", hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2, num_patches=64, patch_size=4),
        image_token_id=IMAGE_ID, projector_hidden_size=32, downsample_factor=2,
    )
    cfg._attn_implementation = attn
    cfg.text_config._attn_implementation = attn
    return _spread(Lfm2VlForConditionalGeneration(cfg).to(dtype).eval())


def lfm2_vl_image_inputs(b=2, prefix=4, query=8, seed=0, images_per_row=2):
    """``input_ids`` with ``images_per_row`` 8×8-patch images (16 merged tokens each) after a prefix,
    then the query; SigLIP2's patchified ``pixel_values``, ``spatial_shapes`` and ``pixel_attention_mask``."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(b):
        parts = [torch.randint(0, 50, (prefix,), generator=g)]
        for _ in range(images_per_row):
            parts += [torch.full((16,), IMAGE_ID), torch.randint(0, 50, (1,), generator=g)]
        parts.append(torch.randint(0, 50, (query,), generator=g))
        rows.append(torch.cat(parts))
    n = b * images_per_row
    return dict(input_ids=torch.stack(rows), pixel_values=torch.randn(n, 64, 48, generator=g),
                spatial_shapes=torch.tensor([[8, 8]] * n), pixel_attention_mask=torch.ones(n, 64, dtype=torch.bool))


def language_model(model):
    """The decoder stack (``*Model`` with ``layers``) inside a causal LM or a VLM."""
    inner = model.model
    return getattr(inner, "language_model", inner)


def _is_attention(layer) -> bool:
    if hasattr(layer, "is_attention_layer"):
        return layer.is_attention_layer
    return layer.block_type == "full_attention"


def oracle_forward(model, inputs_embeds, deletions: dict[int, torch.Tensor], rope_positions=None):
    """Logits when, before layer ``i``, only the tokens at original positions ``deletions[i]``
    (``(b, n_i)``, all non-visual ones included by the caller) remain.

    ``rope_positions``: the positions the decoder's rotary embedding takes ``(3, b, L)`` for
    M-RoPE or ``(b, L)``; default ``arange(L)``. Kept tokens keep theirs; no cache, no padding.
    """
    dec = language_model(model)
    h = inputs_embeds
    b, L = h.shape[:2]
    pos = torch.arange(L, device=h.device)[None].expand(b, -1)
    rp = rope_positions if rope_positions is not None else pos
    for i, layer in enumerate(dec.layers):
        if i in deletions:
            keep = deletions[i]
            cur = torch.searchsorted(pos.contiguous(), keep.contiguous())
            h = torch.gather(h, 1, cur[..., None].expand(-1, -1, h.shape[-1]))
            rp = torch.gather(rp, rp.dim() - 1, cur.expand(*rp.shape[:-2], -1, -1) if rp.dim() == 3 else cur)
            pos = keep
        n = h.shape[1]
        mask = None
        if _is_attention(layer):
            mask = torch.full((n, n), torch.finfo(h.dtype).min, dtype=h.dtype, device=h.device).triu(1)[None, None]
        cos_sin = dec.rotary_emb(h, rp)
        out = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
        h = out[0] if isinstance(out, tuple) else out
    norm = dec.embedding_norm if hasattr(dec, "embedding_norm") else dec.norm
    return model.lm_head(norm(h)).float(), pos
