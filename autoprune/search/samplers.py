"""The registry of Optuna samplers a study can use, and the seed of each worker's sampler."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from .._deps import require
from ..errors import ConfigError

__all__ = ["SAMPLERS", "make_sampler", "check_sampler", "derive_seed"]


def _tpe(seed: int | None, trials: int):
    # Random startup trials clamp(trials // 4, 4, 10), so that short studies are not all random; a
    # multivariate model, because where to cut and how hard interact (stages, shares, alignment).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, min(10, trials // 4)), multivariate=True)


def _nsga2(seed: int | None, trials: int):
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, trials // 4)))


def _gp(seed: int | None, trials: int):
    return optuna.samplers.GPSampler(seed=seed)


def _random(seed: int | None, trials: int):
    return optuna.samplers.RandomSampler(seed=seed)


# name -> (factory(seed, trials), optional module it needs, pip install hint)
SAMPLERS: dict[str, tuple[Callable, str | None, str | None]] = {
    "tpe": (_tpe, None, None),
    "nsga2": (_nsga2, None, None),
    "gp": (_gp, "scipy", "scipy (Optuna's GPSampler)"),
    "random": (_random, None, None),
}


def check_sampler(name: str) -> None:
    """ConfigError for an unknown sampler or one whose dependency is missing (before anything runs)."""
    if name not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {list(SAMPLERS)}, got {name!r}")
    _, module, hint = SAMPLERS[name]
    if module is not None:
        require(module, feature=f"sampler {name!r}", install=hint)


def make_sampler(name: str, seed: int | None, *, trials: int):
    """A fresh sampler ``name`` seeded with ``seed`` for a study of ``trials`` trials."""
    check_sampler(name)
    return SAMPLERS[name][0](seed, trials)


def derive_seed(seed: int | None, worker: int, finished: int) -> int | None:
    """Sampler seed of worker ``worker`` when ``finished`` trials exist.

    A fresh sequential run (worker 0, nothing finished) always gets the same seed, so it
    reproduces; a resumed run gets another one, so the sampler does not repeat its startup
    trials (Optuna re-created with the same seed would).
    """
    if seed is None:
        return None
    return (seed * 1_000_003 + worker * 7_919 + finished * 104_729) % (2**31 - 1)
