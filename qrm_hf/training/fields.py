"""One value from YAML checked against the field it sets: a head field of `QueryRewardConfig` or a field of
`QRMTrainingArguments`.

The search space and the run config's `training:` mapping are checked with these before any study is opened or
model loaded, so a value that would fail inside a trial (and write a FAIL trial into the study) stops the run at
once. PyYAML reads YAML 1.1, where `1e-4` (no dot) is a string: such strings are read as numbers wherever the
field takes a number.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import sys
import types
import typing
from typing import Any

from ..modeling.configuration_qrm import QueryRewardConfig
from ..numeric_checks import ANY_NUMBER, Domain, check_finite, is_number
from .arguments import QRMTrainingArguments

# Parameters of the head: they go to QueryRewardConfig; every other name is a TrainingArguments field.
MODEL_PARAMETERS = (
    "dropout",
    "num_hidden_layers",
    "hidden_dim_ratio",
    "activation",
    "use_layer_norm",
    "pooling",
    "encoder_dropout",
    "loss",
)

# The original recipe's names for TrainingArguments fields.
TRAINING_ALIASES = {
    "batch_size": "per_device_train_batch_size",
    "num_epochs": "num_train_epochs",
    "warmup_ratio": "warmup_steps",
    "scheduler": "lr_scheduler_type",
}

# Floats that YAML 1.2 reads as numbers and PyYAML (YAML 1.1: a dot and a signed exponent required) as strings.
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@functools.lru_cache(maxsize=1)
def training_field_types() -> dict[str, Any]:
    """Each QRMTrainingArguments field that can be set, with its type."""
    hints = typing.get_type_hints(QRMTrainingArguments)
    return {field.name: hints[field.name] for field in dataclasses.fields(QRMTrainingArguments) if field.init}


@functools.lru_cache(maxsize=1)
def head_field_types() -> dict[str, Any]:
    """The type of each head parameter, from QueryRewardConfig's own annotations."""
    namespace = vars(sys.modules[QueryRewardConfig.__module__])
    annotations = vars(QueryRewardConfig)["__annotations__"]
    # The annotations are strings (postponed evaluation); evaluating them in their module is what typing does.
    return {name: eval(annotations[name], namespace) for name in MODEL_PARAMETERS}


@functools.lru_cache(maxsize=1)
def _probe_encoder() -> Any:
    """A small encoder config, wide enough that one head value alone never makes an empty layer."""
    from transformers import BertConfig

    return BertConfig(hidden_size=4096, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)


def training_field(name: str) -> str:
    """The TrainingArguments field a search-space name sets (`batch_size` -> `per_device_train_batch_size`)."""
    return TRAINING_ALIASES.get(name, name)


def suggest(name: str, valid: list[str]) -> str:
    """` (did you mean X?)` for the closest valid names, or an empty string."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def field_type(name: str) -> Any:
    """The type the head parameter or TrainingArguments field `name` (or its alias) takes; KeyError if none."""
    if name in MODEL_PARAMETERS:
        return head_field_types()[name]
    return training_field_types()[training_field(name)]


def _members(annotation: Any) -> tuple:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return (annotation,)


def _enums(annotation: Any) -> list[type[enum.Enum]]:
    return [member for member in _members(annotation) if isinstance(member, type) and issubclass(member, enum.Enum)]


def accepts(annotation: Any, value: Any) -> bool:
    """Whether a field of type `annotation` takes `value` as it is. A string for a field typed `SomeEnum | str`
    must be one of the enum's values; bools are not numbers; ints are floats."""
    enums = _enums(annotation)
    if enums and isinstance(value, str):
        return any(value in {member.value for member in kind} for kind in enums)
    for member in _members(annotation):
        if member is Any:
            return True
        if member is type(None):
            if value is None:
                return True
            continue
        if typing.get_origin(member) is typing.Literal:
            if value in typing.get_args(member):
                return True
            continue
        kind = typing.get_origin(member) or member
        if kind is bool:
            matched = isinstance(value, bool)
        elif kind is int:
            matched = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            matched = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(kind, type):
            matched = isinstance(value, kind)
        else:  # a typing construct this check does not model: let the field's own validation decide
            matched = True
        if matched:
            return True
    return False


def describe(annotation: Any) -> str:
    """What a field of type `annotation` takes, in words."""
    words = []
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, enum.Enum):
            words.append("one of " + ", ".join(str(item.value) for item in member))
        elif member is str and _enums(annotation):
            continue  # the enum's values are the strings it takes
        elif member is type(None):
            words.append("null")
        else:
            kind = typing.get_origin(member) or member
            names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
            words.append(names.get(kind, getattr(kind, "__name__", str(kind))))
    return " or ".join(words)


def read_number(value: Any) -> Any:
    """`value`, or the float a YAML 1.1 string like `1e-4` stands for."""
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


# The numbers a TrainingArguments field takes where it is narrower than `training_domain`'s rule. A learning rate
# of 0 trains nothing, a batch of 0 or an epoch count below 1 never reaches an evaluation. What else the optimizer
# or the scheduler refuse, they say themselves: search.checks.check_run builds them (training_args.check_optimization).
# Bounds only: that an int field's value is whole, its type check has said.
TRAINING_DOMAINS: dict[str, Domain] = {
    "learning_rate": Domain(low=0, low_open=True),
    "adam_beta1": Domain(low=0, high=1, high_open=True),  # what torch's Adam and AdamW take
    "adam_beta2": Domain(low=0, high=1, high_open=True),
    "head_lr_multiplier": Domain(low=0, low_open=True),
    "per_device_train_batch_size": Domain(low=1),
    "per_device_eval_batch_size": Domain(low=1),
    "gradient_accumulation_steps": Domain(low=1),
    "num_train_epochs": Domain(low=1),
    "max_length": Domain(low=2),
    "early_stopping_patience": Domain(low=1),
    "layer_lr_decay": Domain(low=0, high=1, low_open=True),
    "label_smoothing_factor": Domain(low=0, high=1, high_open=True),
    "seed": Domain(low=0, high=2**32 - 1),  # numpy's seed range (transformers' set_seed)
    "data_seed": Domain(low=0, high=2**32 - 1),
}


def training_domain(field: str) -> Domain:
    """The numbers TrainingArguments field `field` takes: its entry in TRAINING_DOMAINS, else never below 0 (steps,
    counts, rates, norms and sizes), or below its own default where that is negative (`max_steps: -1`, not set)."""
    if field in TRAINING_DOMAINS:
        return TRAINING_DOMAINS[field]
    default = next(item.default for item in dataclasses.fields(QRMTrainingArguments) if item.name == field)
    return Domain(low=min(0, default) if is_number(default) else 0)


def check_range(field: str, value: Any, domain: Domain) -> Any:
    """`value`, or ValueError when field `field` cannot train with it: a NaN, an infinity (also inside a mapping
    such as `lr_scheduler_kwargs`) or a number outside `domain`."""
    if not is_number(value):
        return check_finite(field, value)
    if not domain.contains(value):
        raise ValueError(f"{value!r} is not valid for {field}: it must be {domain.describe()}")
    return value


def check_value(name: str, value: Any) -> Any:
    """`value` for search-space parameter `name` (a head parameter, a TrainingArguments field or its alias) as
    the field takes it (a YAML 1.1 float string read as a number), or ValueError saying what the field takes.
    Head values are finite here; their ranges and names (activations, poolings, losses) are QueryRewardConfig's
    own checks."""
    head = name in MODEL_PARAMETERS
    field = name if head else training_field(name)
    value = _typed(field, field_type(name), value)
    check_range(field, value, ANY_NUMBER if head else training_domain(field))
    if head:
        try:
            QueryRewardConfig(encoder=_probe_encoder(), **{name: value})
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
    return value


def _typed(field: str, annotation: Any, value: Any) -> Any:
    number = read_number(value)
    if number is not value and accepts(annotation, number) and not accepts(annotation, value):
        value = number
    if not accepts(annotation, value):
        raise ValueError(f"{value!r} is not valid for {field}: expected {describe(annotation)}")
    return value


def check_training(training: dict[str, Any]) -> dict[str, Any]:
    """The run config's `training:` mapping with every key a QRMTrainingArguments field and every value of that
    field's type (YAML 1.1 float strings read as numbers); ValueError naming the key and what is valid."""
    fields = training_field_types()
    checked = {}
    for key, value in training.items():
        if key not in fields:
            alias = (
                f" ({key} is the search space's name for {TRAINING_ALIASES[key]})" if key in TRAINING_ALIASES else ""
            )
            hint = alias or suggest(str(key), sorted(fields))
            raise ValueError(f"training.{key}: not a TrainingArguments field{hint}")
        try:
            typed = _typed(key, fields[key], value)
            checked[key] = check_range(key, typed, training_domain(key))
        except ValueError as error:
            raise ValueError(f"training.{key}: {error}") from None
    return checked


__all__ = [
    "MODEL_PARAMETERS",
    "TRAINING_ALIASES",
    "accepts",
    "check_range",
    "check_training",
    "check_value",
    "describe",
    "field_type",
    "read_number",
    "suggest",
    "training_domain",
    "training_field",
]
