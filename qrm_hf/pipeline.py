"""One run end to end: data -> search -> final model -> test report -> saved (and pushed) model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from accelerate import PartialState
from optuna.trial import TrialState
from transformers import AutoModel, AutoTokenizer

from .data import load_splits, tokenize_splits
from .distributed import from_rank_zero
from .final import push_folder, save_final, train_final, write_test_metrics
from .report import TEST_PREDICTIONS_FILE, save_test_predictions, write_report
from .run_config import PACKAGED_MINILM, PACKAGED_MINILM_HUB_ID, RunConfig
from .search import run_search, write_history
from .search_space import SearchSpace

logger = logging.getLogger(__name__)


def run_pipeline(config: RunConfig) -> dict[str, Any]:
    """Search, retrain with the best parameters, evaluate on test, save; return the run's summary.

    Every input is checked before any training: the search space, the data files, the encoder.
    """
    space = SearchSpace.from_dict(config.search_space)
    splits = load_splits(config.data, config.max_train_samples, config.max_eval_samples, config.max_test_samples)
    model_path = config.model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    encoder = AutoModel.from_pretrained(model_path)
    longest = int(space.largest("max_length", default=config.training.get("max_length", 128)))
    tokenized = tokenize_splits(splits, tokenizer, longest)

    study = run_search(config, space, tokenized, tokenizer, encoder)
    state = PartialState()
    if config.search_only:
        return {"study": config.resolved_study_name, "history": None, "test_metrics": None, "model_dir": None}
    summary = None
    if state.is_main_process:
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise RuntimeError(f"study {study.study_name!r} has no completed trial: nothing to retrain")
        summary = write_history(study, space, config.run_dir / "optimization_history.json")
    summary = from_rank_zero(summary)
    best_epoch = summary["best_trial"].get("best_epoch")

    model, test_metrics, (predictions, references) = train_final(
        config, space, summary["best_params"], best_epoch, tokenized, tokenizer, encoder
    )
    folder = config.run_dir / "final_model"
    if state.is_main_process:
        write_test_metrics(test_metrics, config.run_dir / "test_metrics.json")
        logger.info("test metrics: %s", test_metrics)
        save_final(model, tokenizer, folder, card_context(config, summary, test_metrics, best_epoch, model, folder))
        # After saving, so that a failing plot can never cost the trained model.
        save_test_predictions(predictions, references, config.run_dir / TEST_PREDICTIONS_FILE)
        write_report(study, config.run_dir, test_metrics, (predictions, references))
        if config.push_to_hub:
            push_folder(folder, config.push_to_hub)
    state.wait_for_everyone()
    return {
        "study": config.resolved_study_name,
        "history": summary,
        "test_metrics": test_metrics,
        "model_dir": str(folder),
    }


def card_context(config, summary, test_metrics, best_epoch, model, folder) -> dict[str, Any]:
    """What the model card template shows about this run."""
    hyperparameters = {**summary["fixed_params"], **summary["best_params"]}
    if best_epoch is not None:
        hyperparameters["epochs_trained"] = best_epoch
    return {
        "model_name": f"{config.model_slug}-query-reward",
        "base_model": base_model_id(config),
        "repo_id": config.push_to_hub or str(folder),
        "test_metrics": test_metrics,
        "hyperparameters": hyperparameters,
        "best_value": summary["best_value"],
        "n_trials": summary["n_trials"],
        "sampler": config.sampler,
        "max_length": model.config.max_length,
    }


def base_model_id(config: RunConfig) -> str | None:
    """The Hub id of the encoder, for the card's `base_model` (None for a local folder)."""
    if config.model == PACKAGED_MINILM:
        return PACKAGED_MINILM_HUB_ID
    return None if config.model_path() != config.model or Path(config.model).exists() else config.model


__all__ = ["run_pipeline"]
