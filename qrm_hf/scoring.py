"""Score queries with a saved reward model: batched, length-sorted, on the fastest device available.

The scorer is the one way every consumer (the prediction CLI, the TRL reward function, notebooks) turns text
into scores, so truncation, clamping and input checks behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import cached_file

from .configuration_qrm import QueryRewardConfig
from .modeling_qrm import QueryRewardModel

# Below this many queries a progress bar is noise; above it the user wants to know the job is moving.
PROGRESS_MIN_QUERIES = 1024


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None picks the fastest available: cuda, then mps, then cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """`dtype` as a torch.dtype; None means bfloat16 on a CUDA GPU that supports it (half the memory, faster
    matmuls) and float32 elsewhere, where bf16 is slow or unsupported."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype (try 'float32' or 'bfloat16')")
        return resolved
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_reward_model(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """Return the path of the `config.json` of a query reward model, or raise saying what is missing.

    Checked before loading because `from_pretrained` on another kind of model gives errors about weights or
    tokenizer classes that do not say the real problem: this is not a query reward model.
    """
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise OSError(
                f"{folder} is not a query reward model folder: it has no config.json "
                "(save one with qrm_hf.final.save_final or model.save_pretrained)"
            )
    elif folder.exists():
        raise OSError(f"{folder} is a file; expected a query reward model folder or a Hub repo id")
    else:
        try:
            config_file = Path(cached_file(str(name_or_path), "config.json", revision=revision))
        except OSError as error:
            # transformers' message names neither the repo nor the file when offline or the Hub is unreachable.
            raise OSError(
                f"{name_or_path} is neither a local folder nor a Hub repo whose config.json could be fetched "
                f"(revision {revision or 'main'}): {error}"
            ) from error
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != QueryRewardConfig.model_type:
        raise ValueError(
            f"{name_or_path} is not a query reward model: its config.json has model_type {model_type!r}, "
            f"expected {QueryRewardConfig.model_type!r}"
        )
    if folder.is_dir() and not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise OSError(f"{folder} has no tokenizer (tokenizer.json or tokenizer_config.json): save it beside the model")
    return config_file


def _as_texts(queries: Iterable[str]) -> list[str]:
    if isinstance(queries, (str, bytes)):
        raise TypeError("queries must be a list of strings, not a single string: wrap one query as [query]")
    texts = list(queries)
    for index, query in enumerate(texts):
        if not isinstance(query, str):
            raise TypeError(f"queries[{index}] is {type(query).__name__}, not str: {query!r}")
    # Tokenizers disagree on whitespace (WordPiece drops it, BPE keeps it): make blank queries one input.
    return [query if query.strip() else "" for query in texts]


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off while scoring, and the caller's train/eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class QueryScorer:
    """Score search queries for wellformedness with a [`QueryRewardModel`].

    Queries are sorted by length so each batch pads little, scored under `torch.inference_mode`, and returned
    in the input order. Each query is cut to the model's `config.max_length` tokens.

    Example:
        >>> scorer = QueryScorer.from_pretrained("runs/quickstart/final_model")  # doctest: +SKIP
        >>> scorer.score(["how do owls hunt ?", "owls hunt how"])  # doctest: +SKIP
        [0.93, 0.12]
    """

    def __init__(
        self,
        model: QueryRewardModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        """Wrap a loaded model; with `device` it is moved there, without it stays where it is."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if device is not None:
            model = model.to(resolve_device(device))
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        dtype: torch.dtype | str | None = None,
    ) -> QueryScorer:
        """Load a saved reward model folder or Hub repo id (at `revision`) with its tokenizer.

        `device` None picks cuda, then mps, then cpu; `dtype` None means bfloat16 on CUDA, float32 elsewhere.
        Raises OSError or ValueError naming what is missing when `name_or_path` is not a query reward model.
        """
        check_reward_model(name_or_path, revision)
        target = resolve_device(device)
        model = QueryRewardModel.from_pretrained(
            str(name_or_path), revision=revision, dtype=resolve_dtype(dtype, target)
        )
        # With the config given, AutoTokenizer does not load it again through AutoConfig, which would ask on the
        # terminal whether to trust the folder's remote code (the auto_map) and wait 15 s for an answer.
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision, config=model.config)
        return cls(model, tokenizer, device=target, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def decision_threshold(self) -> float:
        """A score at or above it means well-formed: chosen on dev by the run that trained the model (0.8, the
        paper's convention, for models saved without one)."""
        return float(getattr(self.model.config, "decision_threshold", 0.8))

    @property
    def max_length(self) -> int:
        """The longest input in tokens; longer queries are truncated to it, as in training."""
        return self.model.config.max_length

    def score(
        self,
        queries: Iterable[str],
        raw: bool = False,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> list[float]:
        """One score per query, in input order: clamped to [0, 1], or the head's raw output with `raw=True`.

        An empty list gives `[]`. An empty or whitespace-only query is scored as the empty string (only the
        tokenizer's special tokens), so it gets a score like any other. A query longer than `max_length`
        tokens is truncated. A non-string item raises TypeError naming its index. `show_progress` None shows
        a progress bar from `PROGRESS_MIN_QUERIES` queries on.
        """
        texts = _as_texts(queries)
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not texts:
            return []
        # Longest first: batches of similar length pad little, and an out-of-memory error comes at once.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]), reverse=True)
        scores = [0.0] * len(texts)
        progress = len(texts) >= PROGRESS_MIN_QUERIES if show_progress is None else show_progress
        device = self.device
        with (
            torch.inference_mode(),
            _eval_mode(self.model),
            tqdm(total=len(texts), desc="Scoring", unit="query", disable=not progress) as bar,
        ):
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[index] for index in indices],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_token_type_ids=False,
                    return_tensors="pt",
                ).to(device)
                values = self.model(**batch).scores.float()
                if not raw:
                    values = values.clamp(0.0, 1.0)
                for index, value in zip(indices, values.tolist(), strict=True):
                    scores[index] = value
                bar.update(len(indices))
        return scores

    def classify(
        self, queries: Iterable[str], threshold: float | None = None, batch_size: int | None = None
    ) -> list[bool]:
        """Whether each query is well-formed: its score at or above `threshold` (default: the model's
        `decision_threshold`, chosen on dev when it was trained).

        Example:
            >>> scorer.classify(["how do owls hunt ?", "owls hunt how"])  # doctest: +SKIP
            [True, False]
        """
        cut = self.decision_threshold if threshold is None else float(threshold)
        if not 0.0 <= cut <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        return [score >= cut for score in self.score(queries, batch_size=batch_size)]


__all__ = ["PROGRESS_MIN_QUERIES", "QueryScorer", "check_reward_model", "resolve_device", "resolve_dtype"]
