"""Training arguments of the query reward model: stock `TrainingArguments` plus the head's own knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

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


__all__ = ["DEFAULT_MAX_LENGTH", "QRMTrainingArguments"]
