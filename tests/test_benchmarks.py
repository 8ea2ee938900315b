"""The benchmark scripts run (tiny settings): numbers come from them, so they must keep working."""

import importlib.util
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_quality_script_compares_plain_pipeline_and_best_trial(data_dir, tmp_path, capsys):
    """Smoke run of the quality benchmark: the real MiniLM on a few rows, two trials, every column filled."""
    output = tmp_path / "quality.json"
    argv = [
        "--data", str(data_dir), "--n-trials", "2", "--max-train-samples", "64", "--max-eval-samples", "48",
        "--max-test-samples", "48", "--search-train-samples", "32", "--output", str(output),
    ]  # fmt: skip
    assert load("quality").main(argv) == 0
    out = capsys.readouterr().out
    import json

    record = json.loads(output.read_text())
    row = next(line for line in out.splitlines() if line.startswith("| test MSE |"))
    # The label, then A, B, B's best candidate, B's best trial; and B before its refit when the config refits.
    refit = record["b"]["final"].get("refit_rows") is not None
    assert len(row.strip("|").split("|")) == 5 + refit
    assert "anchors: Faruqui & Das 2018" in out
    if refit:
        assert record["b"]["before_refit_test"]["n"] == 48
    assert record["b"]["study"]["origins"]["warm start"] == 1
    # Every final-stage candidate of B was also scored on test for the "without combining" column.
    candidates = record["b"]["final"]["candidates"]
    assert len(record["b"]["candidates_test"]) == len(candidates) >= 1
    assert set(record["b"]["final"]["combined"]) <= {candidate["label"] for candidate in candidates}
    assert 0.0 <= record["b"]["best_trial_model"]["decision_threshold"] <= 1.0
    # B's shipped model and a MiniLM reward model scored the test queries in turns.
    assert record["speed"]["queries"] == 48
    assert all(rate > 0 for rate in record["speed"]["median"].values()) and len(record["speed"]["median"]) == 2
    assert "x faster" in out


@pytest.mark.slow
def test_serve_script_compares_batching_with_one_request_per_batch(saved_model_dir, data_dir, capsys):
    argv = ["--model", str(saved_model_dir), "--data", str(data_dir), "--clients", "1", "4", "--requests", "8"]
    assert load("serve").main([*argv, "--repeats", "1", "--queries-per-request", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 4 |"))]
    assert len(rows) == 4 and all(float(row.split("|")[3]) > 0 for row in rows)
    assert "at 1 clients: continuous batching" in out and "at 4 clients: continuous batching" in out


def test_int8_script_compares_backends_side_by_side(saved_model_dir, data_dir, capsys):
    argv = ["--model", str(saved_model_dir), "--data", str(data_dir), "--repeats", "1", "--max-test-samples", "64"]
    assert load("int8").main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| torch |", "| int8 |"))]
    assert len(rows) == 2 and all(float(row.split("|")[2]) > 0 for row in rows)
    assert "x the queries/s of fp32; test MSE" in out


def test_int8_variants_script_scores_every_variant_against_fp32(saved_model_dir, data_dir, capsys):
    argv = ["--model", str(saved_model_dir), "--data", str(data_dir), "--split", "dev", "--repeats", "1"]
    assert load("int8_variants").main([*argv, "--max-samples", "48"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 5 and rows[0].startswith("| fp32 | ") and "| +0.00000 |" in rows[0]
    assert "residual projections float (the int8 backend)" in out


def test_pass_cost_script_fits_an_overhead_in_tokens(saved_model_dir, capsys):
    argv = ["--model", str(saved_model_dir), "--sizes", "1", "4", "--lengths", "4", "8", "--repeats", "1"]
    assert load("pass_cost").main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 4 |"))]
    assert len(rows) == 4 and all(float(row.split("|")[4]) > 0 for row in rows)
    assert "ms per pass +" in out and "tokens (--pass-overhead-tokens)" in out


@pytest.mark.slow
def test_levers_script_runs_one_variant(data_dir, tmp_path, capsys):
    output = tmp_path / "levers.json"
    argv = ["--data", str(data_dir), "--variants", "4", "--output", str(output)]
    argv += ["--max-train-samples", "32", "--max-eval-samples", "32", "--max-test-samples", "32"]
    assert load("levers").main(argv) == 0
    import json

    assert list(json.loads(output.read_text())) == ["layer-wise learning-rate decay 0.8"]
    assert "| layer-wise learning-rate decay 0.8 |" in capsys.readouterr().out


def test_refit_script_scores_both_arms_on_the_held_out_half_of_dev(data_dir, tmp_path, capsys):
    """Smoke run of the refit lever: the real MiniLM on a few rows, one epoch per arm."""
    output = tmp_path / "refit.json"
    argv = [
        "--data", str(data_dir), "--epochs", "1", "--max-train-samples", "32", "--max-eval-samples", "32",
        "--max-test-samples", "16", "--output", str(output),
    ]  # fmt: skip
    assert load("refit").main(argv) == 0
    assert "held-out dev MSE change with dev rows added" in capsys.readouterr().out
    import json

    arms = json.loads(output.read_text())["arms"]
    assert [arm["rows"] for arm in arms.values()] == [32, 48]
    assert all(arm["held_dev"]["n"] == 16 and arm["test"]["n"] == 16 for arm in arms.values())


@pytest.mark.slow
def test_seeds_script_pairs_both_arms_by_seed_and_gives_an_interval(data_dir, tmp_path, capsys):
    output = tmp_path / "seeds.json"
    argv = [
        "--data", str(data_dir), "--seeds", "1", "2", "--max-train-samples", "32", "--max-eval-samples", "24",
        "--max-test-samples", "24", "--output", str(output),
    ]  # fmt: skip
    assert load("seeds").main(argv) == 0
    out = capsys.readouterr().out
    import json

    record = json.loads(output.read_text())
    assert sorted((run["arm"], run["seed"]) for run in record["runs"]) == [
        ("plain", 1), ("plain", 2), ("searched", 1), ("searched", 2),
    ]  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2
    difference = record["difference"]
    assert difference["low"] <= difference["mean"] <= difference["high"]
    assert "95% t interval" in out


@pytest.mark.slow
def test_distill_script_compares_teacher_student_and_label_trained_student(
    saved_model_dir, tiny_encoder_dir, data_dir, tmp_path, capsys
):
    output = tmp_path / "distill.json"
    argv = [
        "--teacher", str(saved_model_dir), "--student", str(tiny_encoder_dir), "--data", str(data_dir),
        "--max-train-samples", "32", "--max-eval-samples", "24", "--max-test-samples", "24", "--repeats", "1",
        "--probe-queries", "4", "--output", str(output), "--workdir", str(tmp_path / "work"),
    ]  # fmt: skip
    assert load("distill").main(argv) == 0
    out = capsys.readouterr().out
    import json

    record = json.loads(output.read_text())
    assert set(record["arms"]) == {"distilled", "distilled, training queries only"}
    assert record["arms"]["distilled, training queries only"]["transfer_set"] == {"training queries": 32}
    row = next(line for line in out.splitlines() if line.startswith("| test MSE |"))
    assert len(row.strip("|").split("|")) == 5  # the label, teacher, student, labels only, without rewrites
    assert set(record["queries_per_second"]) == {"teacher", "student distilled"}
    assert "probe, reward rule (default): mean score per family" in out
