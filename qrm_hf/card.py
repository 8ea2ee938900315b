"""The model card of a saved reward model: `model_card.md` rendered with Hub metadata from `ModelCardData`."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

DATASET_ID = "google-research-datasets/google_wellformed_query"
# The template ships inside the package (a link to the top-level model_card.md in a checkout).
TEMPLATE_NAME = "model_card.md"
# Metrics the Hub's model-index shows: test-metrics key -> (`evaluate` type name, label).
INDEXED_METRICS = {
    "mse": ("mse", "mse"),
    "mae": ("mae", "mae"),
    "pearson": ("pearsonr", "pearson"),
    "spearman": ("spearmanr", "spearman"),
    "accuracy": ("accuracy", "accuracy (threshold 0.8, the paper's)"),
    "f1": ("f1", "f1 (threshold 0.8, the paper's)"),
    "accuracy_at_threshold": ("accuracy", "accuracy (threshold {threshold:g}, chosen on dev)"),
    "f1_at_threshold": ("f1", "f1 (threshold {threshold:g}, chosen on dev)"),
}


def template_text() -> str:
    """The model card template, read from the installed package."""
    return (importlib.resources.files("qrm_hf") / TEMPLATE_NAME).read_text(encoding="utf-8")


def card_data(model_name: str, base_model: str | None, test_metrics: dict[str, Any]) -> ModelCardData:
    """Hub metadata: license, base model, dataset, tags, pipeline tag and a model-index of test metrics."""
    results = [
        EvalResult(
            task_type="text-classification",
            task_name="Query wellformedness (regression)",
            dataset_type=DATASET_ID,
            dataset_name="Query wellformedness",
            dataset_split="test",
            metric_type=metric_type,
            metric_name=label.format(threshold=test_metrics.get("decision_threshold", 0.8)),
            metric_value=test_metrics[name],
        )
        for name, (metric_type, label) in INDEXED_METRICS.items()
        if isinstance(test_metrics.get(name), (int, float))
    ]
    return ModelCardData(
        model_name=model_name,
        license="cc-by-sa-4.0",
        base_model=base_model,
        datasets=[DATASET_ID],
        language=["en"],
        tags=["reward-model", "regression", "query-wellformedness", "qrm_hf"],
        pipeline_tag="text-classification",
        library_name="transformers",
        eval_results=results or None,
    )


def write_model_card(
    folder: Path,
    *,
    model_name: str,
    base_model: str | None,
    repo_id: str,
    test_metrics: dict[str, Any],
    hyperparameters: dict[str, Any],
    best_value: float,
    n_trials: int,
    sampler: str,
    max_length: int,
    decision_threshold: float = 0.8,
    threshold_metric: str = "accuracy",
    method: str = "",
) -> ModelCard:
    """Render the card into `folder/README.md` and return it."""
    card = ModelCard.from_template(
        card_data(model_name, base_model, test_metrics),
        template_str=template_text(),
        model_name=model_name,
        base_model=base_model or "an encoder",
        repo_id=repo_id,
        test_metrics=test_metrics,
        test_size=test_metrics.get("n", "the"),
        hyperparameters=hyperparameters,
        best_value=best_value,
        n_trials=n_trials,
        sampler=sampler,
        max_length=max_length,
        decision_threshold=decision_threshold,
        threshold_metric=threshold_metric,
        method=method,
    )
    card.save(folder / "README.md")
    return card


__all__ = ["card_data", "template_text", "write_model_card"]
