"""Every number a run is configured with is finite and inside its domain, checked where it is read.

Why a check of its own: NaN compares false with every bound, so a guard like `if n_trials < 1` lets `.nan`
through, and `.inf` or a whole number too large for 64 bits passes too; each then fails only inside a trial (a
FAIL trial written into the study) or after the model and data have loaded. The run config, the search space,
the `training:` mapping and the sampler options all check their numbers through `Domain` and `check_finite`.
Light to import (standard library only), like `run_config`.

Example:
    >>> Domain(whole=True, low=1).check("n_trials", 3)
    3
    >>> Domain(whole=True, low=1).check("n_trials", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: n_trials must be a whole number >= 1, got nan
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# torch, numpy and the storages keep whole numbers in 64 bits; a larger one cannot reach a trial.
INT64_LIMIT = 2**63


def is_number(value: Any) -> bool:
    """Whether `value` is an int or a float; booleans are not numbers here, though Python makes them ints."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> bool:
    """Whether the number `value` is finite: no NaN or infinity, no whole number beyond 64 bits."""
    if isinstance(value, int):
        return -INT64_LIMIT <= value < INT64_LIMIT
    return math.isfinite(value)


@dataclass(frozen=True)
class Domain:
    """The numbers a setting takes: finite always; whole or not; between `low` and `high`, each bound included
    unless `*_open` says otherwise.

    Example:
        >>> Domain(low=0, high=1, high_open=True).describe()
        'in [0, 1)'
    """

    whole: bool = False
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: Any) -> bool:
        """Whether `value` is a number (not a bool or a string) of this domain."""
        if not is_number(value) or not finite(value) or (self.whole and not isinstance(value, int)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    @staticmethod
    def _bound(bound: float) -> str:
        return str(int(bound)) if bound == int(bound) else f"{bound:g}"

    def describe(self) -> str:
        """What the domain takes, in words: `a whole number >= 1`, `in (0, 1]`, `a finite number`."""
        if math.isinf(self.low) and math.isinf(self.high):
            return "a whole number within ±2**63" if self.whole else "a finite number (whole ones within ±2**63)"
        if math.isinf(self.high):
            bounds = f"{'>' if self.low_open else '>='} {self._bound(self.low)}"
        elif math.isinf(self.low):
            bounds = f"{'<' if self.high_open else '<='} {self._bound(self.high)}"
        else:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            bounds = f"in {opening}{self._bound(self.low)}, {self._bound(self.high)}{closing}"
        return f"a whole number {bounds}" if self.whole else bounds

    def check(self, key: str, value: Any) -> Any:
        """`value`, or ValueError naming `key`, the value and what would be valid."""
        if not self.contains(value):
            raise ValueError(f"{key} must be {self.describe()}, got {value!r}")
        return value


# Any finite number: for values whose only rule is to be a number at all (a search range's bounds).
ANY_NUMBER = Domain()


def check_number_range(
    where: str, low: Any, high: Any, step: Any = None, log: bool = False, whole: bool = False
) -> None:
    """ValueError naming `where` unless `low`, `high` and `step` (None: no step) make a range a sampler can draw
    from: finite numbers (whole ones where `whole`), low <= high, low > 0 on a log scale (which takes no step),
    a positive step that divides the range.

    Example:
        >>> check_number_range("search_space.dropout", 0.0, 0.5, step=0.2)
        Traceback (most recent call last):
        ...
        ValueError: search_space.dropout: step 0.2 does not divide the range [0.0, 0.5]
    """
    for key, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and not ANY_NUMBER.contains(value):
            raise ValueError(f"{where}.{key} must be {ANY_NUMBER.describe()}, got {value!r}")
    if whole and any(value is not None and float(value) != int(value) for value in (low, high, step)):
        raise ValueError(f"{where}: an int parameter needs whole-number low, high and step")
    if low > high:
        raise ValueError(f"{where}: low ({low}) > high ({high})")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0, got low={low}")
    if log and step is not None:
        raise ValueError(f"{where}: `log` and `step` cannot be combined")
    if step is not None:
        if step <= 0:
            raise ValueError(f"{where}.step must be > 0, got {step}")
        ratio = (high - low) / step
        if not math.isclose(ratio, round(ratio), rel_tol=0.0, abs_tol=1e-9):
            raise ValueError(f"{where}: step {step} does not divide the range [{low}, {high}]")


def check_finite(key: str, value: Any) -> Any:
    """`value`, or ValueError naming the first NaN, infinity or beyond-64-bit whole number inside it (mappings
    and lists are searched: `lr_scheduler_kwargs`, `sampler_options`), as `key.inner[index]`."""
    if isinstance(value, Mapping):
        for inner, item in value.items():
            check_finite(f"{key}.{inner}", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_finite(f"{key}[{index}]", item)
    elif is_number(value) and not finite(value):
        raise ValueError(f"{key} must be {ANY_NUMBER.describe()}, got {value!r}")
    return value


def annotation_names(annotation: Any) -> set[str]:
    """The names of the types a parameter's annotation joins, read as text so that an annotation postponed as a
    string needs none of its names importable: `int | None` -> {'int', 'None'}."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return {part.strip() for part in text.split("|")}


def check_keywords(target: Callable, options: Mapping[str, Any], where: str, domains: Mapping[str, Domain]) -> None:
    """ValueError unless each of `options` (YAML keyword arguments of `target`, e.g. a sampler's class) is finite
    and of the kind `target`'s annotation names: true or false for a bool; for an int or float, a number in
    `domains[key]`, else >= 0 (a count, a weight, a step). A function (TPE's `gamma`) cannot come from YAML.
    Keywords `target` does not take are left to its caller to name.

    Example:
        >>> import optuna
        >>> check_keywords(optuna.samplers.TPESampler, {"n_startup_trials": -1}, "sampler_options", {})
        Traceback (most recent call last):
        ...
        ValueError: sampler_options.n_startup_trials must be a whole number >= 0, got -1
    """
    parameters = inspect.signature(target).parameters
    for key, value in options.items():
        name = f"{where}.{key}"
        check_finite(name, value)
        if key not in parameters or value is None:
            continue
        kinds = annotation_names(parameters[key].annotation)
        if any(kind.startswith("Callable") for kind in kinds):
            raise ValueError(f"{name} takes a Python function, which YAML cannot give: leave it out")
        given_as_other_kind = (isinstance(value, bool) and "bool" in kinds) or (
            isinstance(value, str) and "str" in kinds
        )
        if kinds & {"int", "float"} and not given_as_other_kind:
            domains.get(key, Domain(whole="float" not in kinds, low=0)).check(name, value)
        elif "bool" in kinds and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")


__all__ = [
    "ANY_NUMBER",
    "INT64_LIMIT",
    "Domain",
    "check_finite",
    "check_number_range",
    "annotation_names",
    "check_keywords",
    "finite",
    "is_number",
]
