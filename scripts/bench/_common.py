"""Shared helpers of the benchmark scripts: machine description, timing, memory."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> str:
    """CPU model and cores (and GPU, if any), as BENCHMARKS.md records them."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def score_in_turns(scorers: dict, queries: list[str], repeats: int) -> tuple[dict, dict]:
    """Each scorer scores `queries` in turn, `repeats` times, the order reversed every other time (after a warm-up
    on the first 256): (queries/s of each run, last scores) by scorer name."""
    for scorer in scorers.values():  # first passes are slow: not measured
        scorer.score(queries[:256], show_progress=False)
    rates: dict[str, list[float]] = {name: [] for name in scorers}
    scores: dict[str, list[float]] = {}
    for repeat in range(repeats):
        for name in scorers if repeat % 2 == 0 else reversed(list(scorers)):
            start = time.perf_counter()
            scores[name] = scorers[name].score(queries, show_progress=False)
            rates[name].append(len(queries) / (time.perf_counter() - start))
    return rates, scores


def write_record(output: str | None, record: dict) -> None:
    """Write a benchmark's figures as JSON to `output` (nothing when None): called after each part, so an
    interrupted run keeps what it measured."""
    import json
    from pathlib import Path

    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(record, indent=2, default=str))


def median(values: list[float]) -> float:
    return statistics.median(values)


def rss_mb() -> float:
    """Current resident memory of this process in MiB (Linux)."""
    with open("/proc/self/statm", encoding="utf-8") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def modernbert_config(tokenizer, tiny: bool = False):
    """ModernBERT-base's architecture, or with `tiny` a 2-layer, 64-wide one that a CPU runs in seconds, using
    `tokenizer`'s special tokens. The full model keeps ModernBERT's own vocabulary size (its embedding memory and
    optimizer cost) unless the tokenizer needs more; the tiny one is sized to the tokenizer."""
    from transformers import ModernBertConfig

    size = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = ModernBertConfig(
        **(size if tiny else {}),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    config.vocab_size = tokenizer.vocab_size if tiny else max(config.vocab_size, tokenizer.vocab_size)
    return config
