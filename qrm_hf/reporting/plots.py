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
    [('contour', 'needs two parameters that vary in the completed trials, found 1'),
     ('intermediate_values', 'no trial has reported a per-epoch value yet')]
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..metrics.thresholds import PAPER_THRESHOLD, as_scores, threshold_curve

# The true score is the mean of five binary ratings.
SCORE_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TARGET_NAME = "validation MSE"
IMPORTANCE_SEED = 42

FINAL_MODEL_PLOTS = ("test_predictions", "test_thresholds")
NO_VARYING_PARAMETER = "no parameter takes more than one value in the completed trials"
# Each plot builder returns (axes, caption), or the reason the study cannot support the plot yet.
Built = tuple[Any, str] | str


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


def _save(figure: Any, path: Path, dpi: int) -> Path:
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return path


def _figure_of(axes: Any) -> Any:
    """The figure of optuna's result: one Axes, or an array of them (slice, contour)."""
    return axes.flat[0].figure if isinstance(axes, np.ndarray) else axes.figure


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _trials_phrase(count: int, kind: str = "completed") -> str:
    return f"{count} {kind} trial{'' if count == 1 else 's'}"


def _style_intermediate_values(axes: Any, study: optuna.Study, target_name: str) -> None:
    """One line per trial over epochs, styled by state: pruned dashed and ending in a cross, running dotted.

    Optuna draws each trial against the step it reported, which transformers sets to the optimizer step; that
    differs between batch sizes, so the lines are re-drawn against the evaluation number: the search evaluates
    once per epoch (`eval_strategy="epoch"`).
    """
    from matplotlib.lines import Line2D

    states = {trial.number: trial.state for trial in study.get_trials(deepcopy=False)}
    drawn = set()
    for line in list(axes.get_lines()):
        number = line.get_label().removeprefix("Trial")
        if not number.isdigit():
            continue
        state = states.get(int(number))
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
    axes.set_title(_capitalized(f"{target_name} per epoch"))
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"{target_name} (reported after each epoch)")
    axes.xaxis.get_major_locator().set_params(integer=True)


@dataclass(frozen=True)
class _StudyFacts:
    """What decides which plots a study supports, read from the storage once."""

    study: optuna.Study
    complete: list[FrozenTrial]
    varying: list[str]
    constant: list[str]
    importances: dict[str, float] | None
    importance_problem: str
    seed: int
    target_name: str

    @classmethod
    def read(cls, study: optuna.Study, seed: int, target_name: str) -> _StudyFacts:
        complete = completed_trials(study)
        varying, constant = varying_parameters(complete)
        importances, problem = None, ""
        if len(complete) < 2:
            problem = f"needs at least 2 completed trials, the study has {len(complete)}"
        elif not varying:
            problem = NO_VARYING_PARAMETER
        elif len({trial.value for trial in complete}) < 2:
            problem = "every completed trial has the same value, so no parameter explains any variation"
        else:
            try:
                importances = parameter_importances(study, varying, seed)
            except RuntimeError as error:  # fANOVA found no variance to split in any tree
                problem = f"fANOVA could not fit the trials ({error})"
        return cls(study, complete, varying, constant, importances, problem, seed, target_name)

    @property
    def target(self) -> str:
        return _capitalized(self.target_name)

    @property
    def constant_note(self) -> str:
        return f" Same value in every completed trial, left out: {', '.join(self.constant)}." if self.constant else ""


def _optimization_history(facts: _StudyFacts, optuna_plots: Any) -> Built:
    if not facts.complete:
        return "no completed trial yet"
    axes = optuna_plots.plot_optimization_history(facts.study, target_name=facts.target_name)
    return axes, f"{facts.target} of {_trials_phrase(len(facts.complete))} by trial number, with the best so far."


def _param_importances(facts: _StudyFacts, optuna_plots: Any) -> Built:
    if facts.importances is None:
        return facts.importance_problem
    axes = optuna_plots.plot_param_importances(
        facts.study, evaluator=importance_evaluator(facts.seed), params=facts.varying, target_name=facts.target_name
    )
    trials = _trials_phrase(len(facts.complete))
    return axes, f"fANOVA importances (seed {facts.seed}) over {trials}.{facts.constant_note}"


def _parallel_coordinate(facts: _StudyFacts, optuna_plots: Any) -> Built:
    if len(facts.complete) < 2:
        return f"needs at least 2 completed trials, the study has {len(facts.complete)}"
    if not facts.varying:
        return NO_VARYING_PARAMETER
    axes = optuna_plots.plot_parallel_coordinate(facts.study, params=facts.varying, target_name=facts.target_name)
    axes.figure.set_size_inches(max(6.4, 1.1 * len(facts.varying) + 2), 4.8)
    return axes, f"Each line is one of {_trials_phrase(len(facts.complete))}.{facts.constant_note}"


def _slice(facts: _StudyFacts, optuna_plots: Any) -> Built:
    if not facts.complete:
        return "no completed trial yet"
    if not facts.varying:
        return NO_VARYING_PARAMETER
    axes = optuna_plots.plot_slice(facts.study, params=facts.varying, target_name=facts.target_name)
    return axes, f"{facts.target} against each parameter; darker points are later trials.{facts.constant_note}"


def _contour(facts: _StudyFacts, optuna_plots: Any) -> Built:
    if len(facts.varying) < 2:
        return f"needs two parameters that vary in the completed trials, found {len(facts.varying)}"
    if facts.importances is None:
        return f"needs parameter importances to pick the two most important parameters: {facts.importance_problem}"
    first, second = list(facts.importances)[:2]
    axes = optuna_plots.plot_contour(facts.study, params=[first, second], target_name=facts.target_name)
    return axes, f"{facts.target} over the two most important parameters, {first} and {second}."


def _intermediate_values(facts: _StudyFacts, optuna_plots: Any) -> Built:
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = facts.study.get_trials(deepcopy=False, states=states)
    reporting = [trial for trial in trials if trial.intermediate_values]
    if not reporting:
        return "no trial has reported a per-epoch value yet"
    axes = optuna_plots.plot_intermediate_values(facts.study)
    _style_intermediate_values(axes, facts.study, facts.target_name)
    pruned = sum(trial.state == TrialState.PRUNED for trial in reporting)
    return axes, f"Per-epoch {facts.target_name} of {_trials_phrase(len(reporting), 'reporting')}, {pruned} pruned."


def _timeline(facts: _StudyFacts, optuna_plots: Any) -> Built:
    started = [trial for trial in facts.study.get_trials(deepcopy=False) if trial.datetime_start is not None]
    if not started:
        return "no trial has started yet"
    return optuna_plots.plot_timeline(facts.study), f"When each of {_trials_phrase(len(started), 'started')} ran."


STUDY_PLOT_BUILDERS: dict[str, Callable[[_StudyFacts, Any], Built]] = {
    "optimization_history": _optimization_history,
    "param_importances": _param_importances,
    "parallel_coordinate": _parallel_coordinate,
    "slice": _slice,
    "contour": _contour,
    "intermediate_values": _intermediate_values,
    "timeline": _timeline,
}
STUDY_PLOTS = tuple(STUDY_PLOT_BUILDERS)


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
    _pyplot()  # before optuna's plotting module imports pyplot
    import matplotlib
    from optuna.visualization import matplotlib as optuna_plots

    if len(study.directions) > 1:
        raise ValueError(f"study {study.study_name!r} has several objectives; these plots need a single one")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    facts = _StudyFacts.read(study, seed, target_name)
    records = []
    for name, build in STUDY_PLOT_BUILDERS.items():
        # Optuna's plots switch to the ggplot style globally; the context gives the caller its style back.
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            built = build(facts, optuna_plots)
            if isinstance(built, str):
                records.append(PlotRecord(name, None, built))
            else:
                axes, caption = built
                records.append(PlotRecord(name, _save(_figure_of(axes), folder / f"{name}.png", dpi), caption))
    return records


def _predictions_figure(
    predicted: np.ndarray, true: np.ndarray, levels: Sequence[float], threshold: float, seed: int
) -> tuple[Any, str]:
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
    axes.errorbar(present, means, yerr=spreads, fmt="o-", color="tab:red", capsize=4, label="mean prediction ± 1 std")
    for level, mean, count in zip(present, means, counts, strict=True):
        axes.annotate(f"n={count}", (level, mean), textcoords="offset points", xytext=(6, -12), fontsize=8)
    low = min(0.0, float(np.min(predicted)), float(level_array.min()))
    high = max(1.0, float(np.max(predicted)), float(level_array.max()))
    axes.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1, label="prediction = true")
    axes.axhline(threshold, color="tab:green", linestyle=":", linewidth=1, label=f"{threshold} threshold")
    axes.set_xticks(level_array)
    axes.set_xlabel("true score (mean of the raters' judgements)")
    axes.set_ylabel("predicted score")
    axes.set_title(f"Predicted vs true score on test (n={true.size})")
    axes.legend(loc="upper left", fontsize=8)
    return figure, "Mean prediction (± 1 std) for each true score; dots: single queries, spread sideways."


def _thresholds_figure(
    predicted: np.ndarray, true: np.ndarray, threshold: float, decision_threshold: float | None
) -> tuple[Any, str]:
    plt = _pyplot()
    marks = [threshold] if decision_threshold is None else [threshold, decision_threshold]
    grid = np.unique(np.append(np.linspace(0.0, 1.0, 101), marks))
    curve = threshold_curve(predicted, true, grid, label_threshold=threshold)
    at = int(np.flatnonzero(grid == threshold)[0])
    best = int(np.argmax(curve["f1"]))
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    axes.plot(grid, curve["accuracy"], label="accuracy")
    axes.plot(grid, curve["f1"], label="F1 (well-formed)")
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"paper's threshold {threshold}")
    axes.plot([threshold, threshold], [curve["accuracy"][at], curve["f1"][at]], "ko", markersize=4)
    axes.plot(grid[best], curve["f1"][best], "r*", markersize=10, label=f"best F1 at {grid[best]:.2f}")
    if decision_threshold is not None:
        chosen = int(np.flatnonzero(grid == decision_threshold)[0])
        axes.axvline(
            decision_threshold, color="tab:purple", linestyle=":", label=f"chosen on dev {decision_threshold:g}"
        )
    axes.set_xlabel("decision threshold on the predicted score")
    axes.set_ylabel("score")
    axes.set_ylim(0.0, 1.02)
    axes.set_title(f"Accuracy and F1 across thresholds (true label: score >= {threshold})")
    axes.legend(loc="best", fontsize=8)
    note = (
        f"At {threshold}: accuracy {curve['accuracy'][at]:.4f}, F1 {curve['f1'][at]:.4f}; "
        f"the highest F1, {curve['f1'][best]:.4f}, is at {grid[best]:.2f}."
    )
    if decision_threshold is not None:
        note += (
            f" At the threshold chosen on dev, {decision_threshold:g}: accuracy {curve['accuracy'][chosen]:.4f}, "
            f"F1 {curve['f1'][chosen]:.4f}."
        )
    return figure, note


def final_model_plots(
    predictions: Any,
    references: Any,
    folder: str | Path,
    *,
    threshold: float = PAPER_THRESHOLD,
    decision_threshold: float | None = None,
    levels: Sequence[float] = SCORE_LEVELS,
    dpi: int = 100,
    seed: int = 0,
) -> list[PlotRecord]:
    """Write the final model's test plots into `folder`: predicted vs true score, accuracy/F1 by threshold.

    `predictions` and `references` are the test set's predicted and true scores; true scores are grouped at
    the nearest of `levels`. `decision_threshold`, the cut chosen on dev, is marked beside the paper's.
    `seed` fixes the horizontal jitter of the scatter.
    """
    predicted = as_scores(predictions, "predictions")
    true = as_scores(references, "references")
    if predicted.size != true.size:
        raise ValueError(f"{predicted.size} predictions for {true.size} references: they must pair up one to one")
    if predicted.size == 0:
        return [PlotRecord(name, None, "no test predictions") for name in FINAL_MODEL_PLOTS]
    _pyplot()
    import matplotlib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    with matplotlib.rc_context():
        for name, (figure, caption) in (
            ("test_predictions", _predictions_figure(predicted, true, levels, threshold, seed)),
            ("test_thresholds", _thresholds_figure(predicted, true, threshold, decision_threshold)),
        ):
            records.append(PlotRecord(name, _save(figure, folder / f"{name}.png", dpi), caption))
    return records


__all__ = [
    "FINAL_MODEL_PLOTS",
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
