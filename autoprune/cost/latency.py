"""Latency model: predicted prefill time of a reduction schedule on a target GPU, with its source.

For a model shape, a token layout ``[prefix][visual V][query]`` and a schedule::

    per layer i (k_i visual tokens enter it; evidence and gather where the plan has them):
        G_i = t_kind(i)(text + k_i) + s_kind(i)(text + k_i) + g(text + k_{i-1})   GPU time
        H_i = host time to queue that work (Python, kernel launches)
    latency = max_k ( Σ_{i≤k} H_i + Σ_{i≥k} G_i ) + head
    baseline = the same with nothing removed

The host queues layer after layer while the GPU executes: a two-stage pipeline, whose
time is the longest path through it (:func:`pipeline_ms`). On a large model the expensive
early layers let the host run far ahead, so the sum of GPU times decides; at small token
counts a layer's host time can exceed its GPU time, which is why each measured series is
split into a host floor and a GPU part (:mod:`autoprune.cost.roofline`). CPU tables are
summed (on a CPU, host and compute are the same thread). How close the predictions come
is measured by ``benchmarks/latency_model.py`` (results in the README).

(``k_i`` from :meth:`Schedule.tokens_per_layer`, evidence and prune layers from
:func:`autoprune.plan.plan_reduction`.) Each term comes from one of three sources,
named in the returned :class:`~autoprune.interfaces.LatencyEstimate`:

``table``
    a table measured on this GPU for this shape (:mod:`autoprune.cost.profile_table`),
    interpolated log-log between grid points.
``few-shot``
    a table of this shape measured on *another* GPU, carried here by ≤ 12 layer timings and
    ≤ 3 whole prefills measured on this one (``autoprune profile --quick``, a file found by
    :func:`autoprune.cost.quick.find_quick`, or ``few_shot=``; :mod:`autoprune.cost.transfer`).
``roofline``
    with ``forms=`` (and whenever the calibration is found automatically): the floor +
    throughput forms of :mod:`autoprune.cost.kinds`, fitted on the other GPU's table and
    carried by the target's spec sheet (:func:`autoprune.cost.transfer.spec_transfer`).
    Otherwise the roofline of :mod:`autoprune.cost.roofline` with the target's spec peaks and
    per-kind factors fitted on a table measured on *another* GPU
    (:func:`~autoprune.cost.roofline.calibrate`). Scoring, gather and head times are that
    GPU's measurements scaled by the bandwidth ratio (they are small, memory-bound kernels).
``roofline-uncalibrated``
    the registered kinds' prior forms (:mod:`autoprune.cost.kinds`: documented guesses,
    pipelined like the others; overheads from their byte counts) when no measured table of
    this shape exists anywhere.

Every estimate carries an interval (``low_ms``/``high_ms``) from its source's validation
residuals (:mod:`autoprune.cost.uncertainty`).

The CPU pseudo-GPU has measured tables only (``autoprune profile`` on the CPU). Measuring
schedules on the present device instead is :class:`autoprune.profiler.measured.MeasuredLatency`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelMismatchError
from ..interfaces import LatencyEstimate
from ..plan import plan_reduction
from ..schedule import Schedule
from .gpus import GpuSpec, Registry, load_registry, resolve
from .profile_table import KIND_NAMES, ProfileTable, find_table, list_tables
from .roofline import (
    DEFAULT_EFFICIENCY,
    DEFAULT_OVERHEAD_EFFICIENCY,
    PLATEAU,
    Calibration,
    calibrate,
    gpu_part,
    host_floor,
    layer_bytes,
    overhead_bytes,
    roofline_ms,
)
from .shapes import ModelShape, TokenLayout, layer_flops
from .quick import QuickProfile, find_quick
from .transfer import FewShot, FormSet, QuickPrefill, fit_forms, lower_envelope, prior_forms, spec_transfer
from .uncertainty import DEFAULT_HALF_WIDTH, Interval, ResidualSet, load_residuals

__all__ = ["LatencyBreakdown", "LatencyModel", "calibrate_prefills", "pipeline_ms", "scoring_term"]


def scoring_term(kind: str, scorer) -> str:
    """The overhead term that prices evidence of ``kind`` (``attention``/``mamba``/``linear``) under ``scorer``."""
    if kind == "attention":
        return "attention"
    if kind == "linear":
        return "linear_exact" if scorer.delta_correction else ("linear_decay" if scorer.mamba_decay else "linear")
    return "mamba_decay" if scorer.mamba_decay else "mamba"


def pipeline_ms(gpu: Sequence[float], host: Sequence[float]) -> float:
    """``max_k (Σ_{i≤k} host_i + Σ_{i≥k} gpu_i)``: a host queuing work for a GPU, in order."""
    best, h_prefix, g_suffix = 0.0, 0.0, float(sum(gpu))
    for g, h in zip(gpu, host):
        h_prefix += h
        best = max(best, h_prefix + g_suffix)
        g_suffix -= g
    return best


# ----------------------------------------------------------------- the model
@dataclass(frozen=True)
class LatencyBreakdown:
    """Where a predicted prefill's time goes (ms); ``tokens[i]`` = tokens entering layer ``i``."""

    tokens: tuple[int, ...]
    layers_ms: tuple[float, ...]
    scoring_ms: float
    gather_ms: float
    head_ms: float
    extrapolated: bool
    # Pipelined (GPU) predictions: per-layer GPU time (layer + its scoring and gather) and
    # host time, the head as a last stage; ``None`` where times simply add up (CPU tables,
    # uncalibrated roofline).
    layer_gpu_ms: tuple[float, ...] | None = None
    layer_host_ms: tuple[float, ...] | None = None
    prune_layers: tuple[int, ...] = ()

    @property
    def prune_points(self) -> int:
        return len(self.prune_layers)

    def with_prune_cost(self, per_prune_ms: float) -> float:
        """The total with ``per_prune_ms`` more host work at every prune layer: in a pipelined
        prediction it delays the GPU only where the host is the bottleneck (few tokens), else it adds."""
        if not self.prune_layers or per_prune_ms == 0.0:
            return self.total_ms
        if self.layer_gpu_ms is None:
            return self.total_ms + per_prune_ms * len(self.prune_layers)
        host = list(self.layer_host_ms)
        for i in self.prune_layers:
            host[i] += per_prune_ms
        return pipeline_ms(self.layer_gpu_ms, host)

    @property
    def total_ms(self) -> float:
        if self.layer_gpu_ms is not None:
            return pipeline_ms(self.layer_gpu_ms, self.layer_host_ms)
        return sum(self.layers_ms) + self.scoring_ms + self.gather_ms + self.head_ms


class LatencyModel:
    """Predicted prefill latency of schedules for one (shape, layout, GPU); a ``LatencySource``.

    ``gpu`` is a :class:`GpuSpec` or a name for :func:`autoprune.cost.gpus.resolve`. The source is
    chosen in this order: ``table`` (argument, or found by
    :func:`autoprune.cost.profile_table.find_table` for this GPU and shape); ``calibration``
    (argument, or fitted on a table of this shape measured on another GPU of the
    registry) → ``roofline``; else ``roofline-uncalibrated``. The CPU pseudo-GPU needs a table.

    Raises :class:`ConfigError` when a given table is for another GPU or shape, and
    :class:`ModelMismatchError` for schedules of another layer count or layer kinds.
    """

    def __init__(self, shape: ModelShape, layout: TokenLayout, gpu: GpuSpec | str, *,
                 table: ProfileTable | str | Path | None = None, calibration: Calibration | None = None,
                 forms: FormSet | None = None, few_shot: FewShot | None = None,
                 residuals: ResidualSet | None = None, search_dirs: Sequence[str | Path] | None = None, registry: Registry | None = None):
        if not isinstance(shape, ModelShape):
            raise ConfigError(f"shape must be a ModelShape, got {type(shape).__name__}")
        if not isinstance(layout, TokenLayout):
            raise ConfigError(f"layout must be a TokenLayout, got {type(layout).__name__}")
        self.shape, self.layout = shape, layout
        self.spec = gpu if isinstance(gpu, GpuSpec) else resolve(gpu, registry)
        self.gpu = self.spec.id
        self.table: ProfileTable | None = None
        self.calibration: Calibration | None = None
        self.forms: FormSet | None = None
        self.few_shot: FewShot | None = None
        self._notes: list[str] = []
        self._estimated: set[str] = set()  # overheads taken from the byte count, not a measurement
        self._envelopes: dict[str, Any] = {}  # the source's overhead series without their spikes
        self._table_forms: FormSet | bool | None = None  # forms fitted on the table (False: a CPU one)
        self._nstar: dict[str, int] = {}
        # Tables this model read without being given them (found in the search directories):
        # {"table" | "calibration_table": path}, for provenance and for the search to announce.
        self.found_tables: dict[str, str] = {}
        if isinstance(table, (str, Path)):
            table = ProfileTable.load(table)
        if few_shot is not None:
            if table is not None or calibration is not None:
                raise ConfigError("pass one of table=, calibration= or few_shot=, not several")
            if few_shot.gpu != self.spec.id:
                raise ConfigError(f"the few-shot transfer is for {few_shot.gpu!r}, not {self.spec.id!r}")
            self.few_shot = few_shot
            table = few_shot.table()
        if table is None and calibration is None:
            path = find_table(self.spec.id, shape.name, search_dirs)
            if path is not None:
                table = ProfileTable.load(path)
                self.found_tables["table"] = str(path)
            elif (qpath := find_quick(self.spec.id, shape.name, search_dirs)) is not None:
                quick = QuickProfile.load(qpath)
                few_shot = calibrate_prefills(quick.few_shot(registry, search_dirs), quick.prefills, shape,
                                              prefix=quick.prefix_tokens, query=quick.query_tokens)
                self.few_shot = few_shot
                table = few_shot.table()
                self._notes.append(f"quick:{qpath}")
            else:  # a table of this GPU for a shape of the same widths (another layer pattern)
                for gpu_id, _, p in list_tables(search_dirs):
                    if gpu_id != self.spec.id:
                        continue
                    t = ProfileTable.load(p)
                    if t.shape.same_widths(shape) and not set(shape.layer_kinds) - set(t.shape.layer_kinds):
                        table = t
                        self.found_tables["table"] = str(p)
                        break
        if table is not None:
            self._check_table(table)
            self.table, self.source = table, "table" if few_shot is None else "few-shot"
            self._notes.append(f"table:{table.origin}" if few_shot is None else
                               f"few-shot:{few_shot.source.gpu}+{len(few_shot.points)}-points")
            if table.is_cpu:
                self._notes.append("cpu-wall-clock-table")
            if table.partial:  # an interrupted or unfinished `autoprune profile`
                self._notes.append("partial-table")
        else:
            if self.spec.is_cpu:
                raise ConfigError(
                    f"no measured CPU table for shape {shape.name!r}: the CPU has no roofline; run "
                    f"`autoprune profile --gpu cpu` for this shape first"
                )
            if calibration is None:
                calibration = self._auto_calibration(search_dirs, registry)  # records the table it read
            if calibration is not None:
                if calibration.shape != shape.name:
                    raise ConfigError(f"calibration was fitted on shape {calibration.shape!r}, not {shape.name!r}")
                self.calibration, self.source = calibration, "roofline"
                self._notes.append(f"calibrated-on:{calibration.source_gpu}")
                if forms is None and self._auto_forms is not None:
                    forms = self._auto_forms
                if forms is not None:
                    if forms.gpu != self.spec.id:
                        raise ConfigError(f"the cost forms are for {forms.gpu!r}, not {self.spec.id!r}")
                    self.forms = forms
                    self._notes.append(f"forms:{forms.how}")
            else:
                self.source = "roofline-uncalibrated"
                self._notes.append("default-efficiencies")
                # The registered kinds' prior floor + throughput forms, pipelined like the others.
                self.forms = forms if forms is not None else prior_forms(shape, self.spec)
        self._baseline = None
        self._residuals = residuals
        self._interval: Interval | None = None

    # -- setup ---------------------------------------------------------------
    def _check_table(self, table: ProfileTable) -> None:
        if table.gpu != self.spec.id:
            raise ConfigError(
                f"{table.origin} was measured on {table.gpu!r}, not {self.spec.id!r}; to predict another GPU from it "
                "pass calibration=calibrate(table)"
            )
        missing = table.missing_kinds()
        if missing:
            raise ConfigError(f"{table.origin} has no measurements for layer kind(s) {missing} "
                              f"(skipped: {[dict(x) for x in table.skipped][:4]}); "
                              "measure them with `autoprune profile`")
        if table.shape != self.shape:
            if not table.shape.same_widths(self.shape):
                raise ConfigError(
                    f"{table.origin} was measured for shape {table.shape.name!r} with other dimensions than shape "
                    f"{self.shape.name!r}; measure this shape with `autoprune profile`"
                )
            missing = sorted(set(self.shape.layer_kinds) - set(table.shape.layer_kinds))
            if missing:
                raise ConfigError(f"{table.origin} has no layers of kind(s) {missing} that shape "
                                  f"{self.shape.name!r} needs")
            # Same widths, other layer pattern: per-layer costs are the same per kind.
            self._notes.append(f"layers-of:{table.shape.name}")
        if table.query_tokens and table.query_tokens != self.layout.query:
            self._notes.append(f"scoring-measured-with-{table.query_tokens}-query-tokens")

    _auto_forms: FormSet | None = None

    def _auto_calibration(self, search_dirs, registry) -> Calibration | None:
        """A calibration from a table of this shape on another GPU — or, failing that, of a
        shape with the same widths (another layer pattern) that has every kind needed."""
        reg = registry or load_registry()
        fallback = None
        for gpu_id, shape_name, path in list_tables(search_dirs):
            if gpu_id in ("cpu", self.spec.id) or gpu_id not in reg:
                continue
            if shape_name != self.shape.name and fallback is not None:
                continue
            t = ProfileTable.load(path)
            if t.is_cpu or not t.shape.same_widths(self.shape):
                continue
            if set(self.shape.layer_kinds) - set(t.shape.layer_kinds):
                continue
            if t.shape == self.shape:
                self.found_tables["calibration_table"] = str(path)
                self._auto_forms = spec_transfer(fit_forms(t, reg.get(gpu_id)), reg.get(gpu_id), self.spec,
                                                 self.shape.dtype)
                return calibrate(t, reg.get(gpu_id))
            fallback = (t, gpu_id, path)
        if fallback is not None:
            t, gpu_id, path = fallback
            self.found_tables["calibration_table"] = str(path)
            self._notes.append(f"layers-of:{t.shape.name}")
            self._auto_forms = dataclasses.replace(
                spec_transfer(fit_forms(t, reg.get(gpu_id)), reg.get(gpu_id), self.spec, self.shape.dtype),
                shape=self.shape.name)
            return dataclasses.replace(calibrate(t, reg.get(gpu_id)), shape=self.shape.name)
        return None

    # -- per-term times ------------------------------------------------------
    def layer_ms(self, kind: str, tokens: int) -> tuple[float, bool]:
        """``(ms, extrapolated)`` of one layer of ``kind`` (letter) over ``tokens`` tokens."""
        if self.table is not None:
            return self.table.layer(kind).at(tokens)
        if self.forms is not None:
            return self.forms.call_ms(self.shape, kind, tokens), False
        cal = self.calibration
        eff = cal.kinds[kind] if cal is not None else DEFAULT_EFFICIENCY[kind]
        return roofline_ms(layer_flops(self.shape, kind, tokens), layer_bytes(self.shape, kind, tokens),
                           self.spec.peak_tflops(self.shape.dtype), self.spec.memory_bandwidth_gbs, eff,
                           cal.combine if cal is not None else "max"), False

    def overhead_ms(self, what: str, tokens: int) -> tuple[float, bool]:
        """``(ms, extrapolated)`` of ``attention``/``mamba``/``mamba_decay`` scoring, ``gather`` or ``head``."""
        series = None
        scale = 1.0
        if self.table is not None:
            series = self.table.scoring.get(what) if what not in ("gather", "head") else getattr(self.table, what)
        elif self.calibration is not None:
            series = self.calibration.overheads.get(what)
            # Small memory-bound kernels: the source GPU's time scaled by its bandwidth over ours.
            scale = self.calibration.source_bandwidth_gbs / self.spec.memory_bandwidth_gbs
        if series is not None:
            ms, ex = series.at(tokens)
            return ms * scale, ex
        if self.spec.is_cpu:
            raise ConfigError(f"{self.table.origin if self.table else 'CPU'}: no measurement of {what!r} overhead")
        self._estimated.add(what)
        nbytes = overhead_bytes(self.shape, what, tokens, self.layout.query)
        return roofline_ms(0.0, nbytes, 1.0, self.spec.memory_bandwidth_gbs, DEFAULT_OVERHEAD_EFFICIENCY), False

    @property
    def pipelined(self) -> bool:
        """Whether host and GPU times are composed as a pipeline (GPU predictions) or summed."""
        if self.table is not None:
            return not self.table.is_cpu
        return self.calibration is not None or self.forms is not None

    def term_ms(self, what: str, tokens: int) -> tuple[float, float, bool]:
        """``(gpu_ms, host_ms, extrapolated)`` of a layer kind (letter) or an overhead
        (``attention``/``mamba``/``mamba_decay`` scoring, ``gather``, ``head``) at ``tokens``."""
        is_layer = what in KIND_NAMES
        if not self.pipelined:
            ms, ex = self.layer_ms(what, tokens) if is_layer else self.overhead_ms(what, tokens)
            return ms, 0.0, ex
        if is_layer and self.forms is not None:  # the floor + throughput forms, carried by spec ratios
            return self.forms.gpu_ms(self.shape, what, tokens), self.forms.kinds[what].host_ms, False
        if (not is_layer and self.forms is not None and self.calibration is not None
                and self.calibration.overheads.get(what) is not None):
            # The source's overhead without its spikes: floor on the host, the rest on the GPU
            # at the bandwidth ratio (small memory-bound kernels).
            env = self._envelopes.get(what)
            if env is None:
                series = self.calibration.overheads[what]
                env = self._envelopes[what] = dataclasses.replace(series, ms=tuple(lower_envelope(series)))
            ms, ex = env.at(tokens)
            floor = min(env.ms)
            scale = self.calibration.source_bandwidth_gbs / self.spec.memory_bandwidth_gbs
            return max(0.0, ms - floor) * scale, floor, ex
        if is_layer and self.table is None:  # calibrated roofline of the GPU part
            ms, ex = self.layer_ms(what, tokens)
            return ms, self.calibration.host_ms.get(what, 0.0), ex
        if is_layer:
            series, scale = self.table.layer(what), 1.0
        elif self.table is not None:
            series = self.table.scoring.get(what) if what not in ("gather", "head") else getattr(self.table, what)
            scale = 1.0
        elif self.calibration is not None:
            series = self.calibration.overheads.get(what)
            scale = self.calibration.source_bandwidth_gbs / self.spec.memory_bandwidth_gbs
        else:
            series = None
        if series is None:
            ms, ex = self.overhead_ms(what, tokens)
            return ms, 0.0, ex
        if is_layer and (g := self._table_gpu_below_plateau(what, series, tokens)) is not None:
            return g, host_floor(series), False
        g, ex = gpu_part(series, tokens)
        return g * scale, host_floor(series), ex

    def _table_gpu_below_plateau(self, kind: str, series, tokens: int) -> float | None:
        """GPU time of a table's layer where the table shows only the host floor: the kind's
        floor + throughput form fitted on the table, joined continuously to the first
        GPU-bound point; None at or above that point (the measurement itself stands)."""
        if self._table_forms is None:
            try:
                self._table_forms = fit_forms(self.table, self.spec) if not self.spec.is_cpu else False
            except ConfigError:  # e.g. a float32 table: the spec sheet has no peak for it
                self._table_forms = False
        if not self._table_forms or kind not in self._table_forms.kinds:
            return None
        nstar = self._nstar.get(kind)
        if nstar is None:
            floor = min(series.ms)
            start = series.ms.index(floor)
            nstar = self._nstar[kind] = next((n for n, v in zip(series.tokens[start:], series.ms[start:])
                                              if v >= PLATEAU * floor), 0)
        if not nstar or tokens >= nstar:
            return None
        f = self._table_forms
        return f.gpu_ms(self.table.shape, kind, tokens) * series.at(nstar)[0] / f.gpu_ms(self.table.shape, kind, nstar)

    # -- schedules -----------------------------------------------------------
    def _check_schedule(self, schedule: Schedule) -> None:
        if not isinstance(schedule, Schedule):
            raise ConfigError(f"expected a Schedule, got {type(schedule).__name__}")
        if schedule.num_layers != self.shape.num_layers:
            raise ModelMismatchError(
                f"schedule has {schedule.num_layers} layers but shape {self.shape.name!r} has {self.shape.num_layers}"
            )
        if schedule.model is not None and schedule.model.layer_kinds != self.shape.layer_kinds:
            raise ModelMismatchError(
                f"schedule is for layer kinds {schedule.model.layer_kinds!r}; shape {self.shape.name!r} has "
                f"{self.shape.layer_kinds!r}"
            )

    def breakdown(self, schedule: Schedule) -> LatencyBreakdown:
        """Per-term prediction for ``schedule`` at this layout's visual-token count."""
        self._check_schedule(schedule)
        V, text = self.layout.visual, self.layout.text
        plan = plan_reduction(schedule, self.shape.layer_kinds, V)
        tokens = tuple(text + k for k in plan.counts)
        extrap = False
        layers, gpu, host = [], [], []
        scoring = gather = 0.0
        for i, (kind, n) in enumerate(zip(self.shape.layer_kinds, tokens)):
            g, h, ex = self.term_ms(kind, n)
            layers.append(g)
            extrap |= ex
            if i in plan.prune_layers:
                gg, hh, ex = self.term_ms("gather", text + (V if i == 0 else plan.counts[i - 1]))
                g, h, gather, extrap = g + gg, h + hh, gather + gg, extrap or ex
            # a layer with two mixers ("attention+mamba") scores both
            for part in plan.evidence_layers[i].split("+") if i in plan.evidence_layers else ():
                what = scoring_term(part, schedule.scorer)
                gg, hh, ex = self.term_ms(what, n)
                g, h, scoring, extrap = g + gg, h + hh, scoring + gg, extrap or ex
            gpu.append(g)
            host.append(h)
        head, head_host, ex = self.term_ms("head", tokens[-1])
        if self.pipelined:
            gpu.append(head)
            host.append(head_host)
        return LatencyBreakdown(tokens=tokens, layers_ms=tuple(layers), scoring_ms=scoring, gather_ms=gather,
                                head_ms=0.0 if self.pipelined else head, extrapolated=extrap or ex,
                                layer_gpu_ms=tuple(gpu) if self.pipelined else None,
                                layer_host_ms=tuple(host) if self.pipelined else None,
                                prune_layers=tuple(plan.prune_layers))

    def baseline_breakdown(self) -> LatencyBreakdown:
        return self.breakdown(Schedule.identity(self.shape.num_layers))

    def baseline_ms(self) -> float:
        if self._baseline is None:
            self._baseline = self._corrected(self.baseline_breakdown())
        return self._baseline

    def _corrected(self, b: LatencyBreakdown) -> float:
        """A breakdown's total after the quick prefills' correction (few-shot), else the total."""
        if self.few_shot is None:
            return b.total_ms
        return self.few_shot.prefill_scale * b.with_prune_cost(self.few_shot.prune_point_ms)

    def estimate(self, schedule: Schedule) -> LatencyEstimate:
        """:class:`LatencyEstimate` of ``schedule`` and of the unreduced model (``speedup`` = ratio)."""
        b = self.breakdown(schedule)
        base = self.baseline_breakdown()
        flags = list(self._notes)
        if b.extrapolated or base.extrapolated:
            flags.append("extrapolated")
        if self.source != "roofline-uncalibrated":
            flags.extend(f"unmeasured-{what}" for what in sorted(self._estimated))
        lat, base_ms = self._corrected(b), self._corrected(base)
        low, high = self.interval().bounds(lat)
        return LatencyEstimate(latency_ms=lat, baseline_ms=base_ms, source=self.source, gpu=self.gpu,
                               flags=tuple(flags), low_ms=low, high_ms=high, interval_level=self.interval().level)

    def interval(self) -> Interval:
        """This model's interval (its source's validation residuals, :mod:`autoprune.cost.uncertainty`);
        a CPU table's wall clock has none validated and gets the documented default."""
        if self._interval is None:
            self._interval = self._make_interval()
        return self._interval

    def _make_interval(self) -> Interval:
        if self._residuals is None:
            self._residuals = load_residuals()
            if self.few_shot is not None and self.few_shot.prefills:
                # The quick prefills are validation points on this very GPU: they join the residuals.
                self._residuals = self._residuals.with_residuals("few-shot", self.few_shot.prefill_residuals())
        iv = self._residuals.interval(self.source)
        src_gpu = (self.calibration.source_gpu if self.calibration is not None
                   else self.few_shot.source.gpu if self.few_shot is not None else None)
        if src_gpu is not None and iv.high < DEFAULT_HALF_WIDTH:
            reg = load_registry()
            if src_gpu in reg and reg.get(src_gpu).architecture != self.spec.architecture:
                # The shipped residuals are of transfers within one architecture (Hopper to
                # Hopper): across architectures they say nothing; the documented default stands.
                iv = Interval(source=iv.source, level=iv.level, low=-DEFAULT_HALF_WIDTH, high=DEFAULT_HALF_WIDTH,
                              n=0, origin=f"default: {src_gpu} -> {self.spec.id} crosses architectures "
                                          f"({reg.get(src_gpu).architecture} -> {self.spec.architecture}), "
                                          "not validated")
        return iv

    def describe(self) -> dict:
        d: dict[str, Any] = {"gpu": self.gpu, "shape": self.shape.name, "source": self.source,
                             "layout": {"prefix": self.layout.prefix, "visual": self.layout.visual,
                                        "query": self.layout.query}, "notes": list(self._notes)}
        if self.calibration is not None:
            d["calibration"] = self.calibration.to_dict()
        if self.forms is not None:
            d["forms"] = self.forms.to_dict()
        if self.few_shot is not None:
            d["few_shot"] = self.few_shot.describe()
        if self.table is not None and self.few_shot is None:
            d["table"] = {"path": self.table.origin, "found": "table" in self.found_tables,
                          "measured_tokens": self.table.measured_range()}
        if "calibration_table" in self.found_tables:
            d["calibration_table"] = self.found_tables["calibration_table"]
        beyond = self.beyond_measured()
        d["extrapolated"] = bool(beyond) or self.baseline_breakdown().extrapolated
        if beyond:
            d["beyond_measured"] = beyond
        d["interval"] = self.interval().to_dict()
        return d

    def beyond_measured(self) -> list[str]:
        """What the unreduced prefill needs outside the table's measured token range, e.g.
        ``attention at 16480 tokens (measured 128..128)``; empty without a table or inside it."""
        if self.table is None or self.few_shot is not None:
            return []
        n = self.layout.total
        out = []
        for letter in dict.fromkeys(self.shape.layer_kinds):
            series = self.table.layer(letter)
            if not series.tokens[0] <= n <= series.tokens[-1]:
                out.append(f"{KIND_NAMES[letter]} at {n} tokens (measured {series.tokens[0]}..{series.tokens[-1]})")
        return out


def calibrate_prefills(few_shot: FewShot, prefills: Sequence[QuickPrefill], shape: ModelShape, *, prefix: int = 32,
                       query: int = 64) -> FewShot:
    """``few_shot`` with its whole-prefill correction fitted on ``prefills`` (at most 3) measured
    on the target, applied to every prediction (schedule and baseline alike)::

        measured = prefill_scale · predicted(host work + prune_point_ms at every prune layer)

    The layer model leaves out host work a prune point costs beyond its gather (hook dispatch,
    the selection's small kernels, re-slicing per-token inputs). It is host time: in the
    pipelined prediction it delays the GPU only where the host is the bottleneck (layers of few
    tokens), so a schedule's cost depends on where it cuts, not only on how often. An unreduced
    prefill among the prefills fixes the scale by itself (speedups are relative to it; it has no
    prune point); the prune cost is then fitted on the reduced ones by least squares on the
    relative error (a bounded 1-D search, ``≥ 0``); without an unreduced prefill the scale is
    fitted with it. Prefills without a prune point, or one alone, fit the scale alone,
    ``exp(mean log(measured / predicted))``. The residuals after the correction join the
    few-shot residuals of the interval (:meth:`FewShot.prefill_residuals`)."""
    import math

    prefills = tuple(prefills)
    if len(prefills) > 3:
        raise ConfigError(f"few-shot calibration takes at most 3 whole prefills, got {len(prefills)}")
    bare = dict(prefill_scale=1.0, prune_point_ms=0.0, prefills=(), prefill_prune_points=(),
                prefill_corrected_ms=())
    if not prefills:
        return dataclasses.replace(few_shot, **bare)
    unscaled = dataclasses.replace(few_shot, **bare)
    bds = []
    for p in prefills:
        m = LatencyModel(shape, TokenLayout(prefix=prefix, visual=p.visual, query=query), unscaled.gpu,
                         few_shot=unscaled, residuals=ResidualSet(residuals={}))
        bds.append(m.breakdown(Schedule(keep=p.keep)))
    preds = [b.total_ms for b in bds]
    counts = [b.prune_points for b in bds]
    meas = [p.ms for p in prefills]
    scale = math.exp(sum(math.log(m / q) for m, q in zip(meas, preds)) / len(prefills))
    per_prune = 0.0
    plain = [i for i, n in enumerate(counts) if n == 0]
    if any(counts) and (plain or len(set(counts)) > 1):
        anchor = math.exp(sum(math.log(meas[i] / preds[i]) for i in plain) / len(plain)) if plain else None

        def fit(c: float) -> tuple[float, float]:
            x = [b.with_prune_cost(c) / m for b, m in zip(bds, meas)]
            s = anchor if anchor is not None else sum(x) / sum(v * v for v in x)
            return sum((s * v - 1.0) ** 2 for v in x), s

        # the loss is smooth and unimodal in practice: a grid, then golden-section refinement
        hi = max(meas) / max(1, max(counts))
        grid = [hi * i / 200 for i in range(201)]
        best = min(grid, key=lambda c: fit(c)[0])
        a, b = max(0.0, best - hi / 200), min(hi, best + hi / 200)
        r = (math.sqrt(5) - 1) / 2
        for _ in range(60):
            c1, c2 = b - r * (b - a), a + r * (b - a)
            if fit(c1)[0] <= fit(c2)[0]:
                b = c2
            else:
                a = c1
        per_prune = (a + b) / 2
        scale = fit(per_prune)[1]
    corrected = tuple(scale * b.with_prune_cost(per_prune) for b in bds)
    return dataclasses.replace(few_shot, prefill_scale=scale, prune_point_ms=per_prune, prefills=prefills,
                               prefill_predicted_ms=tuple(preds), prefill_prune_points=tuple(counts),
                               prefill_corrected_ms=corrected)
