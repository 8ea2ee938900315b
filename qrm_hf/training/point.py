"""One point of the search space, split once into what the head takes and what the Trainer takes.

A trial and a final candidate each become one `Point`; the builder reads its two halves and nothing re-splits
the values downstream. `max_length` is a TrainingArguments field (the collator cuts to it) and reaches the model
through the arguments built from the point, so it has one home during training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .fields import MODEL_PARAMETERS, training_field


@dataclass(frozen=True)
class Point:
    """The head's values (QueryRewardConfig fields) and the Trainer's (TrainingArguments fields, under their
    field names) of one point.

    Example:
        >>> point = Point.of({"dropout": 0.1, "batch_size": 32}, fixed={"max_length": 64})
        >>> dict(point.head), dict(point.training)
        ({'dropout': 0.1}, {'max_length': 64, 'per_device_train_batch_size': 32})
    """

    head: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> Point:
        """The point of `values` over the space's `fixed` values (`values` win). Names are the search space's:
        head parameters, TrainingArguments fields or their aliases (`batch_size`)."""
        merged = {**(fixed or {}), **values}
        head = {name: value for name, value in merged.items() if name in MODEL_PARAMETERS}
        training = {training_field(name): value for name, value in merged.items() if name not in MODEL_PARAMETERS}
        return cls(MappingProxyType(head), MappingProxyType(training))

    def key(self) -> tuple:
        """What must be equal for two points' models to be averaged weight by weight: the head's architecture
        and the input length (see `soup.soup_key`)."""
        from .soup import soup_key

        return soup_key(dict(self.head), self.training.get("max_length"))


__all__ = ["Point"]
