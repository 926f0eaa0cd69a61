"""Make a study's report: compute, draw, write (atomically), drop stale figures.

- :func:`write_report` (study object → files in ``run_dir``);
- :func:`report_run_dir`, what ``autoprune report runs/<study>`` (and ``autoprune search``, after
  the study) does: open the storage (``--storage``, else the one ``search.json`` records, else
  ``runs/<study>/study.db``), find the study (``--study``, else ``search.json``, else the only
  study there), report.

A section that cannot be made (a bug, a numerical corner) costs that section only:
the report says so where the section would be, the problem is logged and listed in
:attr:`ReportResult.problems`, and the rest is written. Regenerating a report
rewrites every file whole (a reader never sees half a file) and removes figures of an
earlier run that this run did not draw (e.g. the importance plot once it has no data).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import ConfigError
from ..search.snapshot import study_snapshot
from ..search.storage import (
    StorageSpec,
    close_storage,
    open_storage,
    probe_storage,
    resolve_storage,
)
from . import document as doc
from . import style
from .context import StudyContext, load_context
from .tables import (
    DEFAULT_TOLERANCE,
    comparison_rows,
    comparison_rule,
    header_facts,
    reference_rows,
    validation_rows,
)

__all__ = ["ReportResult", "write_report", "report_run_dir", "FIGURE_DIR", "FIGURES"]

FIGURE_DIR = "figures"
FIGURES = ("pareto.png", "schedules.png", "history.png", "importance.png")


@dataclass
class ReportResult:
    run_dir: Path
    markdown_path: Path
    html_path: Path
    csv_path: Path
    figures: dict[str, Path] = field(default_factory=dict)  # file name -> path, the figures drawn
    removed: list[Path] = field(default_factory=list)  # stale figures removed
    data: dict[str, Any] = field(default_factory=dict)  # figure name -> its data object; "table" -> rows
    problems: list[str] = field(default_factory=list)  # sections that could not be made
    n_feasible: int = 0
    n_exported: int = 0


def _fmt(v, spec: str = ".3f", none: str = "—") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec)


def write_report(study, run_dir: str | Path, *, tolerance: float = DEFAULT_TOLERANCE,
                 importance: str = "ped-anova", log: Callable[[str], None] | None = print) -> ReportResult:
    """Write ``report.md``, ``report.html``, ``trials.csv`` and ``figures/*.png`` for ``study``.

    ``tolerance``: the relative latency window of the equal-latency comparison;
    ``importance``: ``ped-anova`` (default), ``fanova`` or ``mdi``. Raises ConfigError
    when the study was not made by ``autoprune search``; never for an empty, all-failed
    or infeasible study (the report says what there is).
    """
    log = log or (lambda _msg: None)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = load_context(study, run_dir)
    result = ReportResult(run_dir=run_dir, markdown_path=run_dir / "report.md", html_path=run_dir / "report.html",
                          csv_path=run_dir / "trials.csv", n_feasible=ctx.n_feasible, n_exported=len(ctx.exported))
    fig_dir = run_dir / FIGURE_DIR
    images: dict[str, doc.Image | doc.Callout] = {}

    def figure(name: str, compute: Callable[[], Any], draw: Callable[[Any], Any], alt: str,
               caption: str | Callable[[Any], str], skip: Callable[[Any], str | None] = lambda d: None) -> None:
        try:
            data = compute()
            result.data[name] = data
            why = skip(data)
            if why:
                images[name] = doc.Callout(why)
                return
            fig = draw(data)
            png = style.png_bytes(fig)
            path = _io.write_bytes(fig_dir / name, png)
            result.figures[name] = path
            images[name] = doc.Image(f"{FIGURE_DIR}/{name}", alt, png, caption(data) if callable(caption) else caption)
        except Exception as e:  # one section's failure must not cost the others
            msg = f"{name} could not be made: {type(e).__name__}: {e}"
            result.problems.append(msg)
            images[name] = doc.Callout(msg, "warning")
            log(f"report: warning: {msg}")

    from .history import draw_history, history_figure_data
    from .importance import draw_importance, importance_data
    from .pareto import draw_pareto, pareto_figure_data
    from .schedules import draw_schedules, schedule_figure_data

    figure("pareto.png", lambda: pareto_figure_data(ctx), draw_pareto, f"{ctx.metric} vs latency",
           _PARETO_CAPTION.format(Metric=ctx.metric.capitalize(), metric=ctx.metric))
    figure("schedules.png", lambda: schedule_figure_data(ctx), draw_schedules, "keep ratio per layer",
           "Keep ratio (fraction of the visual tokens that enter the layer) per decoder layer. The strip under the "
           "plot gives each layer's kind; a drop happens at the layer where the line steps down.")
    figure("history.png", lambda: history_figure_data(ctx), draw_history, "search progress",
           f"Left: {ctx.metric} of each evaluated trial by trial number and the best feasible {ctx.metric} so far; "
           "the strip under it gives every trial's status (feasible, evaluated over budget, rejected before "
           "evaluation, failed). Right: hypervolume of the feasible front after each trial "
           "(the area it dominates above score 0 and below the unreduced latency, as a fraction of 1 × that latency; "
           "it grows when a feasible trial scores higher at a latency already reached, or reaches a lower latency).")
    figure("importance.png", lambda: importance_data(ctx, study, evaluator=importance), draw_importance,
           "scorer-knob importance",
           lambda d: f"How much each searched scorer knob mattered for the {ctx.metric} of the {d.n_trials} "
                     f"completed trials (Optuna importance evaluator: {d.evaluator}; larger = more important; the "
                     "numbers sum to 1). Importance is not direction: it says a knob matters, not which value is better."
                     + (f" Note: {d.note}." if d.note else ""),
           skip=lambda d: None if d.available else f"No knob importance: {d.note}.")
    try:
        rows = comparison_rows(ctx, tolerance)
        result.data["table"] = rows
    except Exception as e:
        rows = None
        msg = f"the comparison table could not be made: {type(e).__name__}: {e}"
        result.problems.append(msg)
        log(f"report: warning: {msg}")

    blocks = _blocks(ctx, rows, images, tolerance, result.problems)
    title = f"autoprune report: {ctx.study_name}"
    removed = []
    for name in FIGURES:
        stale = fig_dir / name
        if name not in result.figures and stale.exists():
            stale.unlink()
            removed.append(stale)
    result.removed = removed
    _io.write_text(result.csv_path, ctx.frame.to_csv(index=False))
    _io.write_text(result.markdown_path, doc.to_markdown(blocks))
    _io.write_text(result.html_path, doc.to_html(blocks, title=title))
    log(f"report: {result.markdown_path} and {result.html_path} ({len(result.figures)} figures in {fig_dir})"
        + (f"; {len(result.problems)} problem(s)" if result.problems else ""))
    return result


_PARETO_CAPTION = (
    "{Metric} against latency (bottom axis, ms) and speedup over the unreduced model (top axis). (a) every trial; "
    "(b) a zoom on the exported schedules, labelled with their trial numbers. Blue: the exported Pareto schedules "
    "(feasible and not beaten on both {metric} and latency by another feasible trial), joined by the front's "
    "staircase; light blue: other feasible trials; red ×: evaluated but over the budget; red ticks on the bottom "
    "edge: candidates rejected over budget before evaluation (latency known, no score); orange: the reference "
    "schedules; dashed red line: the latency limit (shaded: over budget); dotted line: the unreduced {metric}.")


def _blocks(ctx: StudyContext, rows, images, tolerance: float, problems: list[str]) -> list:
    b: list = [doc.Heading(1, f"autoprune report: {ctx.study_name}"), doc.Facts(tuple(header_facts(ctx)))]
    c = ctx.counts
    if ctx.n_trials == 0:
        b.append(doc.Callout("**The study has no trials yet**: nothing to compare. Run `autoprune search` "
                             "(or `--resume`) first.", "warning"))
    elif not ctx.exported:
        b.append(doc.Callout(
            f"**No feasible trial**: none of the {ctx.n_trials} trials has an evaluated {ctx.metric} within the budget "
            f"{ctx.budget_text} (≤ {ctx.budget_ms:.2f} ms on {ctx.gpu_label}), so **no schedule was exported**. "
            f"({c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} rejected over budget, {c.get('FAIL', 0)} "
            "failed.) Loosen the budget, run more trials (`autoprune search --resume --trials N`), or look at the "
            "failure reasons below.", "warning"))
    else:
        best = max(ctx.rows(ctx.exported), key=lambda r: (r.score, -r.latency_ms))
        ref = best.reference if isinstance(best.reference, str) and best.reference else None
        b.append(doc.Para(
            f"**{len(ctx.exported)} schedule{'s' if len(ctx.exported) != 1 else ''} exported** (feasible Pareto "
            f"front, `pareto/`). Best {ctx.metric} within the budget: **#{int(best.number)}**"
            + (f" (the {style.reference_name(ref)} reference)" if ref else "")
            + f", {best.score:.4f} at {best.latency_ms:.2f} ms ({best.speedup:.2f}×)"
            + (f", {best.score - ctx.baseline_score:+.4f} vs unreduced." if ctx.baseline_score is not None else ".")
            + (" No searched schedule beats this reference at the budget." if ref else "")))
    over = [r for r in ctx.rows(ctx.exported) if getattr(r, "upper_over_budget", False)]
    if over:
        b.append(doc.Callout(
            "**Upper bound over budget**: the latency interval of "
            + ", ".join(f"#{int(r.number)} (up to {r.latency_high_ms:.2f} ms)" for r in over)
            + f" reaches past the budget ({ctx.budget_ms:.2f} ms): within it as predicted, not as its source's "
            "validation errors allow; measure them on the target (`--measure`) before relying on the budget.",
            "warning"))
    for note in ctx.notes:
        b.append(doc.Callout(note))
    if problems:
        b.append(doc.Callout("Parts of this report could not be made: " + "; ".join(problems), "warning"))

    b += [doc.Heading(2, f"Pareto front: {ctx.metric} vs latency"), images["pareto.png"]]

    b.append(doc.Heading(2, "Exported schedules vs references at equal latency"))
    b.append(doc.Para(comparison_rule(tolerance, ctx.metric)))
    if rows is None:
        b.append(doc.Callout("The table could not be made (see the warning above).", "warning"))
    elif not rows:
        b.append(doc.Para("No schedule was exported, so there is nothing to compare; the references are below."))
    else:
        b.append(_comparison_table(ctx, rows, tolerance))
    b += [doc.Heading(3, "References"), _reference_table(ctx)]
    if ctx.exported:
        b += _recommended(ctx)
    if ctx.validation is not None:
        b += [doc.Heading(2, "Search set vs validation"),
              doc.Para("Every validated trial on the search set (what the trials were ranked on) and on the "
                       "validation set (held out). A positive gap is the optimism of picking the best of many on "
                       "the same samples."), _validation_table(ctx)]

    b += [doc.Heading(2, "Keep-ratio schedules"), images["schedules.png"]]
    b += [doc.Heading(2, "Search progress"), images["history.png"]]
    b += [doc.Heading(2, "Scorer-knob importance"), images["importance.png"]]
    fails = [r for r in ctx.frame.itertuples(index=False) if r.state == "FAIL"] if ctx.n_trials else []
    if fails:
        b.append(doc.Heading(2, f"Failed trials ({len(fails)})"))
        items = [f"#{int(r.number)}: {r.fail_reason if isinstance(r.fail_reason, str) else 'no reason recorded'}"
                 for r in fails[:10]]
        if len(fails) > 10:
            items.append(f"… and {len(fails) - 10} more (see `trials.csv`, column fail_reason)")
        b.append(doc.Bullets(tuple(items)))
    b.append(doc.Heading(2, "Files"))
    files = ["`trials.csv`: one row per trial (state, reference, score, latency, speedup, feasibility, keep vector, "
             "scorer knobs, parameters, rejection and failure reasons)"]
    if ctx.exported:
        best = max(ctx.rows(ctx.exported), key=lambda r: (r.score, -r.latency_ms, -r.number))
        first = f"pareto/trial-{int(best.number):04d}.json"
        files += ["`pareto.json`: the index of the exported schedules",
                  f"`pareto/trial-XXXX.json`: one schedule per exported trial; apply one with "
                  f"`autoprune apply --schedule {first}`"]
    files.append(f"`{FIGURE_DIR}/*.png`: the figures above; `report.html`: this report as one file to share")
    b.append(doc.Bullets(tuple(files)))
    return b


def _schedule_name(r) -> str:
    return f"#{r.number}" + (f" ({style.reference_name(r.reference)})" if r.reference else "")


def _comparison_table(ctx: StudyContext, rows, tolerance: float) -> doc.Table:
    metric = ctx.metric
    energy = any(r.energy_j is not None for r in rows)
    cols = ["schedule", f"{metric} [95% CI]", "Δ vs unreduced", "latency (ms)", "speedup"]
    cols += ["energy (J)"] if energy else []
    cols += ["latency source", "GPU", f"best reference within ±{tolerance:.0%} latency",
             f"reference {metric} (latency, gap)", "gain vs reference"]
    out = []
    for r in rows:
        ci = f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if r.ci_low is not None and r.ci_high is not None else ""
        cells = [_schedule_name(r), f"{r.score:.3f}{ci}", _fmt(r.delta_vs_unreduced, "+.3f"),
                 f"{r.latency_ms:.2f}", f"{r.speedup:.2f}×"]
        cells += [_fmt(r.energy_j, ".2f")] if energy else []
        cells += [r.latency_source, r.gpu]
        if r.matches:
            m = r.matches[0]
            others = f" (best of {len(r.matches)})" if len(r.matches) > 1 else ""
            cells += [f"{style.reference_name(m.name)} #{m.number}{others}",
                      f"{m.score:.3f} ({m.latency_ms:.2f} ms, {m.latency_gap:+.1%})", f"{m.gain:+.3f}"]
        elif r.nearest is not None:
            m = r.nearest
            cells += [f"none within ±{tolerance:.0%}; nearest: {style.reference_name(m.name)} #{m.number}",
                      f"{m.score:.3f} ({m.latency_ms:.2f} ms, {m.latency_gap:+.1%})", "— (not at equal latency)"]
        else:
            cells += ["no evaluated reference", "—", "—"]
        out.append(tuple(cells))
    paired = any(r.paired is not None for r in rows)
    if paired:
        cols.append("paired Δ vs best reference at ≤ latency [95% CI]")
        out = [cells + ((f"{r.paired[2]:+.3f} [{r.paired[3]:+.3f}, {r.paired[4]:+.3f}] vs "
                         f"{style.reference_name(r.paired[0])} #{r.paired[1]}") if r.paired else "—",)
               for cells, r in zip(out, rows)]
    align = "lrrrr" + ("r" if energy else "") + "llllr" + ("l" if paired else "")
    return doc.Table(tuple(cols), tuple(out), align)


def _validation_table(ctx: StudyContext) -> doc.Table:
    rows = validation_rows(ctx)
    cols = ["trial", f"search-set {ctx.metric} [95% CI]", f"validation {ctx.metric} [95% CI]", "gap", "exported"]
    out = [(_schedule_name_of(r.number, r.reference), f"{r.search_score:.3f} [{r.search_ci[0]:.3f}, {r.search_ci[1]:.3f}]",
            f"{r.validation_score:.3f} [{r.validation_ci[0]:.3f}, {r.validation_ci[1]:.3f}]", f"{r.gap:+.3f}",
            "yes" if r.exported else "") for r in rows]
    return doc.Table(tuple(cols), tuple(out), "lrrrl")


def _schedule_name_of(number: int, reference: str | None) -> str:
    return f"#{number}" + (f" ({style.reference_name(reference)})" if reference else "")


def _recommended(ctx: StudyContext) -> list:
    """The best exported schedule: its keep ratios, the tokens each layer keeps, its scores per family and length."""
    best = max(ctx.rows(ctx.exported), key=lambda r: (r.score, -r.latency_ms, -r.number))
    n = int(best.number)
    keep = ctx.keeps.get(n)
    out: list = [doc.Heading(2, f"Recommended schedule: #{n}")]
    if keep is None:
        return out
    acc = ctx.settings.accounting
    from ..schedule import Schedule

    sched = acc.clamp(Schedule(keep=tuple(keep), min_tokens=ctx.settings.min_tokens))
    served = sched.tokens_per_layer(acc.served)
    evaluated = acc.for_evaluation(sched).tokens_per_layer(acc.evaluated[0])
    kinds = ctx.layer_kinds
    table = tuple((str(i), style.KIND_NAMES.get(kinds[i], kinds[i]) if i < len(kinds) else "?", f"{k:.4f}",
                   str(served[i]), str(evaluated[i])) for i, k in enumerate(keep))
    out.append(doc.Para(
        f"Apply it with `autoprune apply --schedule pareto/trial-{n:04d}.json`, or load "
        f"`pareto/trial-{n:04d}.json` with `autoprune.Schedule.load` (Python). Tokens per layer at the latency "
        f"layout's {acc.served} visual tokens and at the evaluated samples' {acc.evaluated[0]}:"))
    out.append(doc.Table(("layer", "kind", "keep", f"tokens of {acc.served}", f"tokens of {acc.evaluated[0]}"),
                         table, "llrrr"))
    res = (ctx.validation or {}).get("results", {}).get(str(n))
    if res:
        fam = ", ".join(f"{k} {v:.3f}" for k, v in sorted(res.get("per_family", {}).items()))
        length = ", ".join(f"{k} tokens {v:.3f}" for k, v in sorted(res.get("per_length", {}).items(),
                                                                   key=lambda kv: int(kv[0])))
        none_trials = ctx.frame.loc[ctx.frame["reference"] == "none", "number"]
        none = (ctx.validation or {}).get("results", {}).get(str(int(none_trials.iloc[0]))) if len(none_trials) else None
        out.append(doc.Bullets(tuple(x for x in (
            f"validation {ctx.metric} per family: {fam}" if fam else "",
            f"per length: {length}" if length else "",
            ("unreduced per family: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(none["per_family"].items())))
            if none and none.get("per_family") else "") if x)))
    return out


def _reference_table(ctx: StudyContext):
    refs = reference_rows(ctx)
    if not refs:
        return doc.Para("This study has no reference trials (`--no-references`).")
    metric = ctx.metric
    energy = any(r.energy_j is not None for r in refs)
    cols = ["reference", "trial", "state", metric, "Δ vs unreduced", "latency (ms)", "speedup"]
    cols += ["energy (J)"] if energy else []
    cols += ["within budget", "exported", "note"]
    out = []
    for r in refs:
        speedup = f"{r.speedup:.2f}×" if r.speedup is not None else "—"
        cells = [style.reference_name(r.name), f"#{r.number}", r.state, _fmt(r.score),
                 _fmt(r.delta_vs_unreduced, "+.3f"), _fmt(r.latency_ms, ".2f"), speedup]
        cells += [_fmt(r.energy_j, ".2f")] if energy else []
        cells += ["yes" if r.feasible else "no", "yes" if r.exported else "", r.note]
        out.append(tuple(cells))
    align = "lllrrrr" + ("r" if energy else "") + "lll"
    return doc.Table(tuple(cols), tuple(out), align)


# ------------------------------------------------------------ entry points
def report_run_dir(run_dir: str | Path, *, storage: str | StorageSpec | None = None, study: str | None = None,
                   tolerance: float = DEFAULT_TOLERANCE, importance: str = "ped-anova",
                   log: Callable[[str], None] = print) -> ReportResult:
    """Open the study of ``run_dir`` (or ``storage``) and write its report into ``run_dir``.

    Raises ConfigError when there is no storage, no such study, or several studies and
    no ``study`` to choose; StorageError when the storage cannot be opened.
    """
    import optuna

    run_dir = Path(run_dir)
    if storage is None and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run directory (made by autoprune search); give runs/<study> or "
                          "--storage URL")
    meta = _search_json(run_dir)
    if storage is None and isinstance(meta.get("storage"), str) and not meta["storage"].startswith("sqlite"):
        storage = meta["storage"]  # a journal or server storage recorded by the search
    spec = storage if isinstance(storage, StorageSpec) else resolve_storage(storage, run_dir)
    if spec.kind in ("sqlite", "journal") and not spec.path.exists():
        raise ConfigError(f"no study storage at {spec.display}: give the run directory autoprune search wrote, or "
                          "--storage URL / journal:PATH")
    probe_storage(spec)
    handle = open_storage(spec, heartbeat_s=None, snapshot=True)
    try:
        name = study or _study_name(run_dir, meta, handle, spec.display)
        try:
            s = optuna.load_study(study_name=name, storage=handle)
        except KeyError:
            names = sorted(x.study_name for x in optuna.get_all_study_summaries(handle, include_best_trial=False))
            raise ConfigError(f"storage {spec.display} has no study {name!r}; it has {names}") from None
        # a frozen copy: workers may still be adding trials while the report reads it several times
        return write_report(study_snapshot(s), run_dir, tolerance=tolerance, importance=importance, log=log)
    finally:
        close_storage(handle)


def _search_json(run_dir: Path) -> dict:
    meta = run_dir / "search.json"
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _study_name(run_dir: Path, meta: dict, storage, display: str) -> str:
    import optuna

    names = sorted(x.study_name for x in optuna.get_all_study_summaries(storage, include_best_trial=False))
    name = meta.get("study")
    if isinstance(name, str) and name in names:
        return name
    if run_dir.name in names:
        return run_dir.name
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(f"storage {display} holds no study")
    raise ConfigError(f"storage {display} holds several studies {names}: choose one with --study NAME")
