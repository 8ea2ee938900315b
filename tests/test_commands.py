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
