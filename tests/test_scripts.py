"""scripts/search.py as a user runs it: YAML config, flags that override it, clear errors."""

import json

import pytest
import torch
from conftest import load_script, write_yaml
from transformers import AutoTokenizer

from qrm_hf import QueryRewardModel


def test_search_script_runs_the_whole_pipeline(tmp_path, data_dir, tiny_encoder_dir, capsys):
    config = write_yaml(tmp_path / "run.yaml", model=str(tiny_encoder_dir), data=str(data_dir))
    argv = [
        "--config",
        str(config),
        "--n-trials",
        "2",
        "--max-train-samples",
        "64",
        "--max-eval-samples",
        "32",
        "--max-test-samples",
        "40",
        "--output-dir",
        str(tmp_path / "results"),
    ]
    assert load_script("search").main(argv) == 0
    run_dir = tmp_path / "results" / tiny_encoder_dir.name
    history = json.loads((run_dir / "optimization_history.json").read_text())
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert history["n_trials"] == 2
    assert metrics["n"] == 40
    assert {"mse", "mae", "pearson", "spearman", "r2", "accuracy", "f1"} <= set(metrics)
    out = capsys.readouterr().out
    printed = json.loads(out[out.rindex('{\n  "test_metrics"') :])
    assert printed["test_metrics"]["mse"] == pytest.approx(metrics["mse"])

    report = (run_dir / "report.md").read_text()
    assert f"{history['best_value']!r}" in report
    assert (run_dir / "plots" / "optimization_history.png").is_file()
    assert (run_dir / "plots" / "test_thresholds.png").is_file()

    folder = run_dir / "final_model"
    card = (folder / "README.md").read_text()
    assert "reward-model" in card and "model-index" in card and f"{metrics['mse']:.4f}" in card
    model = QueryRewardModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.pooling == "mean"  # fixed in the config's search space
    inputs = tokenizer(["how do owls hunt ?"], return_tensors="pt", return_token_type_ids=False)
    assert torch.isfinite(model(**inputs).scores).all()


@pytest.mark.parametrize(
    ("values", "flags", "message"),
    [
        ({"n_trails": 3}, [], "unknown keys ['n_trails']"),
        ({}, ["--n-trials", "0"], "n_trials must be >= 1"),
        ({}, ["--n-trials", "-2"], "n_trials must be >= 1"),
        ({}, ["--sampler", "bayes"], "sampler must be one of"),
        ({"search_space": {"dropout": {"type": "float", "low": 0.5, "high": 0.1}}}, [], "low (0.5) > high (0.1)"),
        ({"data": "MISSING"}, [], "MISSING/train.tsv"),
    ],
)
def test_bad_input_stops_before_training(tmp_path, values, flags, message, capsys):
    if values.get("data") == "MISSING":
        (tmp_path / "MISSING").mkdir()
        values = {"data": str(tmp_path / "MISSING")}
    config = write_yaml(tmp_path / "bad.yaml", **values)
    code = load_script("search").main(["--config", str(config), "--output-dir", str(tmp_path / "out"), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_push_without_network_or_token_fails_clearly_and_keeps_the_folder(saved_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = {path.name: path.read_bytes() for path in saved_model_dir.iterdir()}
    code = load_script("push").main([str(saved_model_dir), "your-org/query-reward", "--private"])
    assert code == 2
    err = capsys.readouterr().err
    assert "could not push" in err and "your-org/query-reward" in err and "HF_TOKEN" in err
    assert {path.name: path.read_bytes() for path in saved_model_dir.iterdir()} == before


def test_push_refuses_a_folder_that_is_not_a_reward_model(tmp_path, capsys):
    assert load_script("push").main([str(tmp_path), "your-org/query-reward"]) == 2
    assert "no config.json" in capsys.readouterr().err
