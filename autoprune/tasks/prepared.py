"""Evaluation data prepared once per model: embedded sequences, grouped by shape.

A :class:`QAModel` turns records into a :class:`PreparedSet` (the expensive part —
rendering, frame encoding, tokenising — happens once) and runs the backbone on
``inputs_embeds``. Evaluators then re-run only the backbone for each schedule.

Samples are grouped by ``(sequence length, visual mask)``: ``autoprune.reduce`` needs the
same visual-token count in every row of a batch, and equal lengths need no padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .records import MCRecord, RecordError

__all__ = ["QAModel", "PreparedGroup", "PreparedSet", "group_samples"]


@runtime_checkable
class QAModel(Protocol):
    """What the tasks need from a model.

    ``module`` is what :func:`autoprune.reduce` hooks and :func:`autoprune.model_signature`
    reads; ``prepare`` embeds records; ``last_logits(inputs_embeds (b, L, H)) -> (b, vocab)``
    runs the language model and returns fp32 logits of the next token after the prompt.
    """

    module: nn.Module

    def prepare(self, records: Sequence[MCRecord]) -> PreparedSet: ...

    def last_logits(self, inputs_embeds: torch.Tensor) -> torch.Tensor: ...


@dataclass
class PreparedGroup:
    """Samples of one shape. ``index (n,)`` positions in the set; ``inputs_embeds (n, L, H)``;
    ``visual_mask (L,)`` bool, or ``(n, L)`` where the rows hold their visual tokens at different
    positions (same count); ``choice_ids, choice_mask (n, C)`` (``C`` = the most choices
    in the group; unused slots masked; ``C == 0`` for unlabelled prompts without choices, which
    are compared over the whole vocabulary)."""

    index: torch.Tensor
    inputs_embeds: torch.Tensor
    visual_mask: torch.Tensor
    choice_ids: torch.Tensor
    choice_mask: torch.Tensor

    @property
    def num_visual(self) -> int:
        return int(self.visual_mask.sum() if self.visual_mask.dim() == 1 else self.visual_mask[0].sum())

    def batch_mask(self, start: int, n: int) -> torch.Tensor:
        """``(n, L)`` visual mask of rows ``start .. start + n``."""
        if self.visual_mask.dim() == 2:
            return self.visual_mask[start: start + n]
        return self.visual_mask[None].expand(n, -1)

    @property
    def has_choices(self) -> bool:
        return self.choice_ids.shape[1] > 0

    def __len__(self) -> int:
        return int(self.index.numel())


@dataclass
class PreparedSet:
    """All samples of an evaluation set, embedded. ``answers (N,)`` is −1 where unlabelled;
    ``targets (N, V)`` (optional, bool) marks the visual tokens that hold the answer's
    evidence where the data knows it (procedural demo videos do), for the analysis."""

    groups: list[PreparedGroup]
    answers: torch.Tensor
    families: tuple[str, ...]
    ids: tuple[str, ...]
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.answers.numel())

    @property
    def labelled(self) -> bool:
        return bool((self.answers >= 0).all())

    @property
    def num_visual(self) -> int:
        """Visual tokens per sample in the largest group (the search's latency proxy)."""
        return max(self.groups, key=len).num_visual

    @property
    def visual_counts(self) -> tuple[int, ...]:
        """The distinct visual-token counts of the samples, ascending."""
        return tuple(sorted({g.num_visual for g in self.groups}))

    @classmethod
    def concat(cls, sets: Sequence[PreparedSet]) -> PreparedSet:
        """One set of the samples of ``sets`` in order (their groups kept apart; ``targets`` padded
        with False to the longest sample)."""
        groups, answers, fams, ids, targets, offset = [], [], [], [], [], 0
        width = max((s.targets.shape[1] for s in sets if s.targets is not None), default=0)
        for s in sets:
            for g in s.groups:
                groups.append(PreparedGroup(index=g.index + offset, inputs_embeds=g.inputs_embeds,
                                            visual_mask=g.visual_mask, choice_ids=g.choice_ids,
                                            choice_mask=g.choice_mask))
            answers.append(s.answers)
            fams.extend(s.families)
            ids.extend(s.ids)
            if s.targets is not None:
                t = torch.zeros(len(s), width, dtype=s.targets.dtype)
                t[:, : s.targets.shape[1]] = s.targets
                targets.append(t)
            offset += len(s)
        tg = torch.cat(targets) if len(targets) == len(sets) and targets else None
        return cls(groups=groups, answers=torch.cat(answers), families=tuple(fams), ids=tuple(ids), targets=tg)

    def to(self, device) -> PreparedSet:
        for g in self.groups:
            g.inputs_embeds = g.inputs_embeds.to(device)
            g.visual_mask = g.visual_mask.to(device)
            g.choice_ids = g.choice_ids.to(device)
            g.choice_mask = g.choice_mask.to(device)
        return self


def group_samples(embeds: Sequence[torch.Tensor], visual_masks: Sequence[torch.Tensor],
                  choice_ids: Sequence[Sequence[int]], answers: Sequence[int | None], families: Sequence[str],
                  ids: Sequence[str], *, same_positions: bool = True) -> PreparedSet:
    """Build a :class:`PreparedSet` from per-sample ``embeds (L_i, H)`` and ``visual_masks (L_i,)``.

    ``same_positions=False`` groups samples of one length and visual-token count whatever the
    positions of their visual tokens (per-row masks; e.g. after EVS, which keeps other tokens in
    every video)."""
    n = len(embeds)
    if not (len(visual_masks) == len(choice_ids) == len(answers) == len(families) == len(ids) == n):
        raise RecordError("group_samples: per-sample lists differ in length")
    keys: dict[tuple, list[int]] = {}
    for i, (e, vm) in enumerate(zip(embeds, visual_masks)):
        if e.dim() != 2 or vm.shape != (e.shape[0],):
            raise RecordError(f"sample {ids[i]}: embeds (L, H) and visual mask (L,) do not match")
        if int(vm.sum()) == 0:
            raise RecordError(f"sample {ids[i]}: no visual tokens")
        where = tuple(vm.nonzero().flatten().tolist()) if same_positions else int(vm.sum())
        key = (e.shape[0], where, len(choice_ids[i]) > 0)
        keys.setdefault(key, []).append(i)
    groups = []
    for idx in keys.values():
        C = max(len(choice_ids[i]) for i in idx)
        ch = torch.zeros(len(idx), C, dtype=torch.long)
        cm = torch.zeros(len(idx), C, dtype=torch.bool)
        for r, i in enumerate(idx):
            ch[r, : len(choice_ids[i])] = torch.as_tensor(list(choice_ids[i]), dtype=torch.long)
            cm[r, : len(choice_ids[i])] = True
        groups.append(PreparedGroup(
            index=torch.as_tensor(idx), inputs_embeds=torch.stack([embeds[i] for i in idx]),
            visual_mask=(visual_masks[idx[0]].bool() if same_positions
                         else torch.stack([visual_masks[i].bool() for i in idx])), choice_ids=ch, choice_mask=cm,
        ))
    ans = torch.as_tensor([-1 if a is None else int(a) for a in answers], dtype=torch.long)
    return PreparedSet(groups=groups, answers=ans, families=tuple(families), ids=tuple(ids))
