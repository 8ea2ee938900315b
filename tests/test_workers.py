"""Studies past one process: workers sharing a PostgreSQL study, a worker killed mid-trial, DDP in one trial.

Every worker is a real `scripts/search.py` process, as a user starts it. A signal meant for the middle of a trial
is sent while the worker stands still there (SIGSTOP), never on a timer, so the tests hold on a loaded machine.
"""

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
import sqlalchemy.exc
import yaml
from conftest import REPO
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from qrm_hf.search.storage import WORKER_ATTR, Worker, make_storage
from qrm_hf.search.trials import summarize

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


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


# An upper bound for every wait on a worker: generous, so that a loaded machine only makes a test slower.
DEADLINE = 300


def new_study(url: str, study_name: str) -> BaseStorage:
    """Create the study before any worker starts (so the test never races a worker creating tables); return the
    storage to read it through (any URL qrm takes, the journal too)."""
    storage = make_storage(url, heartbeat_interval=None)
    optuna.create_study(storage=storage, study_name=study_name)
    return storage


def freeze_in_a_trial(
    process: subprocess.Popen, storage: BaseStorage, study_name: str, last_epoch: int | None = None
) -> FrozenTrial:
    """Stop `process` (SIGSTOP) inside a trial and return that trial as the storage holds it while the process
    stands still: RUNNING, inside its training loop (an epoch reported), and with `last_epoch` before its last one.

    The storage is polled (at most DEADLINE seconds) until such a trial shows; the worker is then stopped and the
    storage read again, so what the caller does next lands in that trial however slow or fast the machine is. If
    the trial moved on in between, the worker is resumed and the wait goes on.
    """

    def in_training(trial: FrozenTrial) -> bool:
        epochs = len(trial.intermediate_values)
        return trial.state == TrialState.RUNNING and epochs >= 1 and (last_epoch is None or epochs < last_epoch)

    def trials_in_training() -> list[FrozenTrial]:
        try:
            return [t for t in optuna.load_study(study_name=study_name, storage=storage).trials if in_training(t)]
        except sqlalchemy.exc.OperationalError:  # SQLite locked by the worker, maybe stopped mid-commit
            return []

    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if trials_in_training():
            process.send_signal(signal.SIGSTOP)
            _, status = os.waitpid(process.pid, os.WUNTRACED)  # returns once the worker has stopped
            assert os.WIFSTOPPED(status), f"the worker exited (status {status}) before it was stopped in a trial"
            frozen = trials_in_training()
            if frozen:
                return frozen[0]
            process.send_signal(signal.SIGCONT)
        assert process.poll() is None, f"the worker exited before a trial was caught running: {process.stdout.read()}"
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no trial in training within {DEADLINE}s: {process.communicate()[0][-3000:]}")


def kill_config(run_config_file, storage: str, **values) -> Path:
    """Three trials of three epochs on 1,500 rows: an epoch is reported well before a trial ends."""
    return run_config_file(
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
        **values,
    )


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
@pytest.mark.parametrize(
    "case",
    ["default-heartbeat", "no-heartbeat", "journal", "other-host"],
)
def test_killed_worker_trial_is_failed_and_its_point_run_again_by_the_next_worker(tmp_path, run_config_file, case):
    """kill -9 inside a trial, the next worker started at once: the dead trial is failed and a new trial with its
    parameters completes, with the heartbeat (default 60 s, grace 180 s: long after this test), without it, and
    with the journal storage. A worker recorded on another host is left to the heartbeat (here 1 s, grace 3 s)."""
    url = f"journal://{tmp_path}/study.log" if case == "journal" else f"sqlite:///{tmp_path}/study.db"
    config = kill_config(run_config_file, url, **({"heartbeat_interval": None} if case == "no-heartbeat" else {}))
    flags = ("--heartbeat-interval", "1", "--grace-period", "3") if case == "other-host" else ()
    full_run = case == "default-heartbeat"  # the others search only; this one also writes the history and report
    if not full_run:
        flags = (*flags, "--search-only")
    storage = new_study(url, "crash")

    first = worker(config, *flags)
    killed = freeze_in_a_trial(first, storage, "crash")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=DEADLINE)
    assert first.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="crash", storage=storage)
    assert study.trials[killed.number].state == TrialState.RUNNING  # the storage cannot know by itself
    assert Worker.of_trial(study.trials[killed.number]).pid == first.pid
    if case == "other-host":
        # As if the worker had run on another machine: this one cannot judge it, the heartbeat must.
        recorded = {**Worker.of_trial(killed).to_json(), "host": "elsewhere.example"}
        study._storage.set_trial_system_attr(killed._trial_id, WORKER_ATTR, recorded)
        assert (summarize(study).counts["running"], summarize(study).counts["interrupted"]) == (1, 0)
        time.sleep(4)  # at least the grace period since the frozen worker's last heartbeat (a lower bound only)
    else:
        # Even before another worker starts, the summary (the report) does not call it running.
        assert (summarize(study).counts["running"], summarize(study).counts["interrupted"]) == (0, 1)

    output = finish(worker(config, *flags))
    study = optuna.load_study(study_name="crash", storage=storage)
    assert study.trials[killed.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, output[-3000:]
    assert retries[0].params == killed.params
    assert retries[0].system_attrs["retry_history"] == [killed.number]
    assert Worker.of_trial(retries[0]) != Worker.of_trial(killed)  # the new worker recorded itself
    assert len(study.get_trials(states=FINISHED)) == 3
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    if case != "other-host":
        assert f"trial {killed.number}: its worker (" in output
        assert "marked FAIL, its parameters queued again (retry 1 of 3)" in output
    counts = summarize(study).counts
    assert (counts["running"], counts["interrupted"], counts["fail"]) == (0, 0, 1)
    if full_run:
        run_dir = tmp_path / "results" / "tiny-modernbert0"
        history = json.loads((run_dir / "optimization_history.json").read_text())
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert [entry["trial"] for entry in history["optimization_history"]] == [t.number for t in complete]
        assert history["best_value"] == study.best_value
        by_state = history["trials_by_state"]
        assert (by_state["running"], by_state["interrupted"], by_state["fail"]) == (0, 0, 1)
        report = (run_dir / "report.md").read_text()
        assert "still running" not in report and "interrupted (worker gone)" in report  # its row, counting 0


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_the_same_command_resumes(tmp_path, run_config_file):
    url = f"sqlite:///{tmp_path}/study.db"
    epochs = 4
    space = {**yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())["search_space"], "num_epochs": epochs}
    n_trials = 3
    config = run_config_file(
        n_trials=n_trials, storage=url, study_name="interrupted", max_train_samples=1500, search_space=space
    )
    storage = new_study(url, "interrupted")
    first = worker(config, "--search-only")
    # Ctrl-C inside a trial's training loop, before its last epoch, where a user would press it: the worker is
    # stopped there, Ctrl-C sent, and the worker resumed, so the signal lands in that trial on any machine.
    interrupted = freeze_in_a_trial(first, storage, "interrupted", last_epoch=epochs)
    first.send_signal(signal.SIGINT)
    first.send_signal(signal.SIGCONT)
    output, _ = first.communicate(timeout=DEADLINE)
    assert first.returncode == 130, output[-3000:]
    assert "run the same command to resume" in output
    # The trial running when Ctrl-C came is failed; the trials before it had finished, none started after it.
    states = [trial.state for trial in optuna.load_study(study_name="interrupted", storage=storage).trials]
    assert states == [TrialState.COMPLETE] * interrupted.number + [TrialState.FAIL], (states, output[-3000:])

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
