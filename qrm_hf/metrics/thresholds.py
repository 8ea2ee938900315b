"""Decision thresholds: accuracy and F1 of "well-formed" at each cut, and the cut a run picks on dev.

numpy only, so plots and the final stage use it without loading `evaluate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The paper's label: a query whose mean rating is at least 0.8 is well-formed (Faruqui & Das 2018). The one
# definition in qrm_hf; configuration_qrm.py repeats it because it is copied into every saved model alone.
PAPER_THRESHOLD = 0.8
THRESHOLD_METRICS = ("accuracy", "f1")
# Candidate decision thresholds: every 0.005 in [0, 1].
CANDIDATE_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 201), 3)


def _flat(values: Any) -> np.ndarray:
    """Trainer predictions (an array, or a tuple whose first item holds the scores) as a flat float64 array."""
    if isinstance(values, tuple):
        values = values[0]
    return np.asarray(values, dtype=np.float64).reshape(-1)


def count_nonfinite(values: Any) -> int:
    """How many of the scores in `values` (as `as_scores` reads them) are nan or infinite: a diverged model's."""
    return int(np.sum(~np.isfinite(_flat(values))))


def as_scores(values: Any, what: str = "predictions") -> np.ndarray:
    """Trainer predictions (an array, or a tuple whose first item holds the scores) as a flat float64 array;
    nan or infinite values are refused, naming `what`."""
    array = _flat(values)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain {count_nonfinite(array)} values that are nan or infinite")
    return array


def threshold_curve(
    predictions: Any, references: Any, thresholds: Any, label_threshold: float = PAPER_THRESHOLD
) -> dict[str, np.ndarray]:
    """Accuracy and F1 of "well-formed" when a prediction >= each decision threshold counts as well-formed.

    The true label stays the paper's: score >= `label_threshold`. At a decision threshold equal to it, the
    figures equal the wellformedness metric's `accuracy` and `f1`.

    Example:
        >>> threshold_curve([0.9, 0.1], [1.0, 0.0], [0.5, 0.95])["accuracy"]
        array([1. , 0.5])
    """
    predicted = as_scores(predictions, "predictions")
    true = as_scores(references, "references")
    cuts = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1)
    predicted_positive = predicted[None, :] >= cuts
    true_positive = (true >= label_threshold)[None, :]
    hits = np.sum(predicted_positive & true_positive, axis=1).astype(np.float64)
    precision = hits / np.maximum(np.sum(predicted_positive, axis=1), 1.0)
    recall = hits / max(float(np.sum(true_positive)), 1.0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return {
        "threshold": cuts.reshape(-1),
        "accuracy": np.mean(predicted_positive == true_positive, axis=1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def choose_threshold(predictions: Any, references: Any, metric: str = "accuracy") -> float:
    """The decision threshold that maximizes `metric` (accuracy or f1) on these (dev) predictions.

    Ties go to the candidate nearest the paper's 0.8, so a flat optimum keeps the conventional cut.

    Example:
        >>> choose_threshold([0.7, 0.65, 0.2], [1.0, 0.8, 0.0])
        0.65
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"threshold metric must be one of {THRESHOLD_METRICS}, got {metric!r}")
    curve = threshold_curve(predictions, references, CANDIDATE_THRESHOLDS)
    values = curve[metric]
    best = np.flatnonzero(np.isclose(values, values.max(), rtol=0.0, atol=1e-12))
    nearest = best[np.argmin(np.abs(CANDIDATE_THRESHOLDS[best] - PAPER_THRESHOLD))]
    return float(CANDIDATE_THRESHOLDS[nearest])


__all__ = [
    "CANDIDATE_THRESHOLDS",
    "THRESHOLD_METRICS",
    "PAPER_THRESHOLD",
    "as_scores",
    "count_nonfinite",
    "choose_threshold",
    "threshold_curve",
]
