"""Real learning: the packaged pretrained MiniLM, fine-tuned briefly on real rows, beats the mean predictor."""

import numpy as np
import pytest
from transformers import AutoModel, AutoTokenizer

from qrm_hf import QRMTrainer, QRMTrainingArguments, QueryRewardModel
from qrm_hf.data import QueryCollator, load_splits, tokenize_splits
from qrm_hf.metrics import compute_metrics


@pytest.mark.slow
def test_minilm_beats_the_training_mean_on_dev(minilm_path, data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    splits = load_splits(str(data_dir), max_train_samples=2000, max_eval_samples=500)
    tokenized = tokenize_splits(splits, tokenizer, 64)
    model = QueryRewardModel.from_encoder(AutoModel.from_pretrained(minilm_path), pooling="mean", dropout=0.1)
    args = QRMTrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        num_train_epochs=1,
        learning_rate=1e-4,
        head_lr_multiplier=6.0,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        warmup_steps=0.1,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    trainer = QRMTrainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["dev"],
        data_collator=QueryCollator(tokenizer, max_length=64),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    dev_mse = trainer.evaluate()["eval_mse"]
    mean = float(np.mean(splits["train"]["score"]))
    baseline = float(np.mean((np.asarray(splits["dev"]["score"]) - mean) ** 2))
    print(f"dev MSE {dev_mse:.4f} vs training-mean baseline {baseline:.4f}")
    assert dev_mse < 0.8 * baseline
