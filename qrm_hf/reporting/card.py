"""The model card of a saved reward model: `model_card.md` rendered with Hub metadata from `ModelCardData`."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data import DEFAULT_DATASET
from ..metrics.thresholds import PAPER_THRESHOLD
from ..modeling.packaged_encoders import packaged_hub_id

# The template ships inside the package (a link to the top-level model_card.md in a checkout).
TEMPLATE_NAME = "model_card.md"
# Metrics the Hub's model-index shows: test-metrics key -> (`evaluate` type name, label).
INDEXED_METRICS = {
    "mse": ("mse", "mse"),
    "mae": ("mae", "mae"),
    "pearson": ("pearsonr", "pearson"),
    "spearman": ("spearmanr", "spearman"),
    "accuracy": ("accuracy", f"accuracy (threshold {PAPER_THRESHOLD:g}, the paper's)"),
    "f1": ("f1", f"f1 (threshold {PAPER_THRESHOLD:g}, the paper's)"),
    "accuracy_at_threshold": ("accuracy", "accuracy (threshold {threshold:g}, chosen on dev)"),
    "f1_at_threshold": ("f1", "f1 (threshold {threshold:g}, chosen on dev)"),
}


def template_text() -> str:
    """The model card template, read from the installed package."""
    return (importlib.resources.files("qrm_hf") / TEMPLATE_NAME).read_text(encoding="utf-8")


def base_model_id(model: str, model_path: str) -> str | None:
    """The Hub id of the encoder `model` (resolved to `model_path`), for the card's `base_model`: a packaged
    encoder's original repo, a Hub id as given, None for a local folder."""
    hub_id = packaged_hub_id(model)
    if hub_id:
        return hub_id
    return None if model_path != model or Path(model).exists() else model


def eval_results(test_metrics: dict[str, Any]) -> list[EvalResult]:
    """The model-index entries: regression figures, and accuracy/F1 at 0.8 and at the dev-chosen threshold."""
    threshold = test_metrics.get("decision_threshold", PAPER_THRESHOLD)
    return [
        EvalResult(
            task_type="text-classification",
            task_name="Query wellformedness (regression)",
            dataset_type=DEFAULT_DATASET,
            dataset_name="Query wellformedness",
            dataset_split="test",
            metric_type=metric_type,
            metric_name=label.format(threshold=threshold),
            metric_value=test_metrics[name],
        )
        for name, (metric_type, label) in INDEXED_METRICS.items()
        if isinstance(test_metrics.get(name), (int, float))
    ]


class QueryRewardCardData(ModelCardData):
    """The card of a query reward model: Hub metadata (the README's YAML header: license, base model, dataset,
    tags, a model-index of the test metrics) plus the run's facts that the template shows.

    Example:
        >>> data = QueryRewardCardData(model_name="m", test_metrics={"mse": 0.07}, n_trials=12)
        >>> "model-index" in data.to_dict() and "n_trials" not in data.to_dict()
        True
    """

    # Shown by the template, kept out of the YAML header.
    RUN_FACTS = (
        "repo_id",
        "test_metrics",
        "hyperparameters",
        "best_value",
        "n_trials",
        "sampler",
        "max_length",
        "decision_threshold",
        "threshold_metric",
        "method",
        "probe",
        "distillation",
    )

    def __init__(
        self,
        *,
        model_name: str,
        base_model: str | None = None,
        repo_id: str = "",
        test_metrics: dict[str, Any] | None = None,
        hyperparameters: dict[str, Any] | None = None,
        best_value: float | None = None,
        n_trials: int = 0,
        sampler: str = "tpe",
        max_length: int | None = None,
        decision_threshold: float = PAPER_THRESHOLD,
        threshold_metric: str = "accuracy",
        method: str = "",
        probe: str = "",
        distillation: str = "",
    ) -> None:
        test_metrics = dict(test_metrics or {})
        super().__init__(
            model_name=model_name,
            license="cc-by-sa-4.0",
            base_model=base_model,
            datasets=[DEFAULT_DATASET],
            language=["en"],
            tags=["reward-model", "regression", "query-wellformedness", "qrm_hf"],
            pipeline_tag="text-classification",
            library_name="transformers",
            eval_results=eval_results(test_metrics) or None,
        )
        self.repo_id = repo_id
        self.test_metrics = test_metrics
        self.hyperparameters = dict(hyperparameters or {})
        self.best_value = best_value
        self.n_trials = n_trials
        self.sampler = sampler
        self.max_length = max_length
        self.decision_threshold = decision_threshold
        self.threshold_metric = threshold_metric
        self.method = method
        self.probe = probe
        self.distillation = distillation

    def _to_dict(self, data_dict: dict[str, Any]) -> None:
        super()._to_dict(data_dict)
        for name in self.RUN_FACTS:
            data_dict.pop(name, None)

    def template_values(self) -> dict[str, Any]:
        """What the template shows besides the header."""
        values = {name: getattr(self, name) for name in self.RUN_FACTS}
        values.update(
            model_name=self.model_name,
            base_model=self.base_model or "an encoder",
            test_size=self.test_metrics.get("n", "the"),
        )
        return values


def write_model_card(folder: Path, data: QueryRewardCardData) -> ModelCard:
    """Render the card into `folder/README.md` and return it."""
    card = ModelCard.from_template(data, template_str=template_text(), **data.template_values())
    card.save(folder / "README.md")
    return card


__all__ = ["QueryRewardCardData", "base_model_id", "eval_results", "template_text", "write_model_card"]
