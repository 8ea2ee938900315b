"""One training run: a point of the space becomes TrainingArguments and a model, and the one QRMTrainer.

The search (every trial) and the final stage (every candidate) build through here, so a trial and the final
model trained on its values get the same arguments, head, collator, early stopping and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, set_seed

from ..data import QueryCollator
from ..metrics import compute_metrics
from ..modeling.encoder_blocks import reinitialize_top_blocks
from ..modeling.modeling_qrm import QueryRewardModel
from ..run.config import RunConfig
from .arguments import QRMTrainingArguments
from .point import Point
from .trainer import PerTrialEarlyStopping, QRMTrainer


class RunBuilder:
    """The one place a point of the space becomes a training run: its TrainingArguments and its model.

    The search's `model_init` and the final stage both build through it, so a trial and the final model
    trained on its values get the same arguments and the same head (SetFit's `apply_hyperparameters`).
    `fixed` holds the space's fixed values, under every point.

    Example:
        >>> builder = RunBuilder(config, space.fixed, encoder)  # doctest: +SKIP
        >>> args, model = builder.build(best_params, "out")  # doctest: +SKIP
    """

    def __init__(self, config: RunConfig, fixed: Mapping[str, Any], encoder: PreTrainedModel | None) -> None:
        self.config = config
        self.fixed = dict(fixed)
        self.encoder = encoder

    def point(self, values: Mapping[str, Any] | None = None) -> Point:
        """The point of `values` over the fixed values (the fixed values alone when None)."""
        return Point.of(values or {}, self.fixed)

    def arguments(self, output_dir: Path, point: Point, **overrides: Any) -> QRMTrainingArguments:
        """TrainingArguments for `point`; `overrides` win."""
        return base_training_arguments(self.config, output_dir, **{**point.training, **overrides})

    def model(self, point: Point, args: QRMTrainingArguments) -> QueryRewardModel:
        """A copy of the pretrained encoder (loaded once) with the head of `point`, built after the seed is set.
        Its max_length is the arguments' (`args.max_length`, the point's when it sets one): the length the
        collator cuts to and the one the saved model keeps."""
        set_seed(args.seed)
        model = QueryRewardModel.from_encoder(self.encoder, max_length=args.max_length, **point.head)
        reinitialize_top_blocks(model, args.reinit_top_layers)
        return model

    def build(self, values: Mapping[str, Any], output_dir: Path, **overrides: Any):
        """(args, model) of one training run on the point `values` (split once, here)."""
        point = self.point(values)
        args = self.arguments(output_dir, point, **overrides)
        return args, self.model(point, args)


def base_training_arguments(config: RunConfig, output_dir: Path, **overrides: Any) -> QRMTrainingArguments:
    """Arguments of a run: evaluate each epoch, no checkpoints, the config's seed and tracker.

    Later sources win: these defaults, the config's `training`, `overrides` (a point's values, via RunBuilder).
    """
    defaults: dict[str, Any] = {
        "output_dir": str(output_dir),
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "save_strategy": "no",
        "metric_for_best_model": "mse",
        "greater_is_better": False,
        "report_to": config.report_to,
        "seed": config.seed,
        "data_seed": config.seed,
        "per_device_eval_batch_size": 128,
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "dataloader_pin_memory": torch.cuda.is_available(),
    }
    defaults.update(config.training)
    defaults.update(overrides)
    return QRMTrainingArguments(**defaults)


def make_collator(tokenizer: PreTrainedTokenizerBase, args: QRMTrainingArguments) -> QueryCollator:
    """The collator of a training run: its max_length, and lengths in multiples of 8 under bf16 (tensor cores)."""
    return QueryCollator(tokenizer, max_length=args.max_length, pad_to_multiple_of=8 if args.bf16 else None)


def make_trainer(
    args: QRMTrainingArguments,
    tokenizer: PreTrainedTokenizerBase,
    tokenized: DatasetDict,
    *,
    model: QueryRewardModel | None = None,
    model_init: Any = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> QRMTrainer:
    """The QRMTrainer of a run on `tokenized` (train, evaluated on dev): `model`, or `model_init` for a search;
    early stopping when `args.early_stopping_patience` is set."""
    callbacks = list(callbacks)
    if args.early_stopping_patience is not None:
        callbacks.append(PerTrialEarlyStopping(early_stopping_patience=args.early_stopping_patience))
    return QRMTrainer(
        model=model,
        model_init=model_init,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["dev"],
        data_collator=make_collator(tokenizer, args),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )


__all__ = ["RunBuilder", "base_training_arguments", "make_collator", "make_trainer"]
