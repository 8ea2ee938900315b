"""Score queries with a saved reward model: batched, length-sorted, on the fastest device available.

The scorer is the one way every consumer (the prediction CLI, the TRL reward function, notebooks) turns text
into scores, so truncation, clamping and input checks behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..metrics.thresholds import PAPER_THRESHOLD
from ..modeling.configuration_qrm import QueryRewardConfig
from ..modeling.model_files import check_reward_model, first_line
from ..modeling.modeling_qrm import QueryRewardEnsemble, QueryRewardModel, reward_models
from .reward_rule import fold_text

# Below this many queries a progress bar is noise; above it the user wants to know the job is moving.
PROGRESS_MIN_QUERIES = 1024
# How the scorer runs the model: as saved (torch), or with int8 Linear weights (CPU).
SCORING_BACKENDS = ("torch", "int8")
# No token spans more characters: WordPiece maps a longer word to one unknown token (max_input_chars_per_word).
MAX_CHARS_PER_TOKEN = 100
# Scored once when a model loads: its score must be a finite number.
LOAD_CHECK_QUERY = "how do owls hunt at night ?"


def available_devices() -> list[str]:
    """The devices this process can score on, for messages: cpu, each CUDA GPU, mps."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None picks the fastest available: cuda, then mps, then cpu.

    A device that torch does not know, or one this machine lacks (`cuda` without a GPU, `cuda:3` with two),
    raises ValueError naming it and the devices available, instead of a torch error at the first forward pass.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device {device!r} is not a device torch knows; available here: {', '.join(available_devices())}"
        ) from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {device!r} is not available: torch {torch.__version__} sees no CUDA GPU "
                f"(available here: {', '.join(available_devices())})"
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {device!r} is not available: this machine has {count} CUDA GPU(s) "
                f"(available here: {', '.join(available_devices())})"
            )
        return resolved
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        usable = mps is not None and mps.is_available()
    else:  # xpu and other accelerators expose torch.<type>.is_available(); meta and the like do not score
        backend = getattr(torch, resolved.type, None)
        usable = callable(getattr(backend, "is_available", None)) and backend.is_available()
    if not usable:
        raise ValueError(
            f"device {device!r} is not available on this machine; available here: {', '.join(available_devices())}"
        )
    return resolved


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """`dtype` as a torch.dtype; None means bfloat16 on a CUDA GPU that supports it (half the memory, faster
    matmuls) and float32 elsewhere, where bf16 is slow or unsupported."""
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype (try 'float32' or 'bfloat16')")
        dtype = resolved
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(
                f"dtype {dtype} cannot hold a model's weights: use a float dtype such as float32 or bfloat16"
            )
        return dtype
    if dtype is not None:
        raise TypeError(f"dtype must be a torch dtype, its name or None, got {type(dtype).__name__}: {dtype!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def normalize_query(text: str) -> str:
    """The text the model scores, the one the reward rule's guards read too (`reward_rule.fold_text`): lone
    surrogates (from a JSON `\\ud800` escape, or a policy's broken output) replaced by U+FFFD, compatibility
    folding (fullwidth letters), format and control characters removed (zero-width spaces and joiners, soft
    hyphens, a byte-order mark), letters that render blank made spaces; then blank text (empty or whitespace only)
    made the empty string, which tokenizers otherwise treat differently.

    Example:
        >>> normalize_query("\\ufeffhow do owls hunt \\ud800?")
        'how do owls hunt \ufffd?'
    """
    text = fold_text(text)
    return text if text.strip() else ""


def _as_texts(queries: Iterable[str]) -> list[str]:
    if isinstance(queries, (str, bytes)):
        raise TypeError("queries must be a list of strings, not a single string: wrap one query as [query]")
    if isinstance(queries, Mapping) or hasattr(queries, "columns"):
        kind = "DataFrame" if hasattr(queries, "columns") else type(queries).__name__
        raise TypeError(
            f"queries is a {kind}: iterating it would score its {'column names' if kind == 'DataFrame' else 'keys'}; "
            'pass one column of strings, e.g. df["query"] or batch["query"]'
        )
    try:
        texts = list(queries)
    except TypeError:
        raise TypeError(f"queries must be a list of strings, got {type(queries).__name__}: {queries!r}") from None
    for index, query in enumerate(texts):
        if not isinstance(query, str):
            hint = ""
            if isinstance(query, Mapping):
                hint = ' (rows of a table? pass one column, e.g. dataset["query"])'
            elif isinstance(query, bytes):
                hint = " (decode bytes first, e.g. query.decode('utf-8'))"
            raise TypeError(f"queries[{index}] is {type(query).__name__}, not str: {query!r}{hint}")
    return [normalize_query(query) for query in texts]


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int >= 1, got {type(batch_size).__name__}: {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off while scoring, and the caller's train/eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# Linear layers that write back into the residual stream (BERT's and MPNet's FFN `output.dense`, BERT's attention
# `output.dense`, MPNet's attention `attn.o`, ModernBERT's `Wo`): int8 there moved test MSE by +0.0018, float there
# by +0.0002 (results/BENCHMARKS.md, 12b).
FLOAT_LINEAR_SUFFIXES = ("output.dense", ".Wo", ".attn.o")


def quantize_linear_layers(model: QueryRewardModel | QueryRewardEnsemble) -> QueryRewardModel | QueryRewardEnsemble:
    """The model with its encoder's (each member's) Linear weights in int8, per output channel, activations
    quantized on the fly (CPU inference). The projections back into the residual stream stay float, as does the
    small regression head, since its one output is the score itself."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    for member in reward_models(model):
        names = {
            name: per_channel_dynamic_qconfig
            for name, module in member.encoder.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith(FLOAT_LINEAR_SUFFIXES)
        }
        with warnings.catch_warnings():  # torch marks its quantized tensor types deprecated; the kernels are stock
            warnings.simplefilter("ignore", UserWarning)
            member.encoder = quantize_dynamic(member.encoder, names, dtype=torch.qint8)
    return model


class QueryScorer:
    """Score search queries for wellformedness with a [`QueryRewardModel`] or a [`QueryRewardEnsemble`].

    Queries are sorted by length so each batch pads little, scored under `torch.inference_mode`, and returned
    in the input order. Each query is cut to the model's `config.max_length` tokens.

    Example:
        >>> scorer = QueryScorer.from_pretrained("runs/quickstart/final_model")  # doctest: +SKIP
        >>> scorer.score(["how do owls hunt ?", "owls hunt how"])  # doctest: +SKIP
        [0.93, 0.12]
    """

    def __init__(
        self,
        model: QueryRewardModel | QueryRewardEnsemble,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        """Wrap a loaded model; with `device` it is moved there, without it stays where it is."""
        _check_batch_size(batch_size)
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
        backend: str = "torch",
    ) -> QueryScorer:
        """Load a saved reward model folder or Hub repo id (at `revision`) with its tokenizer.

        `device` None picks cuda, then mps, then cpu; `dtype` None means bfloat16 on CUDA, float32 elsewhere.
        `backend="int8"` quantizes the encoder's Linear weights to int8 (torch's dynamic quantization, CPU only:
        faster on a CPU at a test-MSE cost measured in results/BENCHMARKS.md).
        Raises OSError or ValueError naming what is missing when `name_or_path` is not a query reward model.
        """
        _check_batch_size(batch_size)
        if backend not in SCORING_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(SCORING_BACKENDS)}, got {backend!r}")
        target = resolve_device(device if backend == "torch" or device is not None else "cpu")
        if backend == "int8" and target.type != "cpu":
            raise ValueError(f"backend 'int8' runs on the CPU only, not on {target}: use device='cpu'")
        torch_dtype = resolve_dtype(dtype, target)
        check_reward_model(name_or_path, revision)
        try:
            config = QueryRewardConfig.from_pretrained(str(name_or_path), revision=revision)
        except (ValueError, TypeError) as error:  # QueryRewardConfig's own checks: a value out of its domain
            raise ValueError(
                f"{name_or_path}: config.json holds a value the model cannot take ({first_line(error)})"
            ) from None
        try:
            model_class = QueryRewardEnsemble if config.ensemble_size > 1 else QueryRewardModel
            model = model_class.from_pretrained(str(name_or_path), revision=revision, config=config, dtype=torch_dtype)
        except SafetensorError as error:  # a Hub download cut short; local folders are checked above
            raise OSError(
                f"{name_or_path}: the weights are incomplete or corrupt ({error}); download the model again"
            ) from None
        except (RuntimeError, ValueError, TypeError, KeyError) as error:  # config.json that does not fit the weights
            raise ValueError(
                f"{name_or_path}: config.json does not fit the weights ({type(error).__name__}: {first_line(error)}); "
                "save or download the model again"
            ) from None
        # With the config given, AutoTokenizer does not load it again through AutoConfig, which would ask on the
        # terminal whether to trust the folder's remote code (the auto_map) and wait 15 s for an answer.
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision, config=model.config)
        if backend == "int8":
            model = quantize_linear_layers(model.eval())
        scorer = cls(model, tokenizer, device=target, batch_size=batch_size)
        # One pass on a fixed query: weights or a config that load but compute NaN (an ensemble_size that does
        # not match the weights, a broken checkpoint) are refused here, not met as NaN rewards in a policy's loss.
        check = scorer.score([LOAD_CHECK_QUERY], raw=True, show_progress=False)[0]
        if not math.isfinite(check):
            raise ValueError(
                f"{name_or_path}: the model scores the query {LOAD_CHECK_QUERY!r} as {check}: its weights or "
                "config.json (e.g. ensemble_size, the head's sizes) are broken; save or download it again"
            )
        return scorer

    @property
    def device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)  # an int8 model keeps its Linear weights as packed buffers
        return parameter.device if parameter is not None else torch.device("cpu")

    @property
    def decision_threshold(self) -> float:
        """A score at or above it means well-formed: chosen on dev by the run that trained the model (0.8, the
        paper's convention, for models saved without one)."""
        return float(getattr(self.model.config, "decision_threshold", PAPER_THRESHOLD))

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

        An empty list gives `[]`. Each query goes through [`normalize_query`]: an empty or whitespace-only query
        is scored as the empty string (only the tokenizer's special tokens), so it gets a score like any other;
        lone surrogates are replaced and a leading byte-order mark dropped, so one broken string never fails
        a batch. A query longer than `max_length` tokens is truncated. A non-string item raises TypeError
        naming its index; a dict or DataFrame raises TypeError saying to pass one column. `show_progress` None
        shows a progress bar from `PROGRESS_MIN_QUERIES` queries on.
        """
        return self.score_and_count(queries, raw=raw, batch_size=batch_size, show_progress=show_progress)[0]

    def score_and_count(
        self,
        queries: Iterable[str],
        raw: bool = False,
        batch_size: int | None = None,
        show_progress: bool | None = False,
    ) -> tuple[list[float], list[int]]:
        """[`score`] and [`token_counts`] of `queries` from one tokenization: what the reward rule needs."""

        def batch_values(batch: list[str], encoded: list[list[int]]) -> list[tuple[float, int]]:
            return list(zip(self.score_ids(encoded, raw=raw), self.token_counts(batch, encoded), strict=True))

        pairs = self._by_batch(queries, batch_values, batch_size, show_progress)
        return [score for score, _ in pairs], [count for _, count in pairs]

    def spread(self, queries: Iterable[str], batch_size: int | None = None) -> list[float]:
        """How much an ensemble's members disagree on each query (the standard deviation of their scores), an
        uncertainty a reward can penalise; 0.0 for every query of a single model."""

        def batch_values(batch: list[str], encoded: list[list[int]]) -> list[float]:
            output = self._forward(encoded)
            return [0.0] * len(batch) if output.spread is None else output.spread.float().tolist()

        return self._by_batch(queries, batch_values, batch_size, False)

    def _by_batch(
        self,
        queries: Iterable[str],
        batch_values: Callable[[list[str], list[list[int]]], list[Any]],
        batch_size: int | None,
        show_progress: bool | None,
    ) -> list[Any]:
        """`batch_values(texts, token ids)` over `queries` in length-sorted batches, returned in input order."""
        batch_size = self.batch_size if batch_size is None else _check_batch_size(batch_size)
        texts = _as_texts(queries)
        if not texts:
            return []
        # Longest first: batches of similar length pad little, and an out-of-memory error comes at once.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]), reverse=True)
        values: list[Any] = [None] * len(texts)
        progress = len(texts) >= PROGRESS_MIN_QUERIES if show_progress is None else show_progress
        with tqdm(total=len(texts), desc="Scoring", unit="query", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = [texts[index] for index in indices]
                for index, value in zip(indices, batch_values(batch, self.encode(batch)), strict=True):
                    values[index] = value
                bar.update(len(indices))
        return values

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each (normalized) text as the model reads it: cut to `max_length` tokens, keeping the
        end token. Text beyond `max_length * MAX_CHARS_PER_TOKEN` characters is dropped before tokenizing: the
        model could not see it, and a megabyte of text would otherwise be tokenized whole."""
        limit = self.max_length * MAX_CHARS_PER_TOKEN
        return self.tokenizer(
            [text[:limit] for text in texts],
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]

    def token_counts(self, texts: list[str], encoded: list[list[int]] | None = None) -> list[int]:
        """How many tokens each (normalized) text has before the cut at `max_length`, special tokens included:
        what the reward rule's length guard compares with `max_length`. Text past `max_length *
        MAX_CHARS_PER_TOKEN` characters counts in proportion to its length."""
        encoded = self.encode(texts) if encoded is None else encoded
        counts = [len(ids) for ids in encoded]
        full = [index for index, ids in enumerate(encoded) if len(ids) >= self.max_length]
        if full:
            limit = self.max_length * MAX_CHARS_PER_TOKEN
            untruncated = self.tokenizer(
                [texts[index][:limit] for index in full],
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )["input_ids"]
            for index, ids in zip(full, untruncated, strict=True):
                counts[index] = math.ceil(len(ids) * max(1.0, len(texts[index]) / limit))
        return counts

    def score_ids(self, encoded: list[list[int]], raw: bool = False) -> list[float]:
        """Scores of token-id sequences (from [`encode`]) in one forward pass, padded to the longest."""
        if not encoded:
            return []
        values = self._forward(encoded).scores.float()
        if not raw:
            values = values.clamp(0.0, 1.0)
        return values.tolist()

    def _forward(self, encoded: list[list[int]]) -> Any:
        """The model's output on token-id sequences, padded to the longest (eval mode, no gradient)."""
        batch = self.tokenizer.pad({"input_ids": encoded}, return_tensors="pt").to(self.device)
        with torch.inference_mode(), _eval_mode(self.model):
            return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

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


__all__ = [
    "MAX_CHARS_PER_TOKEN",
    "SCORING_BACKENDS",
    "PROGRESS_MIN_QUERIES",
    "QueryScorer",
    "available_devices",
    "normalize_query",
    "resolve_device",
    "resolve_dtype",
]
