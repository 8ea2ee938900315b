"""The final model: retrain on train+dev with the best parameters, evaluate once on test, save, card, push."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict, concatenate_datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, set_seed

from .card import write_model_card
from .metrics import compute_metrics
from .modeling_qrm import QueryRewardModel
from .run_config import RunConfig
from .search import ModelFactory, base_training_arguments, make_collator
from .search_space import SearchSpace
from .trainer import QRMTrainer

logger = logging.getLogger(__name__)


class StopAfterEpoch(TrainerCallback):
    """Stop at the end of epoch `last_epoch`, keeping the schedule of the full run.

    The final model then follows the trajectory that gave the best trial its best validation MSE.
    """

    def __init__(self, last_epoch: int) -> None:
        self.last_epoch = last_epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch >= self.last_epoch - 1e-6:
            control.should_training_stop = True


def train_final(
    config: RunConfig,
    space: SearchSpace,
    best_params: dict[str, Any],
    best_epoch: float | None,
    tokenized: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
) -> tuple[QueryRewardModel, dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Train on train+dev with `best_params`; return the model, its metrics on test, and its test predictions
    with the true scores (for the report's plots)."""
    values = {**space.fixed, **best_params}
    args = base_training_arguments(
        config,
        space,
        config.run_dir / "final_checkpoints",
        eval_strategy="no",
        **SearchSpace.training_arguments(values),
    )
    set_seed(args.seed)
    model = ModelFactory(encoder, space, args.max_length).build(values)
    callbacks = []
    if best_epoch is not None and math.ceil(best_epoch) < args.num_train_epochs:
        callbacks.append(StopAfterEpoch(math.ceil(best_epoch)))
    trainer = QRMTrainer(
        model=model,
        args=args,
        train_dataset=concatenate_datasets([tokenized["train"], tokenized["dev"]]),
        data_collator=make_collator(tokenizer, args),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    trainer.train()
    output = trainer.predict(tokenized["test"], metric_key_prefix="test")
    predictions = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    scores = np.asarray(predictions, dtype=np.float64).reshape(-1)
    metrics = {key.removeprefix("test_"): value for key, value in output.metrics.items()}
    return trainer.model, metrics, (scores, np.asarray(output.label_ids, dtype=np.float64).reshape(-1))


def save_reward_model(model: QueryRewardModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """Save model, tokenizer and remote code in one folder that `from_pretrained` reloads, with or without
    qrm_hf installed."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_final(
    model: QueryRewardModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    card_context: dict[str, Any],
) -> Path:
    """Save the final model (see `save_reward_model`) with its model card as README.md."""
    save_reward_model(model, tokenizer, folder)
    write_model_card(folder, **card_context)
    return folder


def write_test_metrics(metrics: dict[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def push_folder(
    folder: Path, repo_id: str, private: bool = False, commit_message: str | None = None, revision: str | None = None
) -> str:
    """Upload a saved model folder to the Hub; without network or token the error says so and nothing changes."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            commit_message=commit_message or "Upload query reward model",
            revision=revision,
        )
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise RuntimeError(
            f"could not push {folder} to {repo_id}: {error}. Log in with `hf auth login` or set HF_TOKEN, "
            "check the network, then run scripts/push.py on the saved folder."
        ) from error
    return str(info)


__all__ = ["StopAfterEpoch", "push_folder", "save_final", "save_reward_model", "train_final", "write_test_metrics"]
