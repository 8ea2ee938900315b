"""The package's layering: each stage imports only the stages below it (pyproject.toml, [tool.importlinter]).

The same contract lint-imports checks in CI, held against the code as it is and against a copy of the package
given one import that runs back up, which it must refuse."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(project / "pyproject.toml"), "--no-cache"],
        cwd=project,
        env={"PYTHONPATH": str(project), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_each_stage_imports_only_the_stages_below_it():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_an_import_that_runs_back_up_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "qrm_hf", tmp_path / "qrm_hf", ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    data = tmp_path / "qrm_hf" / "data.py"
    data.write_text(data.read_text() + "\nfrom qrm_hf.pipeline import run_pipeline  # noqa: E402\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "qrm_hf.data is not allowed to import qrm_hf.pipeline" in result.stdout
