"""An Optuna RDB storage that rides out a database server restart.

Every storage call of a worker goes through :class:`ResilientRDBStorage`: a call that fails
because the connection to the server is gone (the server restarts, the network drops) is retried
with exponential backoff (0.25 s doubling to 8 s) until ``retry_s`` have passed, then the error is
raised. The engine checks a pooled connection before use (``pool_pre_ping``), so after a restart
dead connections are replaced instead of failing one call each.

Retrying is safe for Optuna's writes: parameters and attributes are keyed (a repeated insert of a
committed row is an integrity error Optuna ignores); a state change whose first attempt committed
before the connection dropped answers ``UpdateFinishedTrialError`` on the retry, which is taken as
done. A trial created twice (the first ``create_new_trial`` committed, its answer lost) is an
orphan without heartbeat: it goes stale and is failed and re-queued like a killed worker's.

:attr:`ResilientRDBStorage.last_trouble` is the monotonic time of the last failed call, the
heartbeat's included: a worker judges other workers' heartbeats only once ``grace_period`` has
passed since (after an outage every heartbeat is old, the live ones included).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

import optuna
from optuna.storages import RDBStorage

__all__ = ["ResilientRDBStorage", "is_connection_error", "RETRIED_METHODS"]

_log = logging.getLogger("autoprune.search")

# BaseStorage's and BaseHeartbeat's methods that touch the database (record_heartbeat is not
# retried: the heartbeat thread tries again at its next beat instead).
RETRIED_METHODS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials",
    "get_best_trial", "get_trial_params", "get_trial_user_attrs", "get_trial_system_attrs", "_get_stale_trial_ids",
    # what Optuna's _CachedStorage (the wrapper every Study puts around an RDBStorage) calls instead
    "_create_new_trial", "_get_trials", "_set_trial_param", "_get_best_trial_id",
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the database connection is gone."""
    import sqlalchemy.exc as sa_exc

    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__module__.startswith("psycopg") and type(e).__name__ in ("OperationalError", "InterfaceError"):
            return True
        e = e.__cause__ or e.__context__
    return False


class ResilientRDBStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` whose calls retry through a lost connection (see the module
    docstring). ``retry_s``: how long one call keeps retrying; ``on_retry(message)`` is told each wait."""

    def __init__(self, url: str, *, retry_s: float = 300.0, on_retry: Callable[[str], None] | None = None, **kw):
        self.retry_s = float(retry_s)
        self.on_retry = on_retry
        self.last_trouble = float("-inf")
        self._trouble_lock = threading.Lock()
        super().__init__(url, **kw)

    def note_trouble(self) -> None:
        with self._trouble_lock:
            self.last_trouble = time.monotonic()

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as e:
            if not is_connection_error(e):
                raise
            self.note_trouble()  # the next beat tries again

    def _retrying(self, name: str, call: Callable, *args, **kwargs):
        deadline = time.monotonic() + self.retry_s
        wait, failed_before = 0.25, False
        while True:
            try:
                return call(*args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if failed_before and name == "set_trial_state_values":
                    return True  # the attempt that lost its connection had committed
                raise
            except Exception as e:
                if not is_connection_error(e):
                    raise
                self.note_trouble()
                failed_before = True
                if time.monotonic() + wait > deadline:
                    raise
                msg = f"storage unavailable ({type(e).__name__}); retrying {name} in {wait:g} s"
                _log.warning(msg)
                if self.on_retry is not None:
                    self.on_retry(msg)
                time.sleep(wait)
                wait = min(8.0, wait * 2)


def _wrap(name: str):
    base = getattr(RDBStorage, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        return self._retrying(name, functools.partial(base, self), *args, **kwargs)

    return method


for _name in RETRIED_METHODS:
    if hasattr(RDBStorage, _name):
        setattr(ResilientRDBStorage, _name, _wrap(_name))
