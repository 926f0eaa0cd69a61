"""The paper's analysis: layerwise sparsity, importance instability, evidence kinds, schedule shapes.

Everything is computed by functions that return small typed objects (what the tests
check); ``render_*`` functions draw them with matplotlib (imported only there, Agg).

Schedule shapes at equal mean keep come from the one registry of named shapes
(:mod:`autoprune.search.references`): ``low_to_high`` (geometric), ``uniform`` (one cut at the
first layer with evidence, then flat: the most front-loaded monotone schedule), ``high_to_low``
(a hard cut, then a mild one), ``fastv`` (one cut after the first attention layer) and
``prefilter`` (a query-agnostic uniform-stride selection before layer 0), each placed at the
mean keep by :func:`~autoprune.search.references.shape_at_mean_keep`.

The selector (``language``, ``uniform_stride``, ``random``) is orthogonal to the shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .schedule import ModelSignature, Schedule, ScorerConfig
from .search.references import shape_at_mean_keep

__all__ = [
    "schedule_family", "SparsityResult", "StabilityResult", "EvidenceKindsResult", "ScheduleSweep",
    "SweepPoint", "collect_evidence", "layer_sparsity", "stability", "evidence_kinds", "schedule_sweep",
    "run_analysis", "render_sparsity", "render_stability", "render_evidence_kinds", "render_sweep",
    "DeltaNetProxiesResult", "deltanet_proxies", "DELTANET_VARIANTS",
]

ANALYSIS_MIN_TOKENS = 1


def schedule_family(shape: str, mean_keep: float, signature: ModelSignature, num_visual: int, *,
                    scorer: ScorerConfig | None = None, min_tokens: int = ANALYSIS_MIN_TOKENS) -> Schedule:
    """The registered shape ``shape`` at mean keep ``mean_keep`` for a model of ``signature``."""
    return shape_at_mean_keep(shape, signature, mean_keep, num_visual, scorer=scorer, min_tokens=min_tokens)


# --------------------------------------------------------------------------- evidence
@dataclass
class EvidenceSet:
    """Normalised evidence of every mixer layer under the identity schedule.

    ``evidence[layer] (N, V)`` fp32 (each row sums to 1), visual tokens in original order;
    ``targets (N, V)`` bool or None: the tokens known to hold the answer's evidence.
    """

    layer_kinds: str
    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    evidence: dict[int, torch.Tensor]
    targets: torch.Tensor | None
    mamba_decay: bool
    delta_correction: bool = False

    @property
    def num_samples(self) -> int:
        return next(iter(self.evidence.values())).shape[0]

    @property
    def num_visual(self) -> int:
        return next(iter(self.evidence.values())).shape[1]


def collect_evidence(evaluator, *, n: int | None = 128, mamba_decay: bool = False,
                     batch_size: int | None = None, delta_correction: bool = False) -> EvidenceSet:
    """Run the identity schedule with ``record_evidence=True`` on the evaluator's data.

    Uses the largest group of equal-shape samples (at most ``n`` of them). ``mamba_decay`` and
    ``delta_correction`` choose the recurrent layers' implicit-attention form.
    """
    from .runtime import reduce

    data = evaluator.data
    g = max(data.groups, key=len)
    take = len(g) if n is None else min(n, len(g))
    kinds = evaluator.signature.layer_kinds
    sched = Schedule.identity(len(kinds), scorer=ScorerConfig(mamba_decay=mamba_decay,
                                                              delta_correction=delta_correction))
    bs = batch_size or evaluator.batch_size
    per_layer: dict[int, list[torch.Tensor]] = {}
    layer_kind: dict[int, str] = {}
    with torch.inference_mode():
        for s in range(0, take, bs):
            x = g.inputs_embeds[s: min(take, s + bs)]
            e = min(take, s + bs)
            # one mask for the group, or one per sample (checkpoint records: prompts of other lengths)
            vm = g.visual_mask[s:e] if g.visual_mask.dim() == 2 else g.visual_mask[None].expand(x.shape[0], -1)
            with reduce(evaluator.qa.module, sched, visual_mask=vm, record_evidence=True, use_kernels=False) as h:
                evaluator.qa.last_logits(x)
            for layer, rec in h.last.evidence.items():
                order = torch.argsort(rec["positions"], dim=1)
                per_layer.setdefault(layer, []).append(torch.gather(rec["evidence"], 1, order))
                layer_kind[layer] = rec["kind"]
    layers = tuple(sorted(per_layer))
    targets = None
    if data.targets is not None:
        targets = data.targets[g.index[:take].cpu()].bool()
    return EvidenceSet(layer_kinds=kinds, layers=layers, kinds=tuple(layer_kind[j] for j in layers),
                       evidence={j: torch.cat(per_layer[j]) for j in layers}, targets=targets, mamba_decay=mamba_decay,
                       delta_correction=delta_correction)


# --------------------------------------------------------------------------- sparsity
@dataclass(frozen=True)
class SparsityResult:
    """``share[i][j]``: mean share of visual tokens holding ``levels[j]`` of layer ``layers[i]``'s
    query importance (the fewest, most important tokens). A flat distribution needs ``levels[j]``."""

    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    levels: tuple[float, ...]
    share: tuple[tuple[float, ...], ...]


def _mass_share(ev: torch.Tensor, level: float) -> torch.Tensor:
    """Per row: the smallest share of entries whose (sorted) mass reaches ``level``."""
    srt = torch.sort(ev.double(), dim=1, descending=True).values
    cum = torch.cumsum(srt, dim=1) / srt.sum(dim=1, keepdim=True).clamp_min(1e-300)
    k = (cum < level - 1e-12).sum(dim=1) + 1
    return k.double() / ev.shape[1]


def layer_sparsity(ev: EvidenceSet, levels: Sequence[float] = (0.5, 0.8, 0.9)) -> SparsityResult:
    share = tuple(tuple(float(_mass_share(ev.evidence[j], lv).mean()) for lv in levels) for j in ev.layers)
    return SparsityResult(layers=ev.layers, kinds=ev.kinds, levels=tuple(levels), share=share)


# -------------------------------------------------------------------------- stability
@dataclass(frozen=True)
class StabilityResult:
    """Cross-layer agreement of importance (means over samples): ``jaccard[i][k]`` of the
    top-``top_frac`` token sets of layers ``layers[i]`` and ``layers[k]``; ``spearman[i][k]``
    rank correlation of their evidence."""

    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    top_frac: float
    jaccard: tuple[tuple[float, ...], ...]
    spearman: tuple[tuple[float, ...], ...]

    @property
    def adjacent_jaccard(self) -> float:
        """Mean Jaccard of consecutive evidence layers: how much the top set changes per layer."""
        n = len(self.layers)
        return sum(self.jaccard[i][i + 1] for i in range(n - 1)) / max(1, n - 1)


def _topk_mask(ev: torch.Tensor, k: int) -> torch.Tensor:
    idx = torch.sort(ev, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(ev, dtype=torch.bool).scatter_(1, idx, True)


def _ranks(ev: torch.Tensor) -> torch.Tensor:
    return torch.argsort(torch.argsort(ev, dim=1, stable=True), dim=1).double()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ra, rb = _ranks(a), _ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    den = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    return (ra * rb).sum(dim=1) / den


def stability(ev: EvidenceSet, top_frac: float = 0.25) -> StabilityResult:
    k = max(1, round(top_frac * ev.num_visual))
    masks = {j: _topk_mask(ev.evidence[j], k) for j in ev.layers}
    jac, spe = [], []
    for a in ev.layers:
        jr, sr = [], []
        for b in ev.layers:
            inter = (masks[a] & masks[b]).sum(dim=1).double()
            union = (masks[a] | masks[b]).sum(dim=1).double()
            jr.append(float((inter / union).mean()))
            sr.append(1.0 if a == b else float(_spearman(ev.evidence[a], ev.evidence[b]).mean()))
        jac.append(tuple(jr))
        spe.append(tuple(sr))
    return StabilityResult(layers=ev.layers, kinds=ev.kinds, top_frac=top_frac, jaccard=tuple(jac),
                           spearman=tuple(spe))


# ---------------------------------------------------------------- evidence kinds, decay
@dataclass(frozen=True)
class EvidenceKindsResult:
    """Does each layer's evidence find the tokens that hold the answer?

    ``target_mass[i]``: mean share of layer ``layers[i]``'s evidence on the target tokens
    (``chance_mass`` = what a flat distribution puts there); ``target_recall[i]``: mean share
    of target tokens among the layer's top ``top_frac``. ``*_decay``: the same for Mamba
    layers scored *with* the decay (``None`` at attention layers). Jaccards: mean top-set
    agreement within attention layers, within Mamba layers, and across the two kinds.
    Target fields are empty when the data has no known evidence tokens.
    """

    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    top_frac: float
    chance_mass: float | None
    target_mass: tuple[float, ...]
    target_recall: tuple[float, ...]
    target_mass_decay: tuple[float | None, ...]
    target_recall_decay: tuple[float | None, ...]
    within_attention_jaccard: float | None
    within_mamba_jaccard: float | None
    cross_kind_jaccard: float | None


def _target_stats(ev: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[float, float]:
    t = targets.bool()
    mass = (ev.double() * t).sum(dim=1) / ev.double().sum(dim=1).clamp_min(1e-300)
    top = _topk_mask(ev, k)
    recall = (top & t).sum(dim=1).double() / t.sum(dim=1).clamp_min(1).double()
    keep = t.any(dim=1)
    return float(mass[keep].mean()), float(recall[keep].mean())


def evidence_kinds(ev: EvidenceSet, ev_decay: EvidenceSet | None = None, *, top_frac: float = 0.25,
                   stab: StabilityResult | None = None) -> EvidenceKindsResult:
    k = max(1, round(top_frac * ev.num_visual))
    mass, rec, mass_d, rec_d = [], [], [], []
    chance = None
    if ev.targets is not None:
        chance = float((ev.targets.sum(dim=1).double() / ev.num_visual).mean())
        for j, kind in zip(ev.layers, ev.kinds):
            m, r = _target_stats(ev.evidence[j], ev.targets, k)
            mass.append(m)
            rec.append(r)
            if kind in ("mamba", "linear") and ev_decay is not None and j in ev_decay.evidence:
                m, r = _target_stats(ev_decay.evidence[j], ev.targets, k)
                mass_d.append(m)
                rec_d.append(r)
            else:
                mass_d.append(None)
                rec_d.append(None)
    stab = stab or stability(ev, top_frac)

    def mean_pairs(pred):
        vals = [stab.jaccard[a][b] for a in range(len(ev.layers)) for b in range(len(ev.layers))
                if a < b and pred(ev.kinds[a], ev.kinds[b])]
        return sum(vals) / len(vals) if vals else None

    return EvidenceKindsResult(
        layers=ev.layers, kinds=ev.kinds, top_frac=top_frac, chance_mass=chance, target_mass=tuple(mass),
        target_recall=tuple(rec), target_mass_decay=tuple(mass_d), target_recall_decay=tuple(rec_d),
        within_attention_jaccard=mean_pairs(lambda a, b: a == b == "attention"),
        within_mamba_jaccard=mean_pairs(lambda a, b: a == b and a in ("mamba", "linear")),  # recurrent mixers
        cross_kind_jaccard=mean_pairs(lambda a, b: a != b),
    )


# ------------------------------------------------------------- Gated DeltaNet proxies
# (name, mamba_decay, delta_correction); the last is the exact form the others are compared with
DELTANET_VARIANTS = (("decay-free", False, False), ("decay", True, False), ("delta, decay-free", False, True),
                     ("exact", True, True))


@dataclass(frozen=True)
class DeltaNetProxiesResult:
    """Gated DeltaNet layers' evidence proxies against the exact form (gate decay and delta correction).

    Per variant (``variants[v]``) and DeltaNet layer (``layers[i]``), means over samples:
    ``spearman[v][i]`` rank correlation with the exact form's evidence, ``top_jaccard[v][i]`` agreement
    of the top-``top_frac`` token sets with the exact form's, and (when the data has known evidence
    tokens) ``target_mass[v][i]``, the share of the evidence on them. The last variant is the exact form.
    """

    layers: tuple[int, ...]
    variants: tuple[str, ...]
    top_frac: float
    spearman: tuple[tuple[float, ...], ...]
    top_jaccard: tuple[tuple[float, ...], ...]
    target_mass: tuple[tuple[float, ...], ...] | None


def deltanet_proxies(evaluator, *, n: int | None = 128, top_frac: float = 0.25,
                     evidence: dict | None = None) -> DeltaNetProxiesResult | None:
    """Compare the DeltaNet proxies with the exact form on the evaluator's data; None without ``L`` layers.

    ``evidence``: already collected :class:`EvidenceSet` per ``(mamba_decay, delta_correction)``.
    """
    if "L" not in evaluator.signature.layer_kinds:
        return None
    evidence = dict(evidence or {})
    sets = []
    for _, decay, corr in DELTANET_VARIANTS:
        if (decay, corr) not in evidence:
            evidence[(decay, corr)] = collect_evidence(evaluator, n=n, mamba_decay=decay, delta_correction=corr)
        sets.append(evidence[(decay, corr)])
    exact = sets[-1]
    layers = tuple(j for j, k in zip(exact.layers, exact.kinds) if k == "linear")
    k = max(1, round(top_frac * exact.num_visual))
    spe, jac, mass = [], [], []
    for es in sets:
        spe.append(tuple(float(_spearman(es.evidence[j], exact.evidence[j]).mean()) for j in layers))
        row = []
        for j in layers:
            a, b = _topk_mask(es.evidence[j], k), _topk_mask(exact.evidence[j], k)
            row.append(float(((a & b).sum(1).double() / (a | b).sum(1).double()).mean()))
        jac.append(tuple(row))
        if exact.targets is not None:
            mass.append(tuple(_target_stats(es.evidence[j], exact.targets, k)[0] for j in layers))
    return DeltaNetProxiesResult(layers=layers, variants=tuple(v[0] for v in DELTANET_VARIANTS), top_frac=top_frac,
                                 spearman=tuple(spe), top_jaccard=tuple(jac),
                                 target_mass=tuple(mass) if exact.targets is not None else None)


# ------------------------------------------------------------------ schedule sweep
@dataclass(frozen=True)
class SweepPoint:
    """One schedule's result. ``score`` etc. are None when the schedule could not run (``error``)."""

    shape: str
    selector: str
    variant: str
    mean_keep: float
    realised_keep: float
    keep: tuple[float, ...]
    score: float | None
    ci_low: float | None
    ci_high: float | None
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    per_family: dict = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ScheduleSweep:
    """Scores at equal mean keep for each (shape, selector, variant); ``baseline`` = identity."""

    metric: str
    baseline: float
    baseline_per_family: dict
    mean_keeps: tuple[float, ...]
    points: tuple[SweepPoint, ...]

    def get(self, shape: str, selector: str, mean_keep: float, variant: str = "default") -> SweepPoint | None:
        for p in self.points:
            if (p.shape, p.selector, p.variant) == (shape, selector, variant) and math.isclose(p.mean_keep, mean_keep):
                return p
        return None


# (shape, selector, variant, scorer overrides)
DEFAULT_SWEEP = (
    ("low_to_high", "language", "default", {}),
    ("uniform", "language", "default", {}),
    ("high_to_low", "language", "default", {}),
    ("fastv", "language", "default", {}),
    ("prefilter", "uniform_stride", "default", {}),
    ("low_to_high", "uniform_stride", "default", {"selector": "uniform_stride"}),
    ("uniform", "uniform_stride", "default", {"selector": "uniform_stride"}),
    ("low_to_high", "random", "default", {"selector": "random"}),
    ("uniform", "random", "default", {"selector": "random"}),
    ("low_to_high", "language", "mamba_decay", {"mamba_decay": True}),
    ("fastv", "language", "attention_only", {"w_mamba": 0.0}),
    ("fastv", "language", "mamba_only", {"w_attn": 0.0}),
)


def schedule_sweep(evaluator, mean_keeps: Sequence[float] = (0.5, 0.25, 0.125), *, sweep=DEFAULT_SWEEP,
                   base_scorer: ScorerConfig | None = None, log=None) -> ScheduleSweep:
    """Evaluate every sweep entry at every mean keep (paired: same samples for all)."""
    from .errors import AutopruneError

    base_scorer = base_scorer or ScorerConfig()
    V = evaluator.num_visual
    base = evaluator.baseline
    points = []
    for m in mean_keeps:
        for shape, selector, variant, over in sweep:
            sc = ScorerConfig(**{**base_scorer.to_dict(), **over})
            try:
                s = schedule_family(shape, m, evaluator.signature, V, scorer=sc)
            except AutopruneError as e:
                points.append(SweepPoint(shape, selector, variant, m, float("nan"), (), None, None, None, None,
                                         None, None, {}, error=str(e)))
                continue
            try:
                r = evaluator.evaluate(s)
            except AutopruneError as e:
                points.append(SweepPoint(shape, selector, variant, m, evaluator.mean_keep(s), s.keep, None, None,
                                         None, None, None, None, {}, error=str(e)))
                continue
            d, lo, hi = evaluator.paired_delta(s, evaluator.identity)
            points.append(SweepPoint(shape, selector, variant, m, r.extra.get("mean_keep", s.mean_keep), s.keep,
                                     r.score, r.ci_low, r.ci_high, d, lo, hi, dict(r.per_family)))
            if log:
                log(f"  keep {m:<6} {shape:<12} {selector:<15} {variant:<15} {r.metric} {r.score:.3f} "
                    f"(Δ {d:+.3f}) {r.extra.get('seconds', 0):.1f}s")
    return ScheduleSweep(metric=base.metric, baseline=base.score, baseline_per_family=dict(base.per_family),
                         mean_keeps=tuple(mean_keeps), points=tuple(points))


# ------------------------------------------------------------------------ rendering
def _figure(width_in: float, height_in: float, ncols: int = 1):
    """A pyplot-free figure (no global backend switch) and its axes."""
    from .report.style import new_figure

    fig = new_figure(width_in, height_in)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig, path) -> Path:
    """Lay out and write the PNG atomically (a crash never leaves half a figure)."""
    from ._io import write_bytes
    from .report.style import png_bytes

    fig.tight_layout()
    return write_bytes(path, png_bytes(fig))


def _layer_labels(layers, kinds):
    # AM: a layer with both mixers; L: Gated DeltaNet
    short = {"attention": "A", "mamba": "M", "attention+mamba": "AM", "linear": "L"}
    return [f"{j}{short.get(k, 'M')}" for j, k in zip(layers, kinds)]


def render_sparsity(res: SparsityResult, path) -> Path:
    fig, ax = _figure(6, 3.5)
    x = range(len(res.layers))
    for j, lv in enumerate(res.levels):
        ax.plot(x, [row[j] for row in res.share], marker="o", label=f"{int(lv * 100)}% of importance")
        ax.axhline(lv, ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xticks(list(x), _layer_labels(res.layers, res.kinds))
    ax.set_xlabel("mixer layer (A attention, M Mamba)")
    ax.set_ylabel("share of visual tokens")
    ax.set_title("Layerwise sparsity (dotted: flat importance)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def render_stability(res: StabilityResult, path) -> Path:
    fig, axes = _figure(10, 4.2, ncols=2)
    labels = _layer_labels(res.layers, res.kinds)
    for ax, mat, title in ((axes[0], res.jaccard, f"top-{int(res.top_frac * 100)}% Jaccard"),
                           (axes[1], res.spearman, "Spearman")):
        im = ax.imshow(mat, vmin=0 if title != "Spearman" else -1, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"Cross-layer importance: {title}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def render_evidence_kinds(res: EvidenceKindsResult, path) -> Path:
    fig, ax = _figure(6.5, 3.5)
    x = list(range(len(res.layers)))
    if res.target_mass:
        ax.bar([i - 0.2 for i in x], res.target_mass, width=0.4, label="decay-free Mamba / attention")
        dec = [v if v is not None else 0.0 for v in res.target_mass_decay]
        ax.bar([i + 0.2 for i in x], dec, width=0.4, label="Mamba with decay")
        ax.axhline(res.chance_mass, color="k", ls=":", lw=1, label="flat importance")
        ax.set_ylabel("importance on the answer's tokens")
    ax.set_xticks(x, _layer_labels(res.layers, res.kinds))
    ax.set_title("Does the evidence find the answer's tokens?")
    ax.legend(fontsize=8)
    return _save(fig, path)


def render_sweep(res: ScheduleSweep, path) -> Path:
    fig, ax = _figure(7, 4.2)
    series: dict[tuple, list] = {}
    for p in res.points:
        if p.score is not None:
            series.setdefault((p.shape, p.selector, p.variant), []).append((p.mean_keep, p.score))
    for (shape, sel, var), pts in sorted(series.items()):
        pts.sort()
        ls = "-" if sel == "language" else ("--" if sel == "uniform_stride" else ":")
        label = f"{shape} · {sel}" + ("" if var == "default" else f" · {var}")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o", label=label)
    ax.axhline(res.baseline, color="k", lw=1, label="unreduced")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("mean keep")
    ax.set_ylabel(res.metric)
    ax.set_title("Equal mean keep: schedule shape × selector")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


# ------------------------------------------------------------------------ one call
@dataclass(frozen=True)
class AnalysisReport:
    sparsity: SparsityResult
    stability: StabilityResult
    evidence_kinds: EvidenceKindsResult
    sweep: ScheduleSweep | None
    files: tuple[str, ...] = ()
    deltanet: DeltaNetProxiesResult | None = None

    def to_dict(self) -> dict:
        def clean(o):
            if isinstance(o, float) and not math.isfinite(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [clean(v) for v in o]
            return o

        d = {"sparsity": asdict(self.sparsity), "stability": asdict(self.stability),
             "evidence_kinds": asdict(self.evidence_kinds),
             "sweep": None if self.sweep is None else asdict(self.sweep), "files": list(self.files),
             "deltanet_proxies": None if self.deltanet is None else asdict(self.deltanet)}
        d["stability"]["adjacent_jaccard"] = self.stability.adjacent_jaccard
        return clean(d)


def run_analysis(evaluator, out_dir=None, *, evidence_samples: int = 128, mean_keeps=(0.5, 0.25, 0.125),
                 sweep: bool = True, log=None) -> AnalysisReport:
    """Sparsity, stability, evidence kinds (decay and decay-free), the Gated DeltaNet proxies against
    the exact form (models with ``L`` layers) and the schedule sweep; with ``out_dir``, also
    ``analysis.json`` and four PNG figures there."""
    ev = collect_evidence(evaluator, n=evidence_samples, mamba_decay=False)
    ev_d = collect_evidence(evaluator, n=evidence_samples, mamba_decay=True)
    dn = deltanet_proxies(evaluator, n=evidence_samples, evidence={(False, False): ev, (True, False): ev_d})
    sp = layer_sparsity(ev)
    st = stability(ev)
    ek = evidence_kinds(ev, ev_d, stab=st)
    sw = schedule_sweep(evaluator, mean_keeps, log=log) if sweep else None
    files: list[str] = []
    if out_dir is not None:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        files.append(str(render_sparsity(sp, d / "sparsity.png")))
        files.append(str(render_stability(st, d / "stability.png")))
        files.append(str(render_evidence_kinds(ek, d / "evidence_kinds.png")))
        if sw is not None:
            files.append(str(render_sweep(sw, d / "schedules.png")))
    report = AnalysisReport(sparsity=sp, stability=st, evidence_kinds=ek, sweep=sw, files=tuple(files), deltanet=dn)
    if out_dir is not None:
        (Path(out_dir) / "analysis.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
