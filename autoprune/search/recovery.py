"""Trials a dead worker left RUNNING: found, marked failed with the reason, and re-queued.

A trial's worker is gone when its process on this host no longer exists (checked by pid and
process start time, :mod:`autoprune.search.identity`), or, on RDB storages with heartbeats, when
its heartbeat is stale (Optuna's ``fail_stale_trials``). A trial of a live process is left alone,
and so is a trial of another host on a storage without heartbeats (with a message).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import datetime

import optuna
from optuna.trial import TrialState

from .identity import worker_alive

__all__ = ["recover_orphans", "counted_states", "count_done", "COUNTED"]

# What ``trials`` counts: a trial that was evaluated (or rejected/raced out on purpose). A FAIL
# trial (a raise, an out-of-memory, a dead worker) does not count: the study runs another.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def counted_states() -> tuple:
    return COUNTED


def count_done(study) -> int:
    """The study's counted trials (COMPLETE or PRUNED)."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def recover_orphans(study, *, log: Callable[[str], None] = print, quiet: bool = False,
                    stale: bool = True) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker is gone (see the module docstring); returns
    their numbers. ``quiet``: say nothing of trials left alone; ``stale``: also fail trials whose
    heartbeat is stale (False right after this process lost the storage: every heartbeat is old)."""
    storage = study._storage
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not before:
        return []
    if stale:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RDB with heartbeats only; re-queues via the callback
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    recovered = sorted(before - {t.number for t in running})
    # (a finished trial takes no attribute: a stale one is known by its re-queued copy's failed_trial)
    now = datetime.now()
    for t in running:
        owner = t.user_attrs.get("worker")
        alive = worker_alive(owner)
        if owner is None and t.datetime_start is not None and (now - t.datetime_start).total_seconds() < 60:
            # A worker records itself first thing in a trial: give a just-started one time to do so.
            if not quiet:
                log(f"trial {t.number} started {(now - t.datetime_start).total_seconds():.0f} s ago and names no "
                    "worker yet; left alone")
            continue
        if alive:
            if not quiet:
                log(f"trial {t.number} is still running in {owner}; left alone")
            continue
        if alive is None:
            if not quiet:
                log(f"trial {t.number} is RUNNING in {owner} on another host; left alone (no heartbeat says it is "
                    "dead)")
            continue
        reason = f"orphaned: worker {owner or '(unknown)'} ended while the trial was running; re-queued on resume"
        try:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process finished or failed it meanwhile
        user_attrs = {k: v for k, v in t.user_attrs.items() if k == "reference"}
        history = list(t.system_attrs.get("retry_history", [])) + [t.number]
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions, user_attrs=user_attrs,
            system_attrs={"failed_trial": t.system_attrs.get("failed_trial", t.number), "retry_history": history,
                          **({"fixed_params": t.system_attrs["fixed_params"]} if "fixed_params" in t.system_attrs
                             else {})},
        ))
        recovered.append(t.number)
    if recovered:
        log(f"trial(s) {recovered} were left running by a dead worker: marked FAIL and re-queued")
    return recovered
