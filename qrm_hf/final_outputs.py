"""The final model's prediction files: test predictions saved beside the model, read back by the report.

numpy only (no torch), so `qrm report` rebuilds a report without loading a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .metrics.thresholds import as_scores


def save_test_predictions(predictions: Any, references: Any, path: str | Path) -> Path:
    """Save the test set's predicted and true scores as JSON, for rebuilding the report later."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "predictions": as_scores(predictions, "predictions").tolist(),
        "references": as_scores(references, "references").tolist(),
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load_test_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, references) saved by `save_test_predictions`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return np.asarray(data["predictions"], dtype=np.float64), np.asarray(data["references"], dtype=np.float64)


__all__ = ["load_test_predictions", "save_test_predictions"]
