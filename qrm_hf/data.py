"""Query-wellformedness data: load the official splits, validate every row, tokenize once, batch.

Two sources: a Hub dataset id (columns `content`, `rating`; splits train/validation/test) or a local folder
holding the original `train.tsv`, `dev.tsv`, `test.tsv` (`query<TAB>score`, no header).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where they are used: the run settings read this module without torch (`--help`)
    import torch
    from datasets import DatasetDict
    from transformers import PreTrainedTokenizerBase

# The query-wellformedness dataset on the Hub: what `--data` names when it is not a folder of TSV files.
DEFAULT_DATASET = "google-research-datasets/google_wellformed_query"
SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
HUB_COLUMNS = {"content": "query", "rating": "score"}


class DataFormatError(ValueError):
    """A data row or file that cannot be used; the message names the file (or split) and line."""


def parse_row(query: str, score_text: str, where: str) -> tuple[str, float]:
    """Validate one row: a non-empty query and a score in [0, 1]. `where` names the row in errors."""
    if not query.strip():
        raise DataFormatError(f"{where}: empty query")
    try:
        score = float(score_text)
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}: score {score_text!r} is not a number") from None
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise DataFormatError(f"{where}: score {score} is outside [0, 1]")
    return query, score


def utf8_lines(lines: Iterable[bytes], where: str) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) of each line of UTF-8 bytes, a leading byte-order mark
    dropped. A byte that is not UTF-8 raises DataFormatError naming `where`, the line and the byte's offset from
    the start of the input (a text-mode file would report an offset within its read buffer instead)."""
    offset = 0
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataFormatError(
                f"{where}:{number}: not UTF-8 text ({error.reason} at byte {offset + error.start}); "
                "re-encode it as UTF-8"
            ) from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        offset += len(raw)
        yield number, text.rstrip("\r\n")


def read_tsv(path: str | os.PathLike) -> dict[str, list]:
    """Read a `query<TAB>score` file, failing on the first malformed line with its number."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found (expected `query<TAB>score` lines)")
    queries: list[str] = []
    scores: list[float] = []
    with path.open("rb") as lines:
        for number, line in utf8_lines(lines, str(path)):
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataFormatError(
                    f"{path}:{number}: expected 2 tab-separated columns (query, score), found {len(fields)}"
                )
            query, score = parse_row(fields[0], fields[1], f"{path}:{number}")
            queries.append(query)
            scores.append(score)
    if not queries:
        raise DataFormatError(f"{path}: no rows")
    return {"query": queries, "score": scores}


def _load_folder(folder: Path) -> DatasetDict:
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_dict(read_tsv(folder / name)) for split, name in SPLIT_FILES.items()})


def looks_like_path(source: str) -> bool:
    """A `data` value meant as a folder: it starts with `.`, `/` or `~`, or has a separator that a Hub id
    (`org/name`, one slash) cannot have."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or (os.sep != "/" and os.sep in source)


def _load_hub(dataset_id: str) -> DatasetDict:
    from datasets import DatasetDict, load_dataset

    try:
        raw = load_dataset(dataset_id)
    except (ConnectionError, OSError, ValueError) as error:
        offline = [
            name for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(name, "") not in ("", "0")
        ]
        why = f"{' and '.join(offline)} set" if offline else "no network, or no such dataset on the Hub"
        raise DataFormatError(
            f"{dataset_id}: could not load the dataset from the Hub ({why}): {type(error).__name__}: {error}. "
            f"Unset {'/'.join(offline) or 'HF_HUB_OFFLINE'} with network access, or pass a local folder with "
            f"{', '.join(SPLIT_FILES.values())} as --data"
        ) from None
    splits = {}
    for split, hub_split in HUB_SPLITS.items():
        if hub_split not in raw:
            raise DataFormatError(f"{dataset_id}: no '{hub_split}' split (has {sorted(raw)})")
        table = raw[hub_split].rename_columns(HUB_COLUMNS)
        for index, (query, score) in enumerate(zip(table["query"], table["score"], strict=True)):
            parse_row(query, score, f"{dataset_id} [{hub_split}] row {index}")
        splits[split] = table.select_columns(["query", "score"])
    return DatasetDict(splits)


def load_splits(
    source: str,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    max_test_samples: int | None = None,
) -> DatasetDict:
    """Load `train`, `dev` and `test` with columns `query` (str) and `score` (float).

    `source` is a folder with train.tsv/dev.tsv/test.tsv or a Hub dataset id. The `max_*` arguments keep
    the first N rows of a split (for quick runs), as transformers' example scripts do.
    """
    folder = Path(source).expanduser()
    if not folder.is_dir() and looks_like_path(source):
        raise DataFormatError(
            f"{source}: no such data folder (resolved to {folder.resolve()}); expected a folder holding "
            f"{', '.join(SPLIT_FILES.values())} (query<TAB>score lines), or a Hub dataset id such as {DEFAULT_DATASET}"
        )
    splits = _load_folder(folder) if folder.is_dir() else _load_hub(source)
    limits = {"train": max_train_samples, "dev": max_eval_samples, "test": max_test_samples}
    for split, limit in limits.items():
        if limit is not None:
            if limit < 1:
                raise ValueError(f"max_{'eval' if split == 'dev' else split}_samples must be >= 1, got {limit}")
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    return splits


def random_subset(dataset: Any, rows: int, seed: int) -> Any:
    """A seeded random sample of `rows` rows (all of them when there are fewer): a search at lower fidelity
    sees a sample of the whole split, not its first rows."""
    if rows >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(rows))


# Splits that are only evaluated, never trained on: their row order is free.
EVALUATION_SPLITS = ("dev", "test")


def tokenize_splits(splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> DatasetDict:
    """Tokenize every split once, truncating at `max_length` (the largest any trial uses), without padding.

    Each row gets `input_ids`, `attention_mask` and a float `labels`; the collator then cuts a batch to the
    trial's own max_length and pads it to its longest row.
    """

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["query"], truncation=True, max_length=max_length, return_token_type_ids=False)
        encoded["labels"] = [float(score) for score in batch["score"]]
        return encoded

    from datasets import DatasetDict

    tokenized = splits.map(encode, batched=True, remove_columns=["score"], desc="Tokenizing")
    # Evaluation batches of similar lengths pad little: sorted, dev is scored about twice as fast every epoch of
    # every trial, and no metric depends on the order of rows.
    return DatasetDict(
        {name: by_length(split) if name in EVALUATION_SPLITS else split for name, split in tokenized.items()}
    )


def by_length(dataset: Any) -> Any:
    """The rows sorted by token count (stable: ties keep their order)."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    return dataset.select(sorted(range(len(lengths)), key=lengths.__getitem__))


@dataclass(frozen=True)
class QueryCollator:
    """Cut each row to `max_length` tokens (keeping its final special token) and pad to the batch's longest.

    One tokenized dataset (cut at the longest length any trial uses) serves every trial of a search; the trainer
    makes each trial's collator from its arguments (`QRMTrainer.data_collator`).
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        special_ids = set(self.tokenizer.all_special_ids)
        rows = []
        for feature in features:
            input_ids = list(feature["input_ids"])
            if len(input_ids) > self.max_length:
                keep_last = input_ids[-1] in special_ids
                input_ids = input_ids[: self.max_length - keep_last] + input_ids[-1:] * keep_last
            row = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids)}
            rows.append(row)
        batch = self.tokenizer.pad(
            rows, padding="longest", pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([float(feature["labels"]) for feature in features], dtype=torch.float32)
        return dict(batch)


__all__ = [
    "DEFAULT_DATASET",
    "DataFormatError",
    "QueryCollator",
    "load_splits",
    "looks_like_path",
    "parse_row",
    "random_subset",
    "read_tsv",
    "tokenize_splits",
    "utf8_lines",
]
