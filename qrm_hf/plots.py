"""Plots of a search and of the final model, written as PNG files.

The study's plots come from `optuna.visualization.matplotlib`; a plot that a study cannot support yet (too few
completed trials, no parameter that varies, no reported epoch) is skipped, and its record says why. Every
function returns `PlotRecord`s: `(name, path, note)`, with `path` None for a skipped plot and `note` the
plot's caption or the reason it was skipped.

Example:
    >>> study = optuna.create_study()
    >>> study.optimize(lambda trial: trial.suggest_float("dropout", 0.0, 0.5) ** 2, n_trials=5)
    >>> records = study_plots(study, "plots")
    >>> [(name, note) for name, path, note in records if path is None]
    [('contour', 'needs two parameters that vary in the completed trials, found 1')]
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

# Faruqui & Das (2018): a query whose mean rating is >= 0.8 is well-formed. Equal to
# qrm_hf.metrics.WELLFORMED_THRESHOLD, not imported from there because that module loads `evaluate` (seconds).
PAPER_THRESHOLD = 0.8
# The true score is the mean of five binary ratings.
SCORE_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TARGET_NAME = "validation MSE"
IMPORTANCE_SEED = 42

STUDY_PLOTS = (
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "slice",
    "contour",
    "intermediate_values",
    "timeline",
)
FINAL_MODEL_PLOTS = ("test_predictions", "test_thresholds")


class PlotRecord(NamedTuple):
    """One plot: its name, the PNG written (None when skipped) and its caption or the reason it was skipped."""

    name: str
    path: Path | None
    note: str


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, unless a session already chose one (a notebook keeps its own)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def importance_evaluator(seed: int = IMPORTANCE_SEED) -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA with a fixed seed: its random forest gives the same importances for the same trials every time."""
    return optuna.importance.FanovaImportanceEvaluator(seed=seed)


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials with a finite value: the ones every value plot can draw."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [trial for trial in trials if trial.value is not None and math.isfinite(trial.value)]


def varying_parameters(trials: Sequence[FrozenTrial]) -> tuple[list[str], list[str]]:
    """Parameters of `trials` split into (varying, constant): a varying one takes two or more values."""
    values: dict[str, set] = {}
    for trial in trials:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    varying = sorted(name for name, seen in values.items() if len(seen) > 1)
    constant = sorted(name for name, seen in values.items() if len(seen) == 1)
    return varying, constant


def parameter_importances(
    study: optuna.Study, params: list[str] | None = None, seed: int = IMPORTANCE_SEED
) -> dict[str, float]:
    """Importance of each parameter for the study's value, by seeded fANOVA, highest first."""
    importances = optuna.importance.get_param_importances(study, evaluator=importance_evaluator(seed), params=params)
    return {name: float(value) for name, value in importances.items()}


def _save(axes: Any, path: Path, dpi: int) -> Path:
    plt = _pyplot()
    figure = axes.flat[0].figure if isinstance(axes, np.ndarray) else axes.figure
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _trials_phrase(count: int, kind: str = "completed") -> str:
    return f"{count} {kind} trial{'' if count == 1 else 's'}"


def _style_intermediate_values(axes: Any, study: optuna.Study) -> None:
    """One line per trial over epochs, styled by state: pruned dashed and ending in a cross, running dotted.

    Optuna draws each trial against the step it reported, which transformers sets to the optimizer step; that
    differs between batch sizes, so the lines are re-drawn against the evaluation number: the search evaluates
    once per epoch (`eval_strategy="epoch"`).
    """
    from matplotlib.lines import Line2D

    states = {trial.number: trial.state for trial in study.get_trials(deepcopy=False)}
    drawn = set()
    for line in list(axes.get_lines()):
        label = line.get_label()
        if not label.startswith("Trial"):
            continue
        state = states.get(int(label.removeprefix("Trial")))
        drawn.add(state)
        values = np.asarray(line.get_ydata(), dtype=float)
        epochs = np.arange(1, values.size + 1)
        line.set_xdata(epochs)
        if state == TrialState.PRUNED:
            line.set_linestyle("--")
            axes.plot(epochs[-1:], values[-1:], marker="x", color="black", markersize=7, zorder=3)
        elif state == TrialState.RUNNING:
            line.set_linestyle(":")
    axes.relim()
    axes.autoscale_view()
    legend = axes.get_legend()
    if legend is not None:
        legend.remove()
    handles = {
        TrialState.COMPLETE: Line2D([], [], color="gray", linestyle="-", marker=".", label="complete"),
        TrialState.PRUNED: Line2D(
            [], [], color="gray", linestyle="--", marker="x", markeredgecolor="black", label="pruned (x: last epoch)"
        ),
        TrialState.RUNNING: Line2D([], [], color="gray", linestyle=":", label="running"),
    }
    axes.legend(handles=[handle for state, handle in handles.items() if state in drawn], loc="upper right")
    axes.set_title(_capitalized(f"{TARGET_NAME} per epoch"))
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"{TARGET_NAME} (reported after each epoch)")
    axes.xaxis.get_major_locator().set_params(integer=True)


def study_plots(
    study: optuna.Study,
    folder: str | Path,
    *,
    seed: int = IMPORTANCE_SEED,
    dpi: int = 100,
    target_name: str = TARGET_NAME,
) -> list[PlotRecord]:
    """Write the study's plots into `folder` as PNGs; return one record per plot of `STUDY_PLOTS`, in order.

    RUNNING trials appear only in the timeline and the intermediate values (dotted), never as finished trials.
    """
    plt = _pyplot()
    import matplotlib
    from optuna.visualization import matplotlib as optuna_plots

    if len(study.directions) > 1:
        raise ValueError(f"study {study.study_name!r} has several objectives; these plots need a single one")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    complete = completed_trials(study)
    varying, constant = varying_parameters(complete)
    constant_note = f" Constant, left out: {', '.join(constant)}." if constant else ""
    distinct_values = {trial.value for trial in complete}
    importances: dict[str, float] | None = None
    importance_problem = ""
    if len(complete) < 2:
        importance_problem = f"needs at least 2 completed trials, the study has {len(complete)}"
    elif not varying:
        importance_problem = "no parameter takes more than one value in the completed trials"
    elif len(distinct_values) < 2:
        importance_problem = "every completed trial has the same value, so no parameter explains any variation"
    else:
        try:
            importances = parameter_importances(study, varying, seed)
        except RuntimeError as error:  # fANOVA finds no variance to split
            importance_problem = f"fANOVA could not fit the trials ({error})"

    def history() -> tuple[Any, str] | str:
        if not complete:
            return "no completed trial yet"
        axes = optuna_plots.plot_optimization_history(study, target_name=target_name)
        return axes, f"{_capitalized(target_name)} of {_trials_phrase(len(complete))} by trial number, with the best so far."

    def param_importances() -> tuple[Any, str] | str:
        if importances is None:
            return importance_problem
        axes = optuna_plots.plot_param_importances(
            study, evaluator=importance_evaluator(seed), params=varying, target_name=target_name
        )
        note = f"fANOVA importances (seed {seed}) over {_trials_phrase(len(complete))}.{constant_note}"
        return axes, note

    def parallel_coordinate() -> tuple[Any, str] | str:
        if len(complete) < 2:
            return f"needs at least 2 completed trials, the study has {len(complete)}"
        if not varying:
            return "no parameter takes more than one value in the completed trials"
        axes = optuna_plots.plot_parallel_coordinate(study, params=varying, target_name=target_name)
        axes.figure.set_size_inches(max(6.4, 1.1 * len(varying) + 2), 4.8)
        return axes, f"Each line is one of {_trials_phrase(len(complete))}.{constant_note}"

    def slice_plot() -> tuple[Any, str] | str:
        if not varying:
            if not complete:
                return "no completed trial yet"
            return "no parameter takes more than one value in the completed trials"
        axes = optuna_plots.plot_slice(study, params=varying, target_name=target_name)
        return axes, f"{_capitalized(target_name)} against each parameter; darker points are later trials.{constant_note}"

    def contour() -> tuple[Any, str] | str:
        if len(varying) < 2:
            return f"needs two parameters that vary in the completed trials, found {len(varying)}"
        if importances is None:
            return f"needs parameter importances to pick the two most important parameters: {importance_problem}"
        top = list(importances)[:2]
        axes = optuna_plots.plot_contour(study, params=top, target_name=target_name)
        return axes, f"{_capitalized(target_name)} over the two most important parameters, {top[0]} and {top[1]}."

    def intermediate_values() -> tuple[Any, str] | str:
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        reporting = [trial for trial in study.get_trials(deepcopy=False, states=states) if trial.intermediate_values]
        if not reporting:
            return "no trial has reported a per-epoch value yet"
        axes = optuna_plots.plot_intermediate_values(study)
        _style_intermediate_values(axes, study)
        pruned = sum(trial.state == TrialState.PRUNED for trial in reporting)
        return axes, f"Per-epoch {target_name} of {_trials_phrase(len(reporting), 'reporting')}, {pruned} pruned."

    def timeline() -> tuple[Any, str] | str:
        started = [trial for trial in study.get_trials(deepcopy=False) if trial.datetime_start is not None]
        if not started:
            return "no trial has started yet"
        return optuna_plots.plot_timeline(study), f"When each of {_trials_phrase(len(started), 'started')} ran."

    builders: dict[str, Callable[[], tuple[Any, str] | str]] = {
        "optimization_history": history,
        "param_importances": param_importances,
        "parallel_coordinate": parallel_coordinate,
        "slice": slice_plot,
        "contour": contour,
        "intermediate_values": intermediate_values,
        "timeline": timeline,
    }
    records = []
    for name in STUDY_PLOTS:
        # Optuna's plots switch to the ggplot style globally; the context gives the caller its style back.
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            built = builders[name]()
            if isinstance(built, str):
                records.append(PlotRecord(name, None, built))
                continue
            axes, note = built
            records.append(PlotRecord(name, _save(axes, folder / f"{name}.png", dpi), note))
    plt.close("all")
    return records


def _as_scores(values: Any, what: str) -> np.ndarray:
    if isinstance(values, tuple):  # Trainer predictions may hold several outputs; the scores come first
        values = values[0]
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain {int(np.sum(~np.isfinite(array)))} values that are nan or infinite")
    return array


def threshold_curve(
    predictions: Any, references: Any, thresholds: Any, label_threshold: float = PAPER_THRESHOLD
) -> dict[str, np.ndarray]:
    """Accuracy and F1 of "well-formed" when a prediction >= each decision threshold counts as well-formed.

    The true label stays the paper's: score >= `label_threshold`. At a decision threshold equal to it, the
    figures equal the wellformedness metric's `accuracy` and `f1`.

    Example:
        >>> threshold_curve([0.9, 0.1], [1.0, 0.0], [0.5, 0.95])["accuracy"]
        array([1. , 0.5])
    """
    predicted = _as_scores(predictions, "predictions")
    true = _as_scores(references, "references")
    cuts = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1)
    predicted_positive = predicted[None, :] >= cuts
    true_positive = (true >= label_threshold)[None, :]
    hits = np.sum(predicted_positive & true_positive, axis=1).astype(np.float64)
    precision = hits / np.maximum(np.sum(predicted_positive, axis=1), 1.0)
    recall = hits / max(float(np.sum(true_positive)), 1.0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return {
        "threshold": cuts.reshape(-1),
        "accuracy": np.mean(predicted_positive == true_positive, axis=1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _predictions_figure(predicted: np.ndarray, true: np.ndarray, levels: Sequence[float], seed: int) -> Any:
    plt = _pyplot()
    level_array = np.asarray(levels, dtype=np.float64)
    nearest = level_array[np.argmin(np.abs(true[:, None] - level_array[None, :]), axis=1)]
    figure, axes = plt.subplots(figsize=(6.4, 5.2))
    spacing = float(np.min(np.diff(np.sort(level_array)))) if level_array.size > 1 else 0.2
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, size=true.size) * spacing
    axes.scatter(nearest + jitter, predicted, s=6, alpha=0.15, color="tab:blue", linewidths=0, label="one query")
    present = [level for level in level_array if np.any(nearest == level)]
    means = [float(np.mean(predicted[nearest == level])) for level in present]
    spreads = [float(np.std(predicted[nearest == level])) for level in present]
    counts = [int(np.sum(nearest == level)) for level in present]
    axes.errorbar(
        present, means, yerr=spreads, fmt="o-", color="tab:red", capsize=4, label="mean prediction ± 1 std"
    )
    for level, mean, count in zip(present, means, counts):
        axes.annotate(f"n={count}", (level, mean), textcoords="offset points", xytext=(6, -12), fontsize=8)
    low = min(0.0, float(np.min(predicted)), float(level_array.min()))
    high = max(1.0, float(np.max(predicted)), float(level_array.max()))
    axes.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1, label="prediction = true")
    axes.axhline(PAPER_THRESHOLD, color="tab:green", linestyle=":", linewidth=1, label=f"{PAPER_THRESHOLD} threshold")
    axes.set_xticks(level_array)
    axes.set_xlabel("true score (mean of the raters' judgements)")
    axes.set_ylabel("predicted score")
    axes.set_title(f"Predicted vs true score on test (n={true.size})")
    axes.legend(loc="upper left", fontsize=8)
    return figure


def _thresholds_figure(predicted: np.ndarray, true: np.ndarray, threshold: float) -> tuple[Any, str]:
    plt = _pyplot()
    grid = np.unique(np.append(np.linspace(0.0, 1.0, 101), threshold))
    curve = threshold_curve(predicted, true, grid, label_threshold=threshold)
    at = int(np.flatnonzero(grid == threshold)[0])
    best = int(np.argmax(curve["f1"]))
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    axes.plot(grid, curve["accuracy"], label="accuracy")
    axes.plot(grid, curve["f1"], label="F1 (well-formed)")
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"paper's threshold {threshold}")
    axes.plot([threshold, threshold], [curve["accuracy"][at], curve["f1"][at]], "ko", markersize=4)
    axes.plot(grid[best], curve["f1"][best], "r*", markersize=10, label=f"best F1 at {grid[best]:.2f}")
    axes.set_xlabel("decision threshold on the predicted score")
    axes.set_ylabel("score")
    axes.set_ylim(0.0, 1.02)
    axes.set_title(f"Accuracy and F1 across thresholds (true label: score >= {threshold})")
    axes.legend(loc="best", fontsize=8)
    note = (
        f"At {threshold}: accuracy {curve['accuracy'][at]:.4f}, F1 {curve['f1'][at]:.4f}; "
        f"the highest F1, {curve['f1'][best]:.4f}, is at {grid[best]:.2f}."
    )
    return figure, note


def final_model_plots(
    predictions: Any,
    references: Any,
    folder: str | Path,
    *,
    threshold: float = PAPER_THRESHOLD,
    levels: Sequence[float] = SCORE_LEVELS,
    dpi: int = 100,
    seed: int = 0,
) -> list[PlotRecord]:
    """Write the final model's test plots into `folder`: predicted vs true score, accuracy/F1 by threshold.

    `predictions` and `references` are the test set's predicted and true scores; true scores are grouped at
    the nearest of `levels`. `seed` fixes the horizontal jitter of the scatter.
    """
    predicted = _as_scores(predictions, "predictions")
    true = _as_scores(references, "references")
    if predicted.size != true.size:
        raise ValueError(f"{predicted.size} predictions for {true.size} references: they must pair up one to one")
    if predicted.size == 0:
        return [PlotRecord(name, None, "no test predictions") for name in FINAL_MODEL_PLOTS]
    plt = _pyplot()
    import matplotlib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context():
        figure = _predictions_figure(predicted, true, levels, seed)
        path = folder / "test_predictions.png"
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(figure)
        records = [PlotRecord("test_predictions", path, "Mean prediction (± 1 std) for each true score; dots: queries.")]
        figure, note = _thresholds_figure(predicted, true, threshold)
        path = folder / "test_thresholds.png"
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(figure)
        records.append(PlotRecord("test_thresholds", path, note))
    return records


__all__ = [
    "FINAL_MODEL_PLOTS",
    "PAPER_THRESHOLD",
    "SCORE_LEVELS",
    "STUDY_PLOTS",
    "PlotRecord",
    "completed_trials",
    "final_model_plots",
    "importance_evaluator",
    "parameter_importances",
    "study_plots",
    "threshold_curve",
    "varying_parameters",
]
