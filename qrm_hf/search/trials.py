"""Which trials count, and how each trial's point was chosen: one definition for the search and the report.

Imports only Optuna (and the storage module), so the report (and its command) can use it without torch or
transformers.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .storage import Worker

# What `n_trials` counts, the pruner compares, and the report calls finished.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# How a trial's point was chosen, recorded by the search as the trial's `drawn_by` user attribute.
DRAWN_BY = "drawn_by"
WARM_START, STARTUP, MODELLED = "warm start", "random start-up", "sampler"
ORIGINS = (WARM_START, STARTUP, MODELLED)
# Trial states in the order the report and the history file list them.
STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
# Counted apart from `running`: trials the storage still calls RUNNING whose worker is known to be gone.
INTERRUPTED = "interrupted"


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete and pruned trials, the ones that count towards `n_trials`."""
    return study.get_trials(deepcopy=False, states=FINISHED)


def origin_at_start(trial: optuna.Trial, startup: int) -> str:
    """How a starting trial's point is chosen: `warm start` for an enqueued point, `random start-up` while
    fewer than `startup` trials have finished (TPE and GP draw those at random), else `sampler`."""
    trials = trial.study.get_trials(deepcopy=False)
    this = next(stored for stored in trials if stored.number == trial.number)
    if "fixed_params" in this.system_attrs:
        return WARM_START
    if sum(stored.state in FINISHED for stored in trials) < startup:
        return STARTUP
    return MODELLED


def worker_gone(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's worker is known to be dead (it ran on this machine and its process is gone): the
    trial will not finish, and the next worker to start here fails it and runs its point again."""
    if trial.state != TrialState.RUNNING:
        return False
    worker = Worker.of_trial(trial)
    return worker is not None and worker.is_gone() is True


def trial_origin(trial: FrozenTrial) -> str:
    """How a stored trial's point was chosen (`sampler` for trials of studies that did not record it)."""
    if "fixed_params" in trial.system_attrs:
        return WARM_START
    return trial.user_attrs.get(DRAWN_BY, MODELLED)


@dataclass(frozen=True)
class StudySummary:
    """What the storage says about a study, read once: trials by state and by origin, wall time, best trial,
    the completed trials, and the space's fixed values. The history file, the report and the card all use it.

    `counts` holds one entry per state of `STATES`, and `interrupted`: RUNNING trials whose worker is known to be
    gone, counted there and not under `running`.
    """

    study_name: str
    direction: str
    counts: dict[str, int]
    first_start: datetime.datetime | None
    last_complete: datetime.datetime | None
    best_trial: FrozenTrial | None
    origins: dict[str, int] = field(default_factory=dict)
    completed: tuple[FrozenTrial, ...] = ()
    fixed_params: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Complete + pruned trials: what `n_trials` counts."""
        return self.counts["complete"] + self.counts["pruned"]

    @property
    def wall_seconds(self) -> float | None:
        if self.first_start is None or self.last_complete is None:
            return None
        return (self.last_complete - self.first_start).total_seconds()

    @property
    def diverged(self) -> int:
        """Completed trials whose validation MSE is infinite: every evaluation scored NaN or infinity."""
        return sum(1 for trial in self.completed if trial.value is not None and math.isinf(trial.value))

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best_trial.params) if self.best_trial is not None else {}

    @property
    def best_value(self) -> float | None:
        return self.best_trial.value if self.best_trial is not None else None

    def to_json(self) -> dict[str, Any]:
        """optimization_history.json, as the original recipe wrote it (best params and value, every completed
        trial) plus the fixed values, the best trial's training record, and the trials by state."""
        best = self.best_trial
        return {
            "best_params": self.best_params,
            "best_value": self.best_value,
            "n_trials": self.finished,
            "optimization_history": [
                {"trial": trial.number, "value": trial.value, "params": trial.params} for trial in self.completed
            ],
            "fixed_params": self.fixed_params,
            "best_trial": {"number": best.number, **best.user_attrs} if best is not None else None,
            "study_name": self.study_name,
            "trials_by_state": self.counts,
        }


def summarize(study: optuna.Study, fixed_params: dict[str, Any] | None = None) -> StudySummary:
    """Read the study once: trials by state and origin, wall time (first start to last completion), best trial."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(trial.state == state for trial in trials) for state in STATES}
    counts[INTERRUPTED] = sum(worker_gone(trial) for trial in trials)
    counts["running"] -= counts[INTERRUPTED]
    starts = [trial.datetime_start for trial in trials if trial.datetime_start is not None]
    completions = [trial.datetime_complete for trial in trials if trial.datetime_complete is not None]
    completed = tuple(trial for trial in trials if trial.state == TrialState.COMPLETE)
    finished = [trial for trial in trials if trial.state in FINISHED]
    return StudySummary(
        study_name=study.study_name,
        direction=study.direction.name.lower(),
        counts=counts,
        first_start=min(starts, default=None),
        last_complete=max(completions, default=None),
        best_trial=study.best_trial if completed else None,
        origins={origin: sum(trial_origin(trial) == origin for trial in finished) for origin in ORIGINS},
        completed=completed,
        fixed_params=dict(fixed_params or {}),
    )


__all__ = [
    "DRAWN_BY",
    "FINISHED",
    "INTERRUPTED",
    "MODELLED",
    "ORIGINS",
    "STARTUP",
    "STATES",
    "StudySummary",
    "WARM_START",
    "finished_trials",
    "origin_at_start",
    "summarize",
    "trial_origin",
    "worker_gone",
]
