"""One run end to end: data -> search -> final model -> test report -> saved (and pushed) model."""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState
from transformers import AutoModel, AutoTokenizer

from .data import load_splits, tokenize_splits
from .final import push_folder, save_final, train_final, write_test_metrics
from .run_config import RunConfig
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
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError(f"study {study.study_name!r} has no completed trial: nothing to retrain")
    summary = write_history(study, space, config.run_dir / "optimization_history.json")
    best_epoch = summary["best_trial"].get("best_epoch")

    model, raw_metrics = train_final(config, space, summary["best_params"], best_epoch, tokenized, tokenizer, encoder)
    test_metrics = write_test_metrics(raw_metrics, config.run_dir / "test_metrics.json")
    logger.info("test metrics: %s", test_metrics)

    folder = config.run_dir / "final_model"
    hyperparameters = {**summary["fixed_params"], **summary["best_params"]}
    if best_epoch is not None:
        hyperparameters["epochs_trained"] = best_epoch
    save_final(
        model,
        tokenizer,
        folder,
        {
            "model_name": f"{config.model_slug}-query-reward",
            "base_model": config.model if config.model_path() == config.model else None,
            "repo_id": config.push_to_hub or str(folder),
            "test_metrics": test_metrics,
            "hyperparameters": hyperparameters,
            "best_value": summary["best_value"],
            "n_trials": summary["n_trials"],
            "sampler": config.sampler,
            "max_length": model.config.max_length,
        },
    )
    if config.push_to_hub:
        push_folder(folder, config.push_to_hub)
    return {"study": study.study_name, "history": summary, "test_metrics": test_metrics, "model_dir": str(folder)}


__all__ = ["run_pipeline"]
