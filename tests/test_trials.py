"""Which trials count, how each was drawn, and the study summary the history file, report and card share."""

import json
import subprocess

import optuna
from optuna.trial import TrialState

from qrm_hf.search.storage import WORKER_ATTR, Worker, record_worker
from qrm_hf.search.trials import MODELLED, STARTUP, WARM_START, origin_at_start, summarize, trial_origin, worker_gone


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
    assert summary.counts == {"complete": 2, "pruned": 1, "fail": 0, "running": 1, "waiting": 0, "interrupted": 0}
    assert summary.finished == 3 and summary.best_value == 0.1
    data = json.loads(json.dumps(summary.to_json()))
    assert data["n_trials"] == 3 and data["best_value"] == 0.1 and data["fixed_params"] == {"pooling": "mean"}
    assert [entry["trial"] for entry in data["optimization_history"]] == [0, 1]
    assert data["best_trial"]["number"] == 1


def dead_worker() -> dict:
    """The recorded identity of a real process that has exited (and been collected)."""
    child = subprocess.Popen(["sleep", "600"])
    worker = Worker.of_process(child.pid)
    child.kill()
    child.wait()
    return worker.to_json()


def test_a_running_trial_whose_worker_is_gone_counts_as_interrupted_not_running():
    study = optuna.create_study()
    dead = study.ask()
    study._storage.set_trial_system_attr(dead._trial_id, WORKER_ATTR, dead_worker())
    alive = study.ask()
    record_worker(study, study.trials[alive.number])
    unrecorded = study.ask()  # no worker recorded (an older version's trial): cannot be judged, still running
    trials = study.trials
    assert [worker_gone(trials[n]) for n in (dead.number, alive.number, unrecorded.number)] == [True, False, False]
    summary = summarize(study)
    assert (summary.counts["running"], summary.counts["interrupted"]) == (2, 1)
    assert summary.to_json()["trials_by_state"]["interrupted"] == 1
    study.tell(dead, state=TrialState.FAIL)  # once failed, it is a failed trial like any other
    assert not worker_gone(study.trials[dead.number])
    assert (summarize(study).counts["fail"], summarize(study).counts["interrupted"]) == (1, 0)
