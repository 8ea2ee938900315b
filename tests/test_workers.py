"""Studies past one process: workers sharing a PostgreSQL study, a worker killed mid-trial, DDP in one trial.

Every worker is a real `scripts/search.py` process, as a user starts it.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def as_from_a_terminal() -> None:
    """A shell's background job (`cmd &` without job control, as CI runners and `nohup` start suites) begins with
    SIGINT ignored, the child inherits that, and Python then never installs its KeyboardInterrupt handler: Ctrl-C
    would do nothing. A worker started from a terminal has the default disposition; give it that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def worker(config: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "search.py"), "--config", str(config), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=as_from_a_terminal,
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def running_trial(
    storage: str, study_name: str, timeout: float = 120, reported: bool = False
) -> optuna.trial.FrozenTrial | None:
    """The first running trial that has drawn its point (so it is training), and with `reported` has also reported
    an epoch's value (so it is inside its training loop), or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(KeyError):  # the study is not created yet
            study = optuna.load_study(study_name=study_name, storage=storage)
            running = study.get_trials(states=(TrialState.RUNNING,))
            drawn = [trial for trial in running if trial.params and (trial.intermediate_values or not reported)]
            if drawn:
                return drawn[0]
    return None


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(run_config_file, postgres_url):
    config = run_config_file(n_trials=4, storage=postgres_url, study_name="shared")
    workers = [worker(config, "--search-only") for _ in range(2)]
    for process in workers:
        finish(process)
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    finished = study.get_trials(states=FINISHED)
    assert 4 <= len(finished) <= 4 + (len(workers) - 1)
    numbers = [trial.number for trial in study.trials]
    assert len(numbers) == len(set(numbers))
    assert all(trial.params and trial.value is not None for trial in finished)

    # The same command without --search-only: the target is met, so it goes straight to the final model.
    output = finish(worker(config))
    assert len(optuna.load_study(study_name="shared", storage=postgres_url).trials) == len(study.trials)
    assert '"model_dir"' in output


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_retried(tmp_path, run_config_file):
    storage = f"sqlite:///{tmp_path}/study.db"
    config = run_config_file(
        n_trials=3,
        storage=storage,
        study_name="crash",
        max_train_samples=1500,
        search_space={
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
            "num_epochs": 3,
            "batch_size": 16,
            "max_length": 32,
            "pooling": "mean",
        },
    )
    flags = ("--heartbeat-interval", "1", "--grace-period", "3")
    first = worker(config, *flags)
    running = running_trial(storage, "crash")
    assert running, "no trial started"
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    # The trial the worker was running when it died: the storage still says RUNNING.
    (killed,) = optuna.load_study(study_name="crash", storage=storage).get_trials(states=(TrialState.RUNNING,))
    time.sleep(4)  # past the grace period: the killed trial's heartbeat is stale

    finish(worker(config, *flags))
    study = optuna.load_study(study_name="crash", storage=storage)
    by_number = {trial.number: trial for trial in study.trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.get_trials(states=FINISHED)) == 3
    history = json.loads((tmp_path / "results" / "tiny-modernbert0" / "optimization_history.json").read_text())
    assert [entry["trial"] for entry in history["optimization_history"]] == [t.number for t in complete]
    assert history["best_value"] == study.best_value


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_the_same_command_resumes(tmp_path, run_config_file):
    storage = f"sqlite:///{tmp_path}/study.db"
    # Trials long enough (8 epochs, seconds each), and three of them, so that Ctrl-C lands inside one and not after
    # the search, even when this process, starved of CPU by the worker, sends it seconds after it saw a trial run.
    space = {**yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())["search_space"], "num_epochs": 8}
    n_trials = 3
    config = run_config_file(
        n_trials=n_trials, storage=storage, study_name="interrupted", max_train_samples=1500, search_space=space
    )
    first = worker(config, "--search-only")
    # Ctrl-C once a trial is inside its training loop (it has reported an epoch), where a user would press it.
    assert running_trial(storage, "interrupted", reported=True), "no trial reported an epoch"
    first.send_signal(signal.SIGINT)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 130, output[-3000:]
    assert "run the same command to resume" in output
    # The trial running when Ctrl-C came is failed; on a loaded machine earlier ones may have finished before it came.
    states = [trial.state for trial in optuna.load_study(study_name="interrupted", storage=storage).trials]
    assert states[-1] == TrialState.FAIL and set(states[:-1]) <= {TrialState.COMPLETE}, (states, output[-3000:])

    finish(worker(config, "--search-only"))
    study = optuna.load_study(study_name="interrupted", storage=storage)
    assert [trial.state for trial in study.trials] == [*states, *[TrialState.COMPLETE] * (n_trials + 1 - len(states))]


@pytest.mark.slow
def test_two_process_ddp_trials_with_pruning(tmp_path, run_config_file):
    """accelerate launch with 2 CPU processes (gloo): both ranks train each trial; pruning does not hang."""
    storage = f"sqlite:///{tmp_path}/study.db"
    space = {
        "learning_rate": {"type": "categorical", "choices": [0.002, 1.0e-9]},
        "num_epochs": 3,
        "batch_size": 16,
        "max_length": 32,
        "pooling": "mean",
        "head_lr_multiplier": 10.0,
    }
    config = run_config_file(n_trials=6, storage=storage, study_name="ddp", pruner="median", search_space=space)
    study = optuna.create_study(storage=storage, study_name="ddp")
    for rate in [0.002] * 4 + [1.0e-9] * 2:  # four learners set the median; two that cannot learn fall behind it
        study.enqueue_trial({"learning_rate": rate})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "scripts" / "search.py"),
        "--config",
        str(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    study = optuna.load_study(study_name="ddp", storage=storage)
    assert len(study.get_trials(states=FINISHED)) == 6
    assert study.get_trials(states=(TrialState.PRUNED,)), "no trial was pruned"
    seen = {}
    for rank, number, params in re.findall(r"rank (\d), trial (\d+): (\{.*\})", output):
        seen.setdefault(int(number), {})[int(rank)] = params
    assert sorted(seen) == list(range(6))
    assert all(ranks.keys() == {0, 1} and ranks[0] == ranks[1] for ranks in seen.values())
    assert result.stdout.count('"model_dir"') == 1  # only rank 0 reports (and writes)
