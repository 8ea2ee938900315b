"""The benchmark scripts run (tiny settings): numbers come from them, so they must keep working."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_runs_on_cpu_in_tiny_mode(data_dir, capsys):
    assert load("gpu").main(["--device", "cpu", "--tiny", "--data", str(data_dir)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| original") or line.startswith("| qrm_hf")]
    assert len(rows) == 4 and not any("failed" in row for row in rows)
    assert "scorer:" in out and "queries/s" in out


def test_training_throughput_script_reports_a_ratio(data_dir, capsys):
    argv = ["--data", str(data_dir), "--rows", "16", "--batch-size", "8", "--repeats", "1", "--max-lengths", "32"]
    assert load("train_throughput").main(argv) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 32 |"))
    assert row.rstrip(" |").endswith("x")
