"""Which trials count, and how each trial's point was chosen: one definition for the search and the report.

Imports only Optuna, so the report (and its command) can use it without torch or transformers.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

# What `n_trials` counts, the pruner compares, and the report calls finished.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# How a trial's point was chosen, recorded by the search as the trial's `drawn_by` user attribute.
DRAWN_BY = "drawn_by"
WARM_START, STARTUP, MODELLED = "warm start", "random start-up", "sampler"
ORIGINS = (WARM_START, STARTUP, MODELLED)


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


def trial_origin(trial: FrozenTrial) -> str:
    """How a stored trial's point was chosen (`sampler` for trials of studies that did not record it)."""
    if "fixed_params" in trial.system_attrs:
        return WARM_START
    return trial.user_attrs.get(DRAWN_BY, MODELLED)


__all__ = [
    "DRAWN_BY",
    "FINISHED",
    "MODELLED",
    "ORIGINS",
    "STARTUP",
    "WARM_START",
    "finished_trials",
    "origin_at_start",
    "trial_origin",
]
