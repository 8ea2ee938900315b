import numpy as np
import pytest
from scipy import stats
from transformers import EvalPrediction

from qrm_hf.metrics import PAPER_THRESHOLD, compute_metrics, load_metric


def test_metric_module_loads_offline_and_matches_hand_computation():
    rng = np.random.default_rng(0)
    references = rng.integers(0, 6, size=200) / 5
    predictions = np.clip(references + rng.normal(0, 0.2, size=200), 0, 1)
    result = load_metric().compute(predictions=predictions, references=references, threshold=PAPER_THRESHOLD)
    assert result["mse"] == pytest.approx(np.mean((predictions - references) ** 2), rel=1e-5)
    assert result["mae"] == pytest.approx(np.mean(np.abs(predictions - references)), rel=1e-5)
    assert result["pearson"] == pytest.approx(stats.pearsonr(predictions, references)[0], rel=1e-4)
    assert result["spearman"] == pytest.approx(stats.spearmanr(predictions, references)[0], rel=1e-4)
    assert result["r2"] == pytest.approx(1 - result["mse"] / np.var(references), rel=1e-4)
    assert result["accuracy"] == pytest.approx(np.mean((predictions >= 0.8) == (references >= 0.8)))
    assert result["n"] == 200


def test_f1_counts_the_well_formed_class_at_the_papers_threshold():
    result = load_metric().compute(
        predictions=[0.9, 0.85, 0.2, 0.79], references=[1.0, 0.6, 0.0, 0.8], threshold=PAPER_THRESHOLD
    )
    # true well-formed: #0, #3; predicted: #0, #1 -> precision 1/2, recall 1/2
    assert (result["precision"], result["recall"], result["f1"], result["accuracy"]) == (0.5, 0.5, 0.5, 0.5)


def test_compute_metrics_reads_trainer_predictions():
    prediction = EvalPrediction(
        predictions=(np.array([[0.9], [0.1]]), np.array([0.9, 0.1])), label_ids=np.array([1.0, 0.0])
    )
    metrics = compute_metrics(prediction)
    assert metrics["mse"] == pytest.approx(0.01)
    assert metrics["accuracy"] == 1.0


def test_constant_predictions_have_no_correlation():
    result = load_metric().compute(predictions=[0.5, 0.5, 0.5], references=[0.0, 0.4, 1.0], threshold=PAPER_THRESHOLD)
    assert np.isnan(result["pearson"]) and np.isnan(result["spearman"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_diverged_model_scores_the_worst_mse_instead_of_ending_the_run(bad):
    """A diverged run's dev scores (NaN, infinities) give an MSE of +inf: it loses every comparison (best epoch,
    early stopping, pruning, the study's best trial) and the evaluation raises nothing."""
    predictions = np.array([[0.2], [bad], [0.7]], dtype=np.float32)
    metrics = compute_metrics(EvalPrediction(predictions=(predictions,), label_ids=np.array([0.2, 0.4, 0.8])))
    assert metrics == {"mse": np.inf, "nonfinite_scores": 1}
    assert np.less(0.3, metrics["mse"])  # how transformers compares it with a finite best metric
