"""Headroom of a keep schedule: how much accuracy a better *selection* could recover at its keeps.

Where the data knows which visual tokens hold each question's answer (``PreparedSet.targets``;
the procedural demo videos do), every schedule is run three ways at the same keep ratios:

- ``schedule``: as it is;
- ``oracle``: the answer tokens kept first at every language-aware cut
  (``reduce(..., priority=targets)``), the schedule's own score filling the rest of each keep;
  an upper bound on what a selector can do with these keeps (a layer-0 prefilter, which is
  query-agnostic, is left as it is);
- ``floor``: a query-agnostic selector (``uniform_stride`` by default) at the same keeps.

Per layer, the *answer-token recall* is the share of a question's answer tokens among the visual
tokens entering that layer (averaged over questions). The *loss attribution* takes the questions
answered right unreduced and wrong under the schedule, and counts, per layer and per family, the
first layer where the recall falls below 1 (an answer token is gone) and below 0.5 ("never":
the answer tokens were all kept, so the loss is the context that went, not the evidence).

:func:`headroom` computes a :class:`HeadroomResult` (JSON ``autoprune.headroom/v1``);
:func:`render_headroom` draws it, :func:`headroom_table` prints it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError
from .schedule import SELECTORS, Schedule

__all__ = ["HEADROOM_FORMAT", "ARMS", "ArmResult", "LossAttribution", "ScheduleHeadroom", "HeadroomResult",
           "headroom", "answer_recall", "render_headroom", "headroom_table"]

HEADROOM_FORMAT = "autoprune.headroom/v1"
ARMS = ("schedule", "oracle", "floor")
NEVER = "never"


def _fraction(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise ConfigError(f"{where} must be a fraction in [0, 1] or null, got {v!r}")
    return float(v)


def _counts(d: Any, where: str) -> dict[str, int]:
    if not isinstance(d, Mapping) or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in d.values()):
        raise ConfigError(f"{where} must map names to counts >= 0, got {d!r}")
    return {str(k): int(c) for k, c in d.items()}


@dataclass(frozen=True)
class ArmResult:
    """One way of selecting at the schedule's keeps (``arm`` in :data:`ARMS`).

    ``recall[i]``: mean answer-token recall of the tokens entering layer ``i``; ``per_family`` and
    ``recall_per_family`` the same per question family (None where a family has no answer tokens).
    """

    arm: str
    accuracy: float
    per_family: Mapping[str, float]
    recall: tuple[float | None, ...]
    recall_per_family: Mapping[str, tuple[float | None, ...]]

    def __post_init__(self):
        if self.arm not in ARMS:
            raise ConfigError(f"arm must be one of {ARMS}, got {self.arm!r}")
        object.__setattr__(self, "accuracy", _fraction(self.accuracy, f"{self.arm}.accuracy"))
        object.__setattr__(self, "per_family", {str(f): _fraction(v, f"{self.arm}.per_family[{f}]")
                                                for f, v in dict(self.per_family).items()})
        rec = tuple(_fraction(v, f"{self.arm}.recall[{i}]") for i, v in enumerate(self.recall))
        object.__setattr__(self, "recall", rec)
        per = {}
        for f, row in dict(self.recall_per_family).items():
            row = tuple(_fraction(v, f"{self.arm}.recall_per_family[{f}]") for v in row)
            if len(row) != len(rec):
                raise ConfigError(f"{self.arm}.recall_per_family[{f}] has {len(row)} layers, recall {len(rec)}")
            per[str(f)] = row
        object.__setattr__(self, "recall_per_family", per)

    def to_dict(self) -> dict:
        return {"arm": self.arm, "accuracy": self.accuracy, "per_family": dict(self.per_family),
                "recall": list(self.recall), "recall_per_family": {f: list(r) for f, r in self.recall_per_family.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> ArmResult:
        _keys(d, {"arm", "accuracy", "per_family", "recall", "recall_per_family"}, "arm")
        return cls(arm=d["arm"], accuracy=d["accuracy"], per_family=d["per_family"], recall=tuple(d["recall"]),
                   recall_per_family={f: tuple(r) for f, r in d["recall_per_family"].items()})


@dataclass(frozen=True)
class LossAttribution:
    """Questions right unreduced and wrong under the schedule (``lost``), by the first layer whose
    answer-token recall is below 1 (``below_one``) and below 0.5 (``below_half``); keys are layer
    indices as strings, or ``"never"``. ``*_per_family``: the same counts per question family."""

    lost: int
    lost_per_family: Mapping[str, int]
    below_one: Mapping[str, int]
    below_half: Mapping[str, int]
    below_one_per_family: Mapping[str, Mapping[str, int]]
    below_half_per_family: Mapping[str, Mapping[str, int]]

    def __post_init__(self):
        if isinstance(self.lost, bool) or not isinstance(self.lost, int) or self.lost < 0:
            raise ConfigError(f"attribution.lost must be a count >= 0, got {self.lost!r}")
        object.__setattr__(self, "lost_per_family", _counts(self.lost_per_family, "attribution.lost_per_family"))
        for name in ("below_one", "below_half"):
            c = _counts(getattr(self, name), f"attribution.{name}")
            if sum(c.values()) != self.lost:
                raise ConfigError(f"attribution.{name} counts {sum(c.values())} questions, lost is {self.lost}")
            object.__setattr__(self, name, c)
            per = getattr(self, f"{name}_per_family")
            object.__setattr__(self, f"{name}_per_family",
                               {str(f): _counts(v, f"attribution.{name}_per_family[{f}]") for f, v in dict(per).items()})

    def to_dict(self) -> dict:
        return {"lost": self.lost, "lost_per_family": dict(self.lost_per_family), "below_one": dict(self.below_one),
                "below_half": dict(self.below_half),
                "below_one_per_family": {f: dict(v) for f, v in self.below_one_per_family.items()},
                "below_half_per_family": {f: dict(v) for f, v in self.below_half_per_family.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> LossAttribution:
        names = {"lost", "lost_per_family", "below_one", "below_half", "below_one_per_family", "below_half_per_family"}
        _keys(d, names, "attribution")
        return cls(**{k: d[k] for k in names})


@dataclass(frozen=True)
class ScheduleHeadroom:
    """One schedule (``label``): its three arms (in :data:`ARMS` order) and where its loss goes."""

    label: str
    schedule: Schedule
    arms: tuple[ArmResult, ...]
    attribution: LossAttribution

    def __post_init__(self):
        if not isinstance(self.schedule, Schedule):
            raise ConfigError(f"schedule {self.label!r}: must be a Schedule, got {type(self.schedule).__name__}")
        arms = tuple(self.arms)
        if tuple(a.arm for a in arms) != ARMS:
            raise ConfigError(f"schedule {self.label!r}: arms must be {ARMS}, got {tuple(a.arm for a in arms)}")
        if any(len(a.recall) != self.schedule.num_layers for a in arms):
            raise ConfigError(f"schedule {self.label!r}: recall needs one entry per layer ({self.schedule.num_layers})")
        object.__setattr__(self, "arms", arms)

    def arm(self, name: str) -> ArmResult:
        return self.arms[ARMS.index(name)]

    def to_dict(self) -> dict:
        return {"label": self.label, "schedule": self.schedule.to_dict(), "arms": [a.to_dict() for a in self.arms],
                "attribution": self.attribution.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> ScheduleHeadroom:
        _keys(d, {"label", "schedule", "arms", "attribution"}, "schedules[]")
        return cls(label=d["label"], schedule=Schedule.from_dict(d["schedule"]),
                   arms=tuple(ArmResult.from_dict(a) for a in d["arms"]),
                   attribution=LossAttribution.from_dict(d["attribution"]))


@dataclass(frozen=True)
class HeadroomResult:
    """The headroom of ``schedules`` on ``n`` questions (JSON :data:`HEADROOM_FORMAT`)."""

    n: int
    layer_kinds: str
    families: tuple[str, ...]
    family_counts: Mapping[str, int]
    unreduced: float
    unreduced_per_family: Mapping[str, float]
    schedules: tuple[ScheduleHeadroom, ...]
    floor_selector: str = "uniform_stride"
    data: Mapping[str, Any] | None = field(default=None)

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"n must be a count >= 1, got {self.n!r}")
        if self.floor_selector not in SELECTORS or self.floor_selector == "language":
            raise ConfigError(f"floor_selector must be a query-agnostic selector, got {self.floor_selector!r}")
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "family_counts", _counts(self.family_counts, "family_counts"))
        if sum(self.family_counts.values()) != self.n:
            raise ConfigError(f"family_counts sum to {sum(self.family_counts.values())}, n is {self.n}")
        object.__setattr__(self, "unreduced", _fraction(self.unreduced, "unreduced"))
        object.__setattr__(self, "unreduced_per_family", {str(f): _fraction(v, f"unreduced_per_family[{f}]")
                                                          for f, v in dict(self.unreduced_per_family).items()})
        object.__setattr__(self, "schedules", tuple(self.schedules))
        if not self.schedules:
            raise ConfigError("a headroom result needs at least one schedule")
        if any(len(s.schedule.keep) != len(self.layer_kinds) for s in self.schedules):
            raise ConfigError(f"every schedule needs one keep per layer of {self.layer_kinds!r}")

    def schedule(self, label: str) -> ScheduleHeadroom:
        for s in self.schedules:
            if s.label == label:
                return s
        raise KeyError(label)

    def to_dict(self) -> dict:
        return {"format": HEADROOM_FORMAT, "n": self.n, "layer_kinds": self.layer_kinds,
                "families": list(self.families), "family_counts": dict(self.family_counts),
                "unreduced": self.unreduced, "unreduced_per_family": dict(self.unreduced_per_family),
                "floor_selector": self.floor_selector, "data": None if self.data is None else dict(self.data),
                "schedules": [s.to_dict() for s in self.schedules]}

    @classmethod
    def from_dict(cls, d: Mapping) -> HeadroomResult:
        if not isinstance(d, Mapping):
            raise ConfigError(f"a headroom result must be a JSON object, got {type(d).__name__}")
        if d.get("format") != HEADROOM_FORMAT:
            raise ConfigError(f"format must be {HEADROOM_FORMAT!r}, got {d.get('format')!r}")
        names = {"format", "n", "layer_kinds", "families", "family_counts", "unreduced", "unreduced_per_family",
                 "floor_selector", "data", "schedules"}
        _keys(d, names, "headroom", required=names - {"data", "floor_selector"})
        return cls(n=d["n"], layer_kinds=d["layer_kinds"], families=tuple(d["families"]),
                   family_counts=d["family_counts"], unreduced=d["unreduced"],
                   unreduced_per_family=d["unreduced_per_family"],
                   schedules=tuple(ScheduleHeadroom.from_dict(s) for s in d["schedules"]),
                   floor_selector=d.get("floor_selector", "uniform_stride"), data=d.get("data"))

    def save(self, path) -> Path:
        from ._io import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> HeadroomResult:
        from ._io import read_json

        return cls.from_dict(read_json(path))


def _keys(d: Any, allowed: set[str], where: str, *, required: set[str] | None = None) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    missing = sorted((allowed if required is None else required) - set(d))
    if unknown or missing:
        raise ConfigError(f"{where}: unknown keys {unknown}, missing keys {missing}")


# ----------------------------------------------------------------------------- computing
def answer_recall(selections: Mapping[int, torch.Tensor], visual_mask: torch.Tensor, targets: torch.Tensor,
                  num_layers: int) -> torch.Tensor:
    """``(b, num_layers)`` float64: share of each row's ``targets (b, L)`` among the visual tokens
    entering each layer; ``selections`` (a handle's ``last.selections``): original positions kept at
    each prune layer. NaN in rows without targets."""
    kept = visual_mask.clone()
    total = targets.sum(dim=1).double()
    out = torch.empty(targets.shape[0], num_layers, dtype=torch.float64)
    for i in range(num_layers):
        if i in selections:
            kept = torch.zeros_like(visual_mask).scatter_(1, selections[i].cpu(), True)
        hit = (kept & targets).sum(dim=1).double()
        out[:, i] = torch.where(total > 0, hit / total.clamp_min(1), torch.full_like(hit, math.nan))
    return out


def _arm_pass(evaluator, schedule: Schedule, *, oracle: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per question in set order: ``correct (N,)`` bool and answer-token recall ``(N, layers)``."""
    from .runtime import reduce
    from .tasks.evaluate import kernels_flag

    data = evaluator.data
    n_layers = schedule.num_layers
    correct = torch.zeros(len(data), dtype=torch.bool)
    recall = torch.full((len(data), n_layers), math.nan, dtype=torch.float64)
    answers = data.answers.cpu()
    noop = schedule.is_identity and schedule.prefilter is None
    bs = evaluator.batch_size
    with torch.inference_mode():
        for g in data.groups:
            nv = g.num_visual
            for s in range(0, len(g), bs):
                e = min(len(g), s + bs)
                x = g.inputs_embeds[s:e]
                vm = g.batch_mask(s, e - s).cpu()
                idx = g.index[s:e].cpu()
                targets = torch.zeros_like(vm)
                # each row holds nv visual tokens; the set's targets list them in order
                targets[vm] = data.targets[idx, :nv].bool().reshape(-1)
                selections: Mapping[int, torch.Tensor] = {}
                if noop:
                    logits = evaluator.qa.last_logits(x)
                else:
                    with reduce(evaluator.qa.module, schedule, visual_mask=vm, use_kernels=kernels_flag(),
                                priority=targets if oracle else None) as h:
                        logits = evaluator.qa.last_logits(x)
                    selections = h.last.selections
                logits = torch.gather(logits.float(), 1, g.choice_ids[s:e])
                logits = logits.masked_fill(~g.choice_mask[s:e], float("-inf"))
                correct[idx] = logits.argmax(dim=1).cpu() == answers[idx]
                recall[idx] = answer_recall(selections, vm, targets, n_layers)
    return correct, recall


def _mean(v: torch.Tensor) -> float | None:
    v = v[~torch.isnan(v)] if v.dtype.is_floating_point else v
    return None if v.numel() == 0 else float(v.double().mean())


def _arm(name: str, correct: torch.Tensor, recall: torch.Tensor, fam_masks: dict[str, torch.Tensor]) -> ArmResult:
    layers = recall.shape[1]
    return ArmResult(
        arm=name, accuracy=_mean(correct.double()), per_family={f: _mean(correct[m].double()) for f, m in fam_masks.items()},
        recall=tuple(_mean(recall[:, i]) for i in range(layers)),
        recall_per_family={f: tuple(_mean(recall[m, i]) for i in range(layers)) for f, m in fam_masks.items()},
    )


def _first_below(recall: torch.Tensor, level: float) -> list[str]:
    out = []
    for row in recall:
        below = (row < level).nonzero().flatten().tolist()  # NaN rows compare False: "never"
        out.append(str(below[0]) if below else NEVER)
    return out


def _tally(keys: Sequence[str], layers: int) -> dict[str, int]:
    order = [str(i) for i in range(layers)] + [NEVER]
    got = {k: 0 for k in order}
    for k in keys:
        got[k] += 1
    return {k: c for k, c in got.items() if c}


def _attribution(base: torch.Tensor, correct: torch.Tensor, recall: torch.Tensor, families: Sequence[str],
                 fam_masks: dict[str, torch.Tensor]) -> LossAttribution:
    lost = base & ~correct
    layers = recall.shape[1]
    one, half = _first_below(recall[lost], 1.0), _first_below(recall[lost], 0.5)
    fams = [families[i] for i in lost.nonzero().flatten().tolist()]

    def per(keys):
        return {f: _tally([k for k, kf in zip(keys, fams) if kf == f], layers) for f in fam_masks}

    return LossAttribution(lost=int(lost.sum()), lost_per_family={f: int((lost & m).sum()) for f, m in fam_masks.items()},
                           below_one=_tally(one, layers), below_half=_tally(half, layers),
                           below_one_per_family=per(one), below_half_per_family=per(half))


def headroom(evaluator, schedules: Sequence[Schedule], *, labels: Sequence[str] | None = None,
             floor_selector: str = "uniform_stride", data_info: Mapping[str, Any] | None = None,
             log=None) -> HeadroomResult:
    """The headroom of each of ``schedules`` on ``evaluator``'s data (see the module docstring).

    ``evaluator``: an accuracy evaluator whose ``data.targets`` marks the answer tokens (its
    ``qa``, ``data``, ``batch_size``, ``signature``). Raises :class:`ConfigError` when the data
    has no answers or no answer tokens, or a schedule does not fit the model.
    """
    data = evaluator.data
    if data.targets is None:
        raise ConfigError("headroom needs the answer tokens of every question (data.targets); this data does not "
                          "mark them (the procedural demo videos do)")
    if not data.labelled:
        raise ConfigError("headroom needs labelled questions (an answer for every record)")
    if floor_selector not in SELECTORS or floor_selector == "language":
        raise ConfigError(f"floor_selector must be a query-agnostic selector, got {floor_selector!r}")
    schedules = list(schedules)
    if not schedules:
        raise ConfigError("headroom needs at least one schedule")
    labels = list(labels) if labels is not None else [f"schedule-{i}" for i in range(len(schedules))]
    if len(labels) != len(schedules) or len(set(labels)) != len(labels):
        raise ConfigError(f"labels must name each schedule once, got {labels}")
    schedules = [s if s.model is not None else s.replace(model=evaluator.signature) for s in schedules]
    for label, s in zip(labels, schedules):
        s.check_model(evaluator.signature)
        if s.scorer.selector != "language":
            raise ConfigError(f"schedule {label!r}: the oracle ranks the answer tokens first at language-aware cuts; "
                              f"its selector is {s.scorer.selector!r}")
    say = log or (lambda *_: None)
    families = tuple(data.families)
    fam_names = tuple(sorted(set(families)))
    fam_masks = {f: torch.tensor([x == f for x in families]) for f in fam_names}
    identity = Schedule.identity(len(evaluator.signature.layer_kinds))
    base, _ = _arm_pass(evaluator, identity, oracle=False)
    say(f"unreduced: {float(base.double().mean()):.3f}")
    out = []
    for label, s in zip(labels, schedules):
        floor = s.replace(scorer=dataclasses.replace(s.scorer, selector=floor_selector))
        runs = {"schedule": _arm_pass(evaluator, s, oracle=False), "oracle": _arm_pass(evaluator, s, oracle=True),
                "floor": _arm_pass(evaluator, floor, oracle=False)}
        arms = tuple(_arm(a, *runs[a], fam_masks) for a in ARMS)
        out.append(ScheduleHeadroom(label=label, schedule=s, arms=arms,
                                    attribution=_attribution(base, *runs["schedule"], families, fam_masks)))
        say(f"{label}: " + ", ".join(f"{a.arm} {a.accuracy:.3f}" for a in arms))
    return HeadroomResult(n=len(data), layer_kinds=evaluator.signature.layer_kinds, families=fam_names,
                          family_counts={f: int(m.sum()) for f, m in fam_masks.items()},
                          unreduced=_mean(base.double()),
                          unreduced_per_family={f: _mean(base[m].double()) for f, m in fam_masks.items()},
                          schedules=tuple(out), floor_selector=floor_selector,
                          data=None if data_info is None else dict(data_info))


# ----------------------------------------------------------------------------- showing
def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def headroom_table(result: HeadroomResult) -> str:
    """A Markdown table: accuracy of unreduced, and per schedule its oracle, itself and its floor,
    overall and per family; then where each schedule's lost questions first lose an answer token."""
    fams = list(result.families)
    head = "| | all | " + " | ".join(fams) + " |\n|---|---:|" + "---:|" * len(fams) + "\n"
    rows = [f"| unreduced | {_fmt(result.unreduced)} | "
            + " | ".join(_fmt(result.unreduced_per_family.get(f)) for f in fams) + " |"]
    for s in result.schedules:
        for a in ("oracle", "schedule", "floor"):
            arm = s.arm(a)
            name = {"oracle": f"{s.label}: oracle", "schedule": f"{s.label}",
                    "floor": f"{s.label}: floor ({result.floor_selector})"}[a]
            rows.append(f"| {name} | {_fmt(arm.accuracy)} | "
                        + " | ".join(_fmt(arm.per_family.get(f)) for f in fams) + " |")
    lines = [head + "\n".join(rows)]
    for s in result.schedules:
        at = s.attribution
        if at.lost == 0:
            continue

        def where(c: Mapping[str, int]) -> str:
            return ", ".join(f"{'layer ' + k if k != NEVER else 'never'}: {v}" for k, v in c.items())

        lines.append(f"\n{s.label}: {at.lost} questions right unreduced and wrong under it "
                     f"({', '.join(f'{f} {at.lost_per_family.get(f, 0)}' for f in fams)}); first layer with "
                     f"answer-token recall < 1: {where(at.below_one)}; < 0.5: {where(at.below_half)}")
    return "\n".join(lines)


def render_headroom(result: HeadroomResult, path) -> Path:
    """Per schedule, a row of two panels: accuracy per family (unreduced, oracle, schedule, floor)
    and the mean answer-token recall of the tokens entering each layer (oracle, schedule, floor)."""
    from ._io import write_bytes
    from .report.style import new_figure, png_bytes

    rows = len(result.schedules)
    fig = new_figure(11, 3.6 * rows)
    axes = fig.subplots(rows, 2, squeeze=False)
    groups = ["all"] + list(result.families)
    colours = {"unreduced": "0.3", "oracle": "tab:green", "schedule": "tab:blue", "floor": "tab:red"}
    for r, s in enumerate(result.schedules):
        ax = axes[r][0]
        series = [("unreduced", [result.unreduced] + [result.unreduced_per_family.get(f) for f in result.families])]
        for a in ("oracle", "schedule", "floor"):
            arm = s.arm(a)
            series.append((a, [arm.accuracy] + [arm.per_family.get(f) for f in result.families]))
        w = 0.8 / len(series)
        for j, (name, vals) in enumerate(series):
            xs = [g + (j - (len(series) - 1) / 2) * w for g in range(len(groups))]
            ax.bar(xs, [0.0 if v is None else v for v in vals], width=w, color=colours[name],
                   label=name if name != "floor" else f"floor ({result.floor_selector})")
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 1.25)  # room for the legend above the bars
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_ylabel("accuracy")
        ax.set_title(f"{s.label}: accuracy at the same keeps (mean keep {s.schedule.mean_keep:.3f})", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=4)
        ax = axes[r][1]
        x = list(range(len(result.layer_kinds)))
        for a, ls in (("oracle", "--"), ("schedule", "-"), ("floor", ":")):
            rec = s.arm(a).recall
            ax.plot(x, [math.nan if v is None else v for v in rec], ls, marker="o", color=colours[a], label=a)
        ax2 = ax.twinx()
        ax2.bar(x, s.schedule.keep, color="0.85", width=0.6, zorder=0)
        ax2.set_ylabel("keep", color="0.5")
        ax2.set_ylim(0, 1.25)
        ax2.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_xticks(x, [f"{i}{k}" for i, k in enumerate(result.layer_kinds)], fontsize=7)
        ax.set_ylim(0, 1.25)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_xlabel("layer (M Mamba, * attention, - MLP); grey: keep")
        ax.set_ylabel("answer-token recall")
        ax.set_title(f"{s.label}: answer tokens entering each layer", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.tight_layout()
    return write_bytes(path, png_bytes(fig))
