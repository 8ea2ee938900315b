"""QRMTrainingArguments: the head's learning-rate multiplier, max_length and patience, validated."""

import pytest

from qrm_hf import QRMTrainingArguments


def test_a_warmup_ratio_stays_a_float(tmp_path):
    args = QRMTrainingArguments(output_dir=str(tmp_path), warmup_steps=0.1, report_to="none")
    assert args.warmup_steps == 0.1 and args.max_length == 128 and args.early_stopping_patience == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("head_lr_multiplier", 0.0, "head_lr_multiplier must be > 0"),
        ("max_length", 0, "max_length must be >= 1"),
        ("early_stopping_patience", 0, "early_stopping_patience must be >= 1 or None"),
    ],
)
def test_invalid_values_are_refused(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        QRMTrainingArguments(output_dir=str(tmp_path), report_to="none", **{field: value})
