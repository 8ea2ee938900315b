"""The Trainer of the query reward model: stock Trainer, with the head on its own learning rate."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerState

from ..data import QueryCollator
from ..modeling.encoder_blocks import HEAD_PREFIX, model_depths
from ..run.distributed import from_rank_zero
from .arguments import QRMTrainingArguments

logger = logging.getLogger(__name__)


class QRMTrainer(Trainer):
    """Trainer whose optimizer has four groups: encoder/head x decay/no-decay.

    The encoder trains at `learning_rate`, the head at `learning_rate * head_lr_multiplier`; biases and
    normalisation weights get no weight decay in either. Optimizer class, betas, scheduler, clipping and
    mixed precision all stay stock Trainer behaviour.
    """

    args: QRMTrainingArguments

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = self.parameter_groups(opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """The optimizer's parameter groups, each named, with its own `lr` and `weight_decay`.

        With `layer_lr_decay` < 1 the encoder's learning rate shrinks by that factor per layer going down: the
        top layer (and anything above the layers, e.g. a final norm or pooler) trains at `learning_rate`, the
        embeddings at `learning_rate * layer_lr_decay ** num_layers`."""
        decay_names = set(self.get_decay_parameter_names(model))
        head_lr = self.args.learning_rate * self.args.head_lr_multiplier
        depths = model_depths(model)
        groups: dict[tuple[str, bool, int], dict[str, Any]] = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            part = "head" if name.startswith(HEAD_PREFIX) else "encoder"
            decays = name in decay_names
            below_top = depths.get(name, 0) if part == "encoder" and self.args.layer_lr_decay != 1.0 else 0
            lr = head_lr if part == "head" else self.args.learning_rate * self.args.layer_lr_decay**below_top
            suffix = f"_down_{below_top}" if below_top else ""
            group = groups.setdefault(
                (part, decays, below_top),
                {
                    "name": f"{part}{'' if decays else '_no_decay'}{suffix}",
                    "params": [],
                    "lr": lr,
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                },
            )
            group["params"].append(parameter)
        return list(groups.values())

    def train(self, *args: Any, trial: Any = None, **kwargs: Any):
        """Stock training; in a hyperparameter search the trial's objective becomes its best validation MSE
        (transformers keeps the last evaluation's) and the trial records how its training went."""
        import optuna

        self._prune_requested = False
        output = super().train(*args, trial=trial, **kwargs)
        if self.hp_search_backend is not None:
            self.objective = best_validation_mse(self.state.log_history)
            self._record_trial(trial, pruned=self._prune_requested, metrics=output.metrics)
            if not self._prune_requested and isinstance(trial, optuna.Trial) and self.is_world_process_zero():
                # Callbacks that keep a trial's model (qrm_hf.search.study.KeepBestTrialModel) hear that it finished.
                for callback in self.callback_handler.callbacks:
                    if hasattr(callback, "trial_finished"):
                        callback.trial_finished(trial, self.model)
            if self._prune_requested and isinstance(trial, optuna.Trial):
                raise optuna.TrialPruned(f"pruned after epoch {round(self.state.epoch or 0)}")
        return output

    def _record_trial(self, trial: Any, pruned: bool, metrics: dict | None = None) -> None:
        import optuna

        if not isinstance(trial, optuna.Trial) or not self.is_world_process_zero():
            return
        for key, value in training_summary(self.state, self.args, pruned, metrics or {}).items():
            trial.set_user_attr(key, value)

    def _report_to_hp_search(self, trial: Any, step: int, metrics: dict[str, float]) -> None:
        """Report the epoch's validation MSE to Optuna and stop the trial gracefully when it is to be pruned.

        Reported per epoch, not per optimizer step, so trials with other batch sizes share the pruner's x-axis.
        Under DDP the decision of rank 0 is broadcast and every rank stops at the same point: transformers
        raises TrialPruned on rank 0 alone, leaving the other ranks waiting in a collective.
        """
        import optuna

        if self.hp_search_backend is None or trial is None:
            return
        self.objective = self.compute_objective(metrics.copy())
        epoch = round(self.state.epoch) if self.state.epoch is not None else step
        prune = False
        if isinstance(trial, optuna.Trial):
            trial.report(self.objective, epoch)
            prune = trial.should_prune()
        if from_rank_zero(prune):
            self._prune_requested = True
            self.control.should_training_stop = True

    @property
    def data_collator(self) -> Any:
        """The collator as of the current arguments: a QueryCollator cuts to `args.max_length` (a trial's, once
        transformers has applied the trial's values to `args`), read here whenever a dataloader is built, so the
        length has one home during training: the arguments."""
        collator = self._collator
        if isinstance(collator, QueryCollator) and collator.max_length != self.args.max_length:
            return dataclasses.replace(collator, max_length=self.args.max_length)
        return collator

    @data_collator.setter
    def data_collator(self, collator: Any) -> None:
        self._collator = collator

    def _hp_search_setup(self, trial: Any) -> None:
        # Transformers applies a trial's values to `self.args` here.
        super()._hp_search_setup(trial)
        if trial is not None:
            # One tracker run per trial (W&B, MLflow); TensorBoard already writes runs/<time>/trial-N.
            self.args.run_name = f"trial-{trial.number}"
            logger.info("rank %d, trial %s: %s", self.args.process_index, getattr(trial, "number", "?"), trial.params)


class PerTrialEarlyStopping(EarlyStoppingCallback):
    """EarlyStoppingCallback that starts each training run afresh.

    The stock callback keeps its patience counter across `train()` calls, so in a hyperparameter search a
    trial would inherit the previous trial's failures to improve.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        self.early_stopping_patience_counter = 0
        if args.metric_for_best_model is None:
            raise ValueError("early stopping needs metric_for_best_model (e.g. 'mse')")


def _evaluations(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log entries of evaluations that produced a finite `eval_mse`, in order."""
    return [entry for entry in log_history if "eval_mse" in entry and math.isfinite(entry["eval_mse"])]


def best_validation_mse(log_history: list[dict[str, Any]]) -> float:
    """Lowest `eval_mse` of a training run: a trial's objective is its best epoch, not its last."""
    return min((entry["eval_mse"] for entry in _evaluations(log_history)), default=math.inf)


def best_epoch(log_history: list[dict[str, Any]]) -> float | None:
    """The epoch at which `eval_mse` was lowest (the first, on ties)."""
    evaluations = _evaluations(log_history)
    if not evaluations:
        return None
    return min(evaluations, key=lambda entry: entry["eval_mse"])["epoch"]


def training_summary(state: TrainerState, args: QRMTrainingArguments, pruned: bool, metrics: dict) -> dict:
    """What a trial records about its training, for the study's user attributes."""
    epochs_run = round(state.epoch or 0.0, 4)
    return {
        "epochs_run": epochs_run,
        "best_epoch": best_epoch(state.log_history),
        "stopped_early": (not pruned) and epochs_run < args.num_train_epochs - 1e-6,
        "pruned": pruned,
        "optimizer_steps": state.global_step,
        "train_seconds": metrics.get("train_runtime"),
        "train_samples_per_second": metrics.get("train_samples_per_second"),
    }


__all__ = ["PerTrialEarlyStopping", "QRMTrainer", "best_epoch", "best_validation_mse", "training_summary"]
