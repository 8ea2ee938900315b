"""The final model: the best values trained on all of train, selected and calibrated on dev, tested once.

How the shipped model is made (results/BENCHMARKS.md, "Quality"): the best trial's values are trained on the
whole training split with the trial's schedule; dev is evaluated after every epoch, early stopping applies, and
the epoch with the lowest dev MSE is kept (transformers' `load_best_model_at_end`). Its dev predictions choose
the decision threshold; the test split is scored once, at the end. The search may have seen fewer training
rows (`search_train_samples`); this stage always trains on all of them.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .card import QueryRewardCardData, write_model_card
from .metrics import as_scores, choose_threshold, compute_metrics, score_metrics
from .modeling_qrm import QueryRewardModel
from .run_config import RunConfig
from .search import RunBuilder, make_collator
from .search_space import SearchSpace
from .trainer import PerTrialEarlyStopping, QRMTrainer, best_epoch

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

    model: QueryRewardModel
    best_epoch: float | None
    decision_threshold: float
    dev: Predictions
    test: Predictions
    train_offset: float
    dev_metrics: dict[str, float]
    test_metrics: dict[str, float]

    @property
    def offset_flagged(self) -> bool:
        return abs(self.train_offset) > OFFSET_TOLERANCE


def predictions_of(trainer: QRMTrainer, dataset: Any) -> Predictions:
    """Score a tokenized split with the trainer's model (eval mode, no gradient)."""
    output = trainer.predict(dataset, metric_key_prefix="predict")
    return Predictions(as_scores(output.predictions), as_scores(output.label_ids, "labels"))


def train_final(
    config: RunConfig,
    space: SearchSpace,
    best_params: dict[str, Any],
    tokenized: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
) -> FinalResult:
    """Train `best_params` (over the space's fixed values) on all of train, keep the best dev epoch, choose the
    decision threshold on dev (`config.threshold_metric`), then score test once."""
    checkpoints = config.layout.final_checkpoints
    args, model = RunBuilder(config, space, encoder).build(
        best_params,
        checkpoints,
        # Checkpoints only to reload the best epoch: the model alone, the latest and the best kept.
        save_strategy="epoch",
        save_only_model=True,
        save_total_limit=1,
        load_best_model_at_end=True,
    )
    callbacks = []
    if args.early_stopping_patience is not None:
        callbacks.append(PerTrialEarlyStopping(early_stopping_patience=args.early_stopping_patience))
    trainer = QRMTrainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["dev"],
        data_collator=make_collator(tokenizer, args),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    trainer.train()
    if trainer.is_world_process_zero():
        shutil.rmtree(checkpoints, ignore_errors=True)
    dev = predictions_of(trainer, tokenized["dev"])
    threshold = choose_threshold(dev.predicted, dev.true, config.threshold_metric)
    trainer.model.config.decision_threshold = threshold
    train_rows = tokenized["train"].select(range(min(OFFSET_ROWS, len(tokenized["train"]))))
    train_offset = predictions_of(trainer, train_rows).offset
    if abs(train_offset) > OFFSET_TOLERANCE:
        logger.warning(
            "the final model's mean prediction on its own training rows is off the mean label by %+.4f "
            "(tolerance %.2f): its scores are shifted; encoder_dropout 0 usually removes this",
            train_offset,
            OFFSET_TOLERANCE,
        )
    test = predictions_of(trainer, tokenized["test"])
    return FinalResult(
        model=trainer.model,
        best_epoch=best_epoch(trainer.state.log_history),
        decision_threshold=threshold,
        dev=dev,
        test=test,
        train_offset=train_offset,
        dev_metrics=score_metrics(dev.predicted, dev.true, threshold),
        test_metrics=score_metrics(test.predicted, test.true, threshold),
    )


def save_reward_model(model: QueryRewardModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """Save model, tokenizer and remote code in one folder that `from_pretrained` reloads, with or without
    qrm_hf installed."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_final(
    model: QueryRewardModel, tokenizer: PreTrainedTokenizerBase, folder: Path, card: QueryRewardCardData
) -> Path:
    """Save the final model (see `save_reward_model`) with its model card as README.md."""
    save_reward_model(model, tokenizer, folder)
    write_model_card(folder, card)
    return folder


def write_test_metrics(metrics: dict[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def push_folder(
    folder: Path, repo_id: str, private: bool = False, commit_message: str | None = None, revision: str | None = None
) -> str:
    """Upload a saved model folder to the Hub; without network or token the error says so and nothing changes."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            commit_message=commit_message or "Upload query reward model",
            revision=revision,
        )
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise RuntimeError(
            f"could not push {folder} to {repo_id}: {error}. Log in with `hf auth login` or set HF_TOKEN, "
            "check the network, then run scripts/push.py on the saved folder."
        ) from error
    return str(info)


__all__ = [
    "OFFSET_TOLERANCE",
    "FinalResult",
    "Predictions",
    "push_folder",
    "save_final",
    "save_reward_model",
    "train_final",
    "write_test_metrics",
]
