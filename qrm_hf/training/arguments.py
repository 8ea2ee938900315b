"""Training arguments of the query reward model: stock `TrainingArguments` plus the head's own knobs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

# The longest input in tokens when a run says nothing (QueryRewardConfig, copied into saved models, repeats it).
DEFAULT_MAX_LENGTH = 128


@dataclass
class QRMTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the fields a query reward model adds.

    Example:
        >>> args = QRMTrainingArguments(output_dir="out", learning_rate=2e-5, head_lr_multiplier=11.0)
        >>> args.learning_rate * args.head_lr_multiplier
        0.00022
    """

    # --- Regression head ---
    head_lr_multiplier: float = field(
        default=1.0,
        metadata={"help": "The head trains at learning_rate * head_lr_multiplier; the encoder at learning_rate."},
    )

    layer_lr_decay: float = field(
        default=1.0,
        metadata={
            "help": "Layer-wise learning-rate decay: each encoder layer below the top trains at this factor of "
            "the one above it (the embeddings last); 1.0 keeps one learning rate for the whole encoder."
        },
    )

    reinit_top_layers: int = field(
        default=0,
        metadata={
            "help": "Re-initialise the top N encoder blocks before training (Zhang et al. 2021: the top of a "
            "pretrained encoder is tuned to its pretraining task); 0 keeps every pretrained weight."
        },
    )

    # --- Inputs ---
    max_length: int = field(
        default=DEFAULT_MAX_LENGTH,
        metadata={"help": "Longest input in tokens; longer queries are truncated (keeping the end token)."},
    )

    # --- Stopping ---
    early_stopping_patience: int | None = field(
        default=2,
        metadata={"help": "Stop after this many evaluations without a lower validation MSE; None disables it."},
    )

    # A float default, so that a trial's warmup ratio (< 1) is not cast to int by the hyperparameter search.
    warmup_steps: float = field(
        default=0.0,
        metadata={"help": "Warmup: a ratio of all steps when < 1, a number of steps when >= 1."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_lr_multiplier <= 0:
            raise ValueError(f"head_lr_multiplier must be > 0, got {self.head_lr_multiplier}")
        if not 0 < self.layer_lr_decay <= 1:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.reinit_top_layers < 0:
            raise ValueError(f"reinit_top_layers must be >= 0, got {self.reinit_top_layers}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience}")


# Steps of the schedule the check runs through: enough to pass warmup and reach the end of a short schedule.
CHECKED_SCHEDULE_STEPS = 10


def check_optimization(args: QRMTrainingArguments) -> None:
    """Build the optimizer and learning-rate schedule the Trainer builds from `args` (over one parameter) and run
    the schedule to its end, so that their own validation speaks before a study rather than inside its first
    trial: torch's (lr and eps >= 0, betas in [0, 1)), the scheduler's keywords, and a rate that must stay finite
    and >= 0 at every step. Raises ValueError with their message.

    Example:
        >>> check_optimization(QRMTrainingArguments(output_dir="out", adam_beta1=2.0, report_to="none"))
        Traceback (most recent call last):
        ...
        ValueError: Invalid beta parameter at index 0: 2.0
    """
    # The Trainer module is heavy and only a run's checks need it here.
    from transformers import Trainer, get_scheduler

    model = torch.nn.Linear(1, 1)
    try:
        optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        optimizer = optimizer_class(model.parameters(), **optimizer_kwargs)
        scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=args.get_warmup_steps(CHECKED_SCHEDULE_STEPS),
            num_training_steps=CHECKED_SCHEDULE_STEPS,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return  # its rate moves with the dev loss, not with steps
        for _ in range(CHECKED_SCHEDULE_STEPS):
            optimizer.step()
            scheduler.step()
            rate = scheduler.get_last_lr()[0]
            if not (math.isfinite(rate) and rate >= 0):
                raise ValueError(f"the {args.lr_scheduler_type} schedule reaches a learning rate of {rate}")
    except (TypeError, ArithmeticError, ImportError) as error:  # a keyword it does not take, 0 ** -1, no package
        raise ValueError(f"{type(error).__name__}: {error}") from None


__all__ = ["CHECKED_SCHEDULE_STEPS", "DEFAULT_MAX_LENGTH", "QRMTrainingArguments", "check_optimization"]
