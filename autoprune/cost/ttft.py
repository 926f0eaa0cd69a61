"""End-to-end time to first token of a video VLM: vision encoder, pre-LLM pruning (EVS), prefill.

``TTFT = vision(frames) + evs(tubelets) + prefill(schedule, visual tokens after EVS)``; each part
is predicted with its own source, named in :class:`TtftPart`:

- the **vision encoder** (RADIO ViT of NemotronH Omni: ``num_layers`` blocks over each tubelet's
  patches, bidirectional attention within a tubelet, then pixel-shuffle and the MLP projector)
  through the registered layer kinds ``v`` (ViT block) and ``w`` (projector) of
  :mod:`autoprune.cost.kinds`: floor + throughput forms with their priors on the target's spec
  (``roofline-uncalibrated``), or ``forms=`` fitted on a measurement (then ``roofline``);
- **EVS** (:func:`transformers...compute_retention_mask`: cosine similarity of each tubelet's
  projected tokens with the previous tubelet's, a sort, a mask; :mod:`autoprune.adapters.evs`):
  kind ``x`` (pre-LLM pruning), memory-bound, same sources (the vision-side letters are lower
  case so that they never clash with a decoder's layer kinds);
- the **prefill** from :class:`autoprune.cost.latency.LatencyModel` with its own source
  (``table``, ``few-shot``, ``roofline``) at the visual-token count EVS leaves
  (:func:`autoprune.adapters.evs.evs_token_count`).

Intervals add up part by part (the low ends and the high ends: errors of the parts are not
assumed to cancel).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from ..schedule import Schedule
from .gpus import GpuSpec
from .kinds import KindCost, KindSpec, kind_spec, register_kind
from .uncertainty import DEFAULT_HALF_WIDTH

__all__ = ["VisionShape", "TtftPart", "TtftEstimate", "predict_ttft", "evs_kept_tokens"]


@dataclass(frozen=True)
class VisionShape:
    """The cost-relevant part of a video VLM's vision side (defaults: transformers' ``RadioConfig``
    and ``NemotronH_Omni_Reasoning_V3_Config`` defaults, 512-pixel frames)."""

    name: str = "radio-omni"
    num_layers: int = 32
    hidden_size: int = 1280
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: int = 512
    temporal_patch: int = 2
    extra_tokens: int = 10  # class tokens + registers
    downsample_ratio: float = 0.5
    projector_hidden: int = 4096
    llm_hidden: int = 4096
    dtype: str = "bfloat16"

    def __post_init__(self):
        for f in ("num_layers", "hidden_size", "num_heads", "patch_size", "image_size", "temporal_patch",
                  "projector_hidden", "llm_hidden"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"VisionShape.{f} must be an integer >= 1, got {v!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"VisionShape.image_size {self.image_size} is not a multiple of patch_size "
                              f"{self.patch_size}")
        if not 0 < self.downsample_ratio <= 1 or not self.mlp_ratio > 0:
            raise ConfigError("VisionShape.downsample_ratio must be in (0, 1] and mlp_ratio > 0")
        if self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"VisionShape.dtype must be bfloat16 or float16, got {self.dtype!r}")

    @property
    def patches(self) -> int:
        """Patches of one tubelet (one ViT sequence without the extra tokens)."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def sequence(self) -> int:
        return self.patches + self.extra_tokens

    @property
    def tokens_out(self) -> int:
        """Visual tokens one tubelet gives the language model (after the pixel shuffle)."""
        return int(self.patches * self.downsample_ratio ** 2)

    @property
    def dtype_bytes(self) -> int:
        return 2

    @classmethod
    def from_config(cls, config, image_size: int | None = None) -> VisionShape:
        """From a transformers ``NemotronH_Omni_Reasoning_V3_Config``."""
        v = getattr(config, "vision_config", None)
        if v is None or getattr(config, "model_type", "") != "nemotron_h_omni":
            raise ConfigError(f"VisionShape.from_config needs a nemotron_h_omni config, got "
                              f"{getattr(config, 'model_type', type(config).__name__)!r}")
        size = image_size or getattr(config, "force_image_size", None) or 512
        return cls(name=f"radio-{v.hidden_size}x{v.num_hidden_layers}", num_layers=v.num_hidden_layers,
                   hidden_size=v.hidden_size, num_heads=v.num_attention_heads, mlp_ratio=float(v.mlp_ratio),
                   patch_size=v.patch_size, image_size=int(size), temporal_patch=config.video_temporal_patch_size,
                   extra_tokens=v.num_cls_tokens + v.num_registers, downsample_ratio=config.downsample_ratio,
                   projector_hidden=config.projector_hidden_size, llm_hidden=config.text_config.hidden_size)


# ------------------------------------------------------------ the vision kinds
# ``tokens`` is the number of tubelets for all three: one call processes every tubelet of a video.
def _vit_flops(v: VisionShape, tubelets: float) -> float:
    n, h = v.sequence, v.hidden_size
    per = 2 * n * (4 * h * h + 2 * h * int(h * v.mlp_ratio)) + 2 * 2 * n * n * h  # bidirectional scores + values
    return float(tubelets * per)


def _vit_bytes(v: VisionShape, tubelets: float) -> float:
    n, h, b = v.sequence, v.hidden_size, v.dtype_bytes
    weights = (4 * h * h + 2 * h * int(h * v.mlp_ratio)) * b
    acts = tubelets * n * (10 * h + 2 * int(h * v.mlp_ratio)) * b
    return float(weights + acts)


def _proj_flops(v: VisionShape, tubelets: float) -> float:
    n, d = v.tokens_out, int(v.hidden_size / v.downsample_ratio ** 2)
    return float(tubelets * 2 * n * (d * v.projector_hidden + v.projector_hidden * v.llm_hidden))


def _proj_bytes(v: VisionShape, tubelets: float) -> float:
    n, d, b = v.tokens_out, int(v.hidden_size / v.downsample_ratio ** 2), v.dtype_bytes
    weights = (d * v.projector_hidden + v.projector_hidden * v.llm_hidden) * b
    return float(weights + tubelets * n * (d + 2 * v.projector_hidden + v.llm_hidden) * b)


def _evs_flops(v: VisionShape, tubelets: float) -> float:
    return float(6 * tubelets * v.tokens_out * v.llm_hidden)  # norms and dot products


def _evs_bytes(v: VisionShape, tubelets: float) -> float:
    n = tubelets * v.tokens_out
    return float(3 * n * v.llm_hidden * v.dtype_bytes + 8 * n * 8)  # features read (twice), sort keys/indices


# Priors (no vision measurement yet): ViT GEMMs ~60 % of the dense peak like the decoder's MLP,
# ~10 kernel launches per block; EVS a handful of small memory-bound kernels and a sort.
register_kind(KindSpec(letter="v", name="vision_block", flops=_vit_flops, nbytes=_vit_bytes,
                       prior=KindCost(host_ms=0.25, gpu_floor_ms=0.03, compute=0.6, memory=0.6)), replace=True)
register_kind(KindSpec(letter="w", name="vision_projector", flops=_proj_flops, nbytes=_proj_bytes,
                       prior=KindCost(host_ms=0.1, gpu_floor_ms=0.01, compute=0.6, memory=0.6)), replace=True)
register_kind(KindSpec(letter="x", name="evs_pruning", flops=_evs_flops, nbytes=_evs_bytes,
                       prior=KindCost(host_ms=0.3, gpu_floor_ms=0.05, compute=0.3, memory=0.5)), replace=True)


# --------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class TtftPart:
    """One part of the time to first token: ``ms`` with its ``source`` and interval."""

    name: str
    ms: float
    source: str
    low_ms: float
    high_ms: float
    tokens: int | None = None  # visual tokens this part hands on


@dataclass(frozen=True)
class TtftEstimate:
    """``parts`` in order (vision encoder, EVS, prefill); ``total_ms`` their sum."""

    parts: tuple[TtftPart, ...]

    @property
    def total_ms(self) -> float:
        return sum(p.ms for p in self.parts)

    @property
    def low_ms(self) -> float:
        return sum(p.low_ms for p in self.parts)

    @property
    def high_ms(self) -> float:
        return sum(p.high_ms for p in self.parts)

    def lines(self) -> list[str]:
        """A printable table."""
        out = [f"{'part':<16} {'ms':>9} {'interval (ms)':>21}  source"]
        for p in self.parts:
            out.append(f"{p.name:<16} {p.ms:9.2f} [{p.low_ms:8.2f}, {p.high_ms:8.2f}]  {p.source}"
                       + (f" ({p.tokens} visual tokens out)" if p.tokens is not None else ""))
        out.append(f"{'time to 1st token':<16} {self.total_ms:9.2f} [{self.low_ms:8.2f}, {self.high_ms:8.2f}]")
        return out

    def to_dict(self) -> dict:
        return {"total_ms": self.total_ms, "low_ms": self.low_ms, "high_ms": self.high_ms,
                "parts": [{"name": p.name, "ms": p.ms, "source": p.source, "low_ms": p.low_ms, "high_ms": p.high_ms,
                           "tokens": p.tokens} for p in self.parts]}


def evs_kept_tokens(vision: VisionShape, tubelets: int, rate: float) -> int:
    """Visual tokens EVS leaves of one video of ``tubelets`` tubelets at pruning ``rate``."""
    from ..adapters.evs import evs_token_count

    return evs_token_count(tubelets, vision.tokens_out, rate)


def _part(name: str, letters: Mapping[str, float], vision: VisionShape, gpu: GpuSpec, tubelets: int,
          forms: Mapping[str, KindCost] | None, tokens: int | None) -> TtftPart:
    """Sum of ``count × gpu_ms`` of each kind letter (the vision side is GPU-bound: tubelets are
    batched, so host floors overlap with the GPU's work and only the GPU time counts)."""
    ms, measured = 0.0, True
    for letter, count in letters.items():
        ks = kind_spec(letter)
        c = (forms or {}).get(letter)
        measured &= c is not None
        c = c or ks.prior
        ms += count * c.gpu_ms(ks.flops(vision, tubelets), ks.nbytes(vision, tubelets), gpu.peak_tflops(vision.dtype),
                               gpu.memory_bandwidth_gbs)
    source = "roofline" if measured else "roofline-uncalibrated"
    w = DEFAULT_HALF_WIDTH
    return TtftPart(name=name, ms=ms, source=source, low_ms=ms * math.exp(-w), high_ms=ms * math.exp(w), tokens=tokens)


def predict_ttft(latency_model, schedule: Schedule, vision: VisionShape, *, frames: int, evs_rate: float = 0.0,
                 forms: Mapping[str, KindCost] | None = None) -> TtftEstimate:
    """Time to first token of one video of ``frames`` frames under ``schedule``.

    ``latency_model`` is a :class:`~autoprune.cost.latency.LatencyModel` whose layout's visual
    count must be what EVS leaves of these frames (checked: the prefill is predicted at the
    tokens the decoder really sees); ``forms`` (letters ``v``, ``w``, ``x``) replace the priors
    when the vision side has been measured.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"frames must be an integer >= 1, got {frames!r}")
    if not 0 <= evs_rate < 1:
        raise ConfigError(f"evs_rate must be in [0, 1), got {evs_rate!r}")
    tubelets = math.ceil(frames / vision.temporal_patch)
    before = tubelets * vision.tokens_out
    after = evs_kept_tokens(vision, tubelets, evs_rate)
    if latency_model.layout.visual != after:
        raise ConfigError(f"the latency model's layout has {latency_model.layout.visual} visual tokens, but "
                          f"{frames} frames give {before} and EVS at rate {evs_rate} keeps {after}: build it with "
                          f"TokenLayout(visual={after})")
    gpu = latency_model.spec
    vision_part = _part("vision encoder", {"v": vision.num_layers, "w": 1}, vision, gpu, tubelets, forms, before)
    parts = [vision_part]
    if evs_rate > 0:
        parts.append(_part("EVS pruning", {"x": 1}, vision, gpu, tubelets, forms, after))
    est = latency_model.estimate(schedule)
    low, high = (est.low_ms, est.high_ms) if est.low_ms is not None else (est.latency_ms, est.latency_ms)
    parts.append(TtftPart(name="LM prefill", ms=est.latency_ms, source=est.source, low_ms=low, high_ms=high))
    return TtftEstimate(parts=tuple(parts))
