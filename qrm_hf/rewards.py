"""A TRL reward function from a query reward model: score the queries a policy writes, e.g. with GRPOTrainer.

TRL calls each reward function as `reward(prompts=..., completions=..., completion_ids=..., **columns)` and
logs it under its `__name__`. Completions are plain strings, or (conversational data) lists of messages whose
last assistant message holds the generated text. The function runs inside someone else's training loop, so no
completion a policy writes can make it raise: what it cannot read is scored as empty, with a warning. The model
runs in-process, or behind `qrm serve` when given its URL, so many trainer processes share one scorer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .client import QueryScorerClient
from .reward_rule import DEFAULT_MAX_REPEATED_SHARE, DEFAULT_MIN_CONTENT_WORDS, RewardRule
from .scoring import QueryScorer, _check_batch_size, normalize_query

logger = logging.getLogger(__name__)

RewardFunction = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The generated text of one completion: the string itself, or the last assistant message's content.

    Content given as a list of parts (`[{"type": "text", "text": ...}]`, as multimodal chat templates use, or
    plain strings) is joined; a message without text (a bare tool call) counts as the empty string. A single
    message dict counts as a one-message conversation.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and all(isinstance(message, Mapping) for message in completion):
        replies = [message for message in completion if message.get("role") == "assistant"]
        if not replies:
            roles = [message.get("role") for message in completion]
            raise ValueError(f"conversational completion has no assistant message (roles: {roles})")
        return _content_text(replies[-1].get("content"))
    raise TypeError(
        f"completion must be a string or a list of message dicts, got {type(completion).__name__}: {completion!r}"
    )


def prompt_text(prompt: Any) -> str:
    """The text a prompt asks about, for the reward rule's prompt guard: the string itself, or the content of a
    conversation's user messages (a system message would lend its words to every completion)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        prompt = [prompt]
    if isinstance(prompt, Sequence) and all(isinstance(message, Mapping) for message in prompt):
        asked = [message for message in prompt if message.get("role") == "user"] or list(prompt)
        return "\n".join(_content_text(message.get("content")) for message in asked)
    raise TypeError(f"prompt must be a string or a list of message dicts, got {type(prompt).__name__}")


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts joined; none for a message without."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [content] if isinstance(content, Mapping) else content
    if not isinstance(parts, Sequence):
        raise TypeError(f"message content must be text or a list of parts, got {type(content).__name__}")
    texts = [part if isinstance(part, str) else part.get("text") for part in parts if isinstance(part, (str, Mapping))]
    return "".join(text for text in texts if isinstance(text, str))


def make_reward_function(
    scorer_or_path: QueryScorer | QueryScorerClient | str | os.PathLike,
    *,
    name: str = "query_wellformedness",
    raw: bool = False,
    batch_size: int | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    empty_score: float | None = 0.0,
    length_guard: bool = True,
    max_repeated_share: float | None = DEFAULT_MAX_REPEATED_SHARE,
    min_content_words: int = DEFAULT_MIN_CONTENT_WORDS,
    min_prompt_overlap: int = 0,
    timeout: float = 60.0,
    retries: int = 3,
) -> RewardFunction:
    """A reward function for TRL trainers that scores each completion's text with a query reward model.

    `scorer_or_path` is a loaded [`QueryScorer`] (share one between trainers), a folder / Hub id to load
    (`revision`, `device`, `dtype` are then passed to `QueryScorer.from_pretrained`), or the URL of a
    `qrm serve` server (`http://host:port`; each call is one request with `timeout` seconds per attempt and
    `retries` more attempts, see [`QueryScorerClient`]) or a client of one. Rewards are in [0, 1] unless `raw`.
    `name` becomes the function's `__name__`, the key of TRL's `rewards/<name>` logs.

    Rewards follow [`RewardRule`] (`empty_score`, `length_guard`, `max_repeated_share`, `min_content_words`),
    the same rule `qrm serve` applies: a completion with no visible character gets `empty_score` without running
    the model (the model's own score for the empty string beats many poorly formed queries, so a policy would
    learn that writing nothing pays; `empty_score=None` scores it with the model); text longer than the model's
    `max_length` tokens has its score scaled by `max_length / tokens`; text with too many repeated words, or
    without a content word ("What is it?"), gets `empty_score`; with `min_prompt_overlap`, so does text that
    shares fewer content words with its prompt (TRL's `prompts`; of a conversation, its user messages). A
    completion the function cannot read (not a string nor a list of messages, no assistant message) is scored as
    empty, with one warning logged, rather than stopping training.

    Example:
        >>> from trl import GRPOConfig, GRPOTrainer  # doctest: +SKIP
        >>> reward = make_reward_function("runs/quickstart/final_model")  # or a URL  # doctest: +SKIP
        >>> args = GRPOConfig(output_dir="runs/grpo")  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=prompts)  # doctest: +SKIP
    """
    rule = RewardRule(empty_score, length_guard, max_repeated_share, min_content_words, min_prompt_overlap)
    remote = isinstance(scorer_or_path, str) and scorer_or_path.startswith(("http://", "https://"))
    if remote or isinstance(scorer_or_path, QueryScorerClient):
        given = {"batch_size": batch_size, "revision": revision, "device": device, "dtype": dtype}
        local_only = [key for key, value in given.items() if value is not None]
        if local_only:
            raise ValueError(
                f"{', '.join(local_only)} apply to a model loaded in this process, not to a server: "
                "give them to `qrm serve` (e.g. --device, --dtype, --max-batch-size) instead"
            )
    if batch_size is not None:
        _check_batch_size(batch_size)
    if isinstance(scorer_or_path, (QueryScorer, QueryScorerClient)):
        scorer = scorer_or_path
    elif remote:
        scorer = QueryScorerClient(scorer_or_path, timeout=timeout, retries=retries)
    else:
        scorer = QueryScorer.from_pretrained(scorer_or_path, revision=revision, device=device, dtype=dtype)
    warned: list[bool] = []

    def rewards_of(texts: list[str], prompts: list[str] | None) -> list[float]:
        if isinstance(scorer, QueryScorerClient):
            return scorer.rewards(texts, rule, raw=raw, prompts=prompts)
        return local_rewards(scorer, texts, rule, raw=raw, batch_size=batch_size, prompts=prompts)

    def read(index: int, completion: Any) -> str:
        try:
            return completion_text(completion)
        except (TypeError, ValueError, AttributeError) as error:
            if not warned:
                warned.append(True)
                logger.warning(
                    "%s: completion %d cannot be read (%s); it and any later unreadable completion are scored as "
                    "empty (%s)",
                    name,
                    index,
                    error,
                    "the model's score of the empty string" if empty_score is None else empty_score,
                )
            return ""

    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        if isinstance(completions, (str, bytes, Mapping)) or not isinstance(completions, Sequence):
            raise TypeError(f"completions must be a list, one per generation, got {type(completions).__name__}")
        texts = [read(index, completion) for index, completion in enumerate(completions)]
        # The prompt guard compares each completion with its prompt; without it, prompts are not read.
        asked = [prompt_text(prompt) for prompt in prompts] if rule.min_prompt_overlap and prompts else None
        return rewards_of(texts, asked)

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"Query wellformedness reward ({'raw' if raw else 'clamped to [0, 1]'}) of each completion."
    reward.scorer = scorer
    reward.rule = rule
    return reward


def local_rewards(
    scorer: QueryScorer,
    texts: Sequence[str],
    rule: RewardRule,
    raw: bool = False,
    batch_size: int | None = None,
    prompts: Sequence[str] | None = None,
) -> list[float]:
    """[`RewardRule.rewards`] of `texts` (with their `prompts`, for the prompt guard) with a model in this process
    (what `qrm serve` runs for a request)."""
    texts = [normalize_query(text) if isinstance(text, str) else "" for text in texts]

    def score_and_count(written: list[str]) -> tuple[list[float], list[int]]:
        return scorer.score_and_count(written, raw=raw, batch_size=batch_size)

    return rule.rewards(texts, score_and_count, scorer.max_length, prompts)


__all__ = ["RewardFunction", "completion_text", "local_rewards", "make_reward_function", "prompt_text"]
