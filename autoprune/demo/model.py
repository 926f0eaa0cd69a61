"""DemoVideoVLM: a tiny hybrid video VLM on a transformers NemotronH backbone.

Sequence (``L = 2 + 4·F + 11``)::

    [<bos> <video>] [F frames × 4 cell tokens] [family a1 a2 a3 a4 ? c1 c2 c3 c4 answer]
     prefix text     visual                     question + choices (query)

- **frame encoder**: each 8×8×3 cell (a patch) → MLP → ``hidden``; plus a learned cell
  embedding (where in the frame) and a projection of fixed sinusoidal features of the
  *relative* time ``(t + ½)/F`` (so videos longer than in training need no new weights);
- **projector**: LayerNorm → Linear → GELU → Linear into the backbone's space;
- **backbone**: ``transformers.NemotronHModel`` (Mamba2, attention and MLP blocks), fed
  with ``inputs_embeds``; text tokens use its own embedding table;
- **answer**: ``lm_head`` on the last position; a question's score for each choice is the
  logit of that choice's token (unused choice slots are −inf).

``autoprune.reduce(model, schedule, visual_mask=model.visual_mask(b, F))`` works on the
whole model (the NemotronH adapter finds the backbone inside).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import AutopruneError, ConfigError
from . import video as V

__all__ = ["DemoConfig", "DemoVideoVLM", "DemoWeightsMissing", "TINY_CONFIG", "load", "save", "weights_dir", "FORMAT"]

FORMAT = "autoprune.demo/v1"
WEIGHTS_NAME = "demo.safetensors"
META_NAME = "demo.json"
_KIND = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}
# The torch fallback of transformers' Mamba2 materialises (chunk × chunk) blocks per chunk:
# small chunks are several times faster on a CPU. The SSD result does not depend on it.
CPU_CHUNK_SIZE = 16
# Rough pixel statistics of the procedural videos (inputs are standardised with them).
PIXEL_MEAN = 0.12
PIXEL_STD = 0.25
TEXT_EMBED_STD = 0.5


class DemoWeightsMissing(AutopruneError, FileNotFoundError):
    """No trained demo weights where they were looked for."""


@dataclass(frozen=True)
class DemoConfig:
    """Architecture of the demo model (what the weights file's JSON stores)."""

    hidden_size: int = 96
    layer_kinds: str = "M*M-M*M-M*M-"
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    mamba_num_heads: int = 12
    mamba_head_dim: int = 16
    n_groups: int = 2
    ssm_state_size: int = 16
    conv_kernel: int = 4
    intermediate_size: int = 256
    chunk_size: int = 64
    patch_hidden: int = 128
    time_frequencies: int = 8
    vocab_size: int = len(V.VOCAB)

    def __post_init__(self):
        if not self.layer_kinds or set(self.layer_kinds) - set(_KIND):
            raise ConfigError(f"DemoConfig.layer_kinds must use letters M * -, got {self.layer_kinds!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"DemoConfig.{f.name} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError("DemoConfig.hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("DemoConfig.num_attention_heads must be a multiple of num_key_value_heads")
        if self.mamba_num_heads % self.n_groups:
            raise ConfigError("DemoConfig.mamba_num_heads must be a multiple of n_groups")
        if self.vocab_size < len(V.VOCAB):
            raise ConfigError(f"DemoConfig.vocab_size must be >= {len(V.VOCAB)}")

    @property
    def num_layers(self) -> int:
        return len(self.layer_kinds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> DemoConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"DemoConfig: unknown key(s) {unknown}")
        return cls(**dict(d))

    def nemotron_config(self, attn_implementation: str = "sdpa"):
        _install_mamba_shim()
        from transformers import NemotronHConfig

        return NemotronHConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            layers_block_type=[_KIND[c] for c in self.layer_kinds],
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
            head_dim=self.hidden_size // self.num_attention_heads, mamba_num_heads=self.mamba_num_heads,
            mamba_head_dim=self.mamba_head_dim, n_groups=self.n_groups, ssm_state_size=self.ssm_state_size,
            conv_kernel=self.conv_kernel, chunk_size=self.chunk_size, intermediate_size=self.intermediate_size,
            use_cache=False, attn_implementation=attn_implementation, pad_token_id=0, bos_token_id=1,
            eos_token_id=None, tie_word_embeddings=False,
        )


# A few-thousand-parameter configuration for tests and smoke runs (random weights).
TINY_CONFIG = DemoConfig(hidden_size=32, layer_kinds="M*M-M*", num_attention_heads=2, num_key_value_heads=1,
                         mamba_num_heads=4, mamba_head_dim=16, n_groups=2, ssm_state_size=8, intermediate_size=64,
                         chunk_size=16, patch_hidden=32, time_frequencies=4)


def _install_mamba_shim() -> None:
    # Must precede transformers' import of modeling_nemotron_h, which picks kernels once.
    from ..compat import mamba_ssm_shim

    mamba_ssm_shim.install()


def time_features(frames: int, k: int, device=None) -> torch.Tensor:
    """``(F, 2k+1)``: ``u = (t+½)/F`` and ``sin, cos(2π j u)`` for ``j = 1..k``."""
    u = (torch.arange(frames, device=device, dtype=torch.float32) + 0.5) / frames
    ang = 2 * math.pi * u[:, None] * torch.arange(1, k + 1, device=device, dtype=torch.float32)[None]
    return torch.cat([u[:, None], torch.sin(ang), torch.cos(ang)], dim=1)


class DemoVideoVLM(nn.Module):
    """Frame encoder + projector + NemotronH backbone + answer head (see module docstring)."""

    def __init__(self, config: DemoConfig | None = None, *, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import NemotronHModel

        self.config = config or DemoConfig()
        c = self.config
        H = c.hidden_size
        patch_dim = V.CELL_SIZE * V.CELL_SIZE * 3
        # Content ends in a LayerNorm so that it dominates the (smaller) where/when embeddings at
        # the start of training: the model must first learn to see what is in a cell.
        self.patch_mlp = nn.Sequential(nn.Linear(patch_dim, c.patch_hidden), nn.GELU(), nn.Linear(c.patch_hidden, H),
                                       nn.LayerNorm(H))
        self.cell_embed = nn.Embedding(V.TOKENS_PER_FRAME, H)
        self.time_proj = nn.Linear(2 * c.time_frequencies + 1, H)
        self.projector = nn.Sequential(nn.LayerNorm(H), nn.Linear(H, H), nn.GELU(), nn.Linear(H, H))
        self.backbone = NemotronHModel(c.nemotron_config(attn_implementation))
        self.lm_head = nn.Linear(H, c.vocab_size, bias=False)
        # Text tokens at the scale of the visual tokens (transformers' init, std 0.02, leaves the
        # question faint next to the video in the residual stream, and training stalls).
        nn.init.normal_(self.backbone.embeddings.weight, std=TEXT_EMBED_STD)
        nn.init.normal_(self.cell_embed.weight, std=0.3)
        nn.init.normal_(self.time_proj.weight, std=0.3 / math.sqrt(2 * c.time_frequencies + 1))
        nn.init.zeros_(self.time_proj.bias)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    # ------------------------------------------------------------------- layout
    @staticmethod
    def sequence_length(frames: int) -> int:
        return len(V.PREFIX_IDS) + frames * V.TOKENS_PER_FRAME + V.QUESTION_LEN

    @staticmethod
    def visual_mask(batch: int, frames: int, device=None) -> torch.Tensor:
        """``(batch, L)`` bool: True at the ``4·frames`` visual tokens."""
        L = DemoVideoVLM.sequence_length(frames)
        m = torch.zeros(L, dtype=torch.bool, device=device)
        m[len(V.PREFIX_IDS): len(V.PREFIX_IDS) + frames * V.TOKENS_PER_FRAME] = True
        return m[None].expand(batch, -1)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def set_chunk_size(self, n: int) -> None:
        """Chunk length of the Mamba2 scan (a speed knob: results do not depend on it)."""
        for layer in self.backbone.layers:
            if hasattr(layer.mixer, "chunk_size"):
                layer.mixer.chunk_size = int(n)

    # --------------------------------------------------------------- embedding
    def visual_embeds(self, cells: torch.Tensor, frames: int) -> torch.Tensor:
        """``cells (b, F·4, 192)`` pixels → ``(b, F·4, hidden)`` projected visual tokens."""
        b, n, _ = cells.shape
        if n != frames * V.TOKENS_PER_FRAME:
            raise ConfigError(f"{n} cells for {frames} frames; expected {frames * V.TOKENS_PER_FRAME}")
        x = self.patch_mlp((cells - PIXEL_MEAN) / PIXEL_STD)
        pos = self.cell_embed.weight.repeat(frames, 1)  # (F·4, H)
        t = self.time_proj(time_features(frames, self.config.time_frequencies, cells.device))
        t = t.repeat_interleave(V.TOKENS_PER_FRAME, dim=0)
        return self.projector(x + pos[None] + t[None])

    def text_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.embeddings(ids)

    def assemble(self, visual: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """``[prefix][visual (b, V, H)][question (b, 11) ids]`` → ``inputs_embeds (b, L, H)``."""
        b = visual.shape[0]
        prefix = torch.tensor(V.PREFIX_IDS, device=visual.device)[None].expand(b, -1)
        return torch.cat([self.text_embeds(prefix).to(visual.dtype), visual,
                          self.text_embeds(question).to(visual.dtype)], dim=1)

    def embed_batch(self, batch: V.VideoBatch) -> torch.Tensor:
        """Render ``batch`` on the model's device and return ``inputs_embeds (b, L, H)``."""
        cells = V.render_cells_torch(batch, self.device)
        vis = self.visual_embeds(cells, batch.frames)
        q = torch.as_tensor(batch.question, device=self.device)
        return self.assemble(vis, q)

    # ---------------------------------------------------------------- answers
    def last_logits(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits at the last position ``(b, vocab)`` fp32 (runs the backbone)."""
        out = self.backbone(inputs_embeds=inputs_embeds, use_cache=False)
        return self.lm_head(out.last_hidden_state[:, -1]).float()

    @torch.inference_mode()
    def generate(self, inputs_embeds: torch.Tensor, max_new_tokens: int = 4) -> torch.Tensor:
        """Greedy continuation ``(b, max_new_tokens)`` token ids of ``inputs_embeds (b, L, H)``: the
        answer word first. The prefill runs once; each new token is decoded with the backbone's
        cache (so a reduced prefill, under :func:`autoprune.reduce`, is continued from its cache)."""
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.backbone.config)
        out = self.backbone(inputs_embeds=inputs_embeds, cache=cache, use_cache=True)
        ids = []
        for _ in range(int(max_new_tokens)):
            nxt = self.lm_head(out.last_hidden_state[:, -1]).argmax(dim=-1)
            ids.append(nxt)
            out = self.backbone(inputs_embeds=self.text_embeds(nxt[:, None]), cache=cache, use_cache=True)
        return torch.stack(ids, dim=1)

    @staticmethod
    def choice_logits(logits: torch.Tensor, choices: torch.Tensor, choice_mask: torch.Tensor) -> torch.Tensor:
        """``(b, C)`` logits of the choice tokens; −inf at unused slots."""
        out = torch.gather(logits, 1, choices)
        return out.masked_fill(~choice_mask, float("-inf"))

    def forward(self, batch: V.VideoBatch) -> torch.Tensor:
        """Choice logits ``(b, 4)`` of ``batch`` (unreduced)."""
        logits = self.last_logits(self.embed_batch(batch))
        ch = torch.as_tensor(batch.choices, device=self.device)
        cm = torch.as_tensor(batch.choice_mask, device=self.device)
        return self.choice_logits(logits, ch, cm)


# ------------------------------------------------------------------------ weights
def weights_dir() -> Path:
    """Where the shipped weights live (inside the installed package)."""
    return Path(__file__).resolve().parent / "weights"


def save(model: DemoVideoVLM, directory: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``demo.safetensors`` (fp32) and ``demo.json`` (format, config, metadata) to ``directory``."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = d / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, d / WEIGHTS_NAME)
    meta = {"format": FORMAT, "config": model.config.to_dict(), "metadata": metadata or {}}
    (d / (META_NAME + ".tmp")).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    os.replace(d / (META_NAME + ".tmp"), d / META_NAME)
    return d


def read_metadata(directory: str | os.PathLike | None = None) -> dict:
    d = Path(directory) if directory is not None else weights_dir()
    path = d / META_NAME
    if not path.is_file():
        raise DemoWeightsMissing(_missing_message(d))
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: format is {meta.get('format')!r}; this autoprune reads {FORMAT!r}")
    return meta


def _missing_message(d: Path) -> str:
    return (
        f"no trained demo weights in {d} (expected {WEIGHTS_NAME} and {META_NAME}). This autoprune was "
        "installed without them; train them with `autoprune demo train --out DIR` (about 6 minutes on one "
        "H100, see benchmarks/train_demo.py) and pass `--weights DIR`, or copy DIR's two files into "
        f"{weights_dir()}."
    )


def load(directory: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
         chunk_size: int | None = None) -> DemoVideoVLM:
    """The trained demo model (eval mode, fp32) from ``directory`` (default: the shipped weights).

    No download: the weights are package data. Raises :class:`DemoWeightsMissing` with
    instructions when there are none.
    """
    from safetensors.torch import load_file

    d = Path(directory) if directory is not None else weights_dir()
    meta = read_metadata(d)
    wpath = d / WEIGHTS_NAME
    if not wpath.is_file():
        raise DemoWeightsMissing(_missing_message(d))
    model = DemoVideoVLM(DemoConfig.from_dict(meta["config"]))
    state = load_file(str(wpath))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{wpath}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
    model = model.to(device).eval()
    if chunk_size is None and torch.device(device).type == "cpu":
        chunk_size = CPU_CHUNK_SIZE
    if chunk_size is not None:
        model.set_chunk_size(chunk_size)
    model.metadata = meta.get("metadata", {})
    return model
