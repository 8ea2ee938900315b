"""Optuna storages by URL, with heartbeats so a trial whose worker died is failed and retried.

- `sqlite:///results/model/study.db` (the default): one machine, several processes.
- `postgresql+psycopg2://user:password@host/db` (`pip install qrm-hf[postgres]`): many machines. The plain
  `postgresql://` form (and Heroku's `postgres://`) uses psycopg2 too, unless psycopg 3 is installed.
- `journal:///shared/fs/study.log`: Optuna's journal file on a shared file system (no heartbeat there).
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

JOURNAL_PREFIX = "journal://"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


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
    most `max_retry` times), the next time any worker starts a trial."""
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
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
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


def storage_url_for_log(storage: BaseStorage | str) -> str:
    if isinstance(storage, str):
        return redact(storage)
    if isinstance(storage, RDBStorage):
        return redact(storage.url)
    return type(storage).__name__


__all__ = [
    "JOURNAL_PREFIX",
    "StorageError",
    "make_storage",
    "redact",
    "storage_file",
    "storage_url_for_log",
    "with_driver",
]
