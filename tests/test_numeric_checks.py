"""Every number of a run is finite and in its domain before a study is written or anything loads.

NaN compares false with every bound, so each of these once passed a `< 1` guard and failed inside a trial (a FAIL
trial in the study) or after the model and data had loaded. The cases are members of a class, not a list: NaN,
infinities, whole numbers past 64 bits, booleans and strings where numbers go, values outside a field's domain.
"""

import re
import subprocess
import sys
import typing

import pytest
import yaml
from conftest import REPO, write_yaml

from qrm_hf.commands import main
from qrm_hf.numeric_checks import Domain, check_finite
from qrm_hf.run.config import FIELD_DOMAINS, ConfigError, RunConfig, load_run_config, packaged_configs
from qrm_hf.search.checks import check_run
from qrm_hf.search.space import SearchSpace, SearchSpaceError
from qrm_hf.training.fields import check_training, training_field_types

NAN, INF = float("nan"), float("inf")
# Not a usable number anywhere: NaN, both infinities, a whole number past 64 bits, a bool, a numeric string.
NEVER_NUMBERS = [NAN, INF, -INF, 2**64, True, "3"]
SPACE = {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-4, "log": True}, "num_epochs": 1}


def checked(**values) -> RunConfig:
    """A RunConfig of `values` (the small space unless given) through every check a run makes before it loads."""
    config = RunConfig(**{"search_space": SPACE, **values})
    return check_run(config, SearchSpace.from_dict(config.search_space))


@pytest.mark.parametrize(
    ("domain", "inside", "outside", "words"),
    [
        (Domain(whole=True, low=1), [1, 2**62], [0, 1.0, True, "1", NAN, INF, 2**63], "a whole number >= 1"),
        (Domain(low=0, low_open=True), [1e-300, 5, 1e300], [0, -1e-9, NAN, INF, False], "> 0"),
        (Domain(low=0, high=1, high_open=True), [0, 0.999], [1, 1.5, -0.1, NAN, -INF], "in [0, 1)"),
        (Domain(), [-1e300, 0, 2**63 - 1], [NAN, -INF, -(2**63) - 1, None], "a finite number"),
    ],
)
def test_a_domain_takes_finite_numbers_inside_its_bounds_only(domain, inside, outside, words):
    assert [domain.contains(value) for value in inside] == [True] * len(inside)
    assert [domain.contains(value) for value in outside] == [False] * len(outside)
    assert domain.describe().startswith(words)
    with pytest.raises(ValueError, match=rf"^key must be {re.escape(words)}.*, got {outside[0]!r}$"):
        domain.check("key", outside[0])


def test_non_finite_numbers_are_found_inside_mappings_and_lists():
    assert check_finite("x", {"a": [1, 2.5, {"b": "text"}]}) == {"a": [1, 2.5, {"b": "text"}]}
    with pytest.raises(ValueError, match=r"^x\.a\[1\]\.b must be a finite number .*got nan$"):
        check_finite("x", {"a": [1, {"b": NAN}]})


def test_every_numeric_run_config_field_has_a_domain():
    hints = typing.get_type_hints(RunConfig)
    numeric = {name for name, hint in hints.items() if {int, float} & {hint, *typing.get_args(hint)}}
    assert numeric == set(FIELD_DOMAINS)


@pytest.mark.parametrize(
    ("key", "value"),
    [(key, value) for key in sorted(FIELD_DOMAINS) for value in NEVER_NUMBERS]
    + [
        ("n_trials", 0),
        ("timeout", 0),
        ("timeout", -5.0),
        ("seed", -1),
        ("seed", 2**32),
        ("max_retry", -1),
        ("heartbeat_interval", 0),
        ("heartbeat_interval", 10**10),  # longer than a thread can wait
        ("grace_period", 10**12),
        ("final_candidates", 0),
        ("max_train_samples", 2.5),
    ],
)
def test_run_config_numbers_outside_their_domain_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^{key} must be .*, got "):
        RunConfig(**{key: value})


@pytest.mark.parametrize("key", sorted(FIELD_DOMAINS))
def test_run_config_numbers_from_yaml_name_the_file_and_key(tmp_path, key):
    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: .nan\n")
    with pytest.raises(ConfigError, match=rf"run\.yaml: .*{key}"):
        load_run_config(str(path))


def numeric_training_fields() -> list[str]:
    """Every TrainingArguments field (QRMTrainingArguments' included) that takes a number."""
    types = training_field_types()
    return sorted(name for name, hint in types.items() if {int, float} & {hint, *typing.get_args(hint)})


@pytest.mark.parametrize("field", numeric_training_fields())
@pytest.mark.parametrize("value", [NAN, INF, -INF, 2**64])
def test_no_training_field_takes_a_non_finite_number(field, value):
    with pytest.raises(ValueError, match=rf"^training\.{field}: "):
        check_training({field: value})


@pytest.mark.parametrize(
    ("training", "key", "valid"),
    [
        ({"adam_beta1": 2.0}, "adam_beta1", r"in \[0, 1\)"),
        ({"adam_beta2": 1.0}, "adam_beta2", r"in \[0, 1\)"),
        ({"adam_beta1": NAN}, "adam_beta1", r"in \[0, 1\)"),
        ({"adam_epsilon": NAN}, "adam_epsilon", ">= 0"),
        ({"adam_epsilon": -1e-8}, "adam_epsilon", ">= 0"),
        ({"max_grad_norm": -1}, "max_grad_norm", ">= 0"),
        ({"learning_rate": 0.0}, "learning_rate", "> 0"),
        ({"learning_rate": -INF}, "learning_rate", "> 0"),
        ({"weight_decay": NAN}, "weight_decay", ">= 0"),
        ({"num_train_epochs": INF}, "num_train_epochs", ">= 1"),
        ({"warmup_steps": -0.1}, "warmup_steps", ">= 0"),
        ({"label_smoothing_factor": 1.0}, "label_smoothing_factor", r"in \[0, 1\)"),
        ({"seed": 2**32}, "seed", r"in \[0, 4294967295\]"),
        ({"max_steps": -5}, "max_steps", ">= -1"),
        ({"dataloader_num_workers": -1}, "dataloader_num_workers", ">= 0"),
        ({"per_device_eval_batch_size": 0}, "per_device_eval_batch_size", ">= 1"),
        ({"per_device_eval_batch_size": True}, "per_device_eval_batch_size", "a whole number"),
        ({"eval_steps": "often"}, "eval_steps", "a number"),
        ({"lr_scheduler_kwargs": {"num_cycles": NAN}}, "lr_scheduler_kwargs", "a finite number"),
    ],
)
def test_training_values_outside_their_domain_stop_the_run_naming_the_key(training, key, valid):
    with pytest.raises(ConfigError, match=rf"^training\.{key}: .*{valid}"):
        checked(training=training)


@pytest.mark.parametrize(
    ("training", "key", "said"),
    [
        ({"lr_scheduler_kwargs": {"foo": 1}}, "lr_scheduler_kwargs", "unexpected keyword argument 'foo'"),
        (
            {"lr_scheduler_type": "polynomial", "lr_scheduler_kwargs": {"lr_end": 1.0}},
            "lr_scheduler_type",
            r"lr_end \(1\.0\) must be smaller than initial lr",
        ),
        (
            {"lr_scheduler_type": "polynomial", "lr_scheduler_kwargs": {"power": -1.0}},
            "lr_scheduler_type",
            "ZeroDivisionError",
        ),
        ({"optim_args": "beta"}, "optim_args", "not enough values to unpack"),
        ({"logging_strategy": "steps", "logging_steps": 0}, "logging_strategy", "requires non-zero --logging_steps"),
        ({"load_best_model_at_end": True}, "load_best_model_at_end", "requires the save and eval strategy to match"),
    ],
)
def test_what_trainingarguments_or_the_optimizer_refuse_stops_the_run_naming_the_key(training, key, said):
    with pytest.raises(ConfigError, match=rf"^training\.{key}: .* is refused by .*{said}") as error:
        checked(training=training)
    assert "\n" not in str(error.value)


def test_training_values_that_need_each_other_pass_together():
    training = {
        "lr_scheduler_type": "cosine_with_restarts",
        "lr_scheduler_kwargs": {"num_cycles": 2},
        "load_best_model_at_end": True,
        "save_strategy": "epoch",
    }
    assert checked(training=training).training == training


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("learning_rate: .nan", r"search_space\.learning_rate"),
        ("learning_rate: {type: float, low: .nan, high: 1}", r"search_space\.learning_rate\.low"),
        ("learning_rate: {type: float, low: 1.0e-5, high: .inf, log: true}", r"search_space\.learning_rate\.high"),
        ("dropout: {type: float, low: -.inf, high: 0.5}", r"search_space\.dropout\.low"),
        ("dropout: {type: float, low: 0.0, high: 0.5, step: .nan}", r"search_space\.dropout\.step"),
        ("dropout: {type: float, low: 0.0, high: 0.5, step: -.inf}", r"search_space\.dropout\.step"),
        ("dropout: {type: float, low: 0.0, high: 0.5, log: 1}", r"search_space\.dropout\.log"),
        ("dropout: 1.5", r"search_space\.dropout"),
        ("dropout: .nan", r"search_space\.dropout"),
        ("dropout: {type: float, low: 0.5, high: 0.1}", r"search_space\.dropout"),
        ("hidden_dim_ratio: .inf", r"search_space\.hidden_dim_ratio"),
        ("num_hidden_layers: {type: int, low: 0, high: 100000000000000000000}", r"search_space\.num_hidden_layers"),
        ("batch_size: 0", r"search_space\.batch_size"),
        ("batch_size: {type: categorical, choices: [16, .nan]}", r"search_space\.batch_size\.choices"),
        ("batch_size: {type: int, low: 8, high: 100000000000000000000}", r"search_space\.batch_size\.high"),
        ("max_length: -3", r"search_space\.max_length"),
        ("num_epochs: .inf", r"search_space\.num_epochs"),
        ("num_epochs: {type: int, low: 1, high: 3, step: 0}", r"search_space\.num_epochs\.step"),
        ("warmup_ratio: -.inf", r"search_space\.warmup_ratio"),
        ("weight_decay: {type: categorical, choices: [0.0, -.inf]}", r"search_space\.weight_decay\.choices"),
        ("adam_beta1: {type: float, low: 0.5, high: 1.0}", r"search_space\.adam_beta1\.high"),
        ("adam_epsilon: {type: float, low: -1.0e-8, high: 1.0e-8}", r"search_space\.adam_epsilon\.low"),
        ("max_grad_norm: -1.0", r"search_space\.max_grad_norm"),
        ("learning_rate: true", r"search_space\.learning_rate"),
    ],
)
def test_search_space_numbers_outside_their_domain_are_refused_naming_the_key(text, key):
    raw = {**SPACE, **yaml.safe_load(text)}
    if not any(isinstance(spec, dict) for spec in raw.values()):
        raw["dropout"] = {"type": "float", "low": 0.0, "high": 0.2}
    with pytest.raises(SearchSpaceError, match=rf"^{key}[:. ]"):
        SearchSpace.from_dict(raw)


def test_each_extreme_of_the_space_is_built_into_trainingarguments_before_the_study():
    scheduler = {"type": "categorical", "choices": ["cosine_with_restarts", "linear"]}
    with pytest.raises(
        ConfigError, match=r"^search_space\.scheduler\.choices\[1\]: 'linear' is refused by .*num_cycles"
    ):
        checked(search_space={**SPACE, "scheduler": scheduler}, training={"lr_scheduler_kwargs": {"num_cycles": 2}})
    # A searched value no trial can draw is not judged: here every trial runs the polynomial schedule.
    only = {"type": "categorical", "choices": ["polynomial"]}
    checked(search_space={**SPACE, "scheduler": only}, training={"lr_scheduler_kwargs": {"power": 2.0}})


@pytest.mark.parametrize(
    ("sampler", "options", "key", "valid"),
    [
        ("tpe", {"n_startup_trials": NAN}, "n_startup_trials", "a finite number"),
        ("tpe", {"n_startup_trials": -1}, "n_startup_trials", "a whole number >= 0"),
        ("tpe", {"n_startup_trials": True}, "n_startup_trials", "a whole number >= 0"),
        ("tpe", {"n_startup_trials": "4"}, "n_startup_trials", "a whole number >= 0"),
        ("tpe", {"n_startup_trials": 2.5}, "n_startup_trials", "a whole number >= 0"),
        ("tpe", {"n_ei_candidates": 0}, "n_ei_candidates", "a whole number >= 1"),
        ("tpe", {"prior_weight": 0.0}, "prior_weight", "> 0"),
        ("tpe", {"prior_weight": INF}, "prior_weight", "a finite number"),
        ("tpe", {"gamma": NAN}, "gamma", "a finite number"),
        ("tpe", {"gamma": 0.25}, "gamma", "takes a Python function"),
        ("tpe", {"multivariate": 1}, "multivariate", "true or false"),
        ("gp", {"n_startup_trials": -3}, "n_startup_trials", "a whole number >= 0"),
        ("qmc", {"scramble": "yes"}, "scramble", "true or false"),
    ],
)
def test_sampler_options_outside_their_domain_are_refused_naming_the_key(sampler, options, key, valid):
    with pytest.raises(ConfigError, match=rf"^sampler_options\.{key} .*{valid}"):
        checked(sampler=sampler, sampler_options=options)


SHIPPED_CONFIGS = sorted([*(REPO / "configs").glob("*.yaml"), *(REPO / "qrm_hf" / "configs").glob("*.yaml")])


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[str(path.relative_to(REPO)) for path in SHIPPED_CONFIGS])
def test_every_shipped_config_passes_every_check(path):
    loaded = load_run_config(str(path))
    assert check_run(loaded, SearchSpace.from_dict(loaded.search_space)).n_trials == loaded.n_trials
    assert len(SHIPPED_CONFIGS) == 2 * len(packaged_configs())


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"timeout": NAN}, "timeout"),
        ({"heartbeat_interval": INF}, "heartbeat_interval"),
        ({"sampler_options": {"n_startup_trials": NAN}}, r"sampler_options\.n_startup_trials"),
        ({"training": {"adam_beta1": 2.0}}, r"training\.adam_beta1"),
        ({"training": {"lr_scheduler_kwargs": {"foo": 1.0}}}, r"training\.lr_scheduler_kwargs"),
        (
            {"search_space": {**SPACE, "learning_rate": {"type": "float", "low": NAN, "high": 1}}},
            r"search_space\.learning_rate\.low",
        ),
        ({"search_space": {**SPACE, "num_epochs": INF}}, r"search_space\.num_epochs"),
    ],
)
def test_qrm_search_exits_2_with_one_line_and_writes_no_study(tmp_path, capsys, values, key):
    study = tmp_path / "study.db"
    config = write_yaml(tmp_path / "run.yaml", storage=f"sqlite:///{study}", **values)
    assert main(["search", "--config", config, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(key, err), err
    assert not study.exists() and not (tmp_path / "out").exists()


def test_the_console_script_prints_no_traceback_for_a_nan(tmp_path):
    config = write_yaml(tmp_path / "run.yaml", training={"adam_epsilon": NAN})
    result = subprocess.run(
        [sys.executable, "-m", "qrm_hf.commands.search", "--config", config, "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: training.adam_epsilon: nan is not valid for adam_epsilon")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [NAN, INF, -INF, True, 2**64])
def test_a_warm_start_value_that_is_no_number_of_the_range_is_refused(value):
    space = {**SPACE, "num_hidden_layers": {"type": "int", "low": 0, "high": 3}}
    with pytest.raises(SearchSpaceError, match=r"^warm_start\[0\]\.num_hidden_layers: .* is outside the space"):
        checked(search_space=space, warm_start=[{"num_hidden_layers": value}])
