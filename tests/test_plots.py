"""Plots of a search and of the final model, from real Optuna studies built without training any model."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
from conftest import REPO

matplotlib.use("Agg")

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from qrm_hf.metrics import PAPER_THRESHOLD
from qrm_hf.reporting.plots import (
    FINAL_MODEL_PLOTS,
    STUDY_PLOTS,
    final_model_plots,
    parameter_importances,
    study_plots,
    threshold_curve,
    varying_parameters,
)
from qrm_hf.search.space import SearchSpace

SEARCH_SPACE = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["search_space"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS_PER_EPOCH = 7

optuna.logging.set_verbosity(optuna.logging.WARNING)


def fake_training(trial: optuna.Trial, space: dict = SEARCH_SPACE) -> float:
    """A trial as the search runs it: the default space's parameters, a validation MSE reported after each epoch
    at the optimizer step (as transformers does), pruning, and the user attributes of `training_summary`."""
    params = SearchSpace.from_dict(space).suggest(trial)
    lr = params.get("learning_rate", 1e-5)
    floor = 0.03 + 0.004 * (math.log10(lr) + 5) ** 2 + 0.05 * params.get("dropout", 0.0)
    epochs = params.get("num_epochs", 3)
    values = []
    for epoch in range(1, epochs + 1):
        values.append(floor + 0.1 / epoch)
        trial.report(values[-1], step=epoch * STEPS_PER_EPOCH)
        pruned = bool(trial.should_prune())
        summary = {
            "epochs_run": float(epoch),
            "best_epoch": float(epoch),
            "stopped_early": False,
            "pruned": pruned,
            "optimizer_steps": epoch * STEPS_PER_EPOCH,
            "train_seconds": 0.5 * epoch,
            "train_samples_per_second": 100.0,
        }
        if pruned:
            for key, value in summary.items():
                trial.set_user_attr(key, value)
            raise optuna.TrialPruned()
    for key, value in summary.items():
        trial.set_user_attr(key, value)
    return min(values)


def make_study(path: Path, n_trials: int, objective=fake_training, **kwargs) -> optuna.Study:
    study = optuna.create_study(
        storage=f"sqlite:///{path}",
        study_name="plots",
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        **kwargs,
    )
    study.optimize(objective, n_trials=n_trials)
    return study


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 1024, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def by_name(records):
    return {record.name: record for record in records}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("searched")
    study = make_study(folder / "study.db", n_trials=12)
    return study, study_plots(study, folder / "plots")


def test_every_study_plot_is_a_valid_png(searched):
    study, records = searched
    assert [record.name for record in records] == list(STUDY_PLOTS)
    for name, path, note in records:
        assert path is not None, f"{name} skipped: {note}"
        assert path.name == f"{name}.png"
        assert_png(path)
        assert note


def test_captions_count_the_trials_in_storage(searched):
    study, records = searched
    trials = study.get_trials(deepcopy=False)
    complete = sum(trial.state == TrialState.COMPLETE for trial in trials)
    pruned = sum(trial.state == TrialState.PRUNED for trial in trials)
    assert pruned > 0, "the synthetic study should prune some trials"
    notes = {name: note for name, _, note in records}
    assert f"of {complete} completed trials" in notes["optimization_history"]
    assert f"of {len(trials)} reporting trials, {pruned} pruned" in notes["intermediate_values"]


def test_importances_are_reproducible_and_pick_the_contour(searched):
    study, records = searched
    varying, _ = varying_parameters(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    first = parameter_importances(study, varying)
    assert first == parameter_importances(study, varying)
    assert set(first) == set(varying) and set(varying) <= {
        name for name, spec in SEARCH_SPACE.items() if isinstance(spec, dict)
    }
    top = list(first)[:2]
    assert f"{top[0]} and {top[1]}" in by_name(records)["contour"].note


def test_plots_leave_the_callers_matplotlib_style_alone(tmp_path):
    before = plt.rcParams["axes.facecolor"]
    space = {name: SEARCH_SPACE[name] for name in ("learning_rate", "dropout")}
    study = make_study(tmp_path / "study.db", n_trials=4, objective=lambda trial: fake_training(trial, space))
    study_plots(study, tmp_path / "plots")
    assert plt.rcParams["axes.facecolor"] == before  # optuna's plots switch to ggplot (#E5E5E5)


def test_single_trial_study_skips_with_notes(tmp_path):
    study = make_study(tmp_path / "study.db", n_trials=1)
    records = by_name(study_plots(study, tmp_path / "plots"))
    for name in ("optimization_history", "intermediate_values", "timeline"):
        assert_png(records[name].path)
    for name in ("param_importances", "parallel_coordinate"):
        assert records[name].path is None
        assert "at least 2 completed trials, the study has 1" in records[name].note
    assert records["slice"].path is None
    assert "no parameter takes more than one value" in records["slice"].note
    assert records["contour"].path is None
    assert "found 0" in records["contour"].note
    assert not (tmp_path / "plots" / "contour.png").exists()


def test_constant_parameters_are_left_out(tmp_path):
    space = {
        "learning_rate": SEARCH_SPACE["learning_rate"],
        "dropout": {"type": "float", "low": 0.1, "high": 0.1},
        "activation": {"type": "categorical", "choices": ["gelu"]},
    }
    study = make_study(tmp_path / "study.db", n_trials=5, objective=lambda trial: fake_training(trial, space))
    records = by_name(study_plots(study, tmp_path / "plots"))
    assert_png(records["param_importances"].path)
    assert "Same value in every completed trial, left out: activation, dropout." in records["param_importances"].note
    assert_png(records["slice"].path)
    assert records["contour"].path is None
    assert "two parameters that vary in the completed trials, found 1" in records["contour"].note


def test_only_constant_parameters_skip_every_parameter_plot(tmp_path):
    space = {
        "activation": {"type": "categorical", "choices": ["gelu"]},
        "num_epochs": {"type": "int", "low": 3, "high": 3},
    }
    study = make_study(tmp_path / "study.db", n_trials=4, objective=lambda trial: fake_training(trial, space))
    records = by_name(study_plots(study, tmp_path / "plots"))
    for name in ("param_importances", "parallel_coordinate", "slice", "contour"):
        assert records[name].path is None, name
    assert records["param_importances"].note == "no parameter takes more than one value in the completed trials"
    assert_png(records["optimization_history"].path)


def test_equal_values_skip_importances(tmp_path):
    def flat(trial):
        trial.suggest_float("dropout", 0.0, 0.5)
        trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True)
        return 0.05

    study = make_study(tmp_path / "study.db", n_trials=4, objective=flat)
    records = by_name(study_plots(study, tmp_path / "plots"))
    assert "same value" in records["param_importances"].note
    assert "same value" in records["contour"].note
    assert records["intermediate_values"].note == "no trial has reported a per-epoch value yet"
    assert_png(records["slice"].path)


def test_empty_study_skips_everything(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    records = study_plots(study, tmp_path / "plots")
    assert all(path is None and note for _, path, note in records)
    assert by_name(records)["optimization_history"].note == "no completed trial yet"
    assert list((tmp_path / "plots").iterdir()) == []


def test_running_trial_is_not_plotted_as_finished(tmp_path):
    space = {name: SEARCH_SPACE[name] for name in ("dropout", "num_epochs")}
    study = make_study(tmp_path / "study.db", n_trials=3, objective=lambda trial: fake_training(trial, space))
    running = study.ask()
    running.suggest_float("dropout", 0.0, 0.5)
    running.report(0.5, step=STEPS_PER_EPOCH)
    records = by_name(study_plots(study, tmp_path / "plots"))
    complete = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert f"of {complete} completed trials" in records["optimization_history"].note
    assert "of 4 reporting trials" in records["intermediate_values"].note
    assert "each of 4 started trials" in records["timeline"].note
    assert_png(records["timeline"].path)


def test_final_model_plots_are_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    references = rng.choice([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], size=300)
    predictions = np.clip(0.7 * references + 0.15 + rng.normal(0, 0.1, size=300), 0, 1)
    records = final_model_plots(predictions, references, tmp_path / "plots")
    assert [record.name for record in records] == list(FINAL_MODEL_PLOTS)
    for _, path, _ in records:
        assert_png(path)
    curve = threshold_curve(predictions, references, [PAPER_THRESHOLD])
    assert f"At 0.8: accuracy {curve['accuracy'][0]:.4f}, F1 {curve['f1'][0]:.4f}" in records[1].note


def test_threshold_curve_by_hand():
    predictions = [0.9, 0.85, 0.7, 0.2]
    references = [1.0, 0.6, 0.8, 0.0]
    curve = threshold_curve(predictions, references, [0.5, 0.8, 0.95])
    # At 0.8: predicted well-formed {0, 1}, truly well-formed {0, 2}: one hit, precision 1/2, recall 1/2.
    np.testing.assert_allclose(curve["accuracy"], [0.75, 0.5, 0.5])
    np.testing.assert_allclose(curve["f1"], [0.8, 0.5, 0.0])


def test_threshold_curve_agrees_with_the_wellformedness_metric():
    from qrm_hf.metrics import load_metric

    rng = np.random.default_rng(1)
    references = rng.choice([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], size=200)
    predictions = np.clip(references + rng.normal(0, 0.2, size=200), 0, 1)
    metric = load_metric().compute(predictions=predictions, references=references, threshold=PAPER_THRESHOLD)
    curve = threshold_curve(predictions.astype(np.float32), references.astype(np.float32), [PAPER_THRESHOLD])
    assert curve["accuracy"][0] == pytest.approx(metric["accuracy"])
    assert curve["f1"][0] == pytest.approx(metric["f1"])


def test_final_model_plots_check_their_input(tmp_path):
    with pytest.raises(ValueError, match="3 predictions for 2 references"):
        final_model_plots([0.1, 0.2, 0.3], [0.0, 0.2], tmp_path)
    with pytest.raises(ValueError, match="nan or infinite"):
        final_model_plots([0.1, float("nan")], [0.0, 0.2], tmp_path)
    records = final_model_plots([], [], tmp_path / "plots")
    assert all(path is None and note == "no test predictions" for _, path, note in records)
