"""``apply_schedule``: a schedule file's score and latency on its model (``autoprune apply``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..interfaces import LatencyEstimate, SourceRequest, TaskResult
from ..models import check_request, get_model_source
from ..schedule import Schedule
from .config import DEFAULT_MODEL
from .run import resolve_gpu

__all__ = ["ApplyResult", "apply_schedule"]


@dataclass(frozen=True)
class ApplyResult:
    schedule: Schedule
    result: TaskResult
    latency: LatencyEstimate
    model: str
    num_visual: int


def apply_schedule(path: str | os.PathLike, *, model: str | None = None, task: str | None = None,
                   gpu: str | None = None, measure: bool = False,
                   model_options: Mapping[str, Any] | None = None) -> ApplyResult:
    """Run the model with a schedule file: its score and its latency.

    Defaults come from the file: the model, task and model options of its provenance (options given
    here override those of the same name), the GPU of its target. Raises ModelMismatchError when the schedule was made for another model.
    """
    sched = Schedule.load(path)
    prov = dict(sched.provenance or {})
    model = model or prov.get("model") or DEFAULT_MODEL
    task = task or prov.get("task")
    gpu = gpu or (sched.target.gpu if sched.target and sched.target.gpu else None)
    if gpu is None:
        raise ConfigError(f"{path}: the schedule names no target GPU; give --gpu")
    stored = dict(prov.get("model_options") or {}) if model == prov.get("model") else {}
    # the study's held-out set validated its front once; applying evaluates one set (--data), and a
    # stored held-out file would be checked against it (and refused when --data is that file)
    stored.pop("validation", None)
    options = {**stored, **dict(model_options or {})}  # given options override the study's
    source = get_model_source(model)
    request = SourceRequest(gpu=resolve_gpu(gpu, measure=measure), task=task, measure=measure, options=options)
    check_request(source, request)
    inputs = source.build(request)
    sched.check_model(inputs.signature)
    est = inputs.latency.estimate(sched)
    result = inputs.evaluator.evaluate(sched)
    return ApplyResult(schedule=sched, result=result, latency=est, model=model, num_visual=inputs.evaluator.num_visual)
