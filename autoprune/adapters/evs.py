"""NemotronH Omni's Efficient Video Sampling (EVS): the wrapper drops video tokens before its
language model sees them, so a mask of the wrapper's ``input_ids`` does not fit the decoder.

``NemotronH_Omni_Reasoning_V3`` (transformers ``models/nemotron_h_omni``) with
``video_pruning_rate > 0`` keeps, per video, every token of the first tubelet and the tokens of
the others least similar to the same position one tubelet earlier
(``compute_retention_mask``), and removes the rest from ``inputs_embeds`` before calling its
language model. :class:`EVSStage` tells the runtime which input tokens survived, so that
``reduce(model, schedule, visual_mask=input_ids == image_token_id)`` applies the schedule to the
tokens *after* EVS: the model's own EVS runs first, then the schedule prunes inside the layers.

How it knows: a forward pre-hook on the wrapper records the call's ``input_ids`` and video inputs;
a forward hook on the vision projector records the projected video features (when the call
encodes the video itself; ``generate`` passes them precomputed as ``mm_encoder_outputs``); when
the decoder starts, :meth:`EVSStage.take` runs the model's own ``compute_retention_mask`` on those
features — the computation the model just did, on the same tensors — and returns the retained
input tokens. Nothing of the model is replaced.
"""

from __future__ import annotations

import math

import torch

from ..errors import ReductionInputError
from .base import register_input_stage

__all__ = ["EVSStage", "evs_token_count"]


def evs_token_count(num_tubelets: int, tokens_per_tubelet: int, rate: float) -> int:
    """Video tokens EVS keeps of one video (the count ``compute_retention_mask`` keeps)."""
    if rate <= 0:
        return num_tubelets * tokens_per_tubelet
    return max(tokens_per_tubelet, int(num_tubelets * tokens_per_tubelet * (1 - rate)))


@register_input_stage("nemotron_h_omni")
class EVSStage:
    """The EVS step of one ``NemotronH_Omni_Reasoning_V3`` (see the module docstring)."""

    def __init__(self, model):
        self.model = model
        self._call: dict | None = None

    def install(self) -> list:
        return [self.model.register_forward_pre_hook(self._outer_pre, with_kwargs=True),
                self.model.multi_modal_projector.register_forward_hook(self._projector)]

    def _outer_pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        pvv = kwargs.get("pixel_values_videos")
        video = (kwargs.get("mm_encoder_outputs") or {}).get("video")
        rate = float(getattr(module, "video_pruning_rate", 0.0) or 0.0)
        if not isinstance(ids, torch.Tensor) or rate <= 0 or (pvv is None and video is None):
            self._call = None
            return None
        self._call = {"ids": ids, "rate": rate, "video": video, "features": None,
                      "pvv_shape": None if pvv is None else tuple(pvv.shape)}
        return None

    def _projector(self, module, args, output):
        c = self._call
        # the video path projects (videos * tubelets, tokens, C); the image path a 2-D (tokens, C)
        if c is not None and c["video"] is None and isinstance(output, torch.Tensor) and output.dim() == 3:
            c["features"] = output.detach()

    def _video_features(self, c: dict) -> tuple[list[torch.Tensor], int]:
        if c["video"] is not None:
            return list(c["video"].pooler_output), int(c["video"].last_hidden_state.shape[1])
        shape, feats = c["pvv_shape"], c["features"]
        if feats is None:
            raise ReductionInputError("EVS is on but the model projected no video features in this call")
        if len(shape) == 4:  # the deprecated (frames, C, H, W) form of one video
            nv, nt = 1, math.ceil(shape[0] / self.model.config.video_temporal_patch_size)
        else:
            nv, nt = shape[0], shape[1]
        return list(feats.unflatten(0, (nv, nt)).flatten(1, 2)), nt

    def take(self) -> torch.Tensor | None:
        """``(b, L_in)`` bool: the input tokens of the call now reaching the decoder that EVS kept,
        or ``None`` when this call runs no EVS."""
        c, self._call = self._call, None
        if c is None:
            return None
        from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import (
            compute_retention_mask,
        )

        feats, nt = self._video_features(c)
        evs = torch.cat([compute_retention_mask(f, nt, c["rate"]) for f in feats])
        ids = c["ids"]
        kept = torch.ones_like(ids, dtype=torch.bool)
        kept[ids == self.model.config.image_token_id] = evs.to(kept.device)
        return kept
