"""Random-weight layers of the kinds only other families have: ``P`` (Falcon-H1's parallel
attention + Mamba2), ``S`` (Zamba2's hybrid layer: shared attention block, linear, Mamba2) and
``A`` (Jamba's Mamba1), each called as its decoder calls it, for ``autoprune profile``.

What is timed is what :func:`autoprune.cost.shapes.layer_flops` counts for the letter: the
mixers with their norm and residual (the MLP inside a Falcon-H1 or Jamba layer is left out, as
it is from the cost model; Zamba2's shared block keeps its MLP). The layer comes from a
one-layer model of the family built from :meth:`ModelShape.to_family_config` directly on the
device (embeddings and head dropped).
"""

from __future__ import annotations

from ..cost.shapes import ModelShape
from ..errors import ConfigError

__all__ = ["FAMILY_KINDS", "build_family_block"]

FAMILY_KINDS = {"P": "falcon_h1", "S": "zamba2", "A": "jamba"}


def _one_layer_config(shape: ModelShape, kind: str):
    if kind == "P":
        return shape.to_family_config(num_hidden_layers=1, use_cache=False)
    if kind == "S":
        return shape.to_family_config(num_hidden_layers=1, layers_block_type=["hybrid"], use_cache=False)
    # Jamba: one Mamba1 layer (no attention layer: offset past the end), a dense MLP
    return shape.to_family_config(num_hidden_layers=1, attn_layer_period=2, attn_layer_offset=1, num_experts=1,
                                  use_cache=False)


def build_family_block(shape: ModelShape, kind: str, device, dtype):
    """``(block, config)``: ``block(x)`` runs one layer of ``kind`` on ``x (1, n, hidden)``."""
    import torch

    if FAMILY_KINDS.get(kind) != shape.family:
        raise ConfigError(f"layer kind {kind!r} is a {FAMILY_KINDS.get(kind, 'unknown')} layer; shape "
                          f"{shape.name!r} is {shape.family!r}")
    from transformers import AutoModelForCausalLM

    config = _one_layer_config(shape, kind)
    config._attn_implementation = "sdpa"
    if kind == "S":  # the attention scoring timing reads head_dim (Zamba2 calls it attention_head_dim)
        config.head_dim = config.attention_head_dim
    torch.manual_seed(1234)
    prev = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(prev)
    dec = model.model
    block = _block_class(torch)(kind, dec.layers[0], getattr(dec, "rotary_emb", None))
    block = block.to(device=device, dtype=dtype).eval()  # SSM parameters spread by the caller
    del model, dec
    return block, config


def _block_class(torch):
    class Block(torch.nn.Module):
        """One layer called with the inputs its decoder gives it (causal SDPA: no mask)."""

        def __init__(self, kind, layer, rotary):
            super().__init__()
            self.kind, self.layer, self.rotary = kind, layer, rotary
            # its Mamba mixer, where a NemotronH block exposes it (the scoring timings read it)
            self.mixer = {"P": lambda: layer.mamba, "S": lambda: layer.mamba_decoder.mamba,
                          "A": lambda: layer.mamba}[kind]()

        def forward(self, x):
            pos = torch.arange(x.shape[1], device=x.device)[None]
            lay = self.layer
            if self.kind == "P":  # Falcon-H1's parallel mixer without its MLP
                h = lay.input_layernorm(x)
                pe = self.rotary(h, position_ids=pos)
                m = lay.mamba(hidden_states=h, attention_mask=None) * lay.ssm_out_multiplier
                a, _ = lay.self_attn(hidden_states=h * lay.attention_in_multiplier, attention_mask=None,
                                     position_embeddings=pe)
                return x + m + a * lay.attn_out_multiplier
            if self.kind == "S":
                pe = self.rotary(x, position_ids=pos) if self.rotary is not None else None
                return lay(x, x, 0, None, None, position_embeddings=pe, position_ids=pos)
            return x + lay.mamba(hidden_states=lay.input_layernorm(x), attention_mask=None)  # Jamba, no MLP

    return Block
