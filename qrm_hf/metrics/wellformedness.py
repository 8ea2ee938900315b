"""`evaluate` metric module: every regression and classification figure of a wellformedness model at once.

Loaded with `evaluate.load(<path of this file>)`, which works offline (the stock "mse" and "pearsonr"
modules are fetched from the Hub at run time). Self-contained: numpy, scipy, datasets, evaluate.
"""

import datasets
import evaluate
import numpy as np
from scipy import stats

_DESCRIPTION = """
Scores predicted wellformedness (0 = word salad, 1 = well-formed question) against the mean of five binary
ratings: mse, mae, pearson, spearman, r2; and, treating score >= threshold (0.8, Faruqui & Das 2018) as
well-formed, accuracy, precision, recall and f1 of the well-formed class.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores in [0, 1].
    threshold (float): a true score >= threshold means well-formed (the paper's is 0.8).
    decision_threshold (float, default: threshold): a predicted score >= it counts as well-formed.
Returns:
    dict with mse, mae, rmse, pearson, spearman, r2, accuracy, precision, recall, f1, mean_prediction,
    mean_reference, n.
Example:
    >>> metric = evaluate.load("qrm_hf/metrics/wellformedness.py")
    >>> metric.compute(predictions=[0.9, 0.1], references=[1.0, 0.0], threshold=0.8)["accuracy"]
    1.0
"""

_CITATION = """
@InProceedings{FaruquiDas2018,
  title = {{Identifying Well-formed Natural Language Questions}},
  author = {Faruqui, Manaal and Das, Dipanjan},
  booktitle = {Proc. of EMNLP},
  year = {2018}
}
"""


def _safe_correlation(function, predictions: np.ndarray, references: np.ndarray) -> float:
    # A constant input has no correlation: report nan instead of scipy's warning-and-nan.
    if predictions.size < 2 or np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return float("nan")
    return float(function(predictions, references)[0])


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Wellformedness(evaluate.Metric):
    """Regression and thresholded-classification metrics for query wellformedness."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
        )

    def _compute(self, predictions, references, threshold: float, decision_threshold=None) -> dict:
        predicted = np.asarray(predictions, dtype=np.float64)
        true = np.asarray(references, dtype=np.float64)
        errors = predicted - true
        mse = float(np.mean(errors**2))
        variance = float(np.var(true))
        predicted_positive = predicted >= (threshold if decision_threshold is None else decision_threshold)
        true_positive = true >= threshold
        hits = float(np.sum(predicted_positive & true_positive))
        precision = hits / max(float(np.sum(predicted_positive)), 1.0)
        recall = hits / max(float(np.sum(true_positive)), 1.0)
        return {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": float(np.mean(np.abs(errors))),
            "pearson": _safe_correlation(stats.pearsonr, predicted, true),
            "spearman": _safe_correlation(stats.spearmanr, predicted, true),
            "r2": 1.0 - mse / variance if variance > 0 else float("nan"),
            "accuracy": float(np.mean(predicted_positive == true_positive)),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
            # Calibration: a model whose mean prediction is off the mean label pays the offset squared in MSE.
            "mean_prediction": float(np.mean(predicted)),
            "mean_reference": float(np.mean(true)),
            "n": int(true.size),
        }
