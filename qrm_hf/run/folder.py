"""The run folder: writable before anything starts, one final-model writer at a time, and every file a run leaves
there (history, the best trial's record, test metrics and predictions, the final summary, the probe) written and
read by the pairs of functions here, under the names `run.layout` gives them. The report reads through them.

Workers of one study may share an output folder (the README's many-GPU loop). Each trains trials; once the study
is full, the first to claim the folder trains and saves the final model, and the others exit saying who does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .config import ConfigError
from .layout import BEST_TRIAL_RECORD_FILE, RunLayout


def check_writable(folder: Path, flag: str = "--output-dir") -> None:
    """ConfigError naming `flag` when `folder` could not be created or written, found before any study opens
    and without creating anything: its nearest existing ancestor must be a folder this process may write in."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {folder}: cannot write there ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {folder}: cannot write there ({existing} is not writable)")


def _holder_alive(holder: dict) -> bool:
    """Whether the process that wrote a claim still runs (on this host; a claim from another host counts)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except (OSError, ValueError):
        return False
    return True


class FinalModelClaimed(RuntimeError):
    """Another live worker trains this run's final model; the message names it."""


@contextlib.contextmanager
def claim_final_model(layout: RunLayout) -> Iterator[None]:
    """Hold `layout.final_lock` while training and saving the final model; FinalModelClaimed when a live worker
    holds it. A claim left by a dead process is taken over."""
    lock = layout.final_lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            if _holder_alive(holder):
                raise FinalModelClaimed(
                    f"the final model of this run is trained by {holder.get('host', '?')} pid {holder.get('pid', '?')} "
                    f"(since {holder.get('since', '?')}; {lock}): this worker's trials are in the study, nothing "
                    "more to do here"
                ) from None
            lock.unlink(missing_ok=True)  # its writer died: take over
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(me, out)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@dataclass(frozen=True)
class Calibration:
    """Mean prediction minus mean label: on 2,000 of the model's own training rows (eval mode), dev and test."""

    train_offset_eval_mode: float
    dev_offset: float
    test_offset: float
    offset_flagged: bool


def offset_advice(encoder_dropout: float | None) -> str:
    """What to try against a flagged offset: the encoder's dropout (benchmark 8), unless it is off already.

    Example:
        >>> offset_advice(None)
        'encoder_dropout 0 usually removes this'
    """
    if encoder_dropout == 0:
        return "the encoder's dropout is off already, so the training itself shifted them"
    return "encoder_dropout 0 usually removes this"


@dataclass(frozen=True)
class FinalSummary:
    """How the shipped model was made and how it is calibrated: final_model.json, the report's section."""

    method: str
    best_epoch: float | None
    decision_threshold: float
    threshold_metric: str
    loss: str
    encoder_dropout: float | None
    dev_metrics: dict[str, float]
    calibration: Calibration
    final_max_epochs: int | None = None
    combine: str = "soup"
    combined: list[str] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    refit_rows: int | None = None


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, so that it is valid JSON (`null`): a metric that
    is undefined for the data (Pearson of constant labels, F1 without a positive class) is written as such.

    Example:
        >>> finite_json({"mse": 0.07, "pearson": float("nan"), "spread": [1.0, float("inf")]})
        {'mse': 0.07, 'pearson': None, 'spread': [1.0, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def undefined_metrics(metrics: dict[str, Any]) -> dict[str, str]:
    """The metrics that are not a finite number, each with why: what a report says instead of a figure."""
    return {
        name: "undefined for this data (e.g. constant labels or predictions, or no query at or above the threshold)"
        for name, value in metrics.items()
        if isinstance(value, float) and not math.isfinite(value)
    }


def write_json(data: Any, path: Path) -> None:
    """`data` as strict JSON (no NaN: see finite_json), written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(finite_json(data), indent=2, allow_nan=False), encoding="utf-8")
    partial.replace(path)


def write_final_summary(summary: FinalSummary, path: Path) -> None:
    write_json(asdict(summary), path)


def read_final_summary(path: Path) -> FinalSummary | None:
    """The summary at `path` (None when the run has none yet); keys this version does not know are ignored."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {item.name for item in fields(FinalSummary)}
    values = {key: value for key, value in data.items() if key in known}
    values["calibration"] = Calibration(**values["calibration"])
    return FinalSummary(**values)


def write_test_metrics(metrics: dict[str, float], path: Path) -> None:
    """test_metrics.json: strict JSON, an undefined metric `null` with its reason under `undefined`."""
    undefined = undefined_metrics(metrics)
    write_json({**metrics, **({"undefined": undefined} if undefined else {})}, path)


def read_json(path: Path) -> Any:
    """The JSON at `path`, or None when the run has not written it (yet)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_test_metrics(path: Path) -> dict[str, Any] | None:
    """test_metrics.json as `write_test_metrics` wrote it (an undefined metric is None)."""
    return read_json(path)


def write_optimization_history(history: dict[str, Any], path: Path) -> None:
    """optimization_history.json: the study's summary (`StudySummary.to_json`)."""
    write_json(history, path)


def write_best_trial_record(folder: Path, trial: int, value: float, params: dict[str, Any]) -> None:
    """Beside the best trial's own model: which trial it is, its value and its parameters."""
    write_json({"trial": trial, "value": value, "params": params}, folder / BEST_TRIAL_RECORD_FILE)


def write_probe(probe: dict[str, Any], path: Path) -> None:
    write_json(probe, path)


def read_probe(path: Path) -> dict[str, Any] | None:
    """probe.json (`ProbeResult.to_json`), or None when the probe did not run or failed."""
    return read_json(path)


def save_test_predictions(predictions: Any, references: Any, path: Path) -> Path:
    """test_predictions.json: the test split's predicted and true scores, for `qrm report` to rebuild its plots
    without loading a model."""
    from ..metrics.thresholds import as_scores

    data = {
        "predictions": as_scores(predictions, "predictions").tolist(),
        "references": as_scores(references, "references").tolist(),
    }
    write_json(data, Path(path))
    return Path(path)


def load_test_predictions(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(predictions, references) saved by `save_test_predictions`, or None when there are none."""
    data = read_json(Path(path))
    if data is None:
        return None
    return np.asarray(data["predictions"], dtype=np.float64), np.asarray(data["references"], dtype=np.float64)


__all__ = [
    "load_test_predictions",
    "read_json",
    "read_probe",
    "read_test_metrics",
    "save_test_predictions",
    "write_best_trial_record",
    "write_optimization_history",
    "write_probe",
    "write_test_metrics",
    "Calibration",
    "FinalModelClaimed",
    "FinalSummary",
    "check_writable",
    "claim_final_model",
    "finite_json",
    "undefined_metrics",
    "write_json",
    "offset_advice",
    "read_final_summary",
    "write_final_summary",
]
