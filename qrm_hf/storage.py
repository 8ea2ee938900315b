"""Optuna storages by URL, with heartbeats so a trial whose worker died is failed and retried.

- `sqlite:///results/model/study.db` (the default): one machine, several processes.
- `postgresql+psycopg2://user:password@host/db` (`pip install qrm-hf[postgres]`): many machines.
- `journal:///shared/fs/study.log`: Optuna's journal file on a shared file system (no heartbeat there).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

JOURNAL_PREFIX = "journal://"


class StorageError(ValueError):
    """A storage that cannot be used; the message names the URL (password hidden) and the fix."""


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: nothing to hide
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
    most `max_retry` times), the next time any worker starts a trial."""
    path = storage_file(url)
    if url.startswith(JOURNAL_PREFIX):
        if not path.parent.is_dir():
            raise StorageError(f"--storage {url!r}: folder {path.parent} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # Heartbeats are marked experimental in Optuna; they are what makes a dead worker's trial retried.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat = {}
            if heartbeat_interval:
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period or 3 * heartbeat_interval,
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                }
            return _create_rdb_storage(url, heartbeat)
    except ImportError as error:
        missing = getattr(error.__cause__, "name", None) or error
        raise StorageError(
            f"--storage {redact(url)!r}: the database driver is not installed ({missing}); "
            "for PostgreSQL run `pip install qrm-hf[postgres]`"
        ) from None
    except Exception as error:
        import sqlalchemy.exc

        if isinstance(error, sqlalchemy.exc.ArgumentError) or "Could not parse" in str(error):
            raise StorageError(
                f"--storage {redact(url)!r} is not a storage URL: use sqlite:///path.db, "
                "postgresql+psycopg2://user:password@host/db or journal:///path/study.log"
            ) from None
        if isinstance(error, sqlalchemy.exc.OperationalError):
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise StorageError(f"--storage {redact(url)!r}: cannot connect ({reason})") from None
        raise


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


def storage_url_for_log(storage: BaseStorage | str) -> str:
    if isinstance(storage, str):
        return redact(storage)
    if isinstance(storage, RDBStorage):
        return redact(storage.url)
    return type(storage).__name__


__all__ = ["JOURNAL_PREFIX", "StorageError", "make_storage", "redact", "storage_file", "storage_url_for_log"]
