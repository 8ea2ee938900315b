"""Metrics of a wellformedness model, computed by the project's own `evaluate` module."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction

METRIC_MODULE = Path(__file__).with_name("wellformedness.py")
WELLFORMED_THRESHOLD = 0.8


@lru_cache(maxsize=1)
def load_metric() -> evaluate.EvaluationModule:
    """The wellformedness metric, loaded from this package's file (no Hub access)."""
    return evaluate.load(str(METRIC_MODULE))


def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer.compute_metrics`: the model's `logits` against the labels."""
    predictions = eval_prediction.predictions
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    references = np.asarray(eval_prediction.label_ids, dtype=np.float64).reshape(-1)
    return load_metric().compute(predictions=predictions, references=references, threshold=WELLFORMED_THRESHOLD)


__all__ = ["METRIC_MODULE", "WELLFORMED_THRESHOLD", "compute_metrics", "load_metric"]
