"""Storages by URL, and bad storages or studies refused before any training, leaving existing studies intact."""

import dataclasses
import importlib.util
import os
import subprocess
import sys

import optuna
import pytest
from conftest import free_port, load_script
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from qrm_hf.run.config import RunConfig
from qrm_hf.search.space import SearchSpace


def search_main(argv):
    return load_script("search").main(argv)


def test_malformed_storage_url_is_refused(run_config_file, capsys):
    assert search_main(["--config", str(run_config_file()), "--storage", "sqlite//no-slashes.db"]) == 2
    assert "is not a storage URL" in capsys.readouterr().err


def test_unreachable_database_is_refused_with_password_hidden(run_config_file, capsys):
    url = f"postgresql+psycopg2://qrm:hunter2@127.0.0.1:{free_port()}/optuna"
    assert search_main(["--config", str(run_config_file()), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "hunter2" not in err and "***" in err


def existing_study(tmp_path, direction="minimize", distribution=None):
    storage = f"sqlite:///{tmp_path}/shared.db"
    study = optuna.create_study(storage=storage, study_name="shared", direction=direction)
    study.add_trial(
        optuna.create_trial(
            params={"dropout": 0.1},
            distributions={"dropout": distribution or optuna.distributions.FloatDistribution(0, 1)},
            value=0.5,
        )
    )
    return storage


@pytest.mark.parametrize(
    ("direction", "distribution", "message"),
    [
        ("maximize", None, "maximizes its objective"),
        ("minimize", optuna.distributions.FloatDistribution(0.0, 0.9), "was searched over another space"),
    ],
)
def test_incompatible_existing_study_is_refused_and_untouched(
    tmp_path, run_config_file, capsys, direction, distribution, message
):
    storage = existing_study(tmp_path, direction, distribution)
    before = optuna.load_study(study_name="shared", storage=storage).trials
    code = search_main(["--config", str(run_config_file()), "--storage", storage, "--study-name", "shared"])
    assert code == 2
    assert message in capsys.readouterr().err
    after = optuna.load_study(study_name="shared", storage=storage)
    assert after.trials == before
    assert after.direction.name.lower() == direction


def test_journal_storage_on_a_shared_file_system(tmp_path, run_config_file):
    assert (
        search_main(
            ["--config", str(run_config_file()), "--storage", f"journal://{tmp_path}/study.log", "--search-only"]
        )
        == 0
    )
    journal = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    (name,) = optuna.get_all_study_names(journal)
    study = optuna.load_study(study_name=name, storage=journal)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2
    assert not (tmp_path / "results" / "tiny-modernbert0" / "final_model").exists()  # --search-only


def study_with_one_drawn_parameter(tmp_path, config, **trial):
    """A study whose only trial holds the first parameter of the run's space and nothing else."""
    storage = f"sqlite:///{tmp_path}/shared.db"
    space = SearchSpace.from_dict(RunConfig.from_yaml(config).search_space).distributions()
    name = sorted(space)[0]
    value = space[name].choices[0] if hasattr(space[name], "choices") else space[name].low
    study = optuna.create_study(storage=storage, study_name="shared")
    study.add_trial(optuna.create_trial(params={name: value}, distributions={name: space[name]}, **trial))
    return storage


def test_study_with_a_trial_stopped_while_drawing_its_point_resumes(tmp_path, run_config_file):
    """Ctrl-C between two suggestions leaves a failed trial holding part of the space; the study still resumes."""
    config = run_config_file()
    storage = study_with_one_drawn_parameter(tmp_path, config, state=optuna.trial.TrialState.FAIL)
    code = search_main(["--config", str(config), "--storage", storage, "--study-name", "shared", "--search-only"])
    assert code == 0
    states = [trial.state for trial in optuna.load_study(study_name="shared", storage=storage).trials]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2


def test_finished_trial_missing_a_parameter_of_the_space_is_refused(tmp_path, run_config_file, capsys):
    config = run_config_file()
    storage = study_with_one_drawn_parameter(tmp_path, config, value=0.1)
    assert search_main(["--config", str(config), "--storage", storage, "--study-name", "shared"]) == 2
    assert "was searched over another space" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="shared", storage=storage).trials) == 1


def test_plain_postgresql_urls_use_the_driver_the_postgres_extra_installs():
    from qrm_hf.search.storage import with_driver

    assert importlib.util.find_spec("psycopg") is None, "this checks the machine has psycopg2 only, as the extra does"
    assert with_driver("postgresql://qrm:pw@db-host/optuna") == "postgresql+psycopg2://qrm:pw@db-host/optuna"
    assert with_driver("postgres://qrm:pw@db-host/optuna") == "postgresql+psycopg2://qrm:pw@db-host/optuna"
    assert with_driver("postgresql+psycopg2://qrm@db-host/optuna") == "postgresql+psycopg2://qrm@db-host/optuna"
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"


def test_plain_postgresql_url_reaches_the_server_with_password_hidden():
    """The driver is found: the error is the unreachable server, not a missing psycopg."""
    from qrm_hf.search.storage import StorageError, make_storage

    with pytest.raises(
        StorageError, match=r"--storage 'postgresql://qrm:\*\*\*@127\.0\.0\.1:\d+/optuna': cannot connect"
    ):
        make_storage(f"postgresql://qrm:hunter2@127.0.0.1:{free_port()}/optuna")


@pytest.mark.slow
def test_plain_postgresql_url_opens_a_real_study(postgres_url):
    from qrm_hf.search.storage import make_storage

    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    study = optuna.create_study(storage=make_storage(plain, heartbeat_interval=None), study_name="plain-url")
    study.add_trial(optuna.create_trial(params={}, distributions={}, value=0.5))
    assert optuna.load_study(study_name="plain-url", storage=postgres_url).trials[0].value == 0.5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:////proc/nope/x.db", r"cannot create the folder /proc/nope for the SQLite file \(No such file"),
        ("sqlite:///{tmp}/not-a-db.db", r"{tmp}/not-a-db\.db is not a SQLite database \(file is not a database\)"),
        ("sqlite:///{tmp}", r"{tmp} is a folder; give a file, e\.g\. {tmp}/study\.db"),
        ("journal://{tmp}/not-a-db.db", r"{tmp}/not-a-db\.db is not an Optuna journal"),
        ("journal://{tmp}", r"{tmp} is a folder; give a file, e\.g\. {tmp}/study\.log"),
    ],
)
def test_storage_files_that_cannot_be_used_are_named(tmp_path, url, message):
    from qrm_hf.search.storage import StorageError, make_storage

    (tmp_path / "not-a-db.db").write_text("query\tscore\nhow do owls hunt ?\t1.0\n" * 50)
    before = (tmp_path / "not-a-db.db").read_bytes()

    with pytest.raises(StorageError, match=message.format(tmp=tmp_path)):
        make_storage(url.format(tmp=tmp_path))

    assert (tmp_path / "not-a-db.db").read_bytes() == before


def test_report_on_a_file_that_is_not_a_database_exits_2(tmp_path, capsys):
    from qrm_hf.commands import main

    (tmp_path / "study.db").write_text("not sqlite\n" * 100)

    assert main(["report", "--storage", f"sqlite:///{tmp_path}/study.db", "--study-name", "x"]) == 2
    assert f"error: --storage 'sqlite:///{tmp_path}/study.db': {tmp_path}/study.db is not a SQLite database" in (
        capsys.readouterr().err
    )


def test_a_sqlite_path_that_cannot_be_created_stops_the_search_with_exit_2(run_config_file, capsys):
    assert search_main(["--config", str(run_config_file()), "--storage", "sqlite:////proc/nope/x.db"]) == 2
    assert (
        "error: --storage 'sqlite:////proc/nope/x.db': cannot create the folder /proc/nope" in capsys.readouterr().err
    )


# A worker as the search records it, reduced to Optuna: it starts a trial, draws its point, says so, and waits.
TRIAL_STARTER = """
import sys, time, optuna
from qrm_hf.search.storage import make_storage, record_worker

class RecordingSampler(optuna.samplers.RandomSampler):
    def before_trial(self, study, trial):
        record_worker(study, trial)

url, heartbeat = sys.argv[1], int(sys.argv[2]) or None
study = optuna.load_study(study_name="shared", storage=make_storage(url, heartbeat), sampler=RecordingSampler())
trial = study.ask()
trial.suggest_float("x", 0.0, 1.0)
print(trial.number, flush=True)
time.sleep(600)
"""


def killed_in_a_trial(url: str, heartbeat: int) -> int:
    """Start a real process that runs a trial of study `shared`, kill -9 it inside the trial; the trial's number."""
    child = subprocess.Popen(
        [sys.executable, "-c", TRIAL_STARTER, url, str(heartbeat)], stdout=subprocess.PIPE, text=True
    )
    line = child.stdout.readline()  # blocks until the trial runs (or the child exits)
    child.kill()
    child.wait(timeout=60)
    assert line.strip().isdigit(), f"the child started no trial (exit {child.returncode})"
    return int(line)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize(
    ("kind", "heartbeat"), [("sqlite", 60), ("sqlite", 0), ("journal", 0)], ids=["heartbeat", "no-heartbeat", "journal"]
)
def test_a_dead_workers_running_trial_is_failed_and_its_point_queued_again(tmp_path, caplog, kind, heartbeat):
    from qrm_hf.search.storage import WORKER_ATTR, Worker, make_storage, record_worker, retry_trials_of_dead_workers
    from qrm_hf.search.trials import summarize

    url = f"sqlite:///{tmp_path}/study.db" if kind == "sqlite" else f"journal://{tmp_path}/study.log"
    storage = make_storage(url, heartbeat or None)
    study = optuna.create_study(storage=storage, study_name="shared")
    dead = killed_in_a_trial(url, heartbeat)
    alive = study.ask()  # this process: alive
    record_worker(study, study.trials[alive.number])
    elsewhere = study.ask()  # a worker of another machine: left to the heartbeat
    storage.set_trial_system_attr(elsewhere._trial_id, WORKER_ATTR, {"host": "elsewhere.example", "pid": 1})
    counts = summarize(study).counts
    assert (counts["running"], counts["interrupted"]) == (2, 1)  # the dead worker's trial is not called running

    assert retry_trials_of_dead_workers(study, max_retry=1) == [dead]
    assert retry_trials_of_dead_workers(study, max_retry=1) == []  # once only
    by_number = {trial.number: trial for trial in study.trials}
    assert by_number[dead].state == TrialState.FAIL
    assert by_number[alive.number].state == by_number[elsewhere.number].state == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == by_number[dead].params and "x" in retry.params
    assert retry.system_attrs["failed_trial"] == dead and retry.system_attrs["retry_history"] == [dead]
    assert WORKER_ATTR not in retry.system_attrs  # the worker that takes it records itself
    counts = summarize(study).counts
    assert (counts["fail"], counts["waiting"], counts["running"], counts["interrupted"]) == (1, 1, 2, 0)
    assert "its parameters queued again (retry 1 of 1)" in caplog.text

    # The retry's worker dies too: failed, and not queued a second time (max_retry 1).
    again = killed_in_a_trial(url, heartbeat)
    assert again == retry.number  # the waiting trial was taken first
    taken = study.trials[again]
    assert Worker.of_trial(taken) is not None and Worker.of_trial(taken).pid != Worker.of_process().pid
    assert taken.params == retry.params
    assert retry_trials_of_dead_workers(study, max_retry=1) == [again]
    assert study.trials[again].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert "not retried (max_retry 1 reached)" in caplog.text


def test_a_worker_is_gone_once_its_process_exits_or_its_pid_is_reused():
    from qrm_hf.search.storage import Worker

    child = subprocess.Popen(["sleep", "600"])
    worker = Worker.of_process(child.pid)
    assert worker.is_gone() is False
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet collected: a zombie
    assert worker.is_gone() is True
    child.wait()
    assert worker.is_gone() is True

    this = Worker.of_process()
    assert this.is_gone() is False
    assert dataclasses.replace(this, started=this.started + 1).is_gone() is True  # the pid now runs another program
    # What this machine cannot tell is left to the heartbeat.
    assert dataclasses.replace(this, host="elsewhere.example").is_gone() is None
    assert dataclasses.replace(this, pid_namespace="pid:[1]").is_gone() is None
    assert dataclasses.replace(this, boot="another-boot", machine="another-machine").is_gone() is None
    assert dataclasses.replace(this, boot="another-boot").is_gone() is True  # this machine, restarted since


@pytest.mark.parametrize(
    "recorded",
    [
        None,
        "vm:123",
        {"host": "vm"},
        {"host": "vm", "pid": "123"},
        {"host": "vm", "pid": 0},
        {"host": "vm", "pid": 5, "started": "1"},
    ],
)
def test_a_trial_without_a_well_formed_worker_record_is_never_judged(recorded):
    from qrm_hf.search.storage import WORKER_ATTR, Worker, retry_trials_of_dead_workers

    study = optuna.create_study()
    trial = study.ask()
    if recorded is not None:
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, recorded)
    assert Worker.of_trial(study.trials[0]) is None
    assert retry_trials_of_dead_workers(study) == []
    assert study.trials[0].state == TrialState.RUNNING
