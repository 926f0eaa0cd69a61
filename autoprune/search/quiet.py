"""Optuna's INFO logging (a line per trial) off for the duration of a block."""

from __future__ import annotations

import contextlib

import optuna

__all__ = ["optuna_quiet"]


@contextlib.contextmanager
def optuna_quiet():
    prev = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(prev)
