"""Hyperparameter search through `Trainer.hyperparameter_search` with Optuna.

The study lives in an Optuna storage (SQLite by default), so the same command resumes it; `n_trials` counts
finished trials in the study, and only the missing ones run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from datasets import DatasetDict
from optuna.trial import TrialState
from tqdm.auto import tqdm
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from .data import QueryCollator
from .metrics import compute_metrics
from .modeling_qrm import QueryRewardModel
from .run_config import RunConfig
from .search_space import SearchSpace
from .trainer import PerTrialEarlyStopping, QRMTrainer
from .training_args import QRMTrainingArguments

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def make_sampler(name: str, seed: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name; TPE lies about running trials so parallel workers spread out."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """An Optuna pruner by name; trials report their validation MSE after every epoch."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    raise ValueError(f"unknown pruner {name!r}")


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


class ModelFactory:
    """Builds a trial's model: a copy of the pretrained encoder, loaded once, plus the trial's head."""

    def __init__(self, encoder: PreTrainedModel, space: SearchSpace, default_max_length: int) -> None:
        self.encoder = encoder
        self.space = space
        self.default_max_length = default_max_length

    def __call__(self, trial: optuna.Trial | None = None) -> QueryRewardModel:
        values = self.space.values(trial)
        return self.build(values)

    def build(self, values: dict[str, Any]) -> QueryRewardModel:
        max_length = int(values.get("max_length", self.default_max_length))
        head = SearchSpace.model_kwargs(values)
        return QueryRewardModel.from_encoder(self.encoder, max_length=max_length, **head)


class TrialProgress(TrainerCallback):
    """A progress bar over the study's finished trials and one log line per finished trial.

    It reads the storage when a trial starts and once the search ends, so trials finished by other workers
    show too, with the state and duration the storage holds.
    """

    def __init__(self, study: optuna.Study, target: int) -> None:
        self.study = study
        self.target = target
        self.seen: set[int] = {trial.number for trial in finished_trials(study)}
        self.bar = tqdm(total=target, initial=min(len(self.seen), target), desc="Trials", unit="trial")

    def on_train_begin(self, args, state, control, **kwargs):
        self.refresh()

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
        complete = [trial.value for trial in trials if trial.state == TrialState.COMPLETE]
        for trial in sorted(trials, key=lambda t: t.number):
            if trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            duration = trial.duration.total_seconds() if trial.duration else float("nan")
            best = min((v for v in complete if v is not None), default=float("nan"))
            value = "-" if trial.value is None else f"{trial.value:.5f}"
            self.bar.write(
                f"trial {trial.number}: {trial.state.name.lower()} value={value} "
                f"duration={duration:.1f}s best_so_far={best:.5f}"
            )
            if trial.state in FINISHED:
                self.bar.update(1)

    def close(self) -> None:
        self.refresh()
        self.bar.close()


def base_training_arguments(
    config: RunConfig, space: SearchSpace, output_dir: Path, **overrides: Any
) -> QRMTrainingArguments:
    """Arguments shared by every trial: evaluate each epoch, no checkpoints, fixed values of the space.

    Later sources win: these defaults, the space's fixed values, the config's `training`, `overrides`.
    """
    defaults: dict[str, Any] = {
        "output_dir": str(output_dir),
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "save_strategy": "no",
        "metric_for_best_model": "mse",
        "greater_is_better": False,
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "per_device_eval_batch_size": 128,
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "dataloader_pin_memory": torch.cuda.is_available(),
    }
    defaults.update(SearchSpace.training_arguments(space.fixed))
    defaults.update(config.training)
    defaults.update(overrides)
    return QRMTrainingArguments(**defaults)


def open_study(config: RunConfig, space: SearchSpace) -> optuna.Study:
    """Create or load the run's study; `force` deletes a study of the same name first."""
    storage = config.resolved_storage
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    name = config.resolved_study_name
    if config.force and name in optuna.get_all_study_names(storage):
        logger.warning("--force: deleting study %r in %s", name, storage)
        optuna.delete_study(study_name=name, storage=storage)
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="minimize",
        load_if_exists=True,
        sampler=make_sampler(config.sampler, config.seed, space),
        pruner=make_pruner(config.pruner),
    )


def run_search(
    config: RunConfig,
    space: SearchSpace,
    tokenized: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel | None = None,
) -> optuna.Study:
    """Run the trials the study still misses, then return the study."""
    study = open_study(config, space)
    missing = config.n_trials - len(finished_trials(study))
    if missing <= 0:
        logger.info("study %r already holds %d finished trials: no search", study.study_name, config.n_trials)
        return study
    logger.info("study %r: running %d more trials", study.study_name, missing)

    torch.set_float32_matmul_precision("high")
    args = base_training_arguments(config, space, config.run_dir / "trials")
    if encoder is None:
        encoder = AutoModel.from_pretrained(config.model_path())
    model_init = ModelFactory(encoder, space, args.max_length)
    collator = QueryCollator(tokenizer, max_length=args.max_length, pad_to_multiple_of=8 if args.bf16 else None)
    progress = TrialProgress(study, config.n_trials)
    callbacks: list[TrainerCallback] = [progress]
    if args.early_stopping_patience is not None:
        callbacks.append(PerTrialEarlyStopping(early_stopping_patience=args.early_stopping_patience))
    trainer = QRMTrainer(
        model_init=model_init,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["dev"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    try:
        trainer.hyperparameter_search(
            hp_space=lambda trial: SearchSpace.training_arguments(space.suggest(trial)),
            compute_objective=lambda metrics: metrics["eval_mse"],
            n_trials=missing,
            direction="minimize",
            backend="optuna",
            hp_name=lambda trial: f"trial-{trial.number}",
            timeout=config.timeout,
            study_name=study.study_name,
            storage=config.resolved_storage,
            load_if_exists=True,
            sampler=study.sampler,
            pruner=study.pruner,
            gc_after_trial=True,
        )
    finally:
        progress.close()
        logger.info("search ran %.1fs", time.perf_counter() - started)
    return study


def history(study: optuna.Study, space: SearchSpace) -> dict[str, Any]:
    """The seed's optimization_history.json: best params and value, and every completed trial."""
    best = study.best_trial
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    return {
        "best_params": best.params,
        "best_value": best.value,
        "n_trials": len(finished_trials(study)),
        "optimization_history": [
            {"trial": trial.number, "value": trial.value, "params": trial.params}
            for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ],
        "fixed_params": space.fixed,
        "best_trial": {"number": best.number, **best.user_attrs},
        "study_name": study.study_name,
        "trials_by_state": counts,
    }


def write_history(study: optuna.Study, space: SearchSpace, path: Path) -> dict[str, Any]:
    data = history(study, space)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return data


__all__ = [
    "ModelFactory",
    "TrialProgress",
    "base_training_arguments",
    "history",
    "make_pruner",
    "make_sampler",
    "open_study",
    "run_search",
    "write_history",
]
