"""The hyperparameter search space, read from YAML and turned into Optuna suggestions.

Each entry of `search_space:` is either a distribution, e.g.

    dropout: {type: float, low: 0.0, high: 0.5, step: 0.05}
    learning_rate: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}
    activation: {type: categorical, choices: [relu, gelu, tanh, leaky_relu]}

or a plain value, which fixes the parameter without searching it (`pooling: mean`). Parameters of the head
go to the model's config; the others are `TrainingArguments` fields (a few under the original recipe's names).
Every bound, choice and fixed value is checked against the field it sets when the space is read, so a value no
trial could train with stops the run before a study is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import optuna

from ..numeric_checks import check_number_range
from ..training.arguments import QRMTrainingArguments
from ..training.fields import (
    MODEL_PARAMETERS,
    TRAINING_ALIASES,
    accepts,
    check_value,
    describe,
    field_type,
    read_number,
    suggest,
    training_field,
)
from ..training.point import Point

TRAINING_FIELDS = frozenset(f.name for f in fields(QRMTrainingArguments))
TYPES = ("float", "int", "categorical")


class SearchSpaceError(ValueError):
    """A search-space entry that cannot be searched; the message names the key and what would be valid."""


@dataclass(frozen=True)
class Parameter:
    """One searched parameter and its Optuna distribution."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    @classmethod
    def from_yaml(cls, name: str, raw: dict[str, Any]) -> Parameter:
        where = f"search_space.{name}"
        allowed = {"type", "low", "high", "step", "log", "choices"}
        unknown = set(raw) - allowed
        if unknown:
            raise SearchSpaceError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        kind = raw.get("type")
        if kind not in TYPES:
            raise SearchSpaceError(f"{where}.type must be one of {TYPES}, got {kind!r}")
        if kind == "categorical":
            choices = raw.get("choices")
            if not isinstance(choices, list) or not choices:
                raise SearchSpaceError(f"{where}.choices must be a non-empty list, got {choices!r}")
            if set(raw) - {"type", "choices"}:
                raise SearchSpaceError(f"{where}: a categorical parameter takes only `choices`")
            return cls(
                name=name, type=kind, choices=tuple(_checked(name, choice, f"{where}.choices") for choice in choices)
            )
        if "low" not in raw or "high" not in raw:
            raise SearchSpaceError(f"{where}: a {kind} parameter needs `low` and `high`")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise SearchSpaceError(f"{where}.log must be true or false, got {log!r}")
        low, high, step = (read_number(raw.get(key)) for key in ("low", "high", "step"))
        try:
            check_number_range(where, low, high, step, log, whole=kind == "int")
        except ValueError as error:
            raise SearchSpaceError(str(error)) from None
        if kind == "float" and not accepts(field_type(name), 0.5):
            field = name if name in MODEL_PARAMETERS else training_field(name)
            raise SearchSpaceError(
                f"{where}: {field} takes {describe(field_type(name))}, not any float: use `type: int` or `categorical`"
            )
        for key, bound in (("low", low), ("high", high)):
            try:
                check_value(name, int(bound) if kind == "int" else bound)
            except ValueError as error:
                raise SearchSpaceError(f"{where}.{key}: {error}") from None
        return cls(name=name, type=kind, low=low, high=high, step=step, log=log)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution `suggest` draws from (to check a stored study against this space)."""
        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def grid(self) -> list:
        """Every value of a finite parameter, for grid search."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "float" and self.step is None:
            raise SearchSpaceError(f"search_space.{self.name}: grid search needs a `step` on every float parameter")
        step = self.step or 1
        count = round((self.high - self.low) / step) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) for v in values] if self.type == "int" else [round(v, 12) for v in values]

    def largest(self) -> Any:
        return max(self.choices) if self.type == "categorical" else self.high

    def extremes(self) -> dict[str, Any]:
        """The values at the edges of this parameter, by where the config gives them: `low` and `high` of a
        range (a range's rules hold at every value when they hold at both ends), each of a categorical's choices.

        Example:
            >>> Parameter("num_epochs", "int", low=2, high=10).extremes()
            {'search_space.num_epochs.low': 2, 'search_space.num_epochs.high': 10}
        """
        where = f"search_space.{self.name}"
        if self.type == "categorical":
            return {f"{where}.choices[{index}]": choice for index, choice in enumerate(self.choices)}
        kind = int if self.type == "int" else float
        return {f"{where}.low": kind(self.low), f"{where}.high": kind(self.high)}


def _checked(name: str, value: Any, where: str) -> Any:
    """`value` as the field of `name` takes it, or SearchSpaceError naming `where`."""
    try:
        return check_value(name, value)
    except ValueError as error:
        raise SearchSpaceError(f"{where}: {error}") from None


def _target(name: str) -> str:
    if name in MODEL_PARAMETERS:
        return "model"
    if training_field(name) in TRAINING_FIELDS:
        return "training"
    known = sorted(set(MODEL_PARAMETERS) | set(TRAINING_ALIASES))
    hint = suggest(name, sorted(set(MODEL_PARAMETERS) | set(TRAINING_ALIASES) | TRAINING_FIELDS))
    raise SearchSpaceError(
        f"search_space.{name}: unknown parameter{hint}; use a head parameter or a TrainingArguments field "
        f"(e.g. {', '.join(known)})"
    )


def _describe(distribution: optuna.distributions.BaseDistribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return f"choices {list(distribution.choices)}"
    step = f", step {distribution.step}" if getattr(distribution, "step", None) not in (None, 1) else ""
    log = ", log" if getattr(distribution, "log", False) else ""
    return f"[{distribution.low}, {distribution.high}]{step}{log}"


@dataclass(frozen=True)
class SearchSpace:
    """Searched parameters and fixed values, split into the model's and the Trainer's.

    Example:
        >>> space = SearchSpace.from_dict({"dropout": {"type": "float", "low": 0, "high": 0.5, "step": 0.05},
        ...                                "batch_size": {"type": "categorical", "choices": [16, 32]}})
        >>> space.training_arguments({"batch_size": 32})
        {'per_device_train_batch_size': 32}
    """

    parameters: tuple[Parameter, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> SearchSpace:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise SearchSpaceError(f"search_space must be a mapping of parameter names, got {type(raw).__name__}")
        parameters, fixed = [], {}
        for name, spec in raw.items():
            _target(name)
            if isinstance(spec, dict):
                parameters.append(Parameter.from_yaml(name, spec))
            else:
                fixed[name] = _checked(name, spec, f"search_space.{name}")
        if not parameters:
            raise SearchSpaceError("search_space: nothing to search (every entry is a fixed value)")
        return cls(parameters=tuple(parameters), fixed=fixed)

    @property
    def names(self) -> list[str]:
        return [parameter.name for parameter in self.parameters]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every searched parameter. Optuna returns the stored value when a name is asked again."""
        return {parameter.name: parameter.suggest(trial) for parameter in self.parameters}

    def values(self, trial: optuna.Trial | None) -> dict[str, Any]:
        """The trial's searched values merged with the fixed ones (fixed ones only, without a trial)."""
        searched = self.suggest(trial) if trial is not None else {}
        return {**self.fixed, **searched}

    @staticmethod
    def split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model config values, TrainingArguments values under their field names) of a point of the space.

        Example:
            >>> SearchSpace.split({"dropout": 0.1, "batch_size": 32})
            ({'dropout': 0.1}, {'per_device_train_batch_size': 32})
        """
        for name in values:
            _target(name)  # an unknown name is refused here, naming its key
        point = Point.of(values)
        return dict(point.head), dict(point.training)

    @staticmethod
    def model_kwargs(values: dict[str, Any]) -> dict[str, Any]:
        return SearchSpace.split(values)[0]

    @staticmethod
    def training_arguments(values: dict[str, Any]) -> dict[str, Any]:
        return SearchSpace.split(values)[1]

    def largest(self, name: str, default: Any) -> Any:
        """The largest value `name` can take in this space (to tokenize once for every trial)."""
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter.largest()
        return self.fixed.get(name, default)

    def check_point(self, point: dict[str, Any], where: str = "warm_start") -> dict[str, Any]:
        """A point to try first (`warm_start`), checked against the space: every key a searched parameter,
        every value one the parameter can take. Parameters left out are drawn by the sampler."""
        if not isinstance(point, dict):
            raise SearchSpaceError(f"{where} must be a mapping of searched parameters, got {point!r}")
        distributions = self.distributions()
        checked = {}
        for name, value in point.items():
            value = read_number(value)
            if name not in distributions:
                fixed = f" ({name} is fixed in the space at {self.fixed[name]!r})" if name in self.fixed else ""
                raise SearchSpaceError(
                    f"{where}.{name}: not a searched parameter{fixed}; searched: {', '.join(self.names)}"
                )
            distribution = distributions[name]
            categorical = isinstance(distribution, optuna.distributions.CategoricalDistribution)
            try:
                contained = distribution._contains(distribution.to_internal_repr(value))
            except (TypeError, ValueError):
                contained = False
            if isinstance(value, bool) and not categorical:  # Optuna would read `true` as 1 in a range
                contained = False
            if not contained:
                raise SearchSpaceError(f"{where}.{name}: {value!r} is outside the space ({_describe(distribution)})")
            checked[name] = value
        return checked

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {parameter.name: parameter.distribution() for parameter in self.parameters}

    def grid(self) -> dict[str, list]:
        return {parameter.name: parameter.grid() for parameter in self.parameters}


__all__ = ["MODEL_PARAMETERS", "Parameter", "SearchSpace", "SearchSpaceError", "TRAINING_ALIASES"]
