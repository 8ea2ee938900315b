from pathlib import Path

import optuna
import pytest
import yaml

from qrm_hf.search.space import SearchSpace, SearchSpaceError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_space_is_the_original_fourteen_parameters_plus_the_loss():
    space = SearchSpace.from_dict(yaml.safe_load((CONFIGS / "default.yaml").read_text())["search_space"])
    specs = {p.name: (p.type, p.low, p.high, p.step, p.log, p.choices) for p in space.parameters}
    assert specs == {
        "dropout": ("float", 0.0, 0.5, 0.05, False, ()),
        "num_hidden_layers": ("int", 0, 3, None, False, ()),
        "hidden_dim_ratio": ("float", 0.25, 0.75, 0.25, False, ()),
        "activation": ("categorical", None, None, None, False, ("relu", "gelu", "tanh", "leaky_relu")),
        "use_layer_norm": ("categorical", None, None, None, False, (True, False)),
        "learning_rate": ("float", 1e-6, 1e-4, None, True, ()),
        "head_lr_multiplier": ("float", 1.0, 51.0, 5.0, False, ()),
        "batch_size": ("categorical", None, None, None, False, (8, 16, 32, 64)),
        "weight_decay": ("float", 0.0, 0.1, 0.01, False, ()),
        "warmup_ratio": ("float", 0.0, 0.3, 0.05, False, ()),
        "gradient_accumulation_steps": ("categorical", None, None, None, False, (1, 2, 4)),
        "max_grad_norm": ("float", 0.5, 2.0, 0.5, False, ()),
        "max_length": ("categorical", None, None, None, False, (64, 128, 256)),
        "num_epochs": ("int", 2, 10, None, False, ()),
        "loss": ("categorical", None, None, None, False, ("mse", "bce")),
    }
    assert space.fixed["encoder_dropout"] == 0.0


def test_a_trial_splits_into_model_and_training_values():
    space = SearchSpace.from_dict(yaml.safe_load((CONFIGS / "default.yaml").read_text())["search_space"])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = space.values(trial)
    assert set(SearchSpace.model_kwargs(values)) == {
        "dropout",
        "num_hidden_layers",
        "hidden_dim_ratio",
        "activation",
        "use_layer_norm",
        "loss",
        "encoder_dropout",
    }
    training = SearchSpace.training_arguments(values)
    assert training["per_device_train_batch_size"] == values["batch_size"]
    assert training["num_train_epochs"] == values["num_epochs"]
    assert training["warmup_steps"] == values["warmup_ratio"]
    assert space.values(trial) == values  # asking again returns the stored values
    assert space.largest("max_length", default=0) == 256


def test_plain_values_fix_a_parameter():
    space = SearchSpace.from_dict(
        {"pooling": "mean", "scheduler": "cosine", "dropout": {"type": "float", "low": 0.0, "high": 0.2}}
    )
    assert space.fixed == {"pooling": "mean", "scheduler": "cosine"}
    assert SearchSpace.training_arguments(space.values(None)) == {"lr_scheduler_type": "cosine"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"dropuot": {"type": "float", "low": 0, "high": 1}}, r"search_space\.dropuot: unknown parameter"),
        (
            {"dropout": {"type": "float", "low": 0.6, "high": 0.5}},
            r"search_space\.dropout: low \(0\.6\) > high \(0\.5\)",
        ),
        (
            {"activation": {"type": "categorical", "choices": []}},
            r"search_space\.activation\.choices must be a non-empty list",
        ),
        ({"learning_rate": {"type": "float", "low": 0.0, "high": 1e-4, "log": True}}, r"log range needs low > 0"),
        ({"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.2}}, r"step 0\.2 does not divide the range"),
        ({"dropout": {"type": "uniform", "low": 0.0, "high": 0.5}}, r"search_space\.dropout\.type must be one of"),
        ({"dropout": {"type": "float", "low": 0.0, "high": 0.5, "stepp": 0.1}}, r"unknown keys \['stepp'\]"),
        ({"num_epochs": {"type": "int", "low": 1.5, "high": 3}}, r"whole-number"),
        ({"pooling": "mean"}, r"nothing to search"),
    ],
)
def test_bad_space_is_refused_naming_the_key(raw, message):
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_dict(raw)


def test_grid_lists_every_value():
    space = SearchSpace.from_dict(
        {
            "dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
            "num_epochs": {"type": "int", "low": 1, "high": 2},
        }
    )
    assert space.grid() == {"dropout": [0.0, 0.1, 0.2], "num_epochs": [1, 2]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "activation: {type: categorical, choices: [relu, swishy]}",
            r"search_space\.activation\.choices: activation must be one of \('relu', 'gelu', 'tanh', 'leaky_relu'\), "
            r"got 'swishy'",
        ),
        (
            "activation: {type: categorical, choices: [swishy]}",
            r"search_space\.activation\.choices: activation must be one of",
        ),
        (
            "pooling: max\ndropout: {type: float, low: 0.0, high: 0.2}",
            r"search_space\.pooling: pooling must be one of \('cls', 'mean'\), got 'max'",
        ),
        (
            "dropout: {type: float, low: 0.0, high: 1.0}",
            r"search_space\.dropout\.high: dropout must be in \[0, 1\), got 1\.0",
        ),
        (
            "learning_rate: {type: float, low: 1e-3, high: 1e-5, log: true}",
            r"search_space\.learning_rate: low \(0\.001\) > high \(1e-05\)",
        ),
        (
            "scheduler: {type: categorical, choices: [linear, cosinee]}",
            r"search_space\.scheduler\.choices: 'cosinee' is not valid for lr_scheduler_type: "
            r"expected one of linear, cosine,",
        ),
        (
            "batch_size: {type: float, low: 8, high: 64}",
            r"search_space\.batch_size: per_device_train_batch_size takes a whole number, not any float: "
            r"use `type: int`",
        ),
        (
            "batch_size: {type: categorical, choices: [16, '32']}",
            r"search_space\.batch_size\.choices: '32' is not valid for per_device_train_batch_size: "
            r"expected a whole number",
        ),
        (
            "use_layer_norm: {type: categorical, choices: [yes, 'no']}",
            r"search_space\.use_layer_norm\.choices: 'no' is not valid for use_layer_norm: expected true or false",
        ),
        (
            "learning_rate: fast\ndropout: {type: float, low: 0.0, high: 0.2}",
            r"search_space\.learning_rate: 'fast' is not valid for learning_rate: expected a number",
        ),
        (
            "dropuot: {type: float, low: 0.0, high: 0.2}",
            r"search_space\.dropuot: unknown parameter \(did you mean dropout\?\)",
        ),
    ],
)
def test_values_no_trial_could_train_with_are_refused_when_the_space_is_read(text, message):
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_dict(yaml.safe_load(text))


def test_yaml_1_1_float_strings_are_numbers_in_bounds_choices_and_fixed_values():
    raw = yaml.safe_load(
        "learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true}\n"
        "weight_decay: {type: categorical, choices: [0.0, 1e-2]}\n"
        "adam_beta2: 9e-1\n"
        "dropout: 1e-1\n"
    )
    assert raw["learning_rate"]["low"] == "1e-5"  # PyYAML (YAML 1.1) reads it as a string

    space = SearchSpace.from_dict(raw)

    assert space.distributions()["learning_rate"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert space.distributions()["weight_decay"].choices == (0.0, 0.01)
    assert space.fixed == {"adam_beta2": 0.9, "dropout": 0.1}
    assert SearchSpace.training_arguments(space.fixed) == {"adam_beta2": 0.9}
    assert space.check_point({"learning_rate": "1e-4"}) == {"learning_rate": 1e-4}
