"""The `qrm` command line: subcommands, --help without heavy imports, YAML + flags, packaged configs, data errors."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, option_strings, write_yaml

from qrm_hf.commands import COMMANDS, main


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


def dataclass_flags(config_class, skip=()) -> list[str]:
    """The flags a command built from a config dataclass must offer: one per field."""
    import dataclasses

    return [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(config_class) if f.name not in skip]


def test_every_config_field_is_a_flag_shown_in_help(capsys):
    """The help is checked against the dataclasses the commands are built from, not against argparse itself:
    a RunConfig or ServeConfig field without its flag fails here."""
    from qrm_hf.run.config import RunConfig, yaml_only_fields
    from qrm_hf.serving.config import ServeConfig

    expected = {
        "search": [*dataclass_flags(RunConfig, skip=yaml_only_fields()), "--config"],
        "serve": [*dataclass_flags(ServeConfig), "--no-length-guard"],
    }
    for command, flags in expected.items():
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        missing = [flag for flag in flags if flag not in text]
        assert not missing, f"qrm {command} --help does not show {missing}"
        assert len(flags) >= 10


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("predict", ["--model", "--input", "--format", "--field", "--output-format", "--classify", "--threshold"]),
        ("report", ["--storage", "--study-name", "--output-dir", "--seed"]),
        ("push", ["--private", "--revision"]),
        ("probe", ["--model", "--data", "--queries", "--seed", "--output"]),
    ],
)
def test_each_commands_documented_options_are_in_its_help(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert [flag for flag in flags if flag not in text] == []


def test_scripts_are_aliases_of_the_commands():
    """Each scripts/<name>.py runs the command's own main: run as a user would, its --help offers every option of
    the command's parser."""
    import importlib

    for name in ("search", "predict", "report", "push", "serve"):
        script = REPO / "scripts" / f"{name}.py"
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        parser = importlib.import_module(f"qrm_hf.commands.{name}").make_parser()
        missing = [option for option in option_strings(parser) if option not in result.stdout]
        assert not missing, f"scripts/{name}.py --help lacks {missing}"


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

    def pip(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]

    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip("wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO))
    (wheel,) = wheels.glob("qrm_hf-*.whl")
    pip("install", "--no-deps", "-q", "--target", str(target), str(wheel))
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
    assert card.startswith("---\n") and "## Test metrics" in card and "{{ " not in card  # rendered: no Jinja left
