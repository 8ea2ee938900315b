"""report.md and scripts/report.py against real Optuna storage, with synthetic trials instead of training."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from conftest import REPO, final_summary, load_script
from optuna.trial import TrialState

from qrm_hf.reporting.report import _final_model_section, convergence_verdict, render_report, summarize, write_report
from qrm_hf.run.folder import Calibration, save_test_predictions
from qrm_hf.search.space import SearchSpace

SEARCH_SPACE = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["search_space"]
TEST_METRICS = {"mse": 0.021234567890123, "pearson": 0.8512, "accuracy": 0.875, "f1": 0.7, "n": 40}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_objective(space: dict, fail_trial: int | None = None):
    """Trials shaped like the search's: per-epoch reports, pruning, `training_summary` user attributes."""

    def objective(trial: optuna.Trial) -> float:
        params = SearchSpace.from_dict(space).suggest(trial)
        if trial.number == fail_trial:
            raise ValueError("CUDA out of memory (synthetic)")
        floor = 0.03 + 0.004 * (math.log10(params.get("learning_rate", 1e-5)) + 5) ** 2
        floor += 0.05 * params.get("dropout", 0.0)
        epochs = params.get("num_epochs", 3)
        for epoch in range(1, epochs + 1):
            trial.report(floor + 0.1 / epoch, step=epoch * 5)
            pruned = bool(trial.should_prune())
            if pruned or epoch == epochs:
                summary = {"epochs_run": float(epoch), "best_epoch": float(epoch), "stopped_early": False}
                summary.update(pruned=pruned, optimizer_steps=epoch * 5, train_seconds=0.25 * epoch)
                for key, value in summary.items():
                    trial.set_user_attr(key, value)
            if pruned:
                raise optuna.TrialPruned()
        return floor + 0.1 / epochs

    return objective


def make_study(storage: str, name: str, space: dict, n_trials: int, fail_trial: int | None = None) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    study.optimize(make_objective(space, fail_trial), n_trials=n_trials, catch=(ValueError,))
    return study


def table(text: str, header: str) -> dict[str, str]:
    """The rows of the Markdown table whose header row starts with `| header |`."""
    block = text[text.index(f"| {header} |") :].split("\n\n", 1)[0]
    rows = [line.strip("|").split(" | ") for line in block.splitlines()[2:]]
    return {key.strip(): value.strip() for key, value in rows}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A study with every trial state, and its report written with test metrics and predictions."""
    run_dir = tmp_path_factory.mktemp("run")
    storage = f"sqlite:///{run_dir / 'study.db'}"
    study = make_study(storage, "qrm", SEARCH_SPACE, n_trials=8, fail_trial=2)
    running = study.ask()
    running.suggest_float("dropout", 0.0, 0.5, step=0.05)
    running.report(0.3, step=5)
    study.enqueue_trial({"dropout": 0.25})
    rng = np.random.default_rng(0)
    references = rng.choice([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], size=120)
    predictions = np.clip(references + rng.normal(0, 0.15, size=120), 0, 1)
    path = write_report(study, run_dir, TEST_METRICS, (predictions, references))
    return storage, run_dir, path.read_text()


def test_report_counts_match_the_storage(reported):
    storage, run_dir, text = reported
    stored = optuna.load_study(study_name="qrm", storage=storage).get_trials(deepcopy=False)
    counts = table(text, "trials")
    for state, key in [
        (TrialState.COMPLETE, "complete"),
        (TrialState.PRUNED, "pruned"),
        (TrialState.FAIL, "fail"),
        (TrialState.RUNNING, "running"),
        (TrialState.WAITING, "waiting"),
    ]:
        assert counts[key] == str(sum(trial.state == state for trial in stored)), key
    assert (counts["fail"], counts["running"], counts["waiting"]) == ("1", "1", "1")
    assert int(counts["pruned"]) > 0
    assert counts["finished (complete + pruned)"] == str(int(counts["complete"]) + int(counts["pruned"]))
    assert counts["total"] == str(len(stored))
    assert "1 trial(s) still running: counted above, not treated as finished." in text


def test_report_best_trial_matches_the_storage(reported):
    storage, run_dir, text = reported
    best = optuna.load_study(study_name="qrm", storage=storage).best_trial
    line = re.search(r"Best value \(validation MSE\): (\S+) \(trial (\d+)\)", text)
    assert float(line.group(1)) == best.value  # exact: the report writes repr
    assert int(line.group(2)) == best.number
    params = table(text, "parameter")
    assert list(params) == list(best.params)
    for name, value in best.params.items():
        written = params[name]
        assert (float(written) == value) if isinstance(value, float) else (written == str(value)), name
    attributes = table(text, "attribute")
    assert attributes["optimizer_steps"] == str(best.user_attrs["optimizer_steps"])
    assert float(attributes["train_seconds"]) == best.user_attrs["train_seconds"]


def test_report_wall_time_runs_from_first_start_to_last_completion(reported):
    storage, run_dir, text = reported
    trials = optuna.load_study(study_name="qrm", storage=storage).get_trials(deepcopy=False)
    first = min(t.datetime_start for t in trials if t.datetime_start)
    last = max(t.datetime_complete for t in trials if t.datetime_complete)
    assert f"- Wall time: {(last - first).total_seconds():.1f} s" in text
    assert f"last completion ({last.isoformat(sep=' ', timespec='seconds')})" in text


def test_report_links_its_plots_and_test_results(reported):
    storage, run_dir, text = reported
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(link).stem for link in links} >= {"optimization_history", "contour", "test_predictions"}
    for link in links:
        assert not Path(link).is_absolute()
        assert (run_dir / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = table(text, "metric")
    assert metrics["mse"] == repr(TEST_METRICS["mse"])
    assert metrics["n"] == "40"
    study = optuna.load_study(study_name="qrm", storage=storage)
    assert convergence_verdict(study).message in text


def make_history(values: list[float], pruned_at: tuple[int, ...] = ()) -> optuna.Study:
    study = optuna.create_study(direction="minimize")
    for number, value in enumerate(values):
        trial = study.ask()
        trial.suggest_float("dropout", 0.0, 0.5)
        if number in pruned_at:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return study


def test_verdict_on_a_still_improving_history():
    study = make_history([1.0 / (number + 1) for number in range(8)])
    verdict = convergence_verdict(study)
    assert verdict.still_improving is True
    # The recent window is never shorter than three trials (a quarter of 8 would be two).
    assert (verdict.finished_trials, verdict.recent_trials) == (8, 3)
    assert verdict.best_before == 1 / 5 and verdict.best_now == 1 / 8
    assert verdict.relative_improvement == pytest.approx(0.375)
    assert "raise n_trials, e.g. to 16" in verdict.message


def test_verdict_on_a_flat_history():
    study = make_history([0.05] + [0.06 + 0.001 * number for number in range(11)])
    verdict = convergence_verdict(study)
    assert verdict.still_improving is False
    assert verdict.relative_improvement == 0.0
    assert "raise n_trials" not in verdict.message
    assert "converged" in verdict.message


@pytest.mark.parametrize(("last", "improving"), [(0.995, False), (0.98, True)])
def test_verdict_threshold_is_one_percent(last, improving):
    study = make_history([1.0, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, last])
    assert convergence_verdict(study).still_improving is improving


def test_verdict_counts_pruned_but_not_running_trials():
    study = make_history([0.5, 0.4, 0.3], pruned_at=())
    study.ask()  # a running trial is not finished
    verdict = convergence_verdict(study)
    assert verdict.still_improving is None
    assert verdict.message.startswith("too few trials to judge: 3 finished")
    judged = make_history([0.3, 0.4, 0.5, 0.0], pruned_at=(3,))
    assert convergence_verdict(judged).finished_trials == 4
    assert convergence_verdict(judged).still_improving is False


def test_report_calls_a_dead_workers_trial_interrupted_not_running():
    from qrm_hf.search.storage import WORKER_ATTR, Worker

    child = subprocess.Popen(["sleep", "600"])  # a real worker process, then gone
    worker = Worker.of_process(child.pid)
    child.kill()
    child.wait()
    study = make_history([0.5, 0.4], pruned_at=())
    trial = study.ask()
    trial.suggest_float("dropout", 0.0, 0.5)
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker.to_json())
    text = render_report(summarize(study), convergence_verdict(study), [], Path("."))
    counts = table(text, "trials")
    assert (counts["running"], counts["interrupted (worker gone)"], counts["total"]) == ("0", "1", "3")
    assert "still running" not in text
    assert "- 1 trial(s) interrupted (worker gone): the storage still says RUNNING" in text


def test_summary_of_an_empty_study():
    summary = summarize(optuna.create_study())
    assert summary.best_trial is None and summary.wall_seconds is None
    assert sum(summary.counts.values()) == 0


@pytest.fixture
def small_run(tmp_path):
    """A cheap study in a run folder: one searched parameter, so the contour is skipped."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"learning_rate": SEARCH_SPACE["learning_rate"], "num_epochs": {"type": "int", "low": 2, "high": 2}}
    make_study(storage, "small-qrm", space, n_trials=5)
    optuna.create_study(storage=storage, study_name="another")
    return storage, tmp_path


def test_script_writes_the_report_into_the_sqlite_folder(small_run, capsys):
    storage, run_dir = small_run
    assert load_script("report").main(["--storage", storage, "--study-name", "small-qrm"]) == 0
    report = run_dir / "report.md"
    assert capsys.readouterr().out.strip() == str(report)
    text = report.read_text()
    assert table(text, "trials")["complete"] == str(
        len(optuna.load_study(study_name="small-qrm", storage=storage).get_trials(states=(TrialState.COMPLETE,)))
    )
    assert "_Skipped: needs two parameters that vary in the completed trials, found 1._" in text
    assert "Final model on test" not in text


def test_script_adds_the_pipelines_test_results(small_run, tmp_path_factory):
    storage, _ = small_run
    output = tmp_path_factory.mktemp("elsewhere")
    (output / "test_metrics.json").write_text(json.dumps(TEST_METRICS))
    save_test_predictions([0.9, 0.1, 0.75, 0.3], [1.0, 0.0, 0.8, 0.2], output / "test_predictions.json")
    argv = ["--storage", storage, "--study-name", "small-qrm", "--output-dir", str(output)]
    assert load_script("report").main(argv) == 0
    text = (output / "report.md").read_text()
    assert table(text, "metric")["accuracy"] == "0.875"
    assert "![Predicted vs true score on test](plots/test_predictions.png)" in text
    assert (output / "plots" / "test_thresholds.png").stat().st_size > 1024


def test_script_names_the_missing_study_and_lists_the_others(small_run, capsys):
    storage, run_dir = small_run
    assert load_script("report").main(["--storage", storage, "--study-name", "smal-qrm"]) == 2
    error = capsys.readouterr().err
    assert "study 'smal-qrm' not found" in error
    assert "available studies: another, small-qrm" in error
    assert not (run_dir / "report.md").exists()


def test_script_does_not_create_a_missing_database(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    assert load_script("report").main(["--storage", f"sqlite:///{missing}", "--study-name", "qrm"]) == 2
    assert f"no storage file at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_script_reads_a_journal_storage(tmp_path, capsys):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    log = tmp_path / "study.log"
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(log))), study_name="journal-qrm")
    study.optimize(make_objective({"dropout": SEARCH_SPACE["dropout"]}), n_trials=4)
    assert load_script("report").main(["--storage", f"journal://{log}", "--study-name", "journal-qrm"]) == 0
    assert table((tmp_path / "report.md").read_text(), "trials")["total"] == "4"


def test_script_rejects_a_storage_that_is_not_a_url(capsys):
    assert load_script("report").main(["--storage", "results/m/study.db", "--study-name", "qrm"]) == 2
    assert "is not a storage URL" in capsys.readouterr().err


def test_no_convergence_verdict_while_the_sampler_is_drawing_at_random():
    """Six trials, all warm-start or random start-up draws, the last ones flat: nothing is 'converged' yet."""
    study = optuna.create_study(direction="minimize")
    study.enqueue_trial({"dropout": 0.1})
    for number in range(6):
        trial = study.ask()
        trial.suggest_float("dropout", 0.0, 0.5)
        if number:
            trial.set_user_attr("drawn_by", "random start-up")
        study.tell(trial, 0.05 if number == 0 else 0.06)
    verdict = convergence_verdict(study)
    assert verdict.still_improving is None
    assert "converged" not in verdict.message
    assert verdict.message.startswith("not judged yet: 6 of the 6 finished trials were warm-start points")
    assert "--n-trials 12" in verdict.message
    # Three more from the sampler's model, still flat: now the study can be judged.
    for _ in range(3):
        trial = study.ask()
        trial.suggest_float("dropout", 0.0, 0.5)
        trial.set_user_attr("drawn_by", "sampler")
        study.tell(trial, 0.07)
    judged = convergence_verdict(study)
    assert judged.still_improving is False and judged.recent_trials == 3
    text = render_report(summarize(study), judged, [], Path("."))
    assert "How the finished trials' points were chosen: 1 warm start, 5 random start-up, 3 sampler." in text


def test_script_refuses_an_output_dir_that_is_a_file(small_run, tmp_path_factory, capsys):
    storage, _ = small_run
    not_a_folder = tmp_path_factory.mktemp("x") / "report.md"
    not_a_folder.write_text("")
    argv = ["--storage", storage, "--study-name", "small-qrm", "--output-dir", str(not_a_folder)]
    assert load_script("report").main(argv) == 2
    assert f"--output-dir {not_a_folder} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(("encoder_dropout", "advice"), [(None, "encoder_dropout 0"), (0.0, "off already")])
def test_a_flagged_offset_gets_the_advice_that_fits_the_encoders_dropout(encoder_dropout, advice):
    summary = final_summary(encoder_dropout=encoder_dropout, calibration=Calibration(-0.029, -0.01, -0.012, True))
    (flagged,) = [line for line in _final_model_section(summary) if line.startswith("**Flagged:**")]
    assert advice in flagged
