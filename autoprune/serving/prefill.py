"""``ReducedPrefill``: a reduced (or unreduced) prefill on the serving stack, for ragged batches.

::

    prefill = autoprune.ReducedPrefill(model, schedule, buckets=(8192, 16384))
    batch = autoprune.RaggedBatch.from_rows([r.embeds for r in requests], [r.visual_mask for r in requests])
    out = prefill(batch)                                  # logits of each row's last token, the cache
    tokens = prefill.generate(out, max_new_tokens=64)     # greedy continuation

What a call does: the batch is left-padded to the smallest length bucket that holds it; the
first call of a shape (batch size, bucket, visual tokens per row, query slots, text slots, padding
or not)
runs the prefill eagerly twice (compiling the hook-free blocks, warming up) and captures it in a
CUDA graph; later calls of that shape copy their inputs and masks into the graph's buffers and
replay it. A length outside every bucket runs eagerly, and says so once. Without CUDA, or with
``graphs=False``, every call runs eagerly (on the compiled stack where asked).

Results equal the eager runtime (:func:`autoprune.reduce` on one request at a time): each row
is reduced by its own plan (:mod:`autoprune.runtime`, ragged batches). A graph replay hands out
copies of its outputs (logits, the cache): the next replay cannot overwrite what a caller decodes with.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..adapters import get_adapter
from ..errors import ConfigError
from ..runtime import ReductionHandle
from ..schedule import Schedule
from .batch import RaggedBatch
from .stack import StackSpec, capture_graph, serving_stack, stack_spec

__all__ = ["PrefillOutput", "ReducedPrefill"]


@dataclass(frozen=True)
class PrefillOutput:
    """What decoding needs after a prefill.

    ``logits (b, vocab)`` fp32 at each row's last token; ``cache``: the model's cache (only the
    kept tokens, pads of a ragged batch among them; ``None`` with ``use_cache=False``);
    ``cache_valid``: per attention layer, ``(b, n_i) bool`` real entries of its KV cache (a ragged
    batch's pads are the others; ``None``: no pads, every entry is real); ``next_positions
    (b,)``: each row's next original position (RoPE families);
    ``kept_positions``: original positions of the cache entries (``None`` unreduced);
    ``graphed``: whether a CUDA graph replay produced it; ``length``: the padded length run.
    """

    logits: torch.Tensor
    cache: object | None
    cache_valid: dict | None
    next_positions: torch.Tensor
    kept_positions: torch.Tensor | None
    graphed: bool
    length: int


class _Graph:
    """One captured prefill shape: its static inputs, the graph, its outputs, the handle's buffers."""

    def __init__(self, static: RaggedBatch, graph, outputs, handle: ReductionHandle | None, ragged: bool):
        self.static, self.graph, self.outputs, self.handle, self.ragged = static, graph, outputs, handle, ragged
        self.masks = (static.visual_mask, static.query_mask, static.token_valid)  # what the buffers hold now
        self.positions: dict = {}  # row lengths -> next positions on the device

    def load(self, batch: RaggedBatch) -> None:
        """Copy ``batch`` into the graph's buffers (the masks only where they changed: the host work
        before a replay is GPU idle time)."""
        if batch.inputs is not self.static.inputs:
            self.static.inputs.copy_(batch.inputs, non_blocking=True)
            self.static.position_ids.copy_(batch.position_ids, non_blocking=True)
        masks = (batch.visual_mask, batch.query_mask, batch.token_valid)
        if self.handle is not None and not all(torch.equal(a, b) for a, b in zip(masks, self.masks)):
            self.handle.rebind(batch.visual_mask, batch.query_mask, batch.token_valid if self.ragged else None)
            self.masks = masks

    def next_positions(self, batch: RaggedBatch) -> torch.Tensor:
        got = self.positions.get(batch.lengths)
        if got is None:
            got = self.positions[batch.lengths] = torch.tensor(batch.lengths, device=batch.inputs.device)
        return got.clone()


class ReducedPrefill:
    """A prefill of ``model`` reduced by ``schedule`` (``None``: unreduced), on the serving stack.

    ``compile``: ``torch.compile`` the hook-free blocks (RMSNorms, gated RMSNorm, MLPs);
    ``triton_conv``: the mixers' causal conv by autoprune's Triton kernel; ``graphs``: one CUDA
    graph per prefill shape (each ``None`` = on where the model is on CUDA). ``buckets``:
    padded lengths (ascending) to capture; ``None`` = one graph per exact length. ``query_pad``:
    query rows, and each row's text capacity after a cut, are padded to a multiple of this, so
    that questions of other lengths replay the same graph. ``max_graphs``: graphs kept (least
    recently used dropped). ``use_cache``: keep the cache for decoding. ``use_kernels``: as for
    :func:`autoprune.reduce`. ``warmup``: eager runs before a capture (the first compiles and
    autotunes; cuBLAS sets up its workspace on the capture stream).
    """

    def __init__(self, model: nn.Module, schedule: Schedule | None = None, *, compile: bool | None = None,
                 triton_conv: bool | None = None, graphs: bool | None = None, buckets: Sequence[int] | None = None,
                 query_pad: int = 32, max_graphs: int = 8, use_cache: bool = True, dynamic: bool = True,
                 use_kernels: bool | None = None, warmup: int = 1):
        self.model = model
        self.warmup = int(warmup)
        self.adapter = get_adapter(model)
        self.spec: StackSpec = stack_spec(model)
        if schedule is not None:
            schedule.check_model(self.adapter.signature())
        self.schedule = schedule
        cuda = next(model.parameters()).is_cuda
        self.compile = cuda if compile is None else bool(compile)
        self.triton_conv = cuda if triton_conv is None else bool(triton_conv)
        self.graphs = cuda if graphs is None else bool(graphs)
        if self.graphs and not cuda:
            raise ConfigError("graphs=True needs the model on a CUDA device")
        if buckets is not None:
            buckets = tuple(sorted(int(b) for b in buckets))
            if not buckets or buckets[0] < 1:
                raise ConfigError(f"buckets must be positive lengths, got {buckets}")
        self.buckets = buckets
        if int(query_pad) < 1 or int(max_graphs) < 1:
            raise ConfigError(f"query_pad and max_graphs must be >= 1, got {query_pad}, {max_graphs}")
        self.query_pad, self.max_graphs = int(query_pad), int(max_graphs)
        self.use_cache, self.dynamic, self.use_kernels = use_cache, dynamic, use_kernels
        self._identity = Schedule.identity(self.adapter.num_layers, model=self.adapter.signature())
        self._graphs: OrderedDict = OrderedDict()
        self._said_outside = False
        self.stats = {"captures": 0, "replays": 0, "eager": 0, "outside_buckets": 0, "capture_failures": []}
        # mamba-ssm's Triton SSD kernels compute offsets in int32. The runner hands the scan a
        # contiguous dt (stack.contiguous_dt), so the largest tensors they index are x/B/C (I + 2GN
        # per token, views of one tensor) and the chunk states (b, chunks, H, P, N).
        kinds = self.adapter.layer_kinds
        mixers = [self.adapter.mamba2_parts(i) for i, k in enumerate(kinds) if k == "M"]
        self._scan_width = max((p.intermediate_size + 2 * p.n_groups * p.state_size for p in mixers), default=0)
        self._state_size = max((p.intermediate_size * p.state_size for p in mixers), default=0)  # H·P·N
        self._chunk = min((getattr(p.module, "chunk_size", 256) for p in mixers), default=256)
        self._cuda = cuda
        params = inspect.signature(type(model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # ----------------------------------------------------------------- calls
    def __call__(self, batch: RaggedBatch) -> PrefillOutput:
        if not isinstance(batch, RaggedBatch):
            raise ConfigError(f"ReducedPrefill takes a RaggedBatch, got {type(batch).__name__} "
                              f"(build one with RaggedBatch.from_rows)")
        self.check_size(batch.batch_size, batch.length)
        if not self.graphs:
            return self._eager(batch)
        length = self._bucket(batch.length)
        if length is not None:
            self.check_size(batch.batch_size, length)
        if length is None:
            self.stats["outside_buckets"] += 1
            if not self._said_outside:
                self._said_outside = True
                warnings.warn(f"ReducedPrefill: a batch of length {batch.length} is longer than every bucket "
                              f"{self.buckets}; such batches run eagerly (said once)", stacklevel=2)
            return self._eager(batch)
        batch = batch.padded_to(length)
        key = self._key(batch)
        if key in self._graphs and self._graphs[key] is None:  # its capture failed (recorded): eager
            return self._eager(batch)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(batch, key)
            if entry is None:
                return self._eager(batch)
        else:
            self._graphs.move_to_end(key)
            entry.load(batch)
        entry.graph.replay()
        self.stats["replays"] += 1
        # The graph rewrites its outputs at every replay, and decoding mutates a cache: hand out copies.
        logits, cache, cache_valid, kept = entry.outputs
        logits, kept = logits.clone(), None if kept is None else kept.clone()
        cache = None if cache is None else copy.deepcopy(cache)
        cache_valid = None if cache_valid is None else {i: v.clone() for i, v in cache_valid.items()}
        return PrefillOutput(logits=logits, cache=cache, cache_valid=cache_valid, kept_positions=kept, graphed=True,
                             next_positions=entry.next_positions(batch), length=batch.length)

    def check_size(self, batch_size: int, length: int) -> None:
        """Refuse (on CUDA) a padded batch beyond mamba-ssm's int32 indexing: split it instead."""
        per_row = max(length * self._scan_width, -(-length // self._chunk) * self._state_size)
        if self._cuda and per_row and batch_size * per_row >= 2**31:
            raise ConfigError(f"a batch of {batch_size} x {length} tokens gives the Mamba2 scan tensors of "
                              f"{batch_size * per_row:,} elements, beyond the 2^31 that mamba-ssm's Triton kernels "
                              f"index: split the batch (at most {(2**31 - 1) // per_row} rows of this length)")

    def clear(self) -> None:
        """Drop every captured graph (and its memory)."""
        self._graphs.clear()

    def _bucket(self, n: int) -> int | None:
        if self.buckets is None:
            return n
        return next((b for b in self.buckets if b >= n), None)

    def _query_slots(self, batch: RaggedBatch) -> int:
        """Query rows rounded up to ``query_pad``, but no more than the narrowest width a prefill of
        ``batch`` runs at (``L − max V``: every row keeps its text), and never fewer than the longest query."""
        rounded = self.query_pad * math.ceil(batch.num_query / self.query_pad)
        return max(batch.num_query, min(rounded, batch.length - max(batch.row_visual)))

    def _text_slots(self, batch: RaggedBatch) -> int:
        """The rows' text rounded up to ``query_pad``, at most what the padded length leaves
        (``L − min V``): the text capacity a captured ragged prefill's widths are sized for."""
        text = max(n - v for n, v in zip(batch.lengths, batch.row_visual))
        rounded = self.query_pad * math.ceil(text / self.query_pad)
        return min(rounded, batch.length - min(batch.row_visual))

    def _key(self, batch: RaggedBatch) -> tuple:
        return (batch.batch_size, batch.length, batch.row_visual, batch.has_pads, self._query_slots(batch),
                self._text_slots(batch),
                batch.inputs.dtype, tuple(batch.inputs.shape[2:]))

    @contextlib.contextmanager
    def stack(self):
        """The compiled blocks and the Triton conv as asked, and always a contiguous ``dt`` for the scan
        (:func:`autoprune.serving.stack.contiguous_dt`): a context for eager calls and captures."""
        with serving_stack(self.model, compile=self.compile, conv=self.triton_conv, dynamic=self.dynamic):
            yield

    # ---------------------------------------------------------------- eager
    def _handle(self, batch: RaggedBatch, query_slots: int | None,
                text_slots: int | None = None) -> tuple[ReductionHandle | None, bool]:
        ragged = batch.has_pads or len(set(batch.row_visual)) > 1
        sched = self.schedule if self.schedule is not None else (self._identity if ragged else None)
        if sched is None:
            return None, False
        h = ReductionHandle(self.model, sched, batch.visual_mask, batch.query_mask, ragged=ragged,
                            token_valid=batch.token_valid if ragged else None, query_slots=query_slots,
                            text_slots=text_slots if ragged else None,
                            use_kernels=self.use_kernels, adapter=self.adapter)
        return h, ragged

    def _kwargs(self, batch: RaggedBatch) -> dict:
        # Masks are the reduction hooks' business (rebuilt from the real tokens) or not needed (no
        # pads): the decoder gets "causal, no padding" and builds nothing (under capture it would
        # materialise a dense mask, and SDPA runs several times slower with it).
        kw = {"attention_mask": self.spec.no_masks(), "position_ids": batch.position_ids, "logits_to_keep": 1,
              "use_cache": self.use_cache}
        kw["inputs_embeds" if batch.is_embeds else "input_ids"] = batch.inputs
        return kw

    def _outputs(self, out, handle: ReductionHandle | None, ragged: bool, batch: RaggedBatch) -> tuple:
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        kept = None if handle is None else handle.kept_positions
        valid = None if handle is None or not ragged else handle.cache_valid
        return out.logits[:, -1].float(), cache if self.use_cache else None, valid, kept

    def _eager(self, batch: RaggedBatch) -> PrefillOutput:
        self.stats["eager"] += 1
        with torch.no_grad(), self.stack():
            # the text capacity a capture of this batch would have: eager and graph runs of a batch
            # then compute at the same widths (the same numbers)
            handle, ragged = self._handle(batch, None, self._text_slots(batch))
            try:
                out = self.model(**self._kwargs(batch))
            finally:
                if handle is not None:
                    handle.remove()
            logits, cache, cache_valid, kept = self._outputs(out, handle, ragged, batch)
        return PrefillOutput(logits=logits, cache=cache, cache_valid=cache_valid, kept_positions=kept, graphed=False,
                             next_positions=self._next_positions(batch), length=batch.length)

    @staticmethod
    def _next_positions(batch: RaggedBatch) -> torch.Tensor:
        return torch.tensor(batch.lengths, device=batch.inputs.device)

    # ---------------------------------------------------------------- graphs
    def _capture(self, batch: RaggedBatch, key: tuple) -> _Graph | None:
        static = RaggedBatch(inputs=batch.inputs.clone(), token_valid=batch.token_valid, visual_mask=batch.visual_mask,
                             query_mask=batch.query_mask, position_ids=batch.position_ids.clone())
        handle = None
        try:
            with torch.no_grad(), self.stack():
                handle, ragged = self._handle(static, self._query_slots(static), self._text_slots(static))
                kw = self._kwargs(static)

                def body():
                    return self._outputs(self.model(**kw), handle, ragged, static)

                graph, outputs = capture_graph(body, warmup=self.warmup)
        except Exception as e:  # noqa: BLE001  (a shape that cannot be captured runs eagerly; recorded)
            self.stats["capture_failures"].append(f"{key[:4]}: {type(e).__name__}: {str(e)[:300]}")
            warnings.warn(f"ReducedPrefill: CUDA-graph capture failed for batch {key[0]} x length {key[1]} "
                          f"({type(e).__name__}: {str(e)[:200]}); this shape runs eagerly", stacklevel=3)
            self._graphs[key] = None
            return None
        finally:
            if handle is not None:
                handle.remove()  # its device buffers stay with the graph; its hooks must not see later calls
        entry = _Graph(static, graph, outputs, handle, ragged)
        self._graphs[key] = entry
        self.stats["captures"] += 1
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry

    # ---------------------------------------------------------------- decode
    def generate(self, out: PrefillOutput, max_new_tokens: int, *, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy tokens ``(b, max_new_tokens)`` continuing ``out`` (needs ``use_cache=True``).

        The first token is the prefill's argmax; each next one a decode step on the cache with
        the cache's own mask (pads out) and each row's original positions. Rows that produced
        ``eos_token_id`` keep emitting it.
        """
        if out.cache is None:
            raise ConfigError("generate needs a prefill run with use_cache=True")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        tok = out.logits.argmax(-1)
        done = torch.zeros_like(tok, dtype=torch.bool) if eos_token_id is None else tok == eos_token_id
        tokens = [tok]
        pos, cache = out.next_positions.clone(), out.cache
        b = tok.shape[0]
        valid = {i: v.clone() for i, v in (out.cache_valid or {}).items()}
        with torch.no_grad(), self._decode_masks(valid):
            for _ in range(max_new_tokens - 1):
                for i, v in valid.items():  # the token being decoded is real
                    valid[i] = torch.cat([v, torch.ones(b, 1, dtype=torch.bool, device=v.device)], dim=1)
                o = self.model(input_ids=tok[:, None], position_ids=pos[:, None], use_cache=True,
                               **{self._cache_kw: cache})
                nxt = o.logits[:, -1].argmax(-1)
                if eos_token_id is not None:
                    nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                    done = done | (nxt == eos_token_id)
                tok, pos = nxt, pos + 1
                tokens.append(tok)
        return torch.stack(tokens, dim=1)

    @contextlib.contextmanager
    def _decode_masks(self, valid: dict):
        """Each attention layer's decode step attends to its own cache's real entries (``valid[i]``).

        Layers before a prune point cache more tokens than later ones, and a ragged batch's pads sit
        at other places in each: one mask for the decoder cannot serve them all.
        """
        impl = getattr(self.adapter.config, "_attn_implementation", None) or "sdpa"
        hooks = []

        def make(i):
            def hook(module, args, kwargs):
                v = valid[i]
                if impl == "sdpa":
                    kwargs["attention_mask"] = v[:, None, None, :]
                else:
                    m = torch.zeros(v.shape, dtype=self.model.dtype, device=v.device).masked_fill(
                        ~v, torch.finfo(self.model.dtype).min)
                    kwargs["attention_mask"] = m[:, None, None, :]
                return args, kwargs
            return hook

        try:
            for i in valid:
                hooks.append(self.adapter.layers[i].register_forward_pre_hook(make(i), with_kwargs=True))
            yield
        finally:
            for h in hooks:
                h.remove()
