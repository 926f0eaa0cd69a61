"""``autoprune profile --quick``: a handful of measurements that carry another GPU's table here.

:func:`quick_profile` times ≤ 12 single-layer calls (:func:`autoprune.cost.transfer.quick_plan`:
each layer kind at a token count on its host floor and three GPU-bound ones) with the per-layer
benchmark of :mod:`autoprune.profiler.layer_bench`, and ≤ 3 whole prefills of a random-weight
model (the unreduced one and fixed low-to-high schedules, :data:`QUICK_SCHEDULES`) through the
real runtime; the result is a :class:`~autoprune.cost.quick.QuickProfile` the latency model
turns into ``few-shot`` predictions. Under a minute on an H100/H200 for NemotronH-8B.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .._version import __version__
from ..cost.profile_table import ProfileTable
from ..cost.quick import QuickProfile
from ..cost.shapes import ModelShape, TokenLayout
from ..cost.transfer import QUICK_TOKENS, QuickPoint, QuickPrefill, quick_plan
from ..errors import ConfigError
from ..schedule import Schedule

__all__ = ["QUICK_SCHEDULES", "quick_keep", "quick_profile"]

# Mean keep of the whole prefills after the unreduced one: one low (where the floor binds),
# one middle; both low-to-high (see quick_keep).
QUICK_SCHEDULES = (0.25, 0.5)


def quick_keep(num_layers: int, mean_keep: float) -> tuple[float, ...]:
    """A low-to-high keep vector: 1 for the first 10 % of layers, then geometric decay to the
    level whose mean is ``mean_keep`` (bisection on the decay rate)."""
    if not 0 < mean_keep <= 1:
        raise ConfigError(f"mean keep must be in (0, 1], got {mean_keep!r}")
    head = max(1, num_layers // 10)

    def vec(rate: float) -> list[float]:
        return [1.0] * head + [max(0.02, rate ** (i + 1)) for i in range(num_layers - head)]

    lo, hi = 1e-4, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(vec(mid)) / num_layers > mean_keep:
            hi = mid
        else:
            lo = mid
    return tuple(vec((lo + hi) / 2))


def quick_profile(shape: ModelShape, source: ProfileTable, *, gpu_id: str, device=None,
                  tokens: Sequence[int] = QUICK_TOKENS, prefills: int = 3, visual: int = 16384,
                  prefix_tokens: int = 32, query_tokens: int = 64, timer_kw: dict | None = None, monitor=None,
                  model=None, log: Callable[[str], None] | None = None) -> QuickProfile:
    """Measure the quick points of ``shape`` on ``device`` (see the module docstring).

    ``source`` is the full table of another GPU that the points calibrate; ``prefills`` how
    many whole prefills (0–3) at ``visual`` visual tokens; ``model`` an already built model
    of ``shape`` to time them on (default: built here with random weights).
    """
    import torch

    from .layer_bench import profile_shape

    log = log or (lambda s: None)
    if source.gpu == gpu_id:
        raise ConfigError(f"the source table {source.origin} is of {gpu_id} itself: nothing to transfer")
    if not source.shape.same_widths(shape):
        raise ConfigError(f"the source table {source.origin} is for {source.shape.name!r}, other widths than "
                          f"{shape.name!r}")
    if not 0 <= prefills <= 3:
        raise ConfigError(f"--quick-prefills must be 0 to 3, got {prefills}")
    plan = quick_plan(shape, tokens)
    t0 = time.monotonic()
    tkw = {"warmup_ms": 10.0, "rep_ms": 40.0, "min_reps": 3, "max_reps": 50, "retries": 1}
    tkw.update(timer_kw or {})
    points: list[QuickPoint] = []
    for kind in dict.fromkeys(k for k, _ in plan):
        toks = [n for k, n in plan if k == kind]
        table = profile_shape(shape, device=device, gpu_id=gpu_id, tokens=toks, kinds=kind,
                              prefix_tokens=prefix_tokens, query_tokens=query_tokens, scoring=False, gather=False,
                              head=False, timer_kw=tkw, monitor=monitor, log=log)
        for name, s in table.layers.items():
            points += [QuickPoint(kind, n, ms) for n, ms in zip(s.tokens, s.ms)]
    layers_s = time.monotonic() - t0
    log(f"quick: {len(points)} layer timings in {layers_s:.1f} s")
    measured: list[QuickPrefill] = []
    if prefills:
        from .measured import MeasuredLatency
        from .random_model import build_random_model

        dev = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, shape.dtype)
        if model is None:
            model = build_random_model(shape, dev, dtype)
        layout = TokenLayout(prefix=prefix_tokens, visual=visual, query=query_tokens)
        x = torch.randn(1, layout.total, shape.hidden_size, device=dev, dtype=dtype)
        mask = torch.zeros(1, layout.total, dtype=torch.bool)
        mask[:, prefix_tokens:prefix_tokens + visual] = True
        ml = MeasuredLatency(model, x, mask, gpu=gpu_id, energy=False,
                             timer_kw={"min_reps": 3, "max_reps": 3, "rep_ms": 0.0, "warmup_ms": 0.0,
                                       "estimate_calls": 1, "retries": 1})
        keeps = [(1.0,) * shape.num_layers] + [quick_keep(shape.num_layers, m) for m in QUICK_SCHEDULES]
        for keep in keeps[:prefills]:
            st = ml.baseline() if min(keep) == 1.0 else ml.measure(Schedule(keep=keep))
            measured.append(QuickPrefill(keep=keep, visual=visual, ms=float(st.median)))
            log(f"quick: prefill mean keep {sum(keep) / len(keep):.2f}: {st.median:.1f} ms")
        del x, ml
    env = {"layers_s": round(layers_s, 1), "total_s": round(time.monotonic() - t0, 1), "timer": tkw,
           "source_table": source.origin}
    return QuickProfile(gpu=gpu_id, shape=shape.name, source_gpu=source.gpu, points=tuple(points),
                        prefills=tuple(measured), prefix_tokens=prefix_tokens, query_tokens=query_tokens,
                        environment=env, autoprune=__version__)
