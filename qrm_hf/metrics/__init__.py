"""Metrics of a wellformedness model: the project's own `evaluate` module, and decision thresholds.

`evaluate` is imported on first use, so the threshold helpers (numpy only) load fast.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .thresholds import (
    CANDIDATE_THRESHOLDS,
    PAPER_THRESHOLD,
    THRESHOLD_METRICS,
    as_scores,
    choose_threshold,
    count_nonfinite,
    threshold_curve,
)

if TYPE_CHECKING:
    import evaluate
    from transformers import EvalPrediction

METRIC_MODULE = Path(__file__).with_name("wellformedness.py")
logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def load_metric() -> evaluate.EvaluationModule:
    """The wellformedness metric, loaded from this package's file (no Hub access)."""
    import evaluate

    return evaluate.load(str(METRIC_MODULE))


def score_metrics(predictions: Any, references: Any, decision_threshold: float | None = None) -> dict[str, float]:
    """Every figure of the wellformedness metric; with `decision_threshold`, also accuracy, precision, recall
    and F1 when a prediction at or above it counts as well-formed (`*_at_threshold`)."""
    predicted = as_scores(predictions, "predictions")
    true = as_scores(references, "references")
    metrics = load_metric().compute(predictions=predicted, references=true, threshold=PAPER_THRESHOLD)
    if decision_threshold is not None:
        at = load_metric().compute(
            predictions=predicted,
            references=true,
            threshold=PAPER_THRESHOLD,
            decision_threshold=decision_threshold,
        )
        metrics["decision_threshold"] = float(decision_threshold)
        metrics.update({f"{name}_at_threshold": at[name] for name in ("accuracy", "precision", "recall", "f1")})
    return metrics


def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer.compute_metrics`: the model's `logits` (its scores) against the labels.

    A model that scores NaN or infinity (its training diverged: a learning rate far too high, say) gets an MSE of
    +inf, the worst there is, so that epoch loses every comparison (best epoch, early stopping, pruning, the
    study's best trial) and the search goes on, instead of the evaluation ending the run."""
    nonfinite = count_nonfinite(eval_prediction.predictions)
    if nonfinite:
        logger.warning("%d of %d dev scores are NaN or infinite (training diverged): MSE counted as inf",
                       nonfinite, len(eval_prediction.label_ids))  # fmt: skip
        return {"mse": math.inf, "nonfinite_scores": nonfinite}
    return score_metrics(eval_prediction.predictions, eval_prediction.label_ids)


__all__ = [
    "CANDIDATE_THRESHOLDS",
    "METRIC_MODULE",
    "THRESHOLD_METRICS",
    "PAPER_THRESHOLD",
    "as_scores",
    "choose_threshold",
    "count_nonfinite",
    "compute_metrics",
    "load_metric",
    "score_metrics",
    "threshold_curve",
]
