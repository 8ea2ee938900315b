"""A run's report: `report.md` with the study's summary, its plots, the test metrics and a convergence verdict.

Everything comes from the Optuna storage (plus the test results when given), so the report can be rebuilt at
any time, also while workers are still running:

    qrm report --storage sqlite:///results/m/study.db --study-name m-qrm

Numbers read from the storage are written with `repr`, which round-trips a float exactly.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ..metrics.thresholds import PAPER_THRESHOLD
from ..run.folder import (
    FinalSummary,
    load_test_predictions,
    offset_advice,
    read_final_summary,
    read_probe,
    read_test_metrics,
)
from ..run.layout import RunLayout
from ..search.storage import make_storage, redact, storage_file
from ..search.trials import FINISHED, INTERRUPTED, MODELLED, StudySummary, summarize, trial_origin
from .plots import IMPORTANCE_SEED, TARGET_NAME, PlotRecord, final_model_plots, study_plots

MIN_TRIALS_TO_JUDGE = 4
# "Still improving": the best value moved by more than this fraction over the last quarter of finished trials.
MIN_RELATIVE_IMPROVEMENT = 0.01
RECENT_FRACTION = 0.25
# The recent window holds at least this many trials, and at least this many trials must come from the sampler's
# model (not warm-start points, not its random start-up draws) before the search can be called converged.
MIN_RECENT_TRIALS = 3
MIN_MODELLED_TRIALS = 3
# The report's names for the summary's counts that are not a trial state.
STATE_LABELS = {INTERRUPTED: "interrupted (worker gone)"}

PLOT_TITLES = {
    "optimization_history": "Optimization history",
    "param_importances": "Hyperparameter importances",
    "parallel_coordinate": "Parallel coordinates",
    "slice": "Slice",
    "contour": "Contour of the two most important parameters",
    "intermediate_values": "Per-epoch validation MSE",
    "timeline": "Timeline",
    "test_predictions": "Predicted vs true score on test",
    "test_thresholds": "Accuracy and F1 across decision thresholds",
}


class StudyNotFoundError(LookupError):
    """The storage has no study of that name (or no database at all); the message lists the studies it has."""


@dataclass(frozen=True)
class ConvergenceVerdict:
    """Whether the best value still improved over the most recent finished trials, and what to do about it.

    `still_improving` is None when the study cannot be judged yet.
    """

    still_improving: bool | None
    message: str
    finished_trials: int
    recent_trials: int = 0
    best_before: float | None = None
    best_now: float | None = None
    relative_improvement: float | None = None


def _best_value(trials: Sequence[FrozenTrial], direction: StudyDirection) -> float | None:
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        return None
    return min(finite) if direction == StudyDirection.MINIMIZE else max(finite)


def _relative_improvement(before: float, now: float, direction: StudyDirection) -> float:
    gain = before - now if direction == StudyDirection.MINIMIZE else now - before
    if before == 0:
        return math.inf if gain > 0 else 0.0
    return gain / abs(before)


def convergence_verdict(
    study: optuna.Study,
    min_relative_improvement: float = MIN_RELATIVE_IMPROVEMENT,
    recent_fraction: float = RECENT_FRACTION,
    target_name: str = TARGET_NAME,
) -> ConvergenceVerdict:
    """Judge from the history whether the search has converged.

    Finished trials (complete + pruned) are taken in trial-number order. The search is *still improving* when
    the best value over all of them beats the best value before the last `recent_fraction` of them (at least
    3 trials) by more than `min_relative_improvement` of that earlier best; then more trials are likely to
    pay off. Fewer than 4 finished trials are too few to judge, and so is a study whose sampler has modelled
    fewer than 3 of them: warm-start points and a TPE's random start-up draws say nothing about convergence.

    Example:
        >>> study = optuna.create_study()
        >>> study.optimize(lambda trial: 1.0 / (trial.number + 1), n_trials=8)
        >>> convergence_verdict(study).still_improving
        True
    """
    finished = sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda trial: trial.number)
    count = len(finished)
    if count < MIN_TRIALS_TO_JUDGE:
        return ConvergenceVerdict(
            still_improving=None,
            message=f"too few trials to judge: {count} finished, at least {MIN_TRIALS_TO_JUDGE} are needed",
            finished_trials=count,
        )
    modelled = sum(trial_origin(trial) == MODELLED for trial in finished)
    if modelled < MIN_MODELLED_TRIALS:
        chosen_otherwise = count - modelled
        return ConvergenceVerdict(
            still_improving=None,
            message=f"not judged yet: {chosen_otherwise} of the {count} finished trials were warm-start points or "
            f"the sampler's random start-up draws, and only {modelled} came from its model (at least "
            f"{MIN_MODELLED_TRIALS} are needed before convergence means anything); raise n_trials, e.g. to "
            f"{count + 2 * MIN_MODELLED_TRIALS} (`--n-trials {count + 2 * MIN_MODELLED_TRIALS}`): the same command "
            "resumes the study and runs only the missing trials",
            finished_trials=count,
        )
    recent = min(count - 1, max(MIN_RECENT_TRIALS, math.ceil(count * recent_fraction)))
    direction = study.direction
    best_before = _best_value(finished[:-recent], direction)
    best_now = _best_value(finished, direction)
    where = f"the last {recent} of {count} finished trials"
    advice = (
        f"raise n_trials, e.g. to {2 * count} (`--n-trials {2 * count}`): the same command resumes the study "
        "and runs only the missing trials"
    )
    if best_now is None:
        return ConvergenceVerdict(
            still_improving=None,
            message=f"no completed trial with a finite value among {count} finished trials: nothing to judge",
            finished_trials=count,
        )
    if best_before is None:
        return ConvergenceVerdict(
            still_improving=True,
            message=f"still improving: the first completed trial with a finite {target_name} came in {where} "
            f"(best {best_now!r}); {advice}.",
            finished_trials=count,
            recent_trials=recent,
            best_now=best_now,
        )
    improvement = _relative_improvement(best_before, best_now, direction)
    if improvement > min_relative_improvement:
        message = (
            f"still improving: the best {target_name} went from {best_before!r} to {best_now!r} over {where}, "
            f"{improvement:.2%} better (more than the {min_relative_improvement:.0%} that counts as meaningful); "
            f"{advice}."
        )
    else:
        change = (
            f"stayed at {best_now!r}"
            if best_now == best_before
            else f"went from {best_before!r} to {best_now!r}, {improvement:.2%} better"
        )
        message = (
            f"converged by this measure: the best {target_name} {change} over {where} (the threshold for a "
            f"meaningful improvement is {min_relative_improvement:.0%}); more trials over this search space are "
            "unlikely to pay off."
        )
    return ConvergenceVerdict(
        still_improving=improvement > min_relative_improvement,
        message=message,
        finished_trials=count,
        recent_trials=recent,
        best_before=best_before,
        best_now=best_now,
        relative_improvement=improvement,
    )


def format_value(value: Any) -> str:
    """A value as the report writes it: floats with `repr` (exact), text with table pipes escaped."""
    if isinstance(value, float):
        return repr(value)
    return str(value).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(format_value(cell) for cell in row) + " |" for row in rows]
    return lines


def _plot_section(records: Sequence[PlotRecord], run_dir: Path) -> list[str]:
    lines: list[str] = []
    for name, path, note in records:
        title = PLOT_TITLES.get(name, name)
        lines += [f"### {title}", ""]
        if path is None:
            lines += [f"_Skipped: {note}._", ""]
        else:
            link = Path(os.path.relpath(path, run_dir)).as_posix()
            lines += [f"![{title}]({link})", "", note, ""]
    return lines


def _wall_time(summary: StudySummary) -> str:
    seconds = summary.wall_seconds
    if seconds is None:
        return "no trial has finished yet"
    clock = f" ({datetime.timedelta(seconds=round(seconds))})" if seconds >= 60 else ""
    first = summary.first_start.isoformat(sep=" ", timespec="seconds")
    last = summary.last_complete.isoformat(sep=" ", timespec="seconds")
    return f"{seconds:.1f} s{clock}, from the first start ({first}) to the last completion ({last})"


def render_report(
    summary: StudySummary,
    verdict: ConvergenceVerdict,
    study_records: Sequence[PlotRecord],
    run_dir: Path,
    test_metrics: dict[str, Any] | None = None,
    test_records: Sequence[PlotRecord] = (),
    final_summary: FinalSummary | None = None,
) -> str:
    """The Markdown text of report.md; plot links are relative to `run_dir`, the report's folder."""
    counts = summary.counts
    lines = [f"# Search report: {summary.study_name}", "", "## Study", ""]
    lines += _table(
        ("trials", "count"),
        [
            *[(STATE_LABELS.get(state, state), count) for state, count in counts.items()],
            ("finished (complete + pruned)", summary.finished),
            ("total", sum(counts.values())),
        ],
    )
    lines += ["", f"- Direction: {summary.direction} {TARGET_NAME}", f"- Wall time: {_wall_time(summary)}"]
    if counts["running"]:
        lines.append(f"- {counts['running']} trial(s) still running: counted above, not treated as finished.")
    if counts.get(INTERRUPTED):
        lines.append(
            f"- {counts[INTERRUPTED]} trial(s) {STATE_LABELS[INTERRUPTED]}: the storage still says RUNNING; the next "
            "worker to start on that machine fails them and runs their points again."
        )
    if summary.origins:
        drawn = ", ".join(f"{count} {origin}" for origin, count in summary.origins.items())
        lines.append(f"- How the finished trials' points were chosen: {drawn}.")
    if summary.diverged:
        lines.append(
            f"- {summary.diverged} completed trial(s) diverged: their dev scores were NaN or infinite, so their "
            f"{TARGET_NAME} counts as inf (worst); lower the upper end of the learning rates if this is many."
        )
    best = summary.best_trial
    if best is None:
        lines += ["- Best value: none yet (no completed trial)", ""]
    else:
        lines += [f"- Best value ({TARGET_NAME}): {format_value(best.value)} (trial {best.number})", ""]
        lines += ["### Best parameters", "", *_table(("parameter", "value"), list(best.params.items())), ""]
        if best.user_attrs:
            lines += ["### Best trial's training", ""]
            lines += [*_table(("attribute", "value"), list(best.user_attrs.items())), ""]
    lines += ["## Convergence", "", verdict.message, ""]
    lines += ["## Plots", "", *_plot_section(study_records, run_dir)]
    if final_summary is not None:
        lines += _final_model_section(final_summary)
    if test_metrics is not None or test_records:
        lines += ["## Final model on test", ""]
        if test_metrics is not None:
            lines += _test_metrics_lines(test_metrics)
        lines += _plot_section(test_records, run_dir)
    return "\n".join(lines).rstrip() + "\n"


THRESHOLD_LABELS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
}


def _test_metrics_lines(test_metrics: dict[str, Any]) -> list[str]:
    """The regression figures, then well-formed-or-not at the paper's 0.8 and at the threshold chosen on dev."""
    threshold = test_metrics.get("decision_threshold")
    if threshold is None:  # metrics of a model without a threshold chosen on dev: all at the paper's 0.8
        return [*_table(("metric", "value"), list(test_metrics.items())), ""]
    thresholded = {*THRESHOLD_LABELS, *(f"{name}_at_threshold" for name in THRESHOLD_LABELS), "decision_threshold"}
    rows = [(name, value) for name, value in test_metrics.items() if name not in thresholded]
    lines = [*_table(("metric", "value"), rows), ""]
    lines += [
        f"| a query counts as well-formed when its predicted score is at least | {PAPER_THRESHOLD:g} (the paper's "
        "convention) "
        f"| {format_value(threshold)} (chosen on dev) |",
        "| --- | --- | --- |",
    ]
    for name, label in THRESHOLD_LABELS.items():
        at_paper, at_chosen = test_metrics.get(name), test_metrics.get(f"{name}_at_threshold")
        lines.append(f"| {label} | {format_value(at_paper)} | {format_value(at_chosen)} |")
    return lines + ["", f"The true label is always the paper's: a mean rating of at least {PAPER_THRESHOLD:g}.", ""]


def _final_model_section(final_summary: FinalSummary) -> list[str]:
    """How the shipped model was made, and its calibration on train (eval mode), dev and test."""
    calibration = final_summary.calibration
    lines = ["## How the final model was made", "", f"{final_summary.method}.", ""]
    if final_summary.dev_metrics:
        lines.append(
            f"- Dev MSE of the kept epoch: {format_value(final_summary.dev_metrics.get('mse'))} (the search's best "
            "trial: see above; the search may have trained on fewer rows)."
        )
    lines += _candidates_lines(final_summary.candidates)
    encoder_dropout = final_summary.encoder_dropout
    lines += [
        f"- Loss: {final_summary.loss}; encoder dropout: "
        f"{'as the encoder ships it' if encoder_dropout is None else encoder_dropout}.",
        f"- Decision threshold: {format_value(final_summary.decision_threshold)}, the one that maximizes dev "
        f"{final_summary.threshold_metric} (stored in the saved model's config as `decision_threshold`).",
        "",
        "### Calibration (mean prediction minus mean label)",
        "",
        *_table(
            ("split", "offset"),
            [
                ("train (2,000 rows, eval mode)", calibration.train_offset_eval_mode),
                ("dev", calibration.dev_offset),
                ("test", calibration.test_offset),
            ],
        ),
        "",
    ]
    if calibration.offset_flagged:
        lines += [
            "**Flagged:** the model's scores are shifted on its own training rows in eval mode: "
            f"{offset_advice(final_summary.encoder_dropout)}.",
            "",
        ]
    return lines


def _candidates_lines(candidates: list[dict[str, Any]]) -> list[str]:
    """The final stage's candidates when it trained more than one (to combine): search value against the dev MSE on
    all of train, which also shows whether the search's rows ranked the configurations as all rows do."""
    if len(candidates) < 2:
        return []
    rows = [
        (
            record.get("label"),
            record.get("search_value"),
            record.get("dev_mse"),
            record.get("best_epoch"),
            record.get("epochs_run"),
            "yes" if record.get("in_model") else "no",
        )
        for record in candidates
    ]
    header = ("candidate", "search value", "dev MSE, all of train", "best epoch", "epochs run", "in the model")
    lines = ["", "Candidates of the final stage:", "", *_table(header, rows), ""]
    ranked = [(r["search_value"], r["dev_mse"]) for r in candidates if r.get("search_value") is not None]
    if len(ranked) >= 3:
        from scipy.stats import spearmanr

        rho = spearmanr([a for a, _ in ranked], [b for _, b in ranked]).statistic
        lines += [
            f"Rank correlation (Spearman) of the search value and the dev MSE on all of train, over {len(ranked)} "
            f"candidates: {format_value(float(rho))} (1: the search's rows rank configurations as all rows do).",
            "",
        ]
    return lines


def write_report(
    study: optuna.Study,
    run_dir: str | Path,
    test_metrics: dict[str, Any] | None = None,
    predictions: tuple[Any, Any] | None = None,
    *,
    final_summary: FinalSummary | None = None,
    probe: dict[str, Any] | None = None,
    seed: int = IMPORTANCE_SEED,
) -> Path:
    """Write `run_dir/report.md` and its plots under `run_dir/plots/`; return the report's path.

    `predictions` is the pair (predicted scores, true scores) on test; with it the report adds the final
    model's plots. `final_summary` (final_model.json) says how the final model was made and how it is calibrated;
    `probe` (probe.json) how gameable its reward is.
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    plots_dir = layout.plots
    study_records = study_plots(study, plots_dir, seed=seed)
    threshold = (test_metrics or {}).get("decision_threshold")
    test_records = (
        final_model_plots(*predictions, plots_dir, decision_threshold=threshold) if predictions is not None else []
    )
    text = render_report(
        summarize(study),
        convergence_verdict(study),
        study_records,
        run_dir,
        test_metrics,
        test_records,
        final_summary,
    )
    if probe is not None:
        from .probe import ProbeResult, format_probe

        text = text.rstrip("\n") + "\n\n## How gameable the reward is\n\n"
        text += "\n".join(format_probe(ProbeResult.from_json(probe))) + "\n"
    path = layout.report
    path.write_text(text, encoding="utf-8")
    return path


def load_existing_study(storage: str, study_name: str) -> optuna.Study:
    """Load a study that must exist; otherwise raise StudyNotFoundError naming it and the studies there are.

    `storage` is any URL that `qrm_hf.search.storage.make_storage` takes: sqlite:///, postgresql://, journal:///.
    The study is only read, so a report can run beside the workers that are still adding trials.
    """
    path = storage_file(storage)
    if path is not None and not path.is_file():
        # Opening a missing file would create an empty storage there.
        raise StudyNotFoundError(f"study {study_name!r} not found: no storage file at {path}")
    backend = make_storage(storage, heartbeat_interval=None)
    names = sorted(optuna.get_all_study_names(backend))
    if study_name not in names:
        available = ", ".join(names) if names else "none (the storage holds no study)"
        raise StudyNotFoundError(f"study {study_name!r} not found in {redact(storage)}; available studies: {available}")
    return optuna.load_study(study_name=study_name, storage=backend)


def default_output_dir(storage: str, study_name: str) -> Path:
    """The storage file's folder (the run's folder, for the pipeline's default SQLite storage), else
    results/<study name>."""
    path = storage_file(storage)
    return path.parent if path is not None else Path("results") / study_name


def rebuild_report(
    storage: str, study_name: str, output_dir: str | Path | None = None, *, seed: int = IMPORTANCE_SEED
) -> Path:
    """Rebuild report.md and its plots from the storage, adding test_metrics.json and test_predictions.json
    from `output_dir` when the pipeline wrote them there."""
    study = load_existing_study(storage, study_name)
    run_dir = Path(output_dir) if output_dir is not None else default_output_dir(storage, study_name)
    layout = RunLayout(run_dir)
    return write_report(
        study,
        run_dir,
        read_test_metrics(layout.test_metrics),
        load_test_predictions(layout.test_predictions),
        final_summary=read_final_summary(layout.final_summary),
        probe=read_probe(layout.probe),
        seed=seed,
    )


__all__ = [
    "ConvergenceVerdict",
    "StudyNotFoundError",
    "StudySummary",
    "convergence_verdict",
    "load_existing_study",
    "rebuild_report",
    "render_report",
    "summarize",
    "write_report",
]
