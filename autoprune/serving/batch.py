"""Requests of different lengths and visual counts as one left-padded batch.

Left padding keeps every row's real tokens contiguous and last: causal attention masks the
pads out, and a Mamba2 mixer that zeroes the pads' inputs (transformers does, before ``in_proj``
and after the conv) starts each row's scan from a zero state, as a batch of one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ReductionInputError

__all__ = ["RaggedBatch"]


@dataclass(frozen=True)
class RaggedBatch:
    """Rows left-padded to one length ``L``.

    ``inputs``: ``(b, L)`` token ids or ``(b, L, d)`` embeddings; ``token_valid (b, L) bool``:
    the real tokens (pads first); ``visual_mask``/``query_mask (b, L) bool`` (host tensors): the
    visual tokens, and the text after each row's last visual token; ``position_ids (b, L)``:
    ``0 … n_r − 1`` on row ``r``'s real tokens (0 on pads), on the inputs' device.
    """

    inputs: torch.Tensor
    token_valid: torch.Tensor
    visual_mask: torch.Tensor
    query_mask: torch.Tensor
    position_ids: torch.Tensor

    def __post_init__(self):
        b, L = self.token_valid.shape
        if self.inputs.shape[:2] != (b, L):
            raise ReductionInputError(f"inputs have shape {tuple(self.inputs.shape)}, token_valid {(b, L)}")
        for name in ("visual_mask", "query_mask", "position_ids"):
            if tuple(getattr(self, name).shape) != (b, L):
                raise ReductionInputError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected {(b, L)}")
        if bool((self.visual_mask & ~self.token_valid).any()):
            raise ReductionInputError("a visual token is marked as padding")
        if bool((self.token_valid[:, 1:].int() < self.token_valid[:, :-1].int()).any()):
            raise ReductionInputError("pads must come before the real tokens of each row (left padding)")

    @classmethod
    def from_rows(cls, rows: Sequence[torch.Tensor], visual_masks: Sequence[torch.Tensor], *,
                  length: int | None = None, pad_id: int = 0) -> RaggedBatch:
        """``rows[r]``: ``(n_r,)`` token ids or ``(n_r, d)`` embeddings; ``visual_masks[r]``: ``(n_r,)`` bool.

        Every row needs visual tokens and text after them (the query that scores the video).
        ``length``: pad to this many tokens (at least the longest row); default the longest row.
        """
        if len(rows) == 0 or len(rows) != len(visual_masks):
            raise ReductionInputError(f"got {len(rows)} rows and {len(visual_masks)} visual masks; need the same "
                                      f"number, at least one")
        embeds = rows[0].dim() == 2
        for r, (x, vm) in enumerate(zip(rows, visual_masks)):
            if x.dim() != (2 if embeds else 1) or (embeds and x.shape[-1] != rows[0].shape[-1]):
                raise ReductionInputError(f"row {r} has shape {tuple(x.shape)}; every row must be (n,) token ids "
                                          f"or (n, {rows[0].shape[-1] if embeds else 'd'}) embeddings like row 0")
            if vm.dim() != 1 or vm.shape[0] != x.shape[0]:
                raise ReductionInputError(f"visual mask of row {r} has shape {tuple(vm.shape)}, the row has "
                                          f"{x.shape[0]} tokens")
            vm = vm.bool().cpu()
            if not bool(vm.any()):
                raise ReductionInputError(f"row {r} has no visual tokens")
            last = int(torch.nonzero(vm)[-1])
            if last == x.shape[0] - 1:
                raise ReductionInputError(f"row {r} has no text after its last visual token (the query)")
        longest = max(x.shape[0] for x in rows)
        L = longest if length is None else int(length)
        if L < longest:
            raise ReductionInputError(f"length={L} is shorter than the longest row ({longest} tokens)")
        b = len(rows)
        ref = rows[0]
        shape = (b, L, ref.shape[-1]) if embeds else (b, L)
        inputs = (torch.zeros(shape, dtype=ref.dtype, device=ref.device) if embeds
                  else torch.full(shape, pad_id, dtype=ref.dtype, device=ref.device))
        tv = torch.zeros(b, L, dtype=torch.bool)
        vms = torch.zeros(b, L, dtype=torch.bool)
        pos = torch.zeros(b, L, dtype=torch.long)
        for r, (x, vm) in enumerate(zip(rows, visual_masks)):
            n = x.shape[0]
            inputs[r, L - n:] = x.to(inputs.device)
            tv[r, L - n:] = True
            vms[r, L - n:] = vm.bool().cpu()
            pos[r, L - n:] = torch.arange(n)
        return cls(inputs=inputs, token_valid=tv, visual_mask=vms, query_mask=query_after_video(vms, tv),
                   position_ids=pos.to(ref.device))

    # ------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        return self.token_valid.shape[0]

    @property
    def length(self) -> int:
        return self.token_valid.shape[1]

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.token_valid.sum(dim=1))

    @property
    def row_visual(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.visual_mask.sum(dim=1))

    @property
    def num_query(self) -> int:
        return int(self.query_mask.sum(dim=1).max())

    @property
    def has_pads(self) -> bool:
        return not bool(self.token_valid.all())

    @property
    def is_embeds(self) -> bool:
        return self.inputs.dim() == 3

    def padded_to(self, length: int) -> RaggedBatch:
        """The same rows, left-padded to ``length`` tokens."""
        extra = int(length) - self.length
        if extra < 0:
            raise ReductionInputError(f"cannot pad a batch of length {self.length} to {length}")
        if extra == 0:
            return self
        b = self.batch_size

        def left(t, fill=0):
            pad = torch.full((b, extra, *t.shape[2:]), fill, dtype=t.dtype, device=t.device)
            return torch.cat([pad, t], dim=1)

        pad_id = 0 if self.is_embeds else int(self.inputs[~self.token_valid.to(self.inputs.device)][:1].sum())
        return RaggedBatch(inputs=left(self.inputs, pad_id), token_valid=left(self.token_valid, False),
                           visual_mask=left(self.visual_mask, False), query_mask=left(self.query_mask, False),
                           position_ids=left(self.position_ids))


def query_after_video(visual_mask: torch.Tensor, token_valid: torch.Tensor) -> torch.Tensor:
    """Real tokens after each row's last visual token."""
    L = visual_mask.shape[1]
    last = (torch.arange(L)[None] * visual_mask).amax(dim=1)
    return (torch.arange(L)[None] > last[:, None]) & token_valid
