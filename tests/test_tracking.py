"""Watching a study: TensorBoard runs per trial, and optuna-dashboard serving the study from its storage."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import free_port
from transformers import AutoModel, AutoTokenizer

from qrm_hf.data import load_splits, tokenize_splits
from qrm_hf.run.config import RunConfig
from qrm_hf.search.space import SearchSpace
from qrm_hf.search.study import run_search

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    "num_epochs": 2,
    "batch_size": 32,
    "max_length": 32,
}


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, data_dir, tiny_encoder_dir):
    folder = tmp_path_factory.mktemp("tracking")
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    tokenized = tokenize_splits(load_splits(str(data_dir), 64, 32, 32), tokenizer, 32)
    config = RunConfig(
        model=str(tiny_encoder_dir),
        output_dir=str(folder),
        n_trials=2,
        search_space=SPACE,
        report_to="tensorboard",
        study_name="watched",
    )
    study = run_search(
        config, SearchSpace.from_dict(SPACE), tokenized, tokenizer, AutoModel.from_pretrained(tiny_encoder_dir)
    )
    return config, study


def test_tensorboard_writes_one_readable_run_per_trial(small_study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config, study = small_study
    runs = {path.parent.name: path.parent for path in (config.run_dir / "trials").rglob("events.out.tfevents.*")}
    assert set(runs) == {"trial-0", "trial-1"}
    for name, folder in runs.items():
        events = EventAccumulator(str(folder))
        events.Reload()
        mse = [event.value for event in events.Scalars("eval/mse")]
        trial = study.trials[int(name.removeprefix("trial-"))]
        assert len(mse) == 2  # one per epoch
        assert min(mse) == pytest.approx(trial.value, rel=1e-5)


def test_optuna_dashboard_serves_the_study(small_study):
    config, study = small_study
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("optuna-dashboard")),
            config.resolved_storage,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer"
        (listed,) = [entry for entry in studies if entry["study_name"] == "watched"]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{listed['study_id']}", timeout=10
        ) as response:
            detail = json.load(response)
        assert len(detail["trials"]) == len(study.trials) == 2
        assert {trial["state"] for trial in detail["trials"]} == {"Complete"}
        assert min(trial["values"][0] for trial in detail["trials"]) == pytest.approx(study.best_value)
        user_attrs = {attr["key"] for attr in detail["trials"][0]["user_attrs"]}
        assert {"epochs_run", "best_epoch", "train_seconds", "train_samples_per_second"} <= user_attrs
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert optuna.load_study(study_name="watched", storage=config.resolved_storage).best_value == study.best_value
