"""Which trials count, how each was drawn, and the study summary the history file, report and card share."""

import json

import optuna
from optuna.trial import TrialState

from qrm_hf.trials import MODELLED, STARTUP, WARM_START, origin_at_start, summarize, trial_origin


def test_origins_warm_start_then_start_up_then_the_sampler():
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.5})
    origins = []

    def objective(trial):
        origins.append(origin_at_start(trial, startup=2))
        return trial.suggest_float("x", 0.0, 1.0)

    study.optimize(objective, n_trials=4)
    assert origins == [WARM_START, STARTUP, MODELLED, MODELLED]
    assert trial_origin(study.trials[0]) == WARM_START
    assert trial_origin(study.trials[1]) == MODELLED  # not recorded as a user attribute: counted as the sampler's


def test_summary_counts_states_and_writes_the_history_file_keys():
    study = optuna.create_study()
    for value in (0.3, 0.1):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, value)
    pruned = study.ask()
    pruned.suggest_float("x", 0.0, 1.0)
    study.tell(pruned, state=TrialState.PRUNED)
    study.ask()  # still running
    summary = summarize(study, {"pooling": "mean"})
    assert summary.counts == {"complete": 2, "pruned": 1, "fail": 0, "running": 1, "waiting": 0}
    assert summary.finished == 3 and summary.best_value == 0.1
    data = json.loads(json.dumps(summary.to_json()))
    assert data["n_trials"] == 3 and data["best_value"] == 0.1 and data["fixed_params"] == {"pooling": "mean"}
    assert [entry["trial"] for entry in data["optimization_history"]] == [0, 1]
    assert data["best_trial"]["number"] == 1
