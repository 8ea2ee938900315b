"""Optuna storages by URL, and a dead worker's running trial failed and its point retried.

- `sqlite:///results/model/study.db` (the default): one machine, several processes.
- `postgresql+psycopg2://user:password@host/db` (`pip install qrm-hf[postgres]`): many machines. The plain
  `postgresql://` form (and Heroku's `postgres://`) uses psycopg2 too, unless psycopg 3 is installed.
- `journal:///shared/fs/study.log`: Optuna's journal file on a shared file system (no heartbeat there).

Two ways find a trial whose worker died (kill -9, OOM) while it ran:
- Each trial records its worker (`Worker`: host, pid, process start time). A run that starts, and each of its
  trials, first fails the running trials of workers on its own machine whose process is gone, and re-queues
  their points (`retry_trials_of_dead_workers`): at once, with any storage, heartbeat or not.
- Trials of workers on other machines are left to Optuna's heartbeat (database storages): a trial silent for
  `grace_period` seconds is failed and re-queued when any worker next starts a trial.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal://"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")
# The trial system attribute that names the process running the trial.
WORKER_ATTR = "qrm_worker"


class StorageError(ValueError):
    """A storage that cannot be used; the message names the URL (password hidden) and the fix."""


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: nothing to hide
        return url


def with_driver(url: str) -> str:
    """A PostgreSQL URL that names no driver, given the driver installed here: SQLAlchemy's default for
    `postgresql://` is psycopg 3, while the `[postgres]` extra installs psycopg2. Other URLs are returned as is.

    Example:
        >>> with_driver("postgresql://qrm:pw@db-host/optuna")  # without psycopg 3 installed  # doctest: +SKIP
        'postgresql+psycopg2://qrm:pw@db-host/optuna'
    """
    for prefix in POSTGRES_PREFIXES:
        if url.startswith(prefix):
            scheme = "postgresql" if importlib.util.find_spec("psycopg") is not None else "postgresql+psycopg2"
            return f"{scheme}://{url.removeprefix(prefix)}"
    return url


def storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL; None for a database server (or SQLite in memory)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url.removeprefix(JOURNAL_PREFIX))
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    return None


def make_storage(
    url: str, heartbeat_interval: int | None = 60, grace_period: int | None = None, max_retry: int | None = 3
) -> BaseStorage:
    """The storage for `url`. With a database, workers send a heartbeat every `heartbeat_interval` seconds; a
    running trial silent for `grace_period` seconds is marked FAIL and re-queued with the same parameters (at
    most `max_retry` times), the next time any worker starts a trial. (A worker on the same machine finds a dead
    worker's trial at once, heartbeat or not: `retry_trials_of_dead_workers`.)"""
    given, url = url, with_driver(url)
    path = storage_file(url)
    if url.startswith(JOURNAL_PREFIX):
        return _journal_storage(given, path)
    if path is not None:
        _check_sqlite_file(given, path)
    try:
        with warnings.catch_warnings():
            # Heartbeats are marked experimental in Optuna; they are what makes a dead worker's trial retried.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat = {}
            if heartbeat_interval:
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period or 3 * heartbeat_interval,
                    "heartbeat_stale_trial_callback": RetryInterruptedTrial(max_retry=max_retry),
                }
            return _create_rdb_storage(url, heartbeat)
    except ImportError as error:
        missing = getattr(error.__cause__, "name", None) or error
        raise StorageError(
            f"--storage {redact(given)!r}: the database driver is not installed ({missing}); "
            "for PostgreSQL run `pip install qrm-hf[postgres]`"
        ) from None
    except Exception as error:
        import sqlalchemy.exc

        if isinstance(error, sqlalchemy.exc.ArgumentError) or "Could not parse" in str(error):
            raise StorageError(
                f"--storage {redact(given)!r} is not a storage URL: use sqlite:///path.db, "
                "postgresql://user:password@host/db or journal:///path/study.log"
            ) from None
        if isinstance(error, sqlalchemy.exc.OperationalError):
            raise StorageError(f"--storage {redact(given)!r}: cannot connect ({_first_line(error)})") from None
        if isinstance(error, sqlalchemy.exc.DatabaseError) and path is not None:
            raise StorageError(
                f"--storage {redact(given)!r}: {path} is not a SQLite database ({_first_line(error)}); "
                "give the study's .db file or a new file name"
            ) from None
        raise


def _first_line(error: Exception) -> str:
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def _check_sqlite_file(url: str, path: Path) -> None:
    """The SQLite file's folder, created if needed, or StorageError naming the path that is in the way."""
    if path.is_dir():
        raise StorageError(f"--storage {url!r}: {path} is a folder; give a file, e.g. {path / 'study.db'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"--storage {url!r}: cannot create the folder {path.parent} for the SQLite file ({error.strerror or error})"
        ) from None


def _journal_storage(url: str, path: Path) -> JournalStorage:
    """Optuna's journal file, refusing a folder, a missing folder, or an existing file that is no journal
    (the storage would append its records to it)."""
    if not path.parent.is_dir():
        raise StorageError(f"--storage {url!r}: folder {path.parent} does not exist")
    if path.is_dir():
        raise StorageError(f"--storage {url!r}: {path} is a folder; give a file, e.g. {path / 'study.log'}")
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as stream:
            first = stream.readline()
        try:
            record = json.loads(first)
        except ValueError:
            record = None
        if not (isinstance(record, dict) and "op_code" in record):
            raise StorageError(
                f"--storage {url!r}: {path} is not an Optuna journal (its first line is no journal record); "
                "give the study's journal file or a new file name"
            )
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as error:
        raise StorageError(f"--storage {url!r}: cannot open {path} ({error.strerror or error})") from None


def _create_rdb_storage(url: str, heartbeat: dict, attempts: int = 5) -> RDBStorage:
    """RDBStorage, retried when workers started together race to create Optuna's tables in a fresh database
    (PostgreSQL then reports a duplicate type or table to all but one of them)."""
    import sqlalchemy.exc

    for attempt in range(1, attempts + 1):
        try:
            return RDBStorage(url, engine_kwargs=_engine_kwargs(url), **heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _engine_kwargs(url: str) -> dict:
    # Fail fast on an unreachable server instead of waiting for the driver's long default.
    return {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}


@dataclasses.dataclass(frozen=True)
class Worker:
    """The process that runs a trial, as recorded on the trial: enough to tell, on the same machine, whether it is
    gone.

    `started` (the process's start time, clock ticks since boot) tells a live process that reused a dead worker's
    pid; `boot`, `machine` and `pid_namespace` keep a worker of another machine that shares the host name, or of
    another container, from being judged by this process table. Linux fills every field; elsewhere only host and
    pid, and a reused pid then looks alive.

    Example:
        >>> Worker.of_process().is_gone()
        False
    """

    host: str
    pid: int
    started: int | None = None
    boot: str | None = None
    machine: str | None = None
    pid_namespace: str | None = None

    @classmethod
    def of_process(cls, pid: int | None = None) -> Worker:
        """This process (or the process `pid` of this machine)."""
        pid = os.getpid() if pid is None else pid
        status = _process_status(pid)
        return cls(
            host=socket.gethostname(),
            pid=pid,
            started=status[1] if status else None,
            boot=_read_text("/proc/sys/kernel/random/boot_id"),
            machine=_read_text("/etc/machine-id"),
            pid_namespace=_read_link(f"/proc/{pid}/ns/pid"),
        )

    @classmethod
    def of_trial(cls, trial: FrozenTrial) -> Worker | None:
        """The worker recorded on `trial`; None when none is (a trial of an older version, or one created a moment
        before its worker recorded itself)."""
        recorded = trial.system_attrs.get(WORKER_ATTR)
        if not isinstance(recorded, dict):
            return None
        try:
            worker = cls(**{field.name: recorded.get(field.name) for field in dataclasses.fields(cls)})
        except TypeError:
            return None
        texts = (worker.boot, worker.machine, worker.pid_namespace)
        well_formed = (
            isinstance(worker.host, str)
            and _is_int(worker.pid)
            and worker.pid > 0
            and (worker.started is None or _is_int(worker.started))
            and all(text is None or isinstance(text, str) for text in texts)
        )
        return worker if well_formed else None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def is_gone(self) -> bool | None:
        """True when this worker's process is known dead; False when it runs; None when this machine cannot tell
        (another host, another container, or this host name's machine of another boot unknown to be this one)."""
        here = Worker.of_process()
        if self.host != here.host:
            return None
        if self.boot and here.boot and self.boot != here.boot:
            # The same machine restarted since (so every process of it then is gone), or another machine of the
            # same name: only its machine id tells them apart.
            return True if self.machine and self.machine == here.machine else None
        if self.pid_namespace and here.pid_namespace and self.pid_namespace != here.pid_namespace:
            return None
        return not _alive(self.pid, self.started)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _read_link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _process_status(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of process `pid` from /proc; None without it."""
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (2nd field) may hold spaces and parentheses: the fields after its last ")" are plain.
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[19])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _alive(pid: int, started: int | None) -> bool:
    status = _process_status(pid)
    if status is not None:
        state, start = status
        # A zombie has exited (its parent has not collected it yet); another start time is another process.
        return state not in ("Z", "X") and (started is None or start == started)
    # No /proc entry (not Linux, or /proc hides other users' processes): ask the kernel whether the pid exists.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def record_worker(study: optuna.Study, trial: FrozenTrial) -> None:
    """Record this process as the worker of `trial` (a trial it just started)."""
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, Worker.of_process().to_json())


class RetryInterruptedTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker died: a WAITING trial with the same parameters, `failed_trial` and
    `retry_history` in its system attributes, at most `max_retry` times. The dead worker's identity is not copied:
    the worker that takes the retry records its own."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.system_attrs = {key: value for key, value in trial.system_attrs.items() if key != WORKER_ATTR}
        super().__call__(study, trial)


def retry_trials_of_dead_workers(study: optuna.Study, max_retry: int | None = 3) -> list[int]:
    """Fail the running trials whose worker ran on this machine and is gone, and queue their points again (at most
    `max_retry` times per point, as the heartbeat does); return their numbers. Trials of other machines' workers
    are left to the heartbeat.

    Example:
        >>> retry_trials_of_dead_workers(study, max_retry=3)  # doctest: +SKIP
        [4]
    """
    with warnings.catch_warnings():  # the retry callback is marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryInterruptedTrial(max_retry=max_retry)
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = Worker.of_trial(trial)
        if worker is None or not worker.is_gone():
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        retry(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
        attempt = len(trial.system_attrs.get("retry_history", [])) + 1
        if max_retry is None or attempt <= max_retry:
            outcome = f"its parameters queued again (retry {attempt}{f' of {max_retry}' if max_retry else ''})"
        else:
            outcome = f"not retried (max_retry {max_retry} reached)"
        logger.warning(
            "trial %d: its worker (%s, pid %d) is gone; marked FAIL, %s", trial.number, worker.host, worker.pid, outcome
        )
        failed.append(trial.number)
    return failed


def storage_url_for_log(storage: BaseStorage | str) -> str:
    if isinstance(storage, str):
        return redact(storage)
    if isinstance(storage, RDBStorage):
        return redact(storage.url)
    return type(storage).__name__


__all__ = [
    "JOURNAL_PREFIX",
    "RetryInterruptedTrial",
    "StorageError",
    "WORKER_ATTR",
    "Worker",
    "make_storage",
    "record_worker",
    "redact",
    "retry_trials_of_dead_workers",
    "storage_file",
    "storage_url_for_log",
    "with_driver",
]
