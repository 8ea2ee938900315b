"""The final model: the best values trained on all of train, selected and calibrated on dev, tested once.

How the shipped model is made (results/BENCHMARKS.md, "Quality"): the best trial's values are trained on the
whole training split, with the trial's schedule or up to `final_max_epochs`; dev is evaluated after every epoch,
early stopping applies, and the epoch with the lowest dev MSE is kept (transformers' `load_best_model_at_end`).
With `final_candidates` > 1 the next best trials of the same architecture are trained the same way and combined
where dev says so (`qrm_hf.training.soup`): their weights averaged (`combine: soup`, one model) or their scores
(`combine: ensemble`, a `QueryRewardEnsemble`). The chosen model's dev predictions choose the decision threshold.
With `refit_on_dev` the chosen members are then trained again on train and dev together, each on the schedule it
was chosen with and for its best epochs (nothing is left to select on, so nothing is), and combined the same
way. The test split is scored once, at the end. The search may have seen fewer training rows
(`search_train_samples`); this stage always trains on all of them.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from datasets import DatasetDict, concatenate_datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from ..metrics import as_scores, choose_threshold, count_nonfinite, score_metrics
from ..modeling.modeling_qrm import QueryRewardEnsemble, QueryRewardModel
from ..run.config import RunConfig
from ..run.folder import offset_advice
from .build import RunBuilder, make_trainer
from .point import Point
from .soup import Ingredient, average_weights, greedy_ensemble, greedy_soup
from .trainer import QRMTrainer, best_epoch

logger = logging.getLogger(__name__)

# Training rows scored in eval mode to check calibration: the mean prediction should equal the mean label.
OFFSET_ROWS = 2000
# An eval-mode offset beyond this on the model's own training rows is flagged in the log and the report.
OFFSET_TOLERANCE = 0.02


@dataclass(frozen=True)
class Predictions:
    """Predicted and true scores of one split."""

    predicted: np.ndarray
    true: np.ndarray

    @property
    def offset(self) -> float:
        """Mean prediction minus mean label: what a calibrated model keeps near zero."""
        return float(np.mean(self.predicted) - np.mean(self.true))


@dataclass(frozen=True)
class FinalResult:
    """The final model and the evidence about it: dev (selection, threshold) and test (reported once)."""

    model: QueryRewardModel | QueryRewardEnsemble
    best_epoch: float | None
    decision_threshold: float
    dev: Predictions
    test: Predictions
    train_offset: float
    dev_metrics: dict[str, float]
    test_metrics: dict[str, float]
    candidates: tuple[CandidateRecord, ...] = ()
    # Rows of train and dev that the shipped weights were refit on (`refit_on_dev`); None: train only. When set,
    # `dev` and `dev_metrics` are of the model selected on dev before the refit.
    refit_rows: int | None = None

    @property
    def combined(self) -> tuple[str, ...]:
        """The candidates in the shipped model, best first (one label: the best candidate alone)."""
        return tuple(record.label for record in self.candidates if record.in_model)

    @property
    def offset_flagged(self) -> bool:
        return abs(self.train_offset) > OFFSET_TOLERANCE


class TrainingDiverged(RuntimeError):
    """A model of the final stage scores NaN or infinity: its training diverged, and nothing of it is saved."""


def predictions_of(trainer: QRMTrainer, dataset: Any) -> Predictions:
    """Score a tokenized split with the trainer's model (eval mode, no gradient); TrainingDiverged when a score
    is NaN or infinite."""
    output = trainer.predict(dataset, metric_key_prefix="predict")
    nonfinite = count_nonfinite(output.predictions)
    if nonfinite:
        raise TrainingDiverged(
            f"the model scores {nonfinite} of {len(dataset)} rows NaN or infinite: its training diverged; lower "
            "the learning rates (search_space, training:) and run again"
        )
    return Predictions(as_scores(output.predictions), as_scores(output.label_ids, "labels"))


@dataclass(frozen=True)
class Candidate:
    """A configuration the final stage trains on all of train: a completed trial's values and its search value."""

    params: dict[str, Any]
    trial: int | None = None
    search_value: float | None = None

    @property
    def label(self) -> str:
        return f"trial {self.trial}" if self.trial is not None else "the given values"


@dataclass(frozen=True)
class CandidateRecord:
    """What the final stage learned about one candidate: its dev MSE on all of train, and whether it is in the
    shipped model (final_model.json, the report)."""

    label: str
    trial: int | None
    search_value: float | None
    dev_mse: float
    best_epoch: float | None
    epochs_run: float
    in_model: bool


def soup_candidates(completed: Sequence[Any], fixed: Mapping[str, Any], size: int) -> list[Candidate]:
    """The best `size` completed trials (FrozenTrials) that can be averaged with the best one (same `soup_key`),
    best first; `fixed` holds the space's fixed values."""
    ranked = sorted((trial for trial in completed if trial.value is not None), key=lambda trial: trial.value)
    if not ranked:
        return []

    def key(trial: Any) -> tuple:
        return Point.of(trial.params, fixed).key()

    wanted = key(ranked[0])
    same = [trial for trial in ranked if key(trial) == wanted][:size]
    return [Candidate(dict(trial.params), trial.number, trial.value) for trial in same]


def _train_in_final_folder(
    config: RunConfig,
    fixed: Mapping[str, Any],
    params: dict[str, Any],
    datasets: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
    callbacks: Sequence[TrainerCallback] = (),
    **overrides: Any,
) -> QRMTrainer:
    """Build and train `params` in the final stage's checkpoint folder, removed afterwards; the schedule is laid out
    over `config.final_max_epochs` when set. Returns the trainer holding the model."""
    checkpoints = config.layout.final_checkpoints
    laid_out = {} if config.final_max_epochs is None else {"num_train_epochs": config.final_max_epochs}
    args, model = RunBuilder(config, fixed, encoder).build(params, checkpoints, **overrides, **laid_out)
    trainer = make_trainer(args, tokenizer, datasets, model=model, callbacks=callbacks)
    trainer.train()
    if trainer.is_world_process_zero():
        shutil.rmtree(checkpoints, ignore_errors=True)
    return trainer


def fit_candidate(
    config: RunConfig,
    fixed: Mapping[str, Any],
    params: dict[str, Any],
    tokenized: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
) -> QRMTrainer:
    """Train `params` on all of train and reload its best dev epoch; returns the trainer holding that model.

    With `config.final_max_epochs` the run may train that many epochs, its schedule (warmup, decay) laid out
    over all of them; early stopping on dev ends it sooner when dev stops improving."""
    return _train_in_final_folder(
        config,
        fixed,
        params,
        tokenized,
        tokenizer,
        encoder,
        # Checkpoints only to reload the best epoch: the model alone, the latest and the best kept.
        save_strategy="epoch",
        save_only_model=True,
        save_total_limit=1,
        load_best_model_at_end=True,
    )


class StopAfterEpochs(TrainerCallback):
    """Ends training after `epochs` epochs, whatever `num_train_epochs` laid the schedule out for: a refit
    follows the selected run's learning-rate schedule and stops where that run's best epoch was."""

    def __init__(self, epochs: float) -> None:
        self.epochs = epochs

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch >= self.epochs - 1e-6:
            control.should_training_stop = True
        return control


def refit_candidate(
    config: RunConfig,
    fixed: Mapping[str, Any],
    params: dict[str, Any],
    rows: Any,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
    epochs: float,
) -> QRMTrainer:
    """Train `params` again on `rows` (train and dev together) with nothing held out: the schedule of the run
    that `fit_candidate` selected on dev, stopped after its best epoch (`epochs`). No evaluation, no early
    stopping: dev is training data here, so the number of epochs comes from the run that could see it. Returns
    the trainer holding the refit model."""
    return _train_in_final_folder(
        config,
        fixed,
        params,
        DatasetDict(train=rows, dev=rows),
        tokenizer,
        encoder,
        callbacks=[StopAfterEpochs(epochs)],
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        early_stopping_patience=None,
    )


def _mse(predictions: Predictions) -> float:
    return float(np.mean((predictions.predicted - predictions.true) ** 2))


def train_final(
    config: RunConfig,
    fixed: Mapping[str, Any],
    candidates: dict[str, Any] | Sequence[Candidate],
    tokenized: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
) -> FinalResult:
    """Train each candidate (over the space's `fixed` values) on all of train and keep its best dev epoch; with
    more than one, combine them greedily on dev (`config.combine`: a weight soup or an ensemble,
    `qrm_hf.training.soup`).
    Then choose the decision threshold on dev (`config.threshold_metric`) and score test once. `candidates` may
    be one point's values."""
    if isinstance(candidates, dict):
        candidates = [Candidate(candidates)]
    if not candidates:
        raise ValueError("the final stage needs at least one candidate configuration")
    trainer = None
    ingredients, records, dev_predictions = [], {}, {}
    for index, candidate in enumerate(candidates):
        if len(candidates) > 1:
            logger.info("final stage: candidate %d of %d (%s)", index + 1, len(candidates), candidate.label)
        fitted = fit_candidate(config, fixed, candidate.params, tokenized, tokenizer, encoder)
        try:
            dev = predictions_of(fitted, tokenized["dev"])
        except TrainingDiverged as error:
            logger.warning("final stage: candidate %s left out: %s", candidate.label, error)
            continue
        records[candidate.label] = CandidateRecord(
            label=candidate.label,
            trial=candidate.trial,
            search_value=candidate.search_value,
            dev_mse=_mse(dev),
            best_epoch=best_epoch(fitted.state.log_history),
            epochs_run=round(float(fitted.state.epoch or 0.0), 4),
            in_model=False,
        )
        if len(candidates) > 1:
            weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in fitted.model.state_dict().items()}
            ingredients.append(Ingredient(candidate.label, weights, _mse(dev)))
            dev_predictions[candidate.label] = dev.predicted
        if trainer is None:
            trainer = fitted
    if trainer is None:
        raise TrainingDiverged(
            f"every candidate of the final stage diverged ({len(candidates)}): nothing is saved; lower the learning "
            "rates (search_space, training:) and run again"
        )
    member_config = copy.deepcopy(trainer.model.config)
    chosen = (next(iter(records)),)
    if len(ingredients) > 1 and config.combine == "ensemble":
        chosen, dev_mse = greedy_ensemble(ingredients, dev_predictions, dev.true)
        by_label = {ingredient.label: ingredient.weights for ingredient in ingredients}
        if len(chosen) > 1:
            ensemble = QueryRewardEnsemble.from_weights(trainer.model.config, [by_label[label] for label in chosen])
            ensemble.to(trainer.model.device)
            trainer = make_trainer(trainer.args, tokenizer, tokenized, model=ensemble)
        else:
            trainer.model.load_state_dict(by_label[chosen[0]])
        logger.info("final stage: ensemble of %s, dev MSE %.5f", ", ".join(chosen), dev_mse)
    elif len(ingredients) > 1:
        model = trainer.model

        def dev_mse_of(weights: dict[str, Any]) -> float:
            model.load_state_dict(weights)
            return _mse(predictions_of(trainer, tokenized["dev"]))

        soup = greedy_soup(ingredients, dev_mse_of)
        model.load_state_dict(soup.weights)
        chosen = soup.labels
        logger.info("final stage: soup of %s, dev MSE %.5f", ", ".join(chosen), soup.dev_mse)
    dev = predictions_of(trainer, tokenized["dev"])
    threshold = choose_threshold(dev.predicted, dev.true, config.threshold_metric)
    if config.refit_on_dev:
        # Selection, combination and threshold are settled on dev; now dev becomes training data as well.
        params = {candidate.label: candidate.params for candidate in candidates}
        plan = [(params[label], records[label].best_epoch or records[label].epochs_run) for label in chosen]
        model = refit_combination(config, fixed, plan, member_config, tokenized, tokenizer, encoder)
        model.to(trainer.model.device)
        trainer = make_trainer(trainer.args, tokenizer, tokenized, model=model)
    trainer.model.config.decision_threshold = threshold
    train_rows = tokenized["train"].select(range(min(OFFSET_ROWS, len(tokenized["train"]))))
    train_offset = predictions_of(trainer, train_rows).offset
    if abs(train_offset) > OFFSET_TOLERANCE:
        logger.warning(
            "the final model's mean prediction on its own training rows is off the mean label by %+.4f "
            "(tolerance %.2f): its scores are shifted; %s",
            train_offset,
            OFFSET_TOLERANCE,
            offset_advice(trainer.model.config.encoder_dropout),
        )
    test = predictions_of(trainer, tokenized["test"])
    candidate_records = tuple(replace(record, in_model=record.label in chosen) for record in records.values())
    return FinalResult(
        model=trainer.model,
        best_epoch=records[chosen[0]].best_epoch,
        decision_threshold=threshold,
        dev=dev,
        test=test,
        train_offset=train_offset,
        dev_metrics=score_metrics(dev.predicted, dev.true, threshold),
        test_metrics=score_metrics(test.predicted, test.true, threshold),
        candidates=candidate_records,
        refit_rows=len(tokenized["train"]) + len(tokenized["dev"]) if config.refit_on_dev else None,
    )


def refit_combination(
    config: RunConfig,
    fixed: Mapping[str, Any],
    plan: Sequence[tuple[dict[str, Any], float]],
    member_config: Any,
    tokenized: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
) -> QueryRewardModel | QueryRewardEnsemble:
    """The chosen combination made again from refits on train and dev: each (values, epochs) of `plan` trained by
    `refit_candidate`, then combined as `config.combine` says (the same members, the same way)."""
    rows = concatenate_datasets([tokenized["train"], tokenized["dev"]])
    weights = []
    for index, (params, epochs) in enumerate(plan):
        logger.info(
            "final stage: refit %d of %d on %d rows of train and dev, %s epochs",
            index + 1,
            len(plan),
            len(rows),
            epochs,
        )
        refit = refit_candidate(config, fixed, params, rows, tokenizer, encoder, float(epochs)).model
        weights.append({name: tensor.detach().to("cpu", copy=True) for name, tensor in refit.state_dict().items()})
    if len(weights) > 1 and config.combine == "ensemble":
        return QueryRewardEnsemble.from_weights(member_config, weights)
    model = refit
    if len(weights) > 1:
        model.load_state_dict(average_weights(weights))
    return model


__all__ = [
    "OFFSET_TOLERANCE",
    "Candidate",
    "CandidateRecord",
    "FinalResult",
    "Predictions",
    "fit_candidate",
    "refit_candidate",
    "refit_combination",
    "soup_candidates",
    "train_final",
    "TrainingDiverged",
]
