"""Measure a model shape's per-layer latency table on the present device (``autoprune profile``).

For each layer kind of a :class:`~autoprune.cost.shapes.ModelShape` one transformers
``NemotronHBlock`` with random weights is built (``shape.to_nemotron_h_config()``,
:mod:`autoprune.profiler.random_model`) and timed on a log-spaced token grid — prefill, queries = keys = ``n`` — followed by the
reduction's own costs at the same sizes: the evidence of an attention layer and of a
Mamba2 layer (the runtime's hook work: :func:`autoprune.runtime.mamba2_inputs`,
:mod:`autoprune.scoring`, the importance-state update), the gather of kept tokens at a
prune layer, and the head (final norm over all tokens + LM head on the last one). The
result is a :class:`~autoprune.cost.profile_table.ProfileTable` written atomically.

Only prefill is measured: the schedule changes the prefill; decoding after it runs
on the reduced cache (a 2-D queries × cache grid would be a separate table).

Points that do not fit in memory are skipped and recorded (a point predicted to need
more than the free memory is not attempted; a point that raises out-of-memory ends that
kind's larger points). A ``time_budget_s`` likewise records what it left out (the
smallest point of each series is always measured, so no kind is left without data).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._version import __version__
from ..cost.profile_table import KIND_NAMES, ProfileTable, Series
from ..cost.shapes import ModelShape
from ..errors import ConfigError
from .environment import (
    FallbackWarnings,
    environment_info,
    mamba_kernel_status,
    scoring_kernels_available,
)
from .random_model import build_block, mamba2_parts_of
from .timing import default_clock, rotation_count, time_fn

__all__ = ["token_grid", "DEFAULT_GRID", "profile_shape", "activation_bytes", "int32_limit_tokens"]


def token_grid(lo: int = 128, hi: int = 131072, per_octave: int = 2, multiple: int = 8) -> list[int]:
    """Log-spaced token counts from ``lo`` to ``hi`` (both included), ``per_octave`` per doubling,
    rounded to a multiple of ``multiple``."""
    if lo < 1 or hi < lo or per_octave < 1:
        raise ConfigError(f"token_grid needs 1 <= lo <= hi and per_octave >= 1, got {lo}, {hi}, {per_octave}")
    steps = round(math.log2(hi / lo) * per_octave)
    out = []
    for i in range(steps + 1):
        n = lo * 2 ** (i / per_octave)
        n = max(1, int(round(n / multiple)) * multiple) if n >= multiple else int(round(n))
        out.append(n)
    out[0], out[-1] = lo, hi
    return sorted(set(out))


DEFAULT_GRID = token_grid(128, 131072, 2)


def int32_limit_tokens(shape: ModelShape, what: str) -> int | None:
    """Most tokens a Mamba2 layer can take in mamba-ssm 2.3.2's Triton kernels, or None.

    They index ``in_proj``'s output (one row of ``2·I + 2·G·N + H`` elements per token)
    with int32 offsets: past 2^31 elements the scan reads out of bounds (seen on an H200 at
    131,072 tokens of NemotronH-8B: an illegal memory access that kills the CUDA context).
    """
    if what not in ("mamba", "parallel", "shared_attention"):  # every layer kind with a Mamba2 mixer
        return None
    row = 2 * shape.mamba_intermediate + 2 * shape.n_groups * shape.ssm_state_size + shape.mamba_num_heads
    return (2**31 - 1) // row


def activation_bytes(shape: ModelShape, kind: str, tokens: int) -> int:
    """Generous estimate of a single layer's peak transient memory (bytes) at ``tokens`` tokens.

    Used to skip grid points that cannot fit before trying them; torch-path intermediates
    (fp32 norms, conv copies) are counted several times over on purpose.
    """
    n, h, b = tokens, shape.hidden_size, shape.dtype_bytes
    io = 4 * n * h * b
    if kind == "M":
        I, G, N, H, P = (shape.mamba_intermediate, shape.n_groups, shape.ssm_state_size, shape.mamba_num_heads,
                         shape.mamba_head_dim)
        proj, conv = 2 * I + 2 * G * N + H, I + 2 * G * N
        states = 2 * math.ceil(n / max(1, shape.chunk_size)) * H * P * N * 4
        return int(io + n * (proj * b * 2 + conv * b * 4 + I * 4 * 4) + states)
    if kind == "*":
        Hq, Hk, d = shape.num_attention_heads, shape.num_kv_heads, shape.head_dim
        return int(io + n * ((Hq + 2 * Hk) * d * b * 3 + 2 * Hq * d * b * 3))
    if kind == "-":
        return int(io + 4 * n * shape.mlp_intermediate_size * b)
    if kind == "E":
        active = max(1, shape.moe_top_k) * shape.moe_intermediate_size + shape.moe_shared_intermediate_size
        return int(io + 4 * n * active * b + n * 64)
    if kind in ("L", "C"):  # the mixer (the delta rule's torch path in fp32) plus the layer's FFN
        ffn = 4 * n * max(shape.mlp_intermediate_size, shape.moe_top_k * shape.moe_intermediate_size) * b
        if kind == "C":
            return int(io + ffn + 6 * n * h * b)
        kv = 2 * shape.linear_num_key_heads * shape.linear_key_head_dim + \
            2 * shape.linear_num_value_heads * shape.linear_value_head_dim
        return int(io + ffn + n * kv * (b * 3 + 4 * 6))
    if kind == "P":
        return activation_bytes(shape, "M", tokens) + activation_bytes(shape, "*", tokens)
    if kind == "S":  # the shared block reads 2h-wide input and runs an MLP
        return 2 * activation_bytes(shape, "*", tokens) + activation_bytes(shape, "M", tokens) + int(
            6 * n * shape.mlp_intermediate_size * b)
    if kind == "A":  # Mamba1 (torch scan where mamba-ssm's CUDA scan is absent): fp32 (n, D, N) states
        D, N = shape.mamba_intermediate, shape.ssm_state_size
        return int(io + n * D * (8 * b + 3 * N * 4))
    raise ConfigError(f"unknown layer kind {kind!r}")


# ------------------------------------------------------- what is measured
@dataclass(frozen=True)
class _Ctx:
    """What the measurement set-ups share: device, dtype, shape, token layout, scoring path."""

    torch: Any
    dev: Any
    dtype: Any
    shape: ModelShape
    prefix: int
    query: int
    use_kernels: bool

    def inputs(self, n: int, width: int, count: int) -> list:
        """``count`` random ``(1, n, width)`` tensors (never zeros: they can run faster than data)."""
        return [self.torch.randn(1, n, width, device=self.dev, dtype=self.dtype) for _ in range(count)]

    def rotations(self, bytes_per_set: int) -> int:
        return rotation_count(bytes_per_set) if self.dev.type == "cuda" else 1

    def indices(self, n: int):
        """Query rows (the last ``query`` tokens) and visual tokens (after the prefix) of an ``n``-token sequence."""
        torch = self.torch
        V = n - self.prefix - self.query
        q_idx = torch.arange(n - self.query, n, device=self.dev)[None]
        v_idx = torch.arange(self.prefix, self.prefix + V, device=self.dev)[None]
        return V, q_idx, v_idx


def _layer_setup(ctx: _Ctx, block):
    """One decoder block over ``n`` tokens (prefill)."""
    torch, h = ctx.torch, ctx.shape.hidden_size

    def setup(n, pos):
        rot = ctx.rotations(n * h * ctx.shape.dtype_bytes)
        xs = ctx.inputs(n, h, rot)

        def fn(i):
            with torch.inference_mode():
                return block(xs[i])
        return fn, rot
    return setup


def _attention_scoring_setup(ctx: _Ctx, config):
    """What the runtime's q/k hooks do at an attention evidence layer with ``n`` tokens present."""
    from .. import scoring as sc

    torch = ctx.torch
    Hq, Hk = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // Hq  # LFM2's config has no head_dim
    Q = ctx.query

    def setup(n, pos):
        V, q_idx, v_idx = ctx.indices(n)
        rot = ctx.rotations(n * (Hq + Hk) * d * ctx.shape.dtype_bytes)
        qo, ko = ctx.inputs(n, Hq * d, rot), ctx.inputs(n, Hk * d, rot)
        state = sc.ImportanceState(1, V, momentum=0.5, device=ctx.dev)

        def fn(i):
            with torch.inference_mode():
                q = torch.gather(qo[i], 1, q_idx[..., None].expand(-1, -1, Hq * d))
                q = q.view(1, Q, Hq, d).transpose(1, 2)
                k = ko[i].view(1, n, Hk, d).transpose(1, 2)
                ev = sc.attention_evidence(q, k, q_idx, v_idx, scaling=d ** -0.5, head_agg="mean",
                                           use_kernels=ctx.use_kernels)
                state.update(ev, 1.0)
        return fn, rot
    return setup, lambda n: 6 * Q * n * Hq * 4 + 4 * n * Hq * d


def _mamba_scoring_setup(ctx: _Ctx, block, decay: bool):
    """What the runtime's ``in_proj`` hook does at a Mamba2 evidence layer with ``n`` tokens present."""
    from .. import scoring as sc
    from ..runtime import mamba2_inputs

    torch, shape = ctx.torch, ctx.shape
    parts = mamba2_parts_of(block.mixer)
    width = block.mixer.in_proj.out_features
    G, N, H = shape.n_groups, shape.ssm_state_size, shape.mamba_num_heads

    def setup(n, pos):
        V, q_idx, v_idx = ctx.indices(n)
        rot = ctx.rotations(n * width * shape.dtype_bytes)
        zs = ctx.inputs(n, width, rot)
        state = sc.ImportanceState(1, V, momentum=0.5, device=ctx.dev)

        def fn(i):
            with torch.inference_mode():
                B, C, dt, A = mamba2_inputs(parts, zs[i])
                ev = sc.mamba2_evidence(B, C, dt, A, q_idx, v_idx, decay=decay, head_agg="mean",
                                        use_kernels=ctx.use_kernels)
                state.update(ev, 1.0)
        return fn, rot
    return setup, lambda n: n * (width * 2 + 2 * G * N * 16 + H * 16 + 4 * G * ctx.query * 4)


def _linear_scoring_setup(ctx: _Ctx, block, decay: bool, correction: bool):
    """What the runtime's projection hooks do at a Gated DeltaNet evidence layer with ``n`` tokens present."""
    from .. import delta_rule
    from .. import scoring as sc
    from ..adapters import qwen3_5, qwen3_next

    torch, shape = ctx.torch, ctx.shape
    mixer = block.layer.linear_attn
    parts = (qwen3_next if shape.family == "qwen3_next" else qwen3_5).deltanet_parts_of(mixer)
    widths = [p.out_features for p in parts.projections]

    def setup(n, pos):
        V, q_idx, v_idx = ctx.indices(n)
        rot = ctx.rotations(n * sum(widths) * shape.dtype_bytes)
        outs = [ctx.inputs(n, w, rot) for w in widths]
        state = sc.ImportanceState(1, V, momentum=0.5, device=ctx.dev)

        def fn(i):
            with torch.inference_mode():
                q, k, beta, g = delta_rule.gated_deltanet_inputs(parts, tuple(o[i] for o in outs),
                                                                 use_kernels=ctx.use_kernels, rows=q_idx)
                ev = delta_rule.gated_deltanet_evidence(q, k, beta, g, q_idx, v_idx, decay=decay,
                                                        correction=correction, use_kernels=ctx.use_kernels)
                state.update(ev, 1.0)
        return fn, rot
    kd = 2 * shape.linear_num_key_heads * shape.linear_key_head_dim
    return setup, lambda n: n * (sum(widths) * 2 + kd * 16 + shape.linear_num_value_heads * 16
                                 + 4 * ctx.query * shape.linear_num_value_heads * (8 if correction else 1))


def _mamba1_scoring_setup(ctx: _Ctx, block, decay: bool):
    """What the runtime's ``x_proj`` hook does at a Mamba1 (Jamba) evidence layer with ``n`` tokens present."""
    from .. import scoring as sc
    from ..adapters.base import Mamba1Parts
    from ..runtime import mamba1_inputs

    torch, shape = ctx.torch, ctx.shape
    parts = Mamba1Parts.from_jamba_mixer(block.mixer)
    width = parts.x_proj.out_features
    D = shape.mamba_intermediate

    def setup(n, pos):
        V, q_idx, v_idx = ctx.indices(n)
        rot = ctx.rotations(n * width * shape.dtype_bytes)
        zs = ctx.inputs(n, width, rot)
        state = sc.ImportanceState(1, V, momentum=0.5, device=ctx.dev)

        def fn(i):
            with torch.inference_mode():
                B, C, dt, A = mamba1_inputs(parts, zs[i])
                ev = sc.mamba1_evidence(B, C, dt, A, q_idx, v_idx, decay=decay, head_agg="mean")
                state.update(ev, 1.0)
        return fn, rot
    return setup, lambda n: n * (width * 8 + D * 4 * 4) + (64 * D * shape.ssm_state_size * 4 * 4 if decay else 0)


def _gather_setup(ctx: _Ctx):
    """What ``_Prefill.prune`` does at a prune layer (keeping half the visual tokens present),
    plus the index refresh that follows it."""
    from .. import scoring as sc
    from ..runtime import first_true_indices

    torch, h, Q = ctx.torch, ctx.shape.hidden_size, ctx.query

    def setup(n, pos):
        V = n - ctx.prefix - Q
        k = max(1, V // 2)
        rot = ctx.rotations(n * h * ctx.shape.dtype_bytes)
        hs = ctx.inputs(n, h, rot)
        is_vis = torch.zeros(1, n, dtype=torch.bool, device=ctx.dev)
        is_vis[:, ctx.prefix:ctx.prefix + V] = True
        is_q = torch.zeros_like(is_vis)
        is_q[:, n - Q:] = True
        pos_ids = torch.arange(n, device=ctx.dev)[None]
        scores = torch.rand(1, V, device=ctx.dev)

        def fn(i):
            with torch.inference_mode():
                v_idx = first_true_indices(is_vis, V)
                pick = sc.select_topk(scores, k)
                chosen = torch.gather(v_idx, 1, pick)
                keep = (~is_vis).scatter(1, chosen, True)
                cur = first_true_indices(keep, n - V + k)
                out = torch.gather(hs[i], 1, cur[..., None].expand(-1, -1, h))
                torch.gather(pos_ids, 1, cur)
                first_true_indices(torch.gather(is_q, 1, cur), Q)
                first_true_indices(torch.gather(is_vis, 1, cur), k)
                return out
        return fn, rot
    return setup, lambda n: n * h * ctx.shape.dtype_bytes * 3 + n * 64


def _head_setup(ctx: _Ctx):
    """Final norm over all ``n`` tokens, LM head on the last one (what ``logits_to_keep=1`` runs)."""
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHRMSNorm

    torch, h = ctx.torch, ctx.shape.hidden_size
    with torch.device(ctx.dev):
        norm = NemotronHRMSNorm(h).to(ctx.dtype)
        lm_head = torch.nn.Linear(h, ctx.shape.vocab_size, bias=False).to(ctx.dtype)

    def setup(n, pos):
        rot = ctx.rotations(n * h * ctx.shape.dtype_bytes)
        xs = ctx.inputs(n, h, rot)

        def fn(i):
            with torch.inference_mode():
                return lm_head(norm(xs[i])[:, -1:]).float()
        return fn, rot
    return setup, lambda n: n * h * 4 * 3


# ------------------------------------------------------------------- profiler
class _Collector:
    def __init__(self):
        self.tokens: list[int] = []
        self.ms: list[float] = []
        self.spread: list[float] = []
        self.flags: list[list[str]] = []

    def add(self, n, stats):
        self.tokens.append(n)
        self.ms.append(max(stats.median, 1e-6))
        self.spread.append(stats.spread)
        self.flags.append(list(stats.flags))

    def series(self, where) -> Series | None:
        if not self.tokens:
            return None
        return Series(tokens=self.tokens, ms=self.ms, spread=self.spread, flags=self.flags, where=where)


def _stack_context(block, stack: str):
    if stack == "eager":
        import contextlib

        return contextlib.nullcontext()
    from ..serving.stack import serving_stack

    return serving_stack(block)


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def _free_memory():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _host_time_ms(torch, fn, rotations, calls: int = 10) -> float:
    """Host time to queue one call (Python + launches), at the smallest token count.

    Back-to-back CUDA events report ``max(GPU, host)`` per call; inside a whole model the
    host runs ahead of the GPU during the expensive early layers, so the latency model
    needs the two apart. Measured with the GPU idle beforehand and no sync in the loop.
    """
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(calls):
        fn() if rotations is None else fn(i % rotations)
    host = (time.perf_counter() - t0) * 1e3 / calls
    torch.cuda.synchronize()
    return host


def profile_shape(
    shape: ModelShape,
    *,
    device=None,
    gpu_id: str | None = None,
    tokens: Sequence[int] | None = None,
    kinds: Iterable[str] | None = None,
    prefix_tokens: int = 32,
    query_tokens: int = 64,
    scoring: bool = True,
    gather: bool = True,
    head: bool = True,
    timer_kw: dict | None = None,
    clock=None,
    monitor=None,
    time_budget_s: float | None = None,
    memory_fraction: float = 0.85,
    use_kernels: bool | None = None,
    log: Callable[[str], None] | None = None,
    stack: str = "eager",
    progress: Callable[[int, int, str], None] | None = None,
    checkpoint: Callable[[ProfileTable], None] | None = None,
) -> ProfileTable:
    """Measure ``shape`` on ``device`` (default: CUDA if present, else CPU); see the module doc.

    ``gpu_id`` is the registry id the table is filed under (default: detected; ``cpu`` on
    the CPU). ``use_kernels`` is passed to the scoring functions (``None``: the Triton
    kernels when ``autoprune.kernels`` provides them and the device is CUDA).
    ``timer_kw`` goes to :func:`autoprune.profiler.timing.time_fn`. ``stack="compiled"`` times each
    block on the serving stack (:func:`autoprune.serving.stack.serving_stack`: compiled hook-free
    modules, the Triton causal conv), as :class:`autoprune.ReducedPrefill` runs it.

    ``progress(done, total, label)`` is called before the first point and after each point
    (measured, failed or skipped), in units of work: tokens per point (so an ETA from it weighs
    the long points as they are), ``label`` the point just done. ``checkpoint(table)`` is
    called after each measured point with the table so far (``partial=True``), for a caller
    that writes it as it goes; the returned table is complete (``partial=False``).
    """
    # Before transformers imports NemotronH's modeling module, which picks its Mamba
    # kernels once: without the shim an installed mamba-ssm 2.3.2 fails to import and
    # transformers silently takes the torch path (out of memory at long sequences on a GPU).
    from ..compat import mamba_ssm_shim

    mamba_ssm_shim.install()

    import torch

    log = log or (lambda s: None)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    dtype = getattr(torch, shape.dtype)
    if gpu_id is None:
        if dev.type == "cpu":
            gpu_id = "cpu"
        else:
            from ..cost.gpus import detect

            gpu_id = detect().id
    if stack not in ("eager", "compiled"):
        raise ConfigError(f"--stack must be eager or compiled, got {stack!r}")
    grid = sorted(set(int(t) for t in (tokens if tokens is not None else DEFAULT_GRID)))
    if not grid or grid[0] < 1:
        raise ConfigError(f"token grid must hold positive integers, got {tokens!r}")
    text = prefix_tokens + query_tokens
    if query_tokens < 1:
        raise ConfigError("query_tokens must be >= 1: the query rows are what the scores are computed for")
    wanted = list(dict.fromkeys(kinds if kinds is not None else shape.layer_kinds))
    bad = [k for k in wanted if k not in shape.layer_kinds]
    if bad:
        raise ConfigError(f"shape {shape.name!r} has no layer kind(s) {bad} (layer kinds: {shape.layer_kinds!r})")
    if use_kernels is None:
        use_kernels = dev.type == "cuda" and scoring_kernels_available()
    clock = clock or default_clock(dev)
    host_ms: dict[str, float] = {}
    tkw = {"warmup_ms": 25.0, "rep_ms": 100.0, "min_reps": 5, "max_reps": 200, "retries": 2}
    tkw.update(timer_kw or {})
    if dev.type == "cuda" and "M" in wanted:
        status = mamba_kernel_status()
        if "torch" in status.get("mamba2_chunk_scan", status.get("mamba_chunk_scan_combined", "")):
            log("WARNING: transformers runs NemotronH's Mamba2 scan with its torch reference on this GPU "
                "(mamba-ssm missing or not importable): long sequences will run out of memory and the table "
                "will not describe the fast path")
    t_start = time.monotonic()
    skipped: list[dict] = []
    # The work ahead, in tokens per point (what the ETA is weighed by); mirrors the loop below.
    pts = [n for n in grid if n > text]
    total = 0
    for kind in wanted:
        total += sum(grid)
        if scoring:
            total += sum(pts) * ((kind in "*PS") + 3 * (kind == "L") + 2 * (kind in "MPSA"))
    total += (sum(n for n in grid if n > text + 1) if gather else 0) + (sum(grid) if head else 0)
    done = [0]

    def advance(n: int, label: str) -> None:
        done[0] += n
        if progress is not None:
            progress(min(done[0], total), total, label)

    if progress is not None:
        progress(0, total, "")
    fallback_log = FallbackWarnings()
    tf_logger = logging.getLogger("transformers")
    tf_logger.addHandler(fallback_log)

    def budget_left() -> bool:
        return time_budget_s is None or time.monotonic() - t_start < time_budget_s

    def fits(what: str, n: int, need: int) -> bool:
        if dev.type != "cuda":
            return True
        limit = int32_limit_tokens(shape, what)
        if limit is not None and n > limit:
            skipped.append({"what": what, "tokens": n, "reason": f"beyond mamba-ssm's int32 indexing: in_proj output "
                                                                  f"has more than 2^31 elements above {limit} tokens"})
            return False
        free, _ = torch.cuda.mem_get_info(dev)
        if need > memory_fraction * free:
            skipped.append({"what": what, "tokens": n, "reason": f"predicted out of memory: needs ~{need / 2**30:.1f} "
                                                                  f"GiB, {free / 2**30:.1f} GiB free"})
            return False
        return True

    def run_grid(what: str, points: Sequence[int], setup: Callable[[int, int], tuple[Callable, int]],
                 need: Callable[[int], int], store: Callable[[Series], None]) -> None:
        col = _Collector()
        for pos, n in enumerate(points):
            if pos > 0 and not budget_left():  # the smallest point always runs: no kind is left empty
                skipped.extend({"what": what, "tokens": m, "reason": "time budget exhausted"} for m in points[pos:])
                advance(sum(points[pos:]), f"{what} skipped")
                break
            if not fits(what, n, need(n)):
                skipped.extend({"what": what, "tokens": m, "reason": "larger than a point predicted out of memory"}
                               for m in points[pos + 1:])
                advance(sum(points[pos:]), f"{what} skipped")
                break
            failed = None
            try:
                fn, rot = setup(n, pos)
                stats = time_fn(fn, rotations=rot, clock=clock, monitor=monitor, device=dev, **tkw)
                if pos == 0 and dev.type == "cuda":
                    host_ms[what] = _host_time_ms(torch, fn, rot)
                del fn
            except Exception as e:  # recorded with its reason; the other series go on
                msg = str(e).splitlines()[0][:160] if str(e) else ""
                failed = f"out of memory: {msg}" if _is_oom(e) else f"error: {type(e).__name__}: {msg}"
            if failed is not None:
                # Outside the except block: the traceback (and the inputs its frames hold) is gone.
                _free_memory()
                skipped.append({"what": what, "tokens": n, "reason": failed})
                after = "ran out of memory" if failed.startswith("out of") else "failed"
                skipped.extend({"what": what, "tokens": m, "reason": f"larger than a point that {after}"}
                               for m in points[pos + 1:])
                log(f"  {what:<12} n={n:>7}  {failed}")
                advance(sum(points[pos:]), f"{what} n={n} failed")
                break
            col.add(n, stats)
            log(f"  {what:<12} n={n:>7}  {stats.median:9.3f} ms  spread {stats.spread:5.1%}"
                + (f"  [{', '.join(stats.flags)}]" if stats.flags else ""))
            store(col.series(what))
            if checkpoint is not None and layers:
                checkpoint(build(partial=True))
            advance(n, f"{what} n={n}")
        _free_memory()

    ctx = _Ctx(torch=torch, dev=dev, dtype=dtype, shape=shape, prefix=prefix_tokens, query=query_tokens,
               use_kernels=bool(use_kernels))
    layers: dict[str, Series] = {}
    scoring_series: dict[str, Series] = {}
    overheads: dict[str, Series] = {}  # gather, head
    env = environment_info(dev)

    def build(partial: bool) -> ProfileTable:
        return ProfileTable(
            gpu=gpu_id, shape=shape, method=clock.method, layers=dict(layers), scoring=dict(scoring_series),
            gather=overheads.get("gather"), head=overheads.get("head"), prefix_tokens=prefix_tokens,
            query_tokens=query_tokens, scoring_impl="triton" if use_kernels else "torch",
            device_name=env.get("device_name"), skipped=tuple(skipped), environment=env, autoprune=__version__,
            partial=partial,
        )

    try:
        for kind in wanted:
            name = KIND_NAMES[kind]
            log(f"[{name}] building one random-weight block of {shape.name}")
            block, config = build_block(shape, kind, dev, dtype)
            with _stack_context(block, stack):
                run_grid(name, grid, _layer_setup(ctx, block), lambda n, k=kind: activation_bytes(shape, k, n),
                         lambda s, name=name: layers.__setitem__(name, s))
            if scoring and kind in "*PS":  # P: Falcon-H1's attention beside its Mamba2; S: Zamba2's shared one
                setup, need = _attention_scoring_setup(ctx, config)
                run_grid("score:attn", pts, setup, need, lambda s: scoring_series.__setitem__("attention", s))
            if scoring and kind == "L":
                for key, decay, corr in (("linear", False, False), ("linear_decay", True, False),
                                         ("linear_exact", True, True)):
                    setup, need = _linear_scoring_setup(ctx, block, decay, corr)
                    run_grid(f"score:{key}", pts, setup, need, lambda s, key=key: scoring_series.__setitem__(key, s))
            if scoring and kind in "MPSA":  # every kind with a Mamba mixer (block.mixer; A: Mamba1)
                for decay in (False, True):
                    key = "mamba_decay" if decay else "mamba"
                    setup, need = (_mamba1_scoring_setup if kind == "A" else _mamba_scoring_setup)(ctx, block, decay)
                    run_grid(f"score:{key}", pts, setup, need, lambda s, key=key: scoring_series.__setitem__(key, s))
            del block
            _free_memory()
        if gather:
            setup, need = _gather_setup(ctx)
            run_grid("gather", [n for n in grid if n > text + 1], setup, need,
                     lambda s: overheads.__setitem__("gather", s))
        if head:
            setup, need = _head_setup(ctx)
            run_grid("head", grid, setup, need, lambda s: overheads.__setitem__("head", s))
            del setup
            _free_memory()
    finally:
        tf_logger.removeHandler(fallback_log)

    env["fallback_warnings"] = fallback_log.messages
    env["scoring_use_kernels"] = bool(use_kernels)
    env["stack"] = stack
    env["grid"] = grid
    env["timer"] = {k: v for k, v in tkw.items()}
    env["elapsed_s"] = round(time.monotonic() - t_start, 1)
    env["host_ms"] = host_ms  # per series, at its smallest token count (see _host_time_ms)
    return build(partial=False)
