"""Apply a :class:`~autoprune.schedule.Schedule` during prefill.

::

    with autoprune.reduce(model, schedule, visual_mask=mask):
        out = model.generate(inputs_embeds=embeds, max_new_tokens=16)

The model is changed only through removable hooks:

- a pre-hook on each decoder layer removes visual tokens where the schedule drops,
  and slices every per-token input of the layer (masks, position ids, RoPE cos/sin)
  to the tokens still present; kept tokens keep their original positions;
- forward hooks on the evidence layers' own projections (``q_proj``/``k_proj`` of
  attention, ``in_proj`` of Mamba2, ``x_proj`` of Mamba1, a Gated DeltaNet's input
  projections) capture what the language-aware
  score needs (a pre-hook on the attention module where q/k are more than the projections'
  outputs, as on Zamba2's shared attention); a layer with two mixers (Falcon-H1's parallel
  attention + Mamba2, Zamba2's shared attention + Mamba2) blends both evidences,
  ``w_attn·ê_attn + w_mamba·ê_mamba``, into one state update;
- a pre-hook on the decoder stack starts a prefill and, during decoding after a
  reduced prefill, maps the full-length attention mask and positions onto the
  cache, which holds only the kept tokens.

Removing the handle removes every hook; the model's parameters are never touched.

*Ragged batches* (``ragged=True``): rows may hold different numbers of visual tokens and be
left-padded to one length (``token_valid`` or a 2D ``attention_mask`` marks the real tokens;
pads must precede them). Each row is reduced by its own plan; after a prune point the rows
are left-padded again to one width, and every mixer layer gets masks rebuilt from the real
tokens: attention masks out the pads (a pad attends only to itself, so no row is empty), and
the Mamba2 mixers zero the pads before ``in_proj`` and after their conv, as transformers does
for padded batches. A zero input keeps a zero SSM state and a zero conv window, so the pads
before a row change nothing of its real tokens: the row equals its single run.

A prefix activation cache (:mod:`autoprune.tasks.prefix_cache`) can attach an *evidence
store* to the decoder for one call (:func:`attach_evidence_store`): a reduced prefill then
starts by replaying the stored evidence of the layers the cache skipped, and reports the
evidence it computes on the unreduced sequence, so that the next schedule can skip them.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from . import delta_rule, scoring
from .adapters import HybridAdapter, get_adapter, get_input_stage
from .errors import ReductionInputError
from .kernels import causal_conv1d_act_ref, dispatch
from .plan import ReductionPlan, evidence_kind, plan_reduction
from .profiler.ranges import EVIDENCE, GATHER, SELECT
from .schedule import Schedule

__all__ = ["ReductionHandle", "attach_evidence_store", "attention_mask_4d", "first_true_indices", "mamba1_inputs",
           "mamba2_inputs",
           "reduce"]

# decoder module -> evidence store attached for the duration of one call (see the module docstring)
_EVIDENCE_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def attach_evidence_store(model: nn.Module, store):
    """Within the block, reduced prefills of ``model`` replay and report evidence through ``store``.

    ``store.replay(evidence_layers, scorer) -> [(layer, kind, evidence (b, n_visual))]``: the
    evidence of layers that will not run in this call (ascending); ``store.observe(layer, kind,
    scorer, evidence)``: evidence computed on the unreduced sequence (before the first cut).
    """
    decoder = get_adapter(model).decoder
    if decoder in _EVIDENCE_STORES:
        raise ReductionInputError("an evidence store is already attached to this model")
    _EVIDENCE_STORES[decoder] = store
    try:
        yield store
    finally:
        _EVIDENCE_STORES.pop(decoder, None)


def first_true_indices(flag: torch.Tensor, m: int) -> torch.Tensor:
    """Column indices ``(b, m)`` of the first ``m`` True entries of each row of ``flag (b, n)``, ascending.

    One stable sort, no host synchronisation (``nonzero`` would need one). Every row must
    hold at least ``m`` True entries, else its remaining columns are False ones. The runtime
    finds the current positions of the visual and query tokens, and of the tokens kept at a
    prune point, with it (and the profiler times the same call).
    """
    return torch.sort((~flag).to(torch.int8), dim=1, stable=True).indices[:, :m]


class _Prefill:
    """State of one reduced prefill: which original tokens are present, and their importance."""

    def __init__(self, handle: ReductionHandle, batch: int, token_valid: torch.Tensor | None, device):
        self.h = handle
        L = handle.length
        self.pos = torch.arange(L, device=device)[None].expand(batch, -1).contiguous()
        self.is_vis, self.is_query, self.q_valid = handle.device_masks(device)
        self.valid = None if token_valid is None else token_valid.to(device)
        self.ragged = handle.ragged
        if self.ragged:  # per row: which visual slots are real, how many visual tokens remain
            if self.valid is None:
                self.valid = torch.ones(batch, L, dtype=torch.bool, device=device)
            self.row_counts = list(handle.row_visual)
            self.vis_valid = handle.device_const(("vis_valid", handle.num_visual), device)
            self.has_pads = handle.has_pads
            self._masks: dict = {}
            self.layer_valid: dict[int, torch.Tensor] = {}  # attention layer -> real tokens in its cache
        self.state = scoring.ImportanceState(batch, handle.num_visual, momentum=handle.schedule.scorer.state_momentum,
                                             device=device)
        self.n_vis = handle.num_visual
        self.n_query = handle.num_query
        self.version = 0
        self.active = True
        self._slices: dict = {}
        self._index: tuple | None = None
        self.selections: dict[int, torch.Tensor] = {}
        self.evidence: dict[int, dict] = {}
        self.pending_q: dict[int, torch.Tensor] = {}
        self.pending_rope: dict[int, tuple] = {}
        self.pending_dn: dict[int, list] = {}
        self.partial: dict[int, dict] = {}  # layer with two mixers -> the evidence of each seen so far
        self.store = None  # an attached evidence store (prefix activation cache), if any
        self.priority = handle.device_priority(device)  # (b, L) over original positions, or None

    @property
    def reduced(self) -> bool:
        if self.ragged:  # a ragged prune re-lays the rows out even where the width stays
            return self.version > 0
        return self.pos.shape[1] < self.h.length

    def indices(self):
        """Current-sequence indices of query rows (padded + valid) and of visual tokens."""
        if self._index is None or self._index[0] != self.version:
            q_idx = first_true_indices(self.is_query, self.n_query)
            if self.q_valid is not None:  # rows with fewer query tokens repeat their first one, masked out
                q_idx = torch.where(self.q_valid, q_idx, q_idx[:, :1])
            v_idx = first_true_indices(self.is_vis, self.n_vis)
            self._index = (self.version, q_idx, self.q_valid, v_idx)
        return self._index[1:]

    def prune(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        if self.ragged:
            return self._prune_ragged(layer, hidden)
        n_keep = self.h.plan.counts[layer]
        sc = self.h.schedule.scorer
        _, _, v_idx = self.indices()
        b, n_vis = v_idx.shape
        # Selection is not differentiable; the gather of ``hidden`` below keeps gradients
        # (training under reduction).
        with torch.no_grad(), record_function(SELECT):
            if layer == 0 or sc.selector == "uniform_stride":
                pick = scoring.select_uniform_stride(b, n_vis, n_keep, device=hidden.device)
                self.state.gather(pick)
            elif sc.selector == "random":
                pick = scoring.select_random(b, n_vis, n_keep, seed=sc.seed * 1_000_003 + layer,
                                             device=hidden.device)
                self.state.gather(pick)
            elif self.priority is not None:
                # the visual tokens still present, by original position: which of them go first
                first = torch.gather(self.priority, 1, torch.gather(self.pos, 1, v_idx))
                pick = self.state.keep(n_keep, first=first)
            else:
                pick = self.state.keep(n_keep)
        with record_function(GATHER):
            return self._compact(layer, hidden, v_idx, pick, n_vis, n_keep)

    def _compact(self, layer, hidden, v_idx, pick, n_vis, n_keep):
        """Keep the visual tokens ``pick`` (slots of ``v_idx``) and every other token, in order."""
        chosen = torch.gather(v_idx, 1, pick)
        self.selections[layer] = torch.gather(self.pos, 1, chosen)
        keep = (~self.is_vis).scatter(1, chosen, True)
        cur = first_true_indices(keep, self.pos.shape[1] - n_vis + n_keep)
        hidden = torch.gather(hidden, 1, cur[..., None].expand(-1, -1, hidden.shape[-1]))
        self.pos = torch.gather(self.pos, 1, cur)
        self.is_vis = torch.gather(self.is_vis, 1, cur)
        self.is_query = torch.gather(self.is_query, 1, cur)
        if self.valid is not None:
            self.valid = torch.gather(self.valid, 1, cur)
        self.n_vis = n_keep
        self.version += 1
        self._slices.clear()
        return hidden

    def _prune_ragged(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Each row keeps its own plan's count; rows are left-padded again to the layer's width."""
        h = self.h
        new_counts = [p.counts[layer] for p in h.row_plans]
        K, W = max(new_counts), h.widths[layer]
        dev = hidden.device
        sc = h.schedule.scorer
        _, _, v_idx = self.indices()
        pick_valid = h.device_const(("pick_valid", layer), dev)  # (b, K): slot < the row's new count
        with torch.no_grad(), record_function(SELECT):
            if layer == 0 or sc.selector in ("uniform_stride", "random"):
                pick = h.device_const(("pick", layer, tuple(self.row_counts)), dev)  # host-made, per row
            else:
                scores = self.state.scores.masked_fill(~self.vis_valid, float("-inf"))
                order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :K]
                order = torch.where(pick_valid, order, torch.full_like(order, v_idx.shape[1]))
                pick = torch.sort(order, dim=-1).values
                pick = torch.where(pick_valid, pick, torch.zeros_like(pick))
            self.state.scores = torch.gather(self.state.scores, 1, pick) * pick_valid
        with record_function(GATHER):
            return self._compact_ragged(layer, hidden, v_idx, pick, pick_valid, new_counts, K, W)

    def _compact_ragged(self, layer, hidden, v_idx, pick, pick_valid, new_counts, K, W):
        """:meth:`_compact` per row, each left-padded again to the width ``W``."""
        b, n = self.pos.shape
        dev = hidden.device
        chosen = torch.gather(v_idx, 1, pick)
        self.selections[layer] = torch.gather(self.pos, 1, chosen)
        hit = torch.zeros(b, n, dtype=torch.int32, device=dev).scatter_add(1, chosen, pick_valid.to(torch.int32))
        keep = (~self.is_vis & self.valid) | (hit > 0)
        # kept tokens last, in order; the columns before them become the row's pads
        cur = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices[:, n - W:]
        valid = torch.gather(keep, 1, cur)
        hidden = torch.gather(hidden, 1, cur[..., None].expand(-1, -1, hidden.shape[-1]))
        self.pos = torch.gather(self.pos, 1, cur)
        self.is_vis = torch.gather(self.is_vis, 1, cur) & valid
        self.is_query = torch.gather(self.is_query, 1, cur) & valid
        self.valid = valid
        self.vis_valid = pick_valid
        self.row_counts = new_counts
        self.n_vis = K
        self.has_pads = True
        self.version += 1
        self._slices.clear()
        return hidden

    def layer_mask(self, kind: str, like: torch.Tensor):
        """Ragged mode: the mask a layer of ``kind`` gets, rebuilt from the real tokens (None: no pads)."""
        if not self.has_pads or kind not in "*M":
            return None
        key = (kind, self.version)
        if key not in self._masks:
            if kind == "M":  # 2D padding mask, as transformers hands the Mamba2 mixers
                self._masks[key] = self.valid.to(torch.long)
            else:
                self._masks[key] = attention_mask_4d(self.valid, self.h.attn_implementation, like.dtype)
        return self._masks[key]

    def slice_kwarg(self, name: str, value):
        if value is None or not self.reduced:
            return value
        key = (name, id(value))
        if key in self._slices:
            return self._slices[key]
        out = self._slice(name, value)
        self._slices[key] = out
        return out

    def _slice(self, name, value):
        pos = self.pos
        b, n = pos.shape
        if isinstance(value, tuple):  # RoPE (cos, sin): (b|1, L, d)
            return tuple(self._slice(name, v) for v in value)
        if isinstance(value, dict):
            raise ReductionInputError(f"{name} given as a dict of precomputed masks is not supported while reducing")
        if not isinstance(value, torch.Tensor):
            raise ReductionInputError(f"cannot slice {name} of type {type(value).__name__} per token")
        L = self.h.length
        if value.dim() == 4:  # (b|1, heads|1, q, kv) additive or boolean mask
            if value.shape[-1] != L or value.shape[-2] != L:
                raise ReductionInputError(f"{name} has shape {tuple(value.shape)}, expected (..., {L}, {L})")
            v = value.expand(b, *value.shape[1:]) if value.shape[0] == 1 and b > 1 else value
            rows = pos[:, None, :, None].expand(-1, v.shape[1], -1, L)
            v = torch.gather(v, 2, rows)
            cols = pos[:, None, None, :].expand(-1, v.shape[1], n, -1)
            return torch.gather(v, 3, cols)
        if value.dim() in (2, 3) and value.shape[1] == L:  # (b|1, L) masks/positions or (b|1, L, d)
            v = value.expand(b, *value.shape[1:]) if value.shape[0] == 1 and b > 1 else value
            idx = pos if v.dim() == 2 else pos[..., None].expand(-1, -1, v.shape[-1])
            return torch.gather(v, 1, idx)
        raise ReductionInputError(f"{name} has shape {tuple(value.shape)}; expected one entry per token (L={L})")


class ReductionHandle:
    """Hooks that apply ``schedule`` to ``model``; use as a context manager or call ``remove()``.

    ``visual_mask (b, L) bool``: True at visual tokens, the same count in every row.
    ``query_mask (b, L) bool``: the rows whose attention decides importance; default:
    every token after the row's last visual token. Query tokens must follow all visual
    tokens (they do in ``[prefix][video][question]`` prompts).

    ``ragged=True``: rows may differ in visual counts (see the module docstring); real tokens
    from ``token_valid (b, L) bool`` (pads first in each row) or the call's 2D
    ``attention_mask``. ``query_slots``: a fixed number of query rows (at least the longest
    row's query), so that prompts of other lengths keep every shape (CUDA-graph replays).
    After a cut the rows are re-padded to the widest row's real tokens (its text and the visual
    tokens it keeps); ``text_slots``: a fixed text capacity per row instead (at least the longest
    row's non-visual real tokens), so that prompts of other lengths keep those widths too.

    ``priority (b, L) bool`` (optional): visual tokens kept before any other at every cut the
    language-aware selector makes (``scorer.selector == "language"``, layers ≥ 1; the layer-0
    prefilter stays query-agnostic): ranked first, the importance score ranks them among
    themselves and fills the rest of the keep. An analysis tool (an oracle that knows which tokens
    hold the answer, :mod:`autoprune.headroom`), not an inference option; refused in ragged mode,
    through an input stage (EVS) and with the query-agnostic selectors.

    After each prefill, ``last`` holds what happened: ``pos`` (original positions of
    the tokens that reached the last layer, i.e. those in the cache; ragged: ``valid`` marks
    the real ones),
    ``selections`` (visual positions kept at each prune layer) and, with
    ``record_evidence=True``, the normalised evidence of every mixer layer.
    """

    def __init__(self, model: nn.Module, schedule: Schedule, visual_mask: torch.Tensor,
                 query_mask: torch.Tensor | None = None, *, use_kernels: bool | None = None,
                 record_evidence: bool = False, adapter: HybridAdapter | None = None, ragged: bool = False,
                 token_valid: torch.Tensor | None = None, query_slots: int | None = None,
                 text_slots: int | None = None, priority: torch.Tensor | None = None):
        self.model = model
        self.ragged = bool(ragged)
        self.query_slots = query_slots
        self.text_slots = text_slots
        self.adapter = adapter or get_adapter(model)
        self.schedule = schedule
        schedule.check_model(self.adapter.signature())
        self.use_kernels = use_kernels
        self.record_evidence = record_evidence
        self.attn_implementation = getattr(self.adapter.config, "_attn_implementation", None) or "sdpa"
        self._given = self._check_masks(visual_mask, query_mask, ragged=self.ragged)
        self._token_valid = None if token_valid is None else self._check_token_valid(token_valid, self._given[0])
        # A wrapper whose decoder sees fewer tokens than its input (EVS): the masks given are for
        # the wrapper's input and are mapped onto the decoder's input at each prefill.
        self._stage = get_input_stage(model)
        if self.ragged and self._stage is not None:
            raise ReductionInputError("ragged batches are not supported through an input stage (EVS)")
        self._priority = None if priority is None else self._check_priority(priority, self._given[0])
        self._prefill: _Prefill | None = None
        self.last: _Prefill | None = None
        self._cache_ref = None
        self._hooks: list = []
        self._evidence_hooks: list = []
        self._evidence_installed: dict | None = None
        try:
            self._bind(*self._given)
            self._install()
        except BaseException:
            self.remove()
            raise

    def _bind(self, visual_mask: torch.Tensor, query_mask: torch.Tensor) -> None:
        """Take ``(b, L)`` masks of the decoder's input: token counts, the plan, the evidence hooks."""
        self.visual_mask, self.query_mask = visual_mask, query_mask
        self.batch, self.length = self.visual_mask.shape
        self.row_visual = tuple(int(c) for c in self.visual_mask.sum(dim=1))
        self.num_visual = max(self.row_visual)
        q_counts = self.query_mask.sum(dim=1)
        self.num_query = int(q_counts.max())
        if self.query_slots is not None:
            if self.query_slots < self.num_query:
                raise ReductionInputError(f"query_slots={self.query_slots} is less than the {self.num_query} "
                                          f"query tokens of the longest row")
            self.num_query = int(self.query_slots)
        # rows with fewer query tokens than the longest one: which of their query slots are real
        self._q_valid = None
        if self.query_slots is not None or not bool((q_counts == self.num_query).all()):
            self._q_valid = torch.arange(self.num_query)[None] < q_counts[:, None]
        self._on_device: dict = {}
        if self.ragged:
            self._bind_ragged()
        else:
            self.plan = plan_reduction(self.schedule, self.adapter.layer_kinds, self.num_visual)
        if self._evidence_installed is not None and self._evidence_installed != self._evidence_layers():
            self._install_evidence()

    def _bind_ragged(self) -> None:
        """One plan per row; the union of prune and evidence layers; each prune layer's width."""
        kinds = self.adapter.layer_kinds
        # Ragged masks are rebuilt for attention ("*") and Mamba2 ("M") layers only; the two-mixer
        # and Mamba1 layers take masks of their own (Falcon-H1's mamba_attention_mask, Zamba2's
        # positional masks), which a re-laid-out row would hand them stale.
        unsupported = sorted(set(kinds) & set("PSA"))
        if unsupported:
            raise ReductionInputError(f"ragged batches are not supported on {self.adapter.model_type} "
                                      f"(layer kinds {unsupported}); reduce rows of equal visual counts")
        by_count = {v: plan_reduction(self.schedule, kinds, v) for v in sorted(set(self.row_visual))}
        self.row_plans = tuple(by_count[v] for v in self.row_visual)
        prunes = sorted({i for p in by_count.values() for i in p.prune_layers})
        evidence = {j: k for p in by_count.values() for j, k in p.evidence_layers.items()}
        counts = tuple(max(p.counts[i] for p in by_count.values()) for i in range(len(kinds)))
        self.plan = ReductionPlan(self.num_visual, counts, tuple(prunes), dict(sorted(evidence.items())))
        self.widths = self._widths(self._row_text(self._token_valid), prunes)
        self.has_pads = self._token_valid is not None and not bool(self._token_valid.all())

    def _row_text(self, token_valid: torch.Tensor | None) -> list[int]:
        """Each row's real non-visual tokens (prompt text, pads excluded)."""
        real = ([self.length] * self.batch if token_valid is None
                else [int(c) for c in token_valid.sum(dim=1)])
        return [n - v for n, v in zip(real, self.row_visual)]

    def _widths(self, text: list[int], prunes) -> dict[int, int]:
        """Width after each cut: the widest row's text (or its ``text_slots`` capacity) plus the
        visual tokens it keeps. (Bounding a row's text by the padded length instead would pad a
        batch of mixed lengths to nearly its full length after every cut.)"""
        if self.text_slots is not None:
            if max(text) > self.text_slots:
                raise ReductionInputError(f"text_slots={self.text_slots} is less than the {max(text)} text tokens "
                                          f"of the longest row")
            text = [min(self.text_slots, self.length - v) for v in self.row_visual]
        return {i: max(t + p.counts[i] for t, p in zip(text, self.row_plans)) for i in prunes}

    def device_const(self, key: tuple, device) -> torch.Tensor:
        """Small host-made tensors of a ragged prefill (per-row counts, selections), copied once per device.

        Made on the host and cached, so that a CUDA-graph capture after an eager warm-up copies nothing.
        """
        device = torch.device(device)
        ck = ("const", key, device)
        got = self._on_device.get(ck)
        if got is None:
            got = self._on_device[ck] = _to_device(self._host_const(key), device)
        return got

    def _host_const(self, key: tuple) -> torch.Tensor:
        what = key[0]
        if what == "vis_valid":
            return torch.arange(key[1])[None] < torch.tensor(self.row_visual)[:, None]
        if what == "evidence_rows":
            return torch.tensor([key[1] in p.evidence_layers for p in self.row_plans])
        counts = [p.counts[key[1]] for p in self.row_plans]
        if what == "pick_valid":
            return torch.arange(max(counts))[None] < torch.tensor(counts)[:, None]
        if what == "pick":  # a query-agnostic selection per row, as a batch of one would make it
            layer, now = key[1], key[2]
            sc, K = self.schedule.scorer, max(counts)
            out = torch.zeros(len(counts), K, dtype=torch.long)
            for r, (n, k) in enumerate(zip(now, counts)):
                if layer == 0 or sc.selector == "uniform_stride":
                    row = scoring.select_uniform_stride(1, n, k)[0]
                else:
                    row = scoring.select_random(1, n, k, seed=sc.seed * 1_000_003 + layer)[0]
                out[r, :k] = row
            return out
        raise KeyError(key)

    def _check_priority(self, priority, visual_mask) -> torch.Tensor:
        if self.ragged:
            raise ReductionInputError("priority= is not supported in ragged mode (ragged=True): reduce rows of "
                                      "equal visual counts")
        if self._stage is not None:
            raise ReductionInputError("priority= is not supported through an input stage (EVS)")
        if self.schedule.scorer.selector != "language":
            raise ReductionInputError(f"priority= needs the language-aware selector (scorer.selector='language'), "
                                      f"not {self.schedule.scorer.selector!r}")
        if not isinstance(priority, torch.Tensor):
            raise ReductionInputError(f"priority must be a torch.Tensor, got {type(priority).__name__}")
        pr = priority[None] if priority.dim() == 1 else priority
        if pr.dtype != torch.bool:
            raise ReductionInputError(f"priority must be a boolean mask, got dtype {pr.dtype}")
        pr = pr.detach().cpu()
        if pr.shape != visual_mask.shape:
            raise ReductionInputError(f"priority has shape {tuple(pr.shape)}, visual_mask {tuple(visual_mask.shape)}")
        if bool((pr & ~visual_mask).any()):
            raise ReductionInputError("priority marks a token that is not visual (only visual tokens are ever removed)")
        return pr

    def device_priority(self, device) -> torch.Tensor | None:
        """``priority`` given at construction, on ``device`` (copied once, like the masks), or None."""
        if self._priority is None:
            return None
        key = ("priority", torch.device(device))
        if key not in self._on_device:
            self._on_device[key] = _to_device(self._priority, torch.device(device))
        return self._on_device[key]

    @staticmethod
    def _check_token_valid(token_valid, visual_mask) -> torch.Tensor:
        tv = token_valid[None] if token_valid.dim() == 1 else token_valid
        tv = tv.detach().bool().cpu()
        if tv.shape != visual_mask.shape:
            raise ReductionInputError(f"token_valid has shape {tuple(tv.shape)}, visual_mask {tuple(visual_mask.shape)}")
        if bool((~tv & visual_mask).any()):
            raise ReductionInputError("token_valid marks a visual token as padding")
        if bool((tv[:, 1:].int() < tv[:, :-1].int()).any()):
            raise ReductionInputError("token_valid: pads must come before the real tokens of each row (left padding)")
        return tv

    def rebind(self, visual_mask: torch.Tensor, query_mask: torch.Tensor | None = None,
               token_valid: torch.Tensor | None = None) -> None:
        """New masks of the same layout (per-row visual counts, query slots, padding or not), copied
        in place into the device buffers a captured CUDA graph reads."""
        vm, qm = self._check_masks(visual_mask, query_mask, ragged=self.ragged)
        tv = None if token_valid is None else self._check_token_valid(token_valid, vm)
        row_visual = tuple(int(c) for c in vm.sum(dim=1))
        n_query = int(qm.sum(dim=1).max())
        if (vm.shape != self.visual_mask.shape or row_visual != self.row_visual or (tv is None) != (self._token_valid is None)
                or self.query_slots is None or n_query > self.query_slots
                or (tv is not None and bool(tv.all()) != (not self.has_pads))):
            raise ReductionInputError("rebind needs masks of the same layout (shape, visual counts per row, "
                                      "query slots, padding)")
        if self.ragged:
            new_widths = self._widths(self._row_text(tv), list(self.widths))
            if any(new_widths[i] > w for i, w in self.widths.items()):
                raise ReductionInputError("rebind: a row's text no longer fits the widths of this layout "
                                          "(give text_slots to fix a text capacity)")
        q_valid = torch.arange(self.num_query)[None] < qm.sum(dim=1)[:, None]
        self._given = (vm, qm)
        self.visual_mask, self.query_mask, self._q_valid, self._token_valid = vm, qm, q_valid, tv
        for key, t in self._on_device.items():
            if isinstance(key, tuple) and key and key[0] in ("masks", "token_valid"):
                new = ((vm, qm, q_valid)[key[2]] if key[0] == "masks" else tv)
                t.copy_(_to_device(new, t.device), non_blocking=True)

    def _through_stage(self, kept: torch.Tensor, kwargs: dict) -> dict:
        """Map the given masks (of the wrapper's input) through the tokens the stage kept."""
        vm0, qm0 = self._given
        kept = kept.detach().bool().cpu()
        if kept.shape != vm0.shape:
            raise ReductionInputError(
                f"visual_mask is for batch {vm0.shape[0]} and length {vm0.shape[1]}; the model was called with "
                f"input_ids of shape {tuple(kept.shape)} (give the mask of the input_ids passed to the model)")
        b = kept.shape[0]
        counts = kept.sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ReductionInputError(f"EVS kept {counts.tolist()} tokens per row; reduce needs the same count")
        vm, qm = vm0[kept].view(b, -1), qm0[kept].view(b, -1)
        if int(vm.sum(dim=1).min()) == 0:
            raise ReductionInputError("after EVS a row has no visual tokens")
        self._bind(vm, qm)
        pid = kwargs.get("position_ids")
        if isinstance(pid, torch.Tensor) and pid.dim() == 2 and pid.shape[1] == kept.shape[1]:
            # positions of the kept tokens: their original ones
            kwargs["position_ids"] = pid.expand(b, -1)[kept.to(pid.device)].view(b, -1)
        return kwargs

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _check_masks(visual_mask, query_mask, ragged: bool = False):
        if not isinstance(visual_mask, torch.Tensor):
            raise ReductionInputError(f"visual_mask must be a torch.Tensor, got {type(visual_mask).__name__}")
        vm = visual_mask
        if vm.dim() == 1:
            vm = vm[None]
        if vm.dim() != 2:
            raise ReductionInputError(f"visual_mask must be (batch, seq_len), got shape {tuple(visual_mask.shape)}")
        vm = vm.detach().bool().cpu()
        counts = vm.sum(dim=1)
        if int(counts.min()) == 0:
            raise ReductionInputError("visual_mask has a row without visual tokens")
        if not ragged and not bool((counts == counts[0]).all()):
            raise ReductionInputError(
                f"every row must have the same number of visual tokens, got {counts.tolist()} "
                f"(ragged=True reduces each row by its own count)"
            )
        L = vm.shape[1]
        last_vis = (torch.arange(L)[None] * vm).amax(dim=1)
        if query_mask is None:
            qm = torch.arange(L)[None] > last_vis[:, None]
        else:
            qm = query_mask[None] if query_mask.dim() == 1 else query_mask
            if qm.shape != vm.shape:
                raise ReductionInputError(
                    f"query_mask has shape {tuple(query_mask.shape)}, visual_mask {tuple(vm.shape)}"
                )
            qm = qm.detach().bool().cpu()
            if bool((qm & vm).any()):
                raise ReductionInputError("query_mask and visual_mask overlap: a token cannot be both")
            first_q = torch.where(qm, torch.arange(L)[None], torch.full_like(qm, L, dtype=torch.long)).amin(dim=1)
            if bool((first_q <= last_vis).any()):
                raise ReductionInputError("query tokens must come after the last visual token of their row")
        if not bool(qm.any(dim=1).all()):
            raise ReductionInputError(
                "a row has no query tokens: the text after the last visual token is what scores the video"
            )
        return vm, qm

    # ------------------------------------------------------------------- hooks
    def _install(self):
        if self._stage is not None:
            self._hooks.extend(self._stage.install())
        dec = self.adapter.decoder
        self._hooks.append(dec.register_forward_pre_hook(self._decoder_pre, with_kwargs=True))
        self._hooks.append(dec.register_forward_hook(self._decoder_post, with_kwargs=True))
        for i, layer in enumerate(self.adapter.layers):
            self._hooks.append(layer.register_forward_pre_hook(self._layer_pre(i), with_kwargs=True))
        self._install_evidence()

    def _evidence_layers(self) -> dict:
        kinds = self.adapter.layer_kinds
        evidence_layers = dict(self.plan.evidence_layers)
        if self.record_evidence:
            for j, k in enumerate(kinds):
                kind = evidence_kind(k, 1.0, 1.0)
                if kind and j not in evidence_layers:
                    evidence_layers[j] = kind
        return evidence_layers

    def _install_evidence(self):
        for h in self._evidence_hooks:
            h.remove()
        self._evidence_hooks.clear()
        evidence_layers = self._evidence_installed = self._evidence_layers()
        kinds = self.adapter.layer_kinds
        for j, kind in evidence_layers.items():
            for part in kind.split("+"):
                self._evidence_hooks.extend(self._capture(j, part, kinds[j]))

    def _capture(self, j: int, part: str, letter: str) -> list:
        """Hooks that compute the ``part`` (attention | mamba | linear) evidence of layer ``j``."""
        if part == "attention":
            parts = self.adapter.attention_parts(j)
            if parts.project_q is not None:
                return [parts.module.register_forward_pre_hook(self._attn_input_hook(j, parts), with_kwargs=True)]
            return [parts.module.register_forward_pre_hook(self._attn_pre(j), with_kwargs=True),
                    parts.q_proj.register_forward_hook(self._q_hook(j, parts)),
                    parts.k_proj.register_forward_hook(self._k_hook(j, parts))]
        if part == "linear":
            parts = self.adapter.deltanet_parts(j)
            return [proj.register_forward_hook(self._deltanet_hook(j, i, parts))
                    for i, proj in enumerate(parts.projections)]
        if letter == "A":
            parts = self.adapter.mamba1_parts(j)
            return [parts.x_proj.register_forward_hook(self._x_proj_hook(j, parts))]
        parts = self.adapter.mamba2_parts(j)
        return [parts.in_proj.register_forward_hook(self._in_proj_hook(j, parts))]

    def remove(self) -> None:
        for h in self._hooks + self._evidence_hooks:
            h.remove()
        self._hooks.clear()
        self._evidence_hooks.clear()
        self._prefill = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def device_masks(self, device) -> tuple:
        """``(visual_mask, query_mask, query_valid | None)`` on ``device``, copied once per handle.

        Copies to a GPU go through pinned memory without blocking: a pageable copy would wait
        for the stream to drain at every prefill, and the copy would also break CUDA-graph
        capture of a prefill (warm up once, eagerly, before capturing).
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        got = self._on_device.get(device)
        if got is None:
            got = tuple(None if t is None else _to_device(t, device)
                        for t in (self.visual_mask, self.query_mask, self._q_valid))
            self._on_device[device] = got
            for i, t in enumerate(got):
                if t is not None:
                    self._on_device[("masks", device, i)] = t
        return got

    def device_token_valid(self, device) -> torch.Tensor | None:
        """``token_valid`` given at construction, on ``device`` (copied once, like the masks)."""
        if self._token_valid is None:
            return None
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = ("token_valid", device, 0)
        if key not in self._on_device:
            self._on_device[key] = _to_device(self._token_valid, device)
        return self._on_device[key]

    @property
    def kept_valid(self) -> torch.Tensor | None:
        """Ragged prefills: which cache entries of ``kept_positions`` are real tokens (the others are pads)."""
        return None if self.last is None else self.last.valid

    @property
    def cache_valid(self) -> dict | None:
        """Ragged prefills: per attention layer, which entries of its KV cache are real tokens ``(b, n_i)``
        (layers before a prune point cache more tokens than the last one)."""
        return None if self.last is None or not self.last.ragged else dict(self.last.layer_valid)

    @property
    def kept_positions(self) -> torch.Tensor | None:
        return None if self.last is None else self.last.pos

    # decoder: start a prefill, or remap masks/positions while decoding ----------
    def _decoder_pre(self, module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        if x is None:
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None else 0
        b, L = x.shape[0], x.shape[1]
        if past == 0:
            changed = False
            kept = self._stage.take() if self._stage is not None else None
            if kept is not None and (b, L) != tuple(self._given[0].shape):
                kwargs, changed = self._through_stage(kept, kwargs), True
            elif self._stage is not None and (self.batch, self.length) != tuple(self._given[0].shape):
                self._bind(*self._given)  # a call without EVS after one with it
            if (b, L) != (self.batch, self.length):
                raise ReductionInputError(
                    f"the model was called with batch {b} and length {L}; visual_mask is for batch "
                    f"{self.batch} and length {self.length}"
                )
            am = kwargs.get("attention_mask")
            token_valid = None
            if self._token_valid is not None:  # checked on the host at construction: no sync here
                token_valid = self.device_token_valid(x.device)
            elif isinstance(am, torch.Tensor) and am.dim() == 2:
                token_valid = am.bool()
                if bool(token_valid.all()):
                    token_valid = None
                elif bool((~token_valid & self.device_masks(am.device)[0]).any()):
                    raise ReductionInputError("attention_mask masks out a visual token")
            pf = self._prefill = _Prefill(self, b, token_valid, x.device)
            pf.store = _EVIDENCE_STORES.get(self.adapter.decoder)
            if pf.store is not None and self.ragged:
                raise ReductionInputError("an evidence store (prefix cache) cannot serve a ragged batch")
            if pf.store is not None:
                for j, kind, ev in pf.store.replay(self.plan.evidence_layers, self.schedule.scorer):
                    self._update_state(pf, j, kind, ev.to(x.device))
            return (args, kwargs) if changed else None
        last = self.last
        if last is None or self._cache_ref is None or self._cache_ref() is not cache:
            return None  # not a cache this handle reduced: leave the call alone
        if last.ragged and last.has_pads:
            # Each attention layer caches its own width, with the pads elsewhere: one decoder mask cannot
            # serve them; ReducedPrefill.generate masks each layer's cache.
            raise ReductionInputError("decoding after a ragged prefill needs a mask per attention layer: "
                                      "decode with autoprune.ReducedPrefill(...).generate")
        n_kept = last.pos.shape[1]
        am = kwargs.get("attention_mask")
        if isinstance(am, dict):
            raise ReductionInputError("precomputed mask dicts (static caches) are not supported after a reduced prefill")
        if isinstance(am, torch.Tensor) and am.dim() == 2:
            if am.shape[1] != self.length + (past - n_kept) + L:
                raise ReductionInputError(
                    f"attention_mask has {am.shape[1]} columns; after a prefill of {self.length} tokens reduced "
                    f"to {n_kept} and {past - n_kept} decoded, expected {self.length + past - n_kept + L}"
                )
            kept = torch.gather(am[:, : self.length], 1, last.pos.to(am.device))
            kwargs["attention_mask"] = torch.cat([kept, am[:, self.length:]], dim=1)
        if kwargs.get("position_ids") is None:
            start = self.length + (past - n_kept)
            kwargs["position_ids"] = torch.arange(start, start + L, device=x.device)[None].expand(b, -1)
        return args, kwargs

    def _decoder_post(self, module, args, kwargs, output):
        pf = self._prefill
        if pf is not None and pf.active:
            pf.active = False
            self.last = pf
            self._prefill = None
            cache = getattr(output, "cache", None)
            if cache is None:
                cache = getattr(output, "past_key_values", None)
            self._cache_ref = None if cache is None else weakref.ref(cache)
        return None

    def _layer_pre(self, i: int):
        names = self.adapter.per_token_kwargs
        kinds = self.adapter.layer_kinds
        arg_slots = self.adapter.per_token_args

        def hook(module, args, kwargs):
            pf = self._prefill
            if pf is None or not pf.active:
                return None
            if args:
                hidden = args[0]
            else:
                hidden = kwargs["hidden_states"]
            if i in self.plan.prune_layers:
                hidden = pf.prune(i, hidden)
            if pf.reduced:
                for name in names:
                    if name in kwargs and not (pf.ragged and name == "attention_mask"):
                        kwargs[name] = pf.slice_kwarg(name, kwargs[name])
                if arg_slots and len(args) > 1:
                    args = list(args)
                    for a in arg_slots:
                        if a < len(args):
                            args[a] = pf.slice_kwarg(f"argument {a} of layer {i}", args[a])
            if pf.ragged:
                if kinds[i] == "*":
                    pf.layer_valid[i] = pf.valid
                if pf.has_pads:
                    kwargs["attention_mask"] = pf.layer_mask(kinds[i], hidden)
            if args:
                args = (hidden,) + tuple(args[1:])
            else:
                kwargs["hidden_states"] = hidden
            return args, kwargs

        return hook

    # evidence ---------------------------------------------------------------
    def _record(self, pf: _Prefill, layer: int, kind: str, ev: torch.Tensor):
        if self.record_evidence:
            _, _, v_idx = pf.indices()
            pf.evidence[layer] = {"kind": kind, "evidence": scoring.normalise(ev.float()).cpu(),
                                  "positions": torch.gather(pf.pos, 1, v_idx).cpu()}
        if pf.store is not None and not pf.reduced:
            pf.store.observe(layer, kind, self.schedule.scorer, ev)
        self._update_state(pf, layer, kind, ev)

    def _update_state(self, pf: _Prefill, layer: int, kind: str, ev: torch.Tensor):
        kind_w = self.plan.evidence_layers.get(layer)
        if kind_w is not None:
            sc = self.schedule.scorer
            # a blended "attention+mamba" evidence already carries its weights (see _part); Gated
            # DeltaNet ("linear") evidence is weighted like Mamba's
            w = {"attention": sc.w_attn, "mamba": sc.w_mamba, "linear": sc.w_mamba}.get(kind_w, sc.w_attn + sc.w_mamba)
            if not pf.ragged:
                pf.state.update(ev, w)
                return
            # only rows whose own plan scores at this layer; padded visual slots give no evidence
            before = pf.state.scores
            pf.state.update(torch.where(pf.vis_valid, ev, torch.zeros_like(ev)), w)
            rows = self.device_const(("evidence_rows", layer), ev.device)
            pf.state.scores = torch.where(rows[:, None], pf.state.scores, before)

    def _part(self, pf: _Prefill, layer: int, part: str, ev: torch.Tensor):
        """The ``part`` evidence of ``layer``; a layer with two mixers records once both are in."""
        kind = self._evidence_installed.get(layer, part)
        if kind == part:
            self._record(pf, layer, part, ev)
            return None
        got = pf.partial.setdefault(layer, {})
        got[part] = scoring.normalise(ev.float())
        if len(got) == 2:
            del pf.partial[layer]
            sc = self.schedule.scorer
            wa, wm = (sc.w_attn, sc.w_mamba) if sc.w_attn + sc.w_mamba > 0 else (1.0, 1.0)
            self._record(pf, layer, kind, wa * got["attention"] + wm * got["mamba"])

    def _attn_pre(self, j):
        def hook(module, args, kwargs):
            pf = self._prefill
            if pf is not None and pf.active:
                pf.pending_rope[j] = kwargs.get("position_embeddings")
            return None
        return hook

    def _q_hook(self, j, parts=None):
        select = None if parts is None else parts.q_select

        def hook(module, args, out):
            pf = self._prefill
            if pf is not None and pf.active:
                with record_function(EVIDENCE):
                    q_idx, _, _ = pf.indices()
                    q = torch.gather(out.detach(), 1, q_idx[..., None].expand(-1, -1, out.shape[-1]))
                    pf.pending_q[j] = q if select is None else select(q)
            return None
        return hook

    def _k_hook(self, j, parts):
        def hook(module, args, out):
            pf = self._prefill
            if pf is None or not pf.active or j not in pf.pending_q:
                return None
            with torch.no_grad(), record_function(EVIDENCE):
                self._attention_evidence(pf, j, parts, pf.pending_q.pop(j), out.detach(), pf.pending_rope.pop(j, None))
            return None
        return hook

    def _attention_evidence(self, pf: _Prefill, j: int, parts, q, k, rope):
        """Evidence of attention layer ``j`` from q ``(b, Q, H·d)`` of the query rows and k ``(b, n, Hkv·d)``."""
        q_idx, q_valid, v_idx = pf.indices()
        b, Qn = q.shape[:2]
        n = k.shape[1]
        q = q.reshape(b, Qn, parts.num_heads, parts.head_dim)
        k = k.reshape(b, n, parts.num_kv_heads, parts.head_dim)
        if parts.q_norm is not None:  # QK-norm: the layer normalises per head before RoPE
            q = parts.q_norm(q)
        if parts.k_norm is not None:
            k = parts.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if parts.rotary is not None:
            if rope is None:
                raise ReductionInputError(f"layer {j}: attention with RoPE was called without cos/sin")
            cos, sin = rope
            cos = cos.expand(b, *cos.shape[1:]) if cos.shape[0] == 1 else cos
            sin = sin.expand(b, *sin.shape[1:]) if sin.shape[0] == 1 else sin
            gi = q_idx[..., None].expand(-1, -1, cos.shape[-1])
            q, _ = parts.rotary(q, q, torch.gather(cos, 1, gi), torch.gather(sin, 1, gi))
            _, k = parts.rotary(k, k, cos, sin)
        ev = scoring.attention_evidence(
            q, k, q_idx, v_idx, scaling=parts.scaling, head_agg=self.schedule.scorer.head_agg,
            key_valid=pf.valid, query_valid=q_valid, use_kernels=self.use_kernels,
        )
        self._part(pf, j, "attention", ev)

    def _in_proj_hook(self, j, parts):
        def hook(module, args, out):
            pf = self._prefill
            if pf is None or not pf.active:
                return None
            with torch.no_grad(), record_function(EVIDENCE):
                B, C, dt, A = mamba2_inputs(parts, out.detach(), pf.valid, self.use_kernels)
                q_idx, q_valid, v_idx = pf.indices()
                ev = scoring.mamba2_evidence(
                    B, C, dt, A, q_idx, v_idx, decay=self.schedule.scorer.mamba_decay,
                    head_agg=self.schedule.scorer.head_agg, query_valid=q_valid, use_kernels=self.use_kernels,
                )
                self._part(pf, j, "mamba", ev)
            return None
        return hook

    def _x_proj_hook(self, j, parts):
        def hook(module, args, out):
            pf = self._prefill
            if pf is None or not pf.active:
                return None
            with torch.no_grad(), record_function(EVIDENCE):
                B, C, dt, A = mamba1_inputs(parts, out.detach())
                q_idx, q_valid, v_idx = pf.indices()
                ev = scoring.mamba1_evidence(
                    B, C, dt, A, q_idx, v_idx, decay=self.schedule.scorer.mamba_decay,
                    head_agg=self.schedule.scorer.head_agg, query_valid=q_valid,
                )
                self._part(pf, j, "mamba", ev)
            return None
        return hook

    def _attn_input_hook(self, j, parts):
        # q/k recomputed from the attention's own input (parts.project_q/k): query rows only for q
        def hook(module, args, kwargs):
            pf = self._prefill
            if pf is None or not pf.active:
                return None
            with torch.no_grad(), record_function(EVIDENCE):
                x = (args[0] if args else kwargs["hidden_states"]).detach()
                q_idx, _, _ = pf.indices()
                q = parts.project_q(torch.gather(x, 1, q_idx[..., None].expand(-1, -1, x.shape[-1])))
                self._attention_evidence(pf, j, parts, q, parts.project_k(x), kwargs.get("position_embeddings"))
            return None
        return hook


    def _deltanet_hook(self, j, i, parts):
        last = len(parts.projections) - 1

        def hook(module, args, out):
            pf = self._prefill
            if pf is None or not pf.active:
                return None
            got = pf.pending_dn.setdefault(j, [])
            got.append(out.detach())
            if i < last:
                return None
            del pf.pending_dn[j]
            with torch.no_grad(), record_function(EVIDENCE):
                sc = self.schedule.scorer
                q_idx, q_valid, v_idx = pf.indices()
                q, k, beta, g = delta_rule.gated_deltanet_inputs(parts, tuple(got), pf.valid, self.use_kernels,
                                                                 rows=q_idx)
                ev = delta_rule.gated_deltanet_evidence(
                    q, k, beta, g, q_idx, v_idx, decay=sc.mamba_decay, correction=sc.delta_correction,
                    head_agg=sc.head_agg, query_valid=q_valid, use_kernels=self.use_kernels,
                )
                self._record(pf, j, "linear", ev)
            return None
        return hook


def attention_mask_4d(valid: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """``(b, 1, n, n)`` causal mask over the real tokens ``valid (b, n)``; a pad attends to itself only.

    ``sdpa``: boolean (True = attend); ``eager``: additive (0 or the dtype's minimum).
    """
    n = valid.shape[1]
    idx = torch.arange(n, device=valid.device)
    causal = idx[None, :] <= idx[:, None]
    allowed = (causal[None] & valid[:, None, :]) | torch.eye(n, dtype=torch.bool, device=valid.device)[None]
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill(~allowed, torch.finfo(dtype).min)
    raise ReductionInputError(f"ragged batches need attn_implementation 'sdpa' or 'eager', not {implementation!r}")


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, copy=True)  # a buffer of its own: rebind() writes into it


def mamba2_inputs(parts, zxbcdt: torch.Tensor, valid: torch.Tensor | None = None, use_kernels: bool | None = None):
    """B, C (post conv + activation), dt (post softplus + clip) and A from ``in_proj``'s output.

    The conv is recomputed on the B/C channels only (``2·G·N`` of them), so this also
    works where a fused kernel bypasses the mixer's conv module; for a SiLU mixer
    :func:`autoprune.kernels.dispatch.causal_conv1d_act` picks the Triton conv or torch's
    (``use_kernels`` as for the scoring). B and C keep the conv weight's dtype, as in the
    mixer (float64 stays float64 for the oracle tests); dt and A are fp32 (or float64).
    """
    I, G, N = parts.intermediate_size, parts.n_groups, parts.state_size
    b, n, _ = zxbcdt.shape
    if parts.in_proj_scale is not None:
        zxbcdt = zxbcdt * parts.in_proj_scale.to(zxbcdt.dtype)
    conv_dim = I + 2 * G * N
    w = parts.conv_weight[I:conv_dim]
    bias = None if parts.conv_bias is None else parts.conv_bias[I:conv_dim]
    bc = zxbcdt[..., 2 * I : 2 * I + 2 * G * N]
    if parts.activation_name in ("silu", "swish"):
        out = dispatch.causal_conv1d_act(bc, w, bias, "silu", use_kernels=use_kernels)
    else:
        out = parts.activation(causal_conv1d_act_ref(bc, w, bias, None))
    if valid is not None:
        out = out * valid[..., None].to(out.dtype)
    B = out[..., : G * N].reshape(b, n, G, N)
    C = out[..., G * N :].reshape(b, n, G, N)
    f = torch.float64 if zxbcdt.dtype == torch.float64 else torch.float32
    dt = F.softplus(zxbcdt[..., I + conv_dim :].to(f) + parts.dt_bias.to(f))
    lo, hi = parts.dt_limit
    if lo > 0.0 or hi != float("inf"):
        dt = dt.clamp(min=lo, max=hi)
    A = -torch.exp(parts.A_log.to(f))
    return B, C, dt, A


def mamba1_inputs(parts, x_dbc: torch.Tensor):
    """B, C ``(b, n, N)`` (after their norms), dt ``(b, n, D)`` (after ``dt_proj`` and softplus) and
    A ``(D, N)`` of a Mamba1 mixer from ``x_proj``'s output ``x_dbc (b, n, R + 2N)``; fp32 (float64
    stays float64). ``x_proj``'s input is already masked at padding tokens, so B there is zero."""
    f = torch.float64 if x_dbc.dtype == torch.float64 else torch.float32
    R, N = parts.dt_rank, parts.state_size
    ts, B, C = torch.split(x_dbc, [R, N, N], dim=-1)
    if parts.dt_norm is not None:
        ts = parts.dt_norm(ts)
    if parts.b_norm is not None:
        B = parts.b_norm(B)
    if parts.c_norm is not None:
        C = parts.c_norm(C)
    dt = ts.to(f) @ parts.dt_proj_weight.to(f).T
    if parts.dt_proj_bias is not None:
        dt = dt + parts.dt_proj_bias.to(f)
    return B.to(f), C.to(f), F.softplus(dt), -torch.exp(parts.A_log.to(f))


def reduce(model: nn.Module, schedule: Schedule, visual_mask: torch.Tensor, query_mask: torch.Tensor | None = None,
           **kw) -> ReductionHandle:
    """Apply ``schedule`` to ``model`` until the returned handle is removed (or its ``with`` ends)."""
    return ReductionHandle(model, schedule, visual_mask, query_mask, **kw)
