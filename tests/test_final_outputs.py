"""The final model's test predictions: saved as JSON, read back exactly, refused when not finite."""

import numpy as np
import pytest

from qrm_hf.final_outputs import load_test_predictions, save_test_predictions


def test_predictions_round_trip_exactly(tmp_path):
    path = save_test_predictions((np.array([[0.123456789], [0.9]]),), [1.0, 0.2], tmp_path / "p.json")
    predicted, true = load_test_predictions(path)
    assert predicted.tolist() == [0.123456789, 0.9] and true.tolist() == [1.0, 0.2]


def test_nan_predictions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="predictions contain 1 values that are nan"):
        save_test_predictions([0.1, float("nan")], [0.0, 1.0], tmp_path / "p.json")
