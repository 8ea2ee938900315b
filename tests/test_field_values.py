"""One YAML value against the field it sets: types, enum names, YAML 1.1 float strings, misspelt training keys."""

import pytest
import yaml

from qrm_hf.training.fields import check_training, check_value


def test_training_values_are_read_as_trainingarguments_takes_them():
    training = yaml.safe_load("learning_rate: 1e-4\nper_device_eval_batch_size: 128\nlr_scheduler_type: cosine\n")

    assert check_training(training) == {
        "learning_rate": 1e-4,
        "per_device_eval_batch_size": 128,
        "lr_scheduler_type": "cosine",
    }


@pytest.mark.parametrize(
    ("training", "message"),
    [
        (
            {"learning_rat": 1e-4},
            r"training\.learning_rat: not a TrainingArguments field \(did you mean learning_rate\?\)",
        ),
        (
            {"batch_size": 16},
            r"training\.batch_size: not a TrainingArguments field \(batch_size is the search space's name for "
            r"per_device_train_batch_size\)",
        ),
        ({"optim": "adamx"}, r"training\.optim: 'adamx' is not valid for optim: expected one of adamw_torch,"),
        (
            {"num_train_epochs": "three"},
            r"training\.num_train_epochs: 'three' is not valid for num_train_epochs: expected a number",
        ),
        (
            {"gradient_accumulation_steps": 2.5},
            r"training\.gradient_accumulation_steps: 2\.5 is not valid .*a whole number",
        ),
        ({"bf16": "yes please"}, r"training\.bf16: 'yes please' is not valid for bf16: expected true or false"),
    ],
)
def test_bad_training_values_name_the_key_and_what_is_valid(training, message):
    with pytest.raises(ValueError, match=message):
        check_training(training)


def test_search_space_names_are_checked_against_the_field_they_set():
    assert check_value("batch_size", 16) == 16
    assert check_value("warmup_ratio", "5e-2") == 0.05
    assert check_value("encoder_dropout", None) is None
    with pytest.raises(ValueError, match=r"loss must be one of \('mse', 'bce'\), got 'mae'"):
        check_value("loss", "mae")
    with pytest.raises(ValueError, match=r"num_hidden_layers must be >= 0, got -1"):
        check_value("num_hidden_layers", -1)
