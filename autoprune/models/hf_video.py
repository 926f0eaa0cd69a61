"""Video inputs of NemotronH Omni (``NemotronH_Omni_Reasoning_V3``): a prompt with the video
placeholder and decoded frames → ``input_ids`` and ``pixel_values_videos``.

Where the checkpoint's own processor loads (``AutoProcessor.from_pretrained(..., local_files_only=True)``;
transformers' video and image processors need torchvision), it does the work: frames resized to one
tile near ``video_target_num_patches`` patches, normalised, packed into tubelets of
``temporal_patch_size`` frames, and ``<video>`` in the prompt expanded into one
``Frame i sampled at t seconds: <img><image>…</img>`` chunk per tubelet.

Where it does not (the full processor also needs its image processor, audio feature extractor
and torchvision), :class:`OmniVideoFrontEnd` uses transformers' video processor class itself
(imported from its module, it runs without torchvision) for the pixel values, and expands the
prompt as ``NemotronH_Omni_Reasoning_V3Processor.replace_video_token`` does (transformers 5.24).
Where even the video processor cannot be built, :meth:`OmniVideoFrontEnd.torch_pixel_values`
does its steps in plain torch, in the same order with the same arithmetic. The tests compare the
torch path and the expansion with transformers' own code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["OmniVideoFrontEnd", "load_omni_front_end", "VIDEO_TOKEN"]

VIDEO_TOKEN = "<video>"
_CONFIG_NAMES = ("video_preprocessor_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class OmniVideoFrontEnd:
    """The processor's video path in torch (see the module docstring); built by :func:`load_omni_front_end`."""

    tokenizer: Any
    patch_size: int
    downsample_ratio: float
    target_num_patches: int
    maintain_aspect_ratio: bool
    temporal_patch_size: int
    norm_mean: tuple[float, float, float]
    norm_std: tuple[float, float, float]
    image_token: str = "<image>"
    image_start_token: str = "<img>"
    image_end_token: str = "</img>"
    processor: Any = None  # the checkpoint's own processor, used instead where it loads
    video_processor: Any = None  # transformers' video processor of the checkpoint, for the pixel values

    @property
    def source(self) -> str:
        if self.processor is not None:
            return "processor"
        return ("transformers video processor + autoprune prompt expansion" if self.video_processor is not None
                else "autoprune (torch)")

    def target_patches(self, height: int, width: int) -> tuple[int, int]:
        """``(w_patches, h_patches)`` of the tile (the video processor's ``_compute_target_patches``)."""
        target, divisor = self.target_num_patches, int(round(1.0 / self.downsample_ratio))
        if self.maintain_aspect_ratio:
            aspect_wh = width / max(height, 1)
            ph = max(round(math.sqrt(target / aspect_wh)), 1)
            pw = max(round(math.sqrt(target * aspect_wh)), 1)
            if divisor > 1:
                rem_h, rem_w = ph % divisor, pw % divisor
                ph_up, ph_down = ph + (divisor - rem_h if rem_h else 0), ph - rem_h
                pw_up, pw_down = pw + (divisor - rem_w if rem_w else 0), pw - rem_w
                if ph_up * pw_up <= target:
                    ph, pw = ph_up, pw_up
                else:
                    ph, pw = max(divisor, ph_down), max(divisor, pw_down)
        else:
            side = int(math.sqrt(target))
            ph = pw = max(divisor, (side // divisor) * divisor)
        return pw, ph

    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """``(1, tubelets, temporal_patch_size·3, h, w)`` float32 from ``(T, H, W, 3)`` uint8 frames
        (transformers' video processor where it was loaded, else :meth:`torch_pixel_values`)."""
        if self.video_processor is not None:
            return self.video_processor(videos=[frames], do_sample_frames=False,
                                        return_tensors="pt")["pixel_values_videos"]
        return self.torch_pixel_values(frames)

    def torch_pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """The video processor's ``_preprocess`` in plain torch (see the module docstring)."""
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32)
        wp, hp = self.target_patches(video.shape[-2], video.shape[-1])
        th, tw = hp * self.patch_size, wp * self.patch_size
        if video.shape[-2] != th or video.shape[-1] != tw:
            video = torch.nn.functional.interpolate(video, size=(th, tw), mode="bicubic", align_corners=False,
                                                    antialias=True)
        mean = torch.tensor(self.norm_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.norm_std).view(1, 3, 1, 1)
        video = (video / 255.0 - mean) / std
        tp = self.temporal_patch_size
        if video.shape[0] % tp:
            video = torch.cat([video, video[-1:].expand(tp - video.shape[0] % tp, -1, -1, -1)])
        return video.reshape(-1, tp * 3, th, tw)[None]

    def expansion(self, pixel_values_videos: torch.Tensor, num_frames: int, metadata) -> str:
        """The text that stands for the video in the prompt (the processor's ``replace_video_token``)."""
        n_groups = pixel_values_videos.shape[1]
        h, w = pixel_values_videos.shape[-2:]
        merge = round(1 / self.downsample_ratio)
        tokens = (h // self.patch_size) * (w // self.patch_size) // merge**2
        each = self.image_start_token + self.image_token * tokens + self.image_end_token
        fps = getattr(metadata, "fps", None) or None
        indices = getattr(metadata, "frames_indices", None)
        if fps is not None:
            frame_ms = int(1000.0 / fps)
        labels = []
        for group in range(n_groups):
            parts = []
            for offset in range(self.temporal_patch_size):
                i = group * self.temporal_patch_size + offset
                if i >= num_frames:
                    break
                prefix = "Frame" if offset == 0 else "frame"
                if fps is not None and indices is not None and i < len(indices):
                    parts.append(f"{prefix} {i + 1} sampled at {int(indices[i]) * frame_ms / 1000.0:.2f} seconds")
                elif fps is not None:
                    parts.append(f"{prefix} {i + 1} sampled at {i / fps:.2f} seconds")
                else:
                    parts.append(f"{prefix} {i + 1}")
            labels.append(" and ".join(parts) + ": ")
        return "\n".join(label + each for label in labels)

    def __call__(self, text: str, frames: np.ndarray, metadata=None) -> dict[str, torch.Tensor]:
        """``{"input_ids": (1, L), "pixel_values_videos": (1, tubelets, tp·3, h, w)}`` for one prompt
        that contains :data:`VIDEO_TOKEN` once."""
        if text.count(VIDEO_TOKEN) != 1:
            raise ConfigError(f"the prompt must contain {VIDEO_TOKEN!r} exactly once, got {text.count(VIDEO_TOKEN)}")
        if self.processor is not None:
            out = self.processor(text=[text], videos=[frames], video_metadata=[metadata] if metadata else None,
                                 do_sample_frames=False, return_tensors="pt")
            return {"input_ids": out["input_ids"], "pixel_values_videos": out["pixel_values_videos"]}
        pvv = self.pixel_values(frames)
        expanded = text.replace(VIDEO_TOKEN, self.expansion(pvv, frames.shape[0], metadata), 1)
        ids = self.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return {"input_ids": ids, "pixel_values_videos": pvv}


def _read_config(folder: Path) -> tuple[dict, Path]:
    for name in _CONFIG_NAMES:
        p = folder / name
        if p.is_file():
            try:
                return json.loads(p.read_text(encoding="utf-8")), p
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}: not valid JSON: {e}") from None
    raise ConfigError(f"{folder}: no video processor config ({' or '.join(_CONFIG_NAMES)}); a NemotronH Omni "
                      "checkpoint ships one with its processor")


def load_omni_front_end(folder: Path, tokenizer, *, use_processor: bool = True) -> OmniVideoFrontEnd:
    """The checkpoint's video front end: its processor where that loads, else the torch path."""
    cfg, path = _read_config(folder)
    processor = video_processor = None
    try:  # the class itself runs without torchvision; transformers' lazy module only offers a placeholder
        from transformers.models.nemotron_h_omni.video_processing_nemotron_h_omni import (
            NemotronH_Omni_Reasoning_V3VideoProcessor,
        )

        video_processor = NemotronH_Omni_Reasoning_V3VideoProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # noqa: BLE001 — another transformers, or a config it refuses: the torch path
        video_processor = None
    if use_processor:
        try:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        except Exception:  # noqa: BLE001 — no torchvision, or a partial processor (no audio/image part)
            processor = None
    for key in ("norm_mean", "norm_std"):
        v = cfg.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            raise ConfigError(f"{path}: {key} must be a list of 3 numbers, got {v!r}")
    try:
        return OmniVideoFrontEnd(
            tokenizer=tokenizer, patch_size=int(cfg.get("patch_size", 16)),
            downsample_ratio=float(cfg.get("downsample_ratio", 0.5)),
            target_num_patches=int(cfg.get("video_target_num_patches", 1024)),
            maintain_aspect_ratio=bool(cfg.get("video_maintain_aspect_ratio", True)),
            temporal_patch_size=int(cfg.get("temporal_patch_size", 2)),
            norm_mean=tuple(float(x) for x in cfg["norm_mean"]), norm_std=tuple(float(x) for x in cfg["norm_std"]),
            image_token=getattr(tokenizer, "image_token", None) or "<image>",
            image_start_token=getattr(tokenizer, "image_start_token", None) or "<img>",
            image_end_token=getattr(tokenizer, "image_end_token", None) or "</img>",
            processor=processor, video_processor=video_processor,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None
