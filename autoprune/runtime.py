"""Apply a :class:`~autoprune.schedule.Schedule` during prefill.

::

    with autoprune.reduce(model, schedule, visual_mask=mask):
        out = model.generate(inputs_embeds=embeds, max_new_tokens=16)

The model is changed only through removable hooks:

- a pre-hook on each decoder layer removes visual tokens where the schedule drops,
  and slices every per-token input of the layer (masks, position ids, RoPE cos/sin)
  to the tokens still present; kept tokens keep their original positions;
- forward hooks on the evidence layers' own projections (``q_proj``/``k_proj`` of
  attention, ``in_proj`` of Mamba2, ``x_proj`` of Mamba1) capture what the language-aware
  score needs (a pre-hook on the attention module where q/k are more than the projections'
  outputs, as on Zamba2's shared attention); a layer with two mixers (Falcon-H1's parallel
  attention + Mamba2, Zamba2's shared attention + Mamba2) blends both evidences,
  ``w_attn·ê_attn + w_mamba·ê_mamba``, into one state update;
- a pre-hook on the decoder stack starts a prefill and, during decoding after a
  reduced prefill, maps the full-length attention mask and positions onto the
  cache, which holds only the kept tokens.

Removing the handle removes every hook; the model's parameters are never touched.

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

from . import scoring
from .adapters import HybridAdapter, get_adapter, get_input_stage
from .errors import ReductionInputError
from .kernels import causal_conv1d_act_ref, dispatch
from .plan import evidence_kind, plan_reduction
from .schedule import Schedule

__all__ = ["ReductionHandle", "attach_evidence_store", "first_true_indices", "mamba1_inputs", "mamba2_inputs",
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
        self.partial: dict[int, dict] = {}  # layer with two mixers -> the evidence of each seen so far
        self.store = None  # an attached evidence store (prefix activation cache), if any

    @property
    def reduced(self) -> bool:
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
        n_keep = self.h.plan.counts[layer]
        sc = self.h.schedule.scorer
        _, _, v_idx = self.indices()
        b, n_vis = v_idx.shape
        # Selection is not differentiable; the gather of ``hidden`` below keeps gradients
        # (training under reduction).
        with torch.no_grad():
            if layer == 0 or sc.selector == "uniform_stride":
                pick = scoring.select_uniform_stride(b, n_vis, n_keep, device=hidden.device)
                self.state.gather(pick)
            elif sc.selector == "random":
                pick = scoring.select_random(b, n_vis, n_keep, seed=sc.seed * 1_000_003 + layer,
                                             device=hidden.device)
                self.state.gather(pick)
            else:
                pick = self.state.keep(n_keep)
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

    After each prefill, ``last`` holds what happened: ``pos`` (original positions of
    the tokens that reached the last layer, i.e. those in the cache),
    ``selections`` (visual positions kept at each prune layer) and, with
    ``record_evidence=True``, the normalised evidence of every mixer layer.
    """

    def __init__(self, model: nn.Module, schedule: Schedule, visual_mask: torch.Tensor,
                 query_mask: torch.Tensor | None = None, *, use_kernels: bool | None = None,
                 record_evidence: bool = False, adapter: HybridAdapter | None = None):
        self.model = model
        self.adapter = adapter or get_adapter(model)
        self.schedule = schedule
        schedule.check_model(self.adapter.signature())
        self.use_kernels = use_kernels
        self.record_evidence = record_evidence
        self._given = self._check_masks(visual_mask, query_mask)
        # A wrapper whose decoder sees fewer tokens than its input (EVS): the masks given are for
        # the wrapper's input and are mapped onto the decoder's input at each prefill.
        self._stage = get_input_stage(model)
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
        self.num_visual = int(self.visual_mask[0].sum())
        q_counts = self.query_mask.sum(dim=1)
        self.num_query = int(q_counts.max())
        # rows with fewer query tokens than the longest one: which of their query slots are real
        self._q_valid = None
        if not bool((q_counts == self.num_query).all()):
            self._q_valid = torch.arange(self.num_query)[None] < q_counts[:, None]
        self._on_device: dict = {}
        self.plan = plan_reduction(self.schedule, self.adapter.layer_kinds, self.num_visual)
        if self._evidence_installed is not None and self._evidence_installed != self._evidence_layers():
            self._install_evidence()

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
    def _check_masks(visual_mask, query_mask):
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
        if not bool((counts == counts[0]).all()):
            raise ReductionInputError(
                f"every row must have the same number of visual tokens, got {counts.tolist()}"
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
        """Hooks that compute the ``part`` (attention | mamba) evidence of layer ``j``."""
        if part == "attention":
            parts = self.adapter.attention_parts(j)
            if parts.project_q is not None:
                return [parts.module.register_forward_pre_hook(self._attn_input_hook(j, parts), with_kwargs=True)]
            return [parts.module.register_forward_pre_hook(self._attn_pre(j), with_kwargs=True),
                    parts.q_proj.register_forward_hook(self._q_hook(j)),
                    parts.k_proj.register_forward_hook(self._k_hook(j, parts))]
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
        return got

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
            if isinstance(am, torch.Tensor) and am.dim() == 2:
                token_valid = am.bool()
                if bool(token_valid.all()):
                    token_valid = None
                elif bool((~token_valid & self.device_masks(am.device)[0]).any()):
                    raise ReductionInputError("attention_mask masks out a visual token")
            pf = self._prefill = _Prefill(self, b, token_valid, x.device)
            pf.store = _EVIDENCE_STORES.get(self.adapter.decoder)
            if pf.store is not None:
                for j, kind, ev in pf.store.replay(self.plan.evidence_layers, self.schedule.scorer):
                    self._update_state(pf, j, kind, ev.to(x.device))
            return (args, kwargs) if changed else None
        last = self.last
        if last is None or self._cache_ref is None or self._cache_ref() is not cache:
            return None  # not a cache this handle reduced: leave the call alone
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
                    if name in kwargs:
                        kwargs[name] = pf.slice_kwarg(name, kwargs[name])
                if arg_slots and len(args) > 1:
                    args = list(args)
                    for a in arg_slots:
                        if a < len(args):
                            args[a] = pf.slice_kwarg(f"argument {a} of layer {i}", args[a])
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
            # a blended "attention+mamba" evidence already carries its weights (see _part)
            w = {"attention": sc.w_attn, "mamba": sc.w_mamba}.get(kind_w, sc.w_attn + sc.w_mamba)
            pf.state.update(ev, w)

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

    def _q_hook(self, j):
        def hook(module, args, out):
            pf = self._prefill
            if pf is not None and pf.active:
                q_idx, _, _ = pf.indices()
                pf.pending_q[j] = torch.gather(out.detach(), 1, q_idx[..., None].expand(-1, -1, out.shape[-1]))
            return None
        return hook

    def _k_hook(self, j, parts):
        def hook(module, args, out):
            pf = self._prefill
            if pf is None or not pf.active or j not in pf.pending_q:
                return None
            with torch.no_grad():
                self._attention_evidence(pf, j, parts, pf.pending_q.pop(j), out.detach(), pf.pending_rope.pop(j, None))
            return None
        return hook

    def _attention_evidence(self, pf: _Prefill, j: int, parts, q, k, rope):
        """Evidence of attention layer ``j`` from q ``(b, Q, H·d)`` of the query rows and k ``(b, n, Hkv·d)``."""
        q_idx, q_valid, v_idx = pf.indices()
        b, Qn = q.shape[:2]
        n = k.shape[1]
        q = q.reshape(b, Qn, parts.num_heads, parts.head_dim).transpose(1, 2)
        k = k.reshape(b, n, parts.num_kv_heads, parts.head_dim).transpose(1, 2)
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
            with torch.no_grad():
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
            with torch.no_grad():
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
            with torch.no_grad():
                x = (args[0] if args else kwargs["hidden_states"]).detach()
                q_idx, _, _ = pf.indices()
                q = parts.project_q(torch.gather(x, 1, q_idx[..., None].expand(-1, -1, x.shape[-1])))
                self._attention_evidence(pf, j, parts, q, parts.project_k(x), kwargs.get("position_embeddings"))
            return None
        return hook


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
