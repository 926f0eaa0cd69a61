"""Evaluators: the quality of one schedule on one prepared evaluation set.

Both implement :class:`autoprune.interfaces.Evaluator` (``signature``, ``num_visual``,
``metric``, ``evaluate(schedule) -> TaskResult``):

- :class:`AccuracyEvaluator` — labelled multiple choice: the predicted choice is the
  choice token with the highest logit at the last prompt position;
- :class:`FidelityEvaluator` — no labels: top-1 agreement (``score``) and KL divergence
  ``KL(p_unreduced ‖ p_reduced)`` (``extra["kl"]``) of the answer distribution (over
  the choice tokens when the prompt has choices, else over the whole vocabulary).

Evaluation is **paired**: every schedule runs on the same samples, and the bootstrap
resamples (seeded once per evaluator) are the same for every schedule, so differences
between schedules get their own paired interval (``extra["delta_ci_*"]``). The data is
embedded once (:class:`~autoprune.tasks.prepared.PreparedSet`); per schedule only the
backbone runs, through one function (``forward``, default :func:`reduced_logits`) that
a faster implementation can replace. With ``prefix_cache`` (a
:class:`~autoprune.tasks.prefix_cache.PrefixCache`, or ``True`` for one of the default
size) each batch's unreduced prefix is computed once and every schedule resumes at the
first layer it must run — exact, see that module. The identity schedule's result is cached
as the baseline; other results are cached by schedule.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..interfaces import TaskResult
from ..schedule import Schedule
from .prefix_cache import PrefixCache
from .prepared import PreparedSet, QAModel

__all__ = ["AccuracyEvaluator", "FidelityEvaluator", "RacedOut", "reduced_logits", "bootstrap_ci", "kernels_flag",
           "ForwardFn"]

# forward(qa, inputs_embeds (b, L, H), visual_mask (b, L), schedule) -> logits (b, vocab)
ForwardFn = Callable[[QAModel, torch.Tensor, torch.Tensor, Schedule], torch.Tensor]


def kernels_flag() -> bool | None:
    """``use_kernels`` for :func:`autoprune.reduce`: automatic where the evidence kernels exist."""
    try:
        from .. import kernels
    except ImportError:
        return False
    ok = hasattr(kernels, "attention_evidence") and hasattr(kernels, "mamba2_evidence")
    return None if ok else False


@dataclass(frozen=True)
class RacedOut:
    """A race stopped early: ``n`` samples seen in ``batches`` batches, their mean ``score``."""

    n: int
    score: float
    batches: int
    seconds: float


def _is_noop(schedule: Schedule) -> bool:
    return schedule.is_identity and schedule.prefilter is None


def reduced_logits(qa: QAModel, inputs_embeds: torch.Tensor, visual_mask: torch.Tensor,
                   schedule: Schedule) -> torch.Tensor:
    """Last-position logits ``(b, vocab)`` of ``qa`` on ``inputs_embeds`` with ``schedule`` applied."""
    if _is_noop(schedule):
        return qa.last_logits(inputs_embeds)
    from ..runtime import reduce

    with reduce(qa.module, schedule, visual_mask=visual_mask, use_kernels=kernels_flag()):
        return qa.last_logits(inputs_embeds)


def bootstrap_ci(values: torch.Tensor, resamples: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values (N,)`` over ``resamples (B, N)`` indices."""
    means = values.double()[resamples].mean(dim=1)
    a = (1.0 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
    return float(lo), float(hi)


def _schedule_key(s: Schedule) -> str:
    return json.dumps({"keep": list(s.keep), "min_tokens": s.min_tokens, "scorer": s.scorer.to_dict(),
                       "prefilter": s.prefilter}, sort_keys=True)


class _Evaluator:
    metric = ""

    def __init__(self, qa: QAModel, data: PreparedSet, *, batch_size: int = 64, seed: int = 0,
                 n_boot: int = 1000, forward: ForwardFn | None = None, device=None,
                 prefix_cache: PrefixCache | bool | None = None, progress: bool = False):
        from .. import model_signature

        if len(data) == 0:
            raise ValueError("empty evaluation set")
        self.qa = qa
        self.device = device if device is not None else next(qa.module.parameters()).device
        self.data = data.to(self.device)
        self.signature = model_signature(qa.module)
        self.num_visual = data.num_visual
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.forward = forward or reduced_logits
        self.progress = bool(progress)
        if prefix_cache is True:
            prefix_cache = PrefixCache(qa.module)
        self.prefix_cache: PrefixCache | None = prefix_cache or None
        g = torch.Generator().manual_seed(self.seed)
        self.resamples = torch.randint(len(data), (int(n_boot), len(data)), generator=g)
        self.identity = Schedule.identity(self.signature.num_layers)
        self._outcomes: dict[str, dict[str, torch.Tensor]] = {}
        self._results: dict[str, TaskResult] = {}
        self._seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ running
    def batches(self) -> list[tuple[int, int, int]]:
        """``(group, start, stop)`` of every batch, in racing order: round-robin over the groups, so
        that every prefix of the order mixes the set's sample shapes (video lengths)."""
        per = [[(gi, s, min(len(g), s + self.batch_size)) for s in range(0, len(g), self.batch_size)]
               for gi, g in enumerate(self.data.groups)]
        out = []
        for j in range(max(len(p) for p in per)):
            out.extend(p[j] for p in per if j < len(p))
        return out

    def batch_logits(self, schedule: Schedule, gi: int, s: int, e: int) -> torch.Tensor:
        """``(e - s, C)`` choice logits (−inf where unused) or ``(e - s, vocab)`` of samples ``s:e`` of group ``gi``."""
        g = self.data.groups[gi]
        x = g.inputs_embeds[s:e]
        vm = g.batch_mask(s, x.shape[0])
        with torch.inference_mode():
            reuse = (contextlib.nullcontext() if self.prefix_cache is None
                     else self.prefix_cache.resume((gi, s, x.shape[0]), schedule, g.num_visual))
            with reuse:
                logits = self.forward(self.qa, x, vm, schedule).float()
            if g.has_choices:
                logits = torch.gather(logits, 1, g.choice_ids[s:e]).masked_fill(~g.choice_mask[s:e], float("-inf"))
        return logits.cpu()

    def answer_logits(self, schedule: Schedule) -> list[torch.Tensor]:
        """Per group, ``(n, C)`` choice logits (−inf where unused) or ``(n, vocab)`` without choices."""
        schedule.check_model(self.signature)
        return [torch.cat([self.batch_logits(schedule, gi, s, min(len(g), s + self.batch_size))
                           for s in range(0, len(g), self.batch_size)])
                for gi, g in enumerate(self.data.groups)]

    def _batch_outcome(self, gi: int, s: int, e: int, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _compute(self, schedule):
        schedule.check_model(self.signature)
        order = self.batches()
        bar = self._bar(len(order))
        parts = []
        for gi, s, e in order:
            parts.append((gi, s, e, self._batch_outcome(gi, s, e, self.batch_logits(schedule, gi, s, e))))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self._assemble(parts)

    def _bar(self, n: int):
        """A progress bar over the ``n`` batches of one evaluation (``progress=True`` and more than 4 batches)."""
        if not self.progress or n <= 4:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=n, desc="evaluating", leave=False, disable=None)

    def _assemble(self, parts) -> dict[str, torch.Tensor]:
        keys = parts[0][3].keys()
        out = {}
        for k in keys:
            first = parts[0][3][k]
            buf = torch.empty((len(self.data),) + tuple(first.shape[1:]), dtype=first.dtype)
            for gi, s, e, o in parts:
                buf[self.data.groups[gi].index[s:e].cpu()] = o[k]
            out[k] = buf
        return out

    def race(self, schedule: Schedule, keep_going) -> TaskResult | RacedOut:
        """Evaluate ``schedule`` batch by batch in :meth:`batches` order; after each batch call
        ``keep_going(index (n,), score (n,))`` with the set positions and per-sample scores seen so
        far, and stop when it returns False (:class:`RacedOut`). A finished race gives the same
        :class:`TaskResult` as :meth:`evaluate` (and is cached like it)."""
        key = _schedule_key(schedule)
        if key in self._results or key in self._outcomes:
            return self.evaluate(schedule)
        schedule.check_model(self.signature)
        t0 = time.perf_counter()
        parts, idx, sc = [], [], []
        order = self.batches()
        for j, (gi, s, e) in enumerate(order):
            o = self._batch_outcome(gi, s, e, self.batch_logits(schedule, gi, s, e))
            parts.append((gi, s, e, o))
            idx.append(self.data.groups[gi].index[s:e].cpu())
            sc.append(o["score"])
            if j + 1 < len(order) and not keep_going(torch.cat(idx), torch.cat(sc)):
                seen = torch.cat(sc)
                return RacedOut(n=int(seen.numel()), score=float(seen.double().mean()), batches=j + 1,
                                seconds=time.perf_counter() - t0)
        self._outcomes[key] = self._assemble(parts)
        self._seconds[key] = time.perf_counter() - t0
        return self.evaluate(schedule)

    def sample_scores(self, schedule: Schedule) -> torch.Tensor:
        """Per-sample scores ``(N,)`` in set order of an evaluated schedule."""
        return self.outcomes(schedule)["score"]

    def mean_keep(self, schedule: Schedule) -> float:
        """Realised mean keep (token counts after rounding and ``min_tokens``), sample-weighted."""
        tot = 0.0
        for g in self.data.groups:
            counts = schedule.tokens_per_layer(g.num_visual)
            tot += len(g) * sum(counts) / (len(counts) * g.num_visual)
        return tot / len(self.data)

    def outcomes(self, schedule: Schedule) -> dict[str, torch.Tensor]:
        """Per-sample outcomes ``(N,)`` (in set order) of ``schedule``; cached."""
        key = _schedule_key(schedule)
        if key not in self._outcomes:
            t0 = time.perf_counter()
            self._outcomes[key] = self._compute(schedule)
            self._seconds[key] = time.perf_counter() - t0
        return self._outcomes[key]

    def seconds(self, schedule: Schedule) -> float:
        """Wall seconds the forward passes of ``schedule`` took (0 if not evaluated yet)."""
        return self._seconds.get(_schedule_key(schedule), 0.0)

    def evaluation_seconds(self) -> float:
        """Wall seconds of all forward passes so far (every schedule evaluated once)."""
        return float(sum(self._seconds.values()))

    @property
    def evaluations(self) -> int:
        """Distinct schedules evaluated so far."""
        return len(self._seconds)

    def clear_cache(self) -> None:
        """Forget cached outcomes and results (e.g. to time a schedule again)."""
        self._outcomes.clear()
        self._results.clear()
        self._seconds.clear()

    # ---------------------------------------------------------------- results
    def _per_family(self, v: torch.Tensor) -> dict[str, float]:
        fams = sorted(set(self.data.families))
        out = {}
        for f in fams:
            m = torch.tensor([x == f for x in self.data.families])
            out[f] = float(v[m].double().mean())
        return out

    def _per_length(self, v: torch.Tensor) -> dict[str, float]:
        by: dict[int, list[torch.Tensor]] = {}
        for g in self.data.groups:
            by.setdefault(g.num_visual, []).append(v[g.index.cpu()])
        return {str(k): float(torch.cat(x).double().mean()) for k, x in sorted(by.items())}

    def _result(self, schedule: Schedule, values: torch.Tensor, extra: dict) -> TaskResult:
        lo, hi = bootstrap_ci(values, self.resamples)
        extra = dict(extra)
        extra["mean_keep"] = self.mean_keep(schedule)
        extra["seconds"] = float(self._seconds.get(_schedule_key(schedule), 0.0))
        return TaskResult(metric=self.metric, score=float(values.double().mean()), ci_low=lo, ci_high=hi,
                          n=len(self.data), per_family=self._per_family(values),
                          per_length=self._per_length(values), extra=extra)

    def paired_delta(self, a: Schedule, b: Schedule) -> tuple[float, float, float]:
        """Mean score of ``a`` minus ``b`` on the same samples, with its paired bootstrap 95% interval."""
        va, vb = self.outcomes(a)["score"], self.outcomes(b)["score"]
        d = va.double() - vb.double()
        lo, hi = bootstrap_ci(d, self.resamples)
        return float(d.mean()), lo, hi

    @property
    def baseline(self) -> TaskResult:
        """The identity schedule's result (cached)."""
        return self.evaluate(self.identity)

    def evaluate(self, schedule: Schedule) -> TaskResult:
        key = _schedule_key(schedule)
        if key not in self._results:
            self._results[key] = self._evaluate(schedule)
        return self._results[key]

    def _evaluate(self, schedule):
        raise NotImplementedError


class AccuracyEvaluator(_Evaluator):
    """Labelled multiple-choice accuracy. ``extra``: ``baseline`` (identity accuracy), ``delta``
    and its paired interval ``delta_ci_low/high``, ``mean_keep``, ``seconds``."""

    metric = "accuracy"

    def __init__(self, qa: QAModel, data: PreparedSet, **kw):
        if not data.labelled:
            missing = [data.ids[i] for i in (data.answers < 0).nonzero().flatten().tolist()[:5]]
            raise ValueError(f"accuracy needs an answer for every record; none for {missing} …")
        if not all(g.has_choices for g in data.groups):
            raise ValueError("accuracy needs choices for every record")
        super().__init__(qa, data, **kw)

    def _batch_outcome(self, gi, s, e, logits):
        pred = logits.argmax(dim=1)
        answers = self.data.answers.cpu()[self.data.groups[gi].index[s:e].cpu()]
        return {"score": (pred == answers).float(), "pred": pred}

    def predictions(self, schedule: Schedule) -> torch.Tensor:
        return self.outcomes(schedule)["pred"]

    def _evaluate(self, schedule):
        v = self.outcomes(schedule)["score"]
        extra = {}
        if not _is_noop(schedule):
            base = self.evaluate(self.identity).score
            d, lo, hi = self.paired_delta(schedule, self.identity)
            extra = {"baseline": base, "delta": d, "delta_ci_low": lo, "delta_ci_high": hi}
        else:
            extra = {"baseline": float(v.double().mean()), "delta": 0.0, "delta_ci_low": 0.0, "delta_ci_high": 0.0}
        return self._result(schedule, v, extra)


class FidelityEvaluator(_Evaluator):
    """Agreement with the unreduced model, no labels needed: ``score`` = top-1 agreement,
    ``extra["kl"]`` = mean ``KL(p_unreduced ‖ p_reduced)`` (nats) with ``kl_ci_low/high``."""

    metric = "fidelity"

    def __init__(self, qa: QAModel, data: PreparedSet, **kw):
        super().__init__(qa, data, **kw)
        self._base_logits: list[torch.Tensor] | None = None

    def base_logits(self) -> list[torch.Tensor]:
        if self._base_logits is None:
            self._base_logits = self.answer_logits(self.identity)
        return self._base_logits

    def batch_logits(self, schedule, gi, s, e):
        if _is_noop(schedule) and self._base_logits is not None:
            return self._base_logits[gi][s:e]
        return super().batch_logits(schedule, gi, s, e)

    def _batch_outcome(self, gi, s, e, logits):
        p_logit = self.base_logits()[gi][s:e]
        lp = F.log_softmax(p_logit.double(), dim=1)
        lq = F.log_softmax(logits.double(), dim=1)
        p = lp.exp()
        terms = torch.where(p > 0, p * (lp - lq), torch.zeros_like(p))
        return {"score": (p_logit.argmax(dim=1) == logits.argmax(dim=1)).float(),
                "kl": terms.sum(dim=1).clamp_min(0.0)}

    def _evaluate(self, schedule):
        o = self.outcomes(schedule)
        lo, hi = bootstrap_ci(o["kl"], self.resamples)
        return self._result(schedule, o["score"], {"kl": float(o["kl"].mean()), "kl_ci_low": lo, "kl_ci_high": hi})
