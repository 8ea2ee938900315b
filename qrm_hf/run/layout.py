"""The names of a run folder's files, each said once (transformers' TRAINER_STATE_NAME, TRAINING_ARGS_NAME): the
constants and `RunLayout`, which places them under one run's folder. `run.folder` writes and reads them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STUDY_FILE = "study.db"
HISTORY_FILE = "optimization_history.json"
TEST_METRICS_FILE = "test_metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.json"
FINAL_SUMMARY_FILE = "final_model.json"
FINAL_MODEL_FOLDER = "final_model"
FINAL_LOCK_FILE = "final_model.lock"
PROBE_FILE = "probe.json"
BEST_TRIAL_MODEL_FOLDER = "best_trial_model"
REPORT_FILE = "report.md"
PLOTS_FOLDER = "plots"
TRIALS_FOLDER = "trials"
FINAL_CHECKPOINTS_FOLDER = "final_checkpoints"
BEST_TRIAL_RECORD_FILE = "trial.json"


@dataclass(frozen=True)
class RunLayout:
    """The files and folders of one run's folder (`results/<model>/`), each name said once.

    Example:
        >>> RunLayout(Path("results/m")).test_metrics.as_posix()
        'results/m/test_metrics.json'
    """

    root: Path

    @property
    def study(self) -> Path:
        """The default SQLite storage of the study."""
        return self.root / STUDY_FILE

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def test_metrics(self) -> Path:
        return self.root / TEST_METRICS_FILE

    @property
    def test_predictions(self) -> Path:
        return self.root / TEST_PREDICTIONS_FILE

    @property
    def final_summary(self) -> Path:
        """How the final model was made and its calibration."""
        return self.root / FINAL_SUMMARY_FILE

    @property
    def final_model(self) -> Path:
        return self.root / FINAL_MODEL_FOLDER

    @property
    def final_lock(self) -> Path:
        """Held by the one worker that trains and saves the final model."""
        return self.root / FINAL_LOCK_FILE

    @property
    def probe(self) -> Path:
        """The hackability probe of the final model (`qrm probe`)."""
        return self.root / PROBE_FILE

    @property
    def best_trial_model(self) -> Path:
        return self.root / BEST_TRIAL_MODEL_FOLDER

    @property
    def best_trial_record(self) -> Path:
        """Which trial the best trial's model is, its value and parameters."""
        return self.best_trial_model / BEST_TRIAL_RECORD_FILE

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def plots(self) -> Path:
        return self.root / PLOTS_FOLDER

    @property
    def trials(self) -> Path:
        """The trials' Trainer output_dir (no checkpoints; tracker runs when --report-to is set)."""
        return self.root / TRIALS_FOLDER

    @property
    def final_checkpoints(self) -> Path:
        """Model-only checkpoints of the final stage, deleted once its best epoch is reloaded."""
        return self.root / FINAL_CHECKPOINTS_FOLDER


__all__ = [
    "BEST_TRIAL_MODEL_FOLDER",
    "BEST_TRIAL_RECORD_FILE",
    "FINAL_CHECKPOINTS_FOLDER",
    "FINAL_LOCK_FILE",
    "FINAL_MODEL_FOLDER",
    "FINAL_SUMMARY_FILE",
    "HISTORY_FILE",
    "PLOTS_FOLDER",
    "PROBE_FILE",
    "REPORT_FILE",
    "STUDY_FILE",
    "TEST_METRICS_FILE",
    "TEST_PREDICTIONS_FILE",
    "TRIALS_FOLDER",
    "RunLayout",
]
