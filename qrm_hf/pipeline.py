"""One run end to end: data -> search -> final model -> test report -> saved (and pushed) model."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import DatasetDict
from optuna.trial import TrialState
from transformers import AutoModel

from .data import load_splits, random_subset, tokenize_splits
from .modeling.model_files import (
    TOKENIZER_CHECK_QUERIES,
    check_encoder,
    check_max_length,
    check_tokenizer,
    load_tokenizer,
    push_folder,
    save_model_folder,
)
from .reporting.card import QueryRewardCardData, base_model_id, write_model_card
from .reporting.probe import format_probe, probe_scorer
from .reporting.report import write_report
from .run.config import RunConfig
from .run.distributed import from_rank_zero
from .run.folder import (
    Calibration,
    FinalModelClaimed,
    FinalSummary,
    check_writable,
    claim_final_model,
    save_test_predictions,
    write_final_summary,
    write_probe,
    write_test_metrics,
)
from .scoring.scorer import QueryScorer
from .search.checks import check_run
from .search.space import SearchSpace
from .search.study import run_search, write_history
from .search.trials import StudySummary
from .training.arguments import QRMTrainingArguments
from .training.final import FinalResult, soup_candidates, train_final

logger = logging.getLogger(__name__)

FINAL_MODEL_METHOD = (
    "the best trial's values trained on all {train_rows} training rows{epochs}, the epoch with the lowest dev MSE "
    "kept (epoch {best_epoch}){soup}, the decision threshold chosen on dev ({threshold_metric}), test scored once"
)


class RunFailed(RuntimeError):
    """A run that trained but has nothing worth saving: no completed trial, no finite validation MSE, a final
    model whose dev MSE is not finite. The study is kept; the message says what to change."""


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the study's summary, the final model's test metrics and folder (None when only
    searching)."""

    study_name: str
    summary: StudySummary | None = None
    test_metrics: dict[str, float] | None = None
    model_dir: Path | None = None


def run_pipeline(config: RunConfig) -> RunResult:
    """Search, train the final model with the best parameters, evaluate on test, save; return the result.

    Every input is checked before any training or study: the search space and `training:` values, the sampler
    options, the warm-start points, the encoder's folder, the data files, and whether the encoder's tokenizer
    can encode the training queries.
    """
    space = SearchSpace.from_dict(config.search_space)
    config = check_run(config, space)
    check_writable(Path(config.output_dir))
    model_path = config.model_path()
    encoder_config = check_encoder(config.model, model_path)
    default_max_length = config.training.get("max_length", QRMTrainingArguments.max_length)
    longest = int(space.largest("max_length", default=default_max_length))
    check_max_length(longest, encoder_config, config.model)
    tokenizer = load_tokenizer(config.model, model_path)
    splits = load_splits(config.data, config.max_train_samples, config.max_eval_samples, config.max_test_samples)
    first_queries = splits["train"][:TOKENIZER_CHECK_QUERIES]["query"]
    check_tokenizer(tokenizer, first_queries, config.model, encoder_config.get("vocab_size"))
    encoder = AutoModel.from_pretrained(model_path)
    tokenized = tokenize_splits(splits, tokenizer, longest)
    search_data = tokenized
    if config.search_train_samples is not None:
        sample = random_subset(tokenized["train"], config.search_train_samples, config.seed)
        search_data = DatasetDict({**tokenized, "train": sample})

    study = run_search(config, space, search_data, tokenizer, encoder)
    state = PartialState()
    if config.search_only:
        return RunResult(study_name=config.resolved_study_name)
    summary = None
    if state.is_main_process:
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise RunFailed(f"study {study.study_name!r} has no completed trial: nothing to retrain")
        summary = write_history(study, space, config.layout.history)
        if summary.best_value is None or not math.isfinite(summary.best_value):
            raise RunFailed(
                f"study {study.study_name!r}: no trial reached a finite validation MSE (best {summary.best_value}): "
                "nothing worth training or shipping; check the learning rates and epochs"
            )
    summary = from_rank_zero(summary)

    with contextlib.ExitStack() as claim:
        refusal = None
        if state.is_main_process:
            try:
                claim.enter_context(claim_final_model(config.layout))
            except FinalModelClaimed as error:
                refusal = str(error)
        refusal = from_rank_zero(refusal)
        if refusal is not None:
            logger.warning(refusal)
            return RunResult(study_name=config.resolved_study_name, summary=summary)
        candidates = soup_candidates(summary.completed, space.fixed, config.final_candidates)
        final = train_final(config, space.fixed, candidates, tokenized, tokenizer, encoder)
        if not math.isfinite(final.dev_metrics["mse"]):
            raise RunFailed(
                f"the final model's dev MSE is {final.dev_metrics['mse']} (its training diverged): it is not saved; "
                "lower the learning rates or fix them in search_space, then run again"
            )
        if state.is_main_process:
            save_run(config, study, summary, final, tokenizer, splits["test"], len(tokenized["train"]))
        state.wait_for_everyone()
    return RunResult(config.resolved_study_name, summary, final.test_metrics, config.layout.final_model)


def save_run(
    config: RunConfig,
    study: Any,
    summary: StudySummary,
    final: FinalResult,
    tokenizer: Any,
    test_split: Any,
    train_rows: int,
) -> None:
    """Everything a finished run writes: the model with its card first (nothing later can cost it), then test
    metrics, final_model.json, the probe (a section of the card), the report, probe.json and the test predictions,
    each of which degrades to a named warning if it fails; then the push."""
    layout = config.layout
    final_summary = describe_final(config, final, train_rows)
    card = card_data(config, summary, final, final_summary, layout.final_model)
    save_model_folder(final.model, tokenizer, layout.final_model, lambda staging: write_model_card(staging, card))
    logger.info("test metrics: %s", final.test_metrics)

    def after_saving(what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as error:  # a late step must never cost the saved model: it becomes a warning
            logger.warning("%s failed (%s: %s); the model is saved in %s", what, type(error).__name__, error,
                           layout.final_model)  # fmt: skip
            return None

    after_saving("test_metrics.json", lambda: write_test_metrics(final.test_metrics, layout.test_metrics))
    after_saving("final_model.json", lambda: write_final_summary(final_summary, layout.final_summary))
    scorer = QueryScorer(final.model, tokenizer)
    probed = after_saving("the probe", lambda: probe_scorer(scorer, test_split["query"], test_split["score"]))
    probe_json = probed.to_json() if probed is not None else None
    if probed is not None:
        card.probe = "\n".join(format_probe(probed))
        after_saving("the card's probe section", lambda: write_model_card(layout.final_model, card))
    predictions = (final.test.predicted, final.test.true)
    after_saving(
        "report.md and its plots",
        lambda: write_report(
            study, config.run_dir, final.test_metrics, predictions, final_summary=final_summary, probe=probe_json
        ),
    )
    if probe_json is not None:
        after_saving("probe.json", lambda: write_probe(probe_json, layout.probe))
    after_saving("test_predictions.json", lambda: save_test_predictions(*predictions, layout.test_predictions))
    if config.push_to_hub:
        push_folder(layout.final_model, config.push_to_hub)


def describe_final(config: RunConfig, final: FinalResult, train_rows: int) -> FinalSummary:
    """How the shipped model was made and how well it is calibrated: final_model.json, the report's section."""
    epochs = "" if config.final_max_epochs is None else f" for up to {config.final_max_epochs} epochs"
    soup = ""
    if len(final.candidates) > 1:
        others = f"; the same for the next {len(final.candidates) - 1} best trials of its architecture"
        members = ", ".join(final.combined)
        if len(final.combined) == 1:
            soup = f"{others}; combining lowered no dev MSE (greedy {config.combine}), so {members} alone ships"
        elif config.combine == "ensemble":
            soup = (
                f"{others}, and {members} kept as an ensemble, their scores averaged (a greedy ensemble chosen on dev)"
            )
        else:
            soup = f"{others}, and the weights of {members} averaged (a greedy soup chosen on dev)"
    if final.refit_rows is not None:
        soup += (
            f"; then trained again on {final.refit_rows} rows of train and dev together, each member for its "
            "chosen epochs (dev figures are of the model chosen before this refit)"
        )
    method = FINAL_MODEL_METHOD.format(
        train_rows=train_rows,
        epochs=epochs,
        best_epoch=final.best_epoch,
        soup=soup,
        threshold_metric=config.threshold_metric,
    )
    return FinalSummary(
        method=method,
        best_epoch=final.best_epoch,
        decision_threshold=final.decision_threshold,
        threshold_metric=config.threshold_metric,
        loss=final.model.config.loss,
        encoder_dropout=final.model.config.encoder_dropout,
        dev_metrics=final.dev_metrics,
        calibration=Calibration(
            train_offset_eval_mode=final.train_offset,
            dev_offset=final.dev.offset,
            test_offset=final.test.offset,
            offset_flagged=final.offset_flagged,
        ),
        final_max_epochs=config.final_max_epochs,
        combine=config.combine,
        combined=list(final.combined),
        refit_rows=final.refit_rows,
        candidates=[dataclasses.asdict(record) for record in final.candidates],
    )


def card_data(
    config: RunConfig,
    summary: StudySummary,
    final: FinalResult,
    final_summary: FinalSummary,
    folder: Path,
) -> QueryRewardCardData:
    """What the model card says about this run."""
    hyperparameters = {**summary.fixed_params, **summary.best_params}
    if final.best_epoch is not None:
        hyperparameters["epochs_trained"] = final.best_epoch
    return QueryRewardCardData(
        model_name=f"{config.model_slug}-query-reward",
        base_model=base_model_id(config.model, config.model_path()),
        repo_id=config.push_to_hub or str(folder),
        test_metrics=final.test_metrics,
        hyperparameters=hyperparameters,
        best_value=summary.best_value,
        n_trials=summary.finished,
        sampler=config.sampler,
        max_length=final.model.config.max_length,
        decision_threshold=final.decision_threshold,
        threshold_metric=config.threshold_metric,
        method=final_summary.method,
    )


__all__ = ["RunFailed", "RunResult", "run_pipeline"]
