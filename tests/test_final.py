"""The final stage: all of train, best dev epoch kept, threshold chosen on dev only, calibration measured."""

import pytest
from datasets import DatasetDict
from transformers import AutoModel, AutoTokenizer

from qrm_hf.data import load_splits, tokenize_splits
from qrm_hf.final import train_final
from qrm_hf.metrics import choose_threshold
from qrm_hf.run_config import RunConfig
from qrm_hf.search_space import SearchSpace

VALUES = {
    "num_hidden_layers": 0,
    "encoder_dropout": 0.0,
    "learning_rate": 1e-3,
    "head_lr_multiplier": 5.0,
    "batch_size": 16,
    "max_length": 16,
    "num_epochs": 2,
}


@pytest.fixture(scope="module")
def prepared(data_dir, tiny_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    splits = load_splits(str(data_dir), max_train_samples=96, max_eval_samples=64, max_test_samples=64)
    return tokenizer, tokenize_splits(splits, tokenizer, 16), AutoModel.from_pretrained(tiny_encoder_dir)


def final(prepared, tmp_path, tiny_encoder_dir, tokenized=None):
    tokenizer, default, encoder = prepared
    config = RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path), training={"disable_tqdm": True})
    space = SearchSpace(parameters=(), fixed=dict(VALUES))
    return config, train_final(config, space, {}, tokenized or default, tokenizer, encoder)


def test_threshold_comes_from_dev_and_never_from_test(prepared, tmp_path, tiny_encoder_dir):
    config, result = final(prepared, tmp_path / "a", tiny_encoder_dir)
    assert result.decision_threshold == choose_threshold(result.dev.predicted, result.dev.true)
    assert result.model.config.decision_threshold == result.decision_threshold
    assert result.test_metrics["decision_threshold"] == result.decision_threshold
    # Every test label turned upside down: the same model, the same threshold.
    tokenizer, tokenized, _ = prepared
    flipped = tokenized["test"].map(lambda row: {"labels": 1.0 - row["labels"]})
    _, again = final(prepared, tmp_path / "b", tiny_encoder_dir, DatasetDict({**tokenized, "test": flipped}))
    assert again.decision_threshold == result.decision_threshold
    assert again.test_metrics["mse"] != pytest.approx(result.test_metrics["mse"])
    # The checkpoints that reloaded the best epoch are gone; nothing else was written.
    assert not (config.run_dir / "final_checkpoints").exists()


def test_best_dev_epoch_is_kept_and_calibration_is_measured(prepared, tmp_path, tiny_encoder_dir):
    _, result = final(prepared, tmp_path, tiny_encoder_dir)
    assert result.best_epoch in (1.0, 2.0)
    assert result.dev_metrics["mse"] == pytest.approx(
        float(((result.dev.predicted - result.dev.true) ** 2).mean()), rel=1e-6
    )
    assert result.test.offset == pytest.approx(float(result.test.predicted.mean() - result.test.true.mean()))
    assert result.offset_flagged == (abs(result.train_offset) > 0.02)
    assert {"accuracy_at_threshold", "f1_at_threshold", "mean_prediction", "mean_reference"} <= set(result.test_metrics)
