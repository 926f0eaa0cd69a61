"""Which scorer knobs mattered for the score: Optuna's parameter-importance evaluators.

Target: the score (accuracy or fidelity) of the completed trials; parameters: the
scorer knobs the search space searched (``state_momentum``, ``w_attn``, ``w_mamba``,
``mamba_decay``, ``head_agg``, ``evidence_window``, … — fixed knobs are left out).
The default evaluator is Optuna's default, PED-ANOVA (no extra packages), with its
top quantile widened so that it holds at least 5 trials (Optuna's documentation asks
for that much); ``fanova`` and ``mdi`` need scikit-learn. When the importances cannot
be computed — too few completed trials, no searched knob, a missing package, an
evaluator error — :func:`importance_data` returns a note saying why, never raises.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

from ..search.knobs import Fixed
from ..search.space import SearchSpace
from . import style
from .context import StudyContext

__all__ = ["ImportanceData", "importance_data", "draw_importance", "searched_knobs", "MIN_TRIALS", "EVALUATORS"]

MIN_TRIALS = 10
EVALUATORS = ("ped-anova", "fanova", "mdi")
FIGSIZE = (8.0, 3.8)


class ImportanceData(NamedTuple):
    title: str
    evaluator: str  # the evaluator that produced the numbers ("" when none did)
    target: str
    params: tuple[str, ...]  # most important first
    values: tuple[float, ...]  # normalised to sum 1
    n_trials: int
    note: str | None  # why there are no numbers, or a caveat about them

    @property
    def available(self) -> bool:
        return bool(self.params)


def searched_knobs(space: SearchSpace) -> tuple[str, ...]:
    """Scorer knobs that the study's space searched (a range or choices, not a fixed value)."""
    return tuple(name for name, knob in space.scorer if not isinstance(knob, Fixed))


def importance_data(ctx: StudyContext, study, *, evaluator: str = "ped-anova") -> ImportanceData:
    """Scorer-knob importances for ``study`` (see the module docstring)."""
    from optuna.trial import TrialState

    metric = ctx.metric
    target_text = f"{metric} of completed trials"
    title = f"{ctx.study_name}: which scorer knobs mattered for {metric}"
    knobs = searched_knobs(ctx.settings.space)

    def empty(note: str, n: int = 0, name: str = "") -> ImportanceData:
        return ImportanceData(title, name, target_text, (), (), n, note)

    if evaluator not in EVALUATORS:
        return empty(f"unknown importance evaluator {evaluator!r}; known: {list(EVALUATORS)}")
    if not knobs:
        return empty(f"the search space ({ctx.settings.space.name}) fixes every scorer knob: "
                     "there is no knob importance to show")
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values is not None and all(k in t.params for k in knobs)]
    n = len(complete)
    if n < MIN_TRIALS:
        return empty(f"too few completed trials with the scorer knobs as parameters ({n} < {MIN_TRIALS}) "
                     "for a parameter importance", n)
    present = tuple(k for k in knobs if len({repr(t.params[k]) for t in complete}) > 1)
    if not present:
        return empty("every completed trial used the same scorer knobs: nothing to rank", n)
    note = None
    name, ev, target = _evaluator(evaluator, n)
    if ev is None:
        note = f"{evaluator} needs scikit-learn (pip install scikit-learn); PED-ANOVA was used instead"
        name, ev, target = _evaluator("ped-anova", n)
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=ev, params=list(present), target=target)
    except ImportError as e:
        return empty(f"{name} could not run: {e} (pip install scikit-learn)", n)
    except Exception as e:  # an evaluator's numerical trouble must not cost the report
        return empty(f"{name} could not compute importances: {type(e).__name__}: {e}", n)
    items = sorted(((k, float(v)) for k, v in imp.items() if math.isfinite(v)), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return empty(f"{name} gave no finite importance", n)
    fixed = [k for k in knobs if k not in present]
    if fixed:
        note = (note + "; " if note else "") + f"not ranked (one value in every trial): {', '.join(fixed)}"
    return ImportanceData(title, name, target_text, tuple(k for k, _ in items), tuple(v for _, v in items), n, note)


def _evaluator(name: str, n: int):
    """(display name, evaluator or None when its package is missing, target function)."""
    import importlib.util

    import optuna

    if name == "ped-anova":
        quantile = min(0.5, max(0.1, 5.0 / n))
        ev = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
        # PED-ANOVA assumes lower is better: the score is maximised.
        return f"PED-ANOVA, top {quantile:.0%} of trials against all", ev, (lambda t: -t.values[0])
    if importlib.util.find_spec("sklearn") is None:
        return name, None, None
    if name == "fanova":
        return "fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0), (lambda t: t.values[0])
    return "mean decrease impurity", optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0), (
        lambda t: t.values[0])


def draw_importance(data: ImportanceData):
    """A horizontal bar chart, most important knob on top (call only when ``data.available``)."""
    with style.rc():
        fig = style.new_figure(*FIGSIZE)
        ax = fig.add_axes((0.22, 0.2, 0.72, 0.66))
        names = list(reversed(data.params))
        vals = list(reversed(data.values))
        bars = ax.barh(names, vals, color=style.BLUE, height=0.6, label="importance")
        for b, v in zip(bars, vals):
            ax.text(b.get_width() + 0.01, b.get_y() + b.get_height() / 2, f"{v:.2f}", va="center",
                    fontsize=style.SMALL)
        ax.set_xlim(0, max(vals + [0.1]) * 1.18)
        ax.set_xlabel(f"importance for {data.target} (normalised, sums to 1)")
        ax.set_title(data.title, loc="left", fontsize=style.TITLE)
        ax.grid(axis="y", visible=False)
        fig.text(0.99, 0.01, f"{data.evaluator}; {data.n_trials} completed trials", ha="right", va="bottom",
                 fontsize=style.SMALL, color=style.GREY)
    return fig
