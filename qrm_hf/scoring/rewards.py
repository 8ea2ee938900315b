"""Rewards for RL trainers from a query reward model: score the queries a policy writes, e.g. with GRPOTrainer.

TRL calls each reward function as `reward(prompts=..., completions=..., completion_ids=..., **columns)` and
logs it under its `__name__`. Completions are plain strings, or (conversational data) lists of messages whose
last assistant message holds the generated text, or whose assistant messages call tools with a query. The
reward runs inside someone else's training loop, so no completion a policy writes can make it raise: what it
cannot read is scored as empty, with a warning. The model runs in-process, or behind `qrm serve` when given its
URL, so many trainer processes share one scorer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .client import QueryScorerClient
from .policy_text import TOOL_COMBINES, PolicyTextCleaner, argument_query, combine_rewards, policy_queries
from .reward_rule import DEFAULT_MAX_REPEATED_SHARE, DEFAULT_MIN_CONTENT_WORDS, RewardRule
from .scorer import QueryScorer, _check_batch_size, normalize_query

logger = logging.getLogger(__name__)

RewardFunction = Callable[..., list[float]]
# The tool-call argument that holds a search query, by default.
DEFAULT_TOOL_ARGUMENTS = ("query",)


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


def assistant_tool_queries(completion: Any, argument_names: Sequence[str]) -> list[str]:
    """The query arguments of every tool call that a conversational completion's assistant messages make (TRL's
    parsed `tool_calls`: `{"type": "function", "function": {"name": ..., "arguments": {...}}}`, arguments as a
    mapping or its JSON text), in order; [] for a string completion or one without such calls."""
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, str) or not isinstance(completion, Sequence):
        return []
    queries = []
    for message in completion:
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                query = argument_query(function.get("arguments"), argument_names)
                if query is not None:
                    queries.append(query)
    return queries


class QueryReward:
    """A reward for RL trainers that scores the queries a policy writes with a query reward model.

    Use it as TRL's `reward_funcs=[QueryReward("path/or/hub-id")]` (its `__name__` names TRL's `rewards/<name>`
    logs), or call it as `reward(prompts=..., completions=...)`. It pickles (a model loaded from a path or a
    server URL is loaded again on first use after unpickling), so it travels to dataloader and Ray workers.

    `model` is a loaded [`QueryScorer`], a folder or Hub id to load (`revision`, `device`, `dtype`), or the URL of
    `qrm serve` (`http://host:port`, with `timeout` and `retries`) or a client of one. Rewards are in [0, 1] unless
    `raw`, and follow [`RewardRule`] (`empty_score`, `length_guard`, `max_repeated_share`, `min_content_words`,
    `min_prompt_overlap`), the rule `qrm serve` applies.

    What is judged in each completion:
    - the query arguments of its tool calls, when it makes any: an assistant message's parsed `tool_calls` (TRL
      with `tools=[...]`) or `<tool_call>{...}</tool_call>` blocks in raw text, the argument being the first of
      `tool_arguments` that a call holds as a string; a completion with several calls gets the `tool_combine`
      (mean, min or max) of their rewards;
    - otherwise its text: the string, or the last assistant message's content, with the policy's chat-template
      markers and special tokens removed (`strip_policy_tokens`; `policy_tokenizer`, a tokenizer or its name,
      adds that tokenizer's special tokens to the common templates' markers).
    A completion it cannot read is scored as empty, with one warning: it never stops training.

    Example:
        >>> reward = QueryReward("results/all-mpnet-base-v2/final_model", tool_combine="min")  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=policy, reward_funcs=[reward], tools=[search], ...)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: QueryScorer | QueryScorerClient | str | os.PathLike,
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
        tool_arguments: Sequence[str] = DEFAULT_TOOL_ARGUMENTS,
        tool_combine: str = "mean",
        strip_policy_tokens: bool = True,
        policy_tokenizer: Any = None,
        timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        self.rule = RewardRule(empty_score, length_guard, max_repeated_share, min_content_words, min_prompt_overlap)
        remote = isinstance(model, str) and model.startswith(("http://", "https://"))
        if remote or isinstance(model, QueryScorerClient):
            given = {"batch_size": batch_size, "revision": revision, "device": device, "dtype": dtype}
            local_only = [key for key, value in given.items() if value is not None]
            if local_only:
                raise ValueError(
                    f"{', '.join(local_only)} apply to a model loaded in this process, not to a server: "
                    "give them to `qrm serve` (e.g. --device, --dtype, --max-batch-size) instead"
                )
        if batch_size is not None:
            _check_batch_size(batch_size)
        if tool_combine not in TOOL_COMBINES:
            raise ValueError(f"tool_combine must be one of {sorted(TOOL_COMBINES)}, got {tool_combine!r}")
        if isinstance(tool_arguments, str) or not all(isinstance(arg, str) for arg in tool_arguments):
            raise TypeError(f"tool_arguments must be a list of argument names, got {tool_arguments!r}")
        self.__name__ = self.__qualname__ = name
        self.raw, self.batch_size = raw, batch_size
        self.tool_arguments, self.tool_combine = tuple(tool_arguments), tool_combine
        self.cleaner = _cleaner(strip_policy_tokens, policy_tokenizer)
        # Where to load the scorer from again after unpickling (None: a scorer object was given, it pickles itself).
        self._source: dict[str, Any] | None = None
        if isinstance(model, (QueryScorer, QueryScorerClient)):
            self._scorer = model
        elif remote:
            self._source = {"url": model, "timeout": timeout, "retries": retries}
            self._scorer = QueryScorerClient(model, timeout=timeout, retries=retries)
        else:
            self._source = {"path": str(model), "revision": revision, "device": device, "dtype": dtype}
            self._scorer = QueryScorer.from_pretrained(model, revision=revision, device=device, dtype=dtype)
        self._warned = False

    @property
    def scorer(self) -> QueryScorer | QueryScorerClient:
        if self._scorer is None:
            source = self._source or {}
            if "url" in source:
                self._scorer = QueryScorerClient(source["url"], timeout=source["timeout"], retries=source["retries"])
            else:
                options = {key: value for key, value in source.items() if key != "path"}
                self._scorer = QueryScorer.from_pretrained(source["path"], **options)
        return self._scorer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._source is not None:  # loaded from a path or URL: load again where it lands
            state["_scorer"] = None
        return state

    def __repr__(self) -> str:
        where = (self._source or {}).get("path") or (self._source or {}).get("url") or type(self._scorer).__name__
        return f"{type(self).__name__}({where!r}, name={self.__name__!r})"

    def __call__(self, prompts: list[Any] | None = None, completions: list[Any] | None = None, **kwargs: Any):
        """One reward per completion (TRL's keyword arguments such as `completion_ids` are accepted and unused)."""
        if isinstance(completions, (str, bytes, Mapping)) or not isinstance(completions, Sequence):
            raise TypeError(f"completions must be a list, one per generation, got {type(completions).__name__}")
        judged = [self._queries(index, completion) for index, completion in enumerate(completions)]
        flat = [query for queries in judged for query in queries]
        asked = None
        if self.rule.min_prompt_overlap and prompts:  # the prompt guard compares each query with its prompt
            texts = [prompt_text(prompt) for prompt in prompts]
            asked = [text for text, queries in zip(texts, judged, strict=True) for _ in queries]
        values = self._rewards(flat, asked)
        rewards, start = [], 0
        for queries in judged:
            rewards.append(combine_rewards(values[start : start + len(queries)], self.tool_combine))
            start += len(queries)
        return rewards

    def _queries(self, index: int, completion: Any) -> list[str]:
        if self.tool_arguments:
            tool_queries = assistant_tool_queries(completion, self.tool_arguments)
            if tool_queries:
                return tool_queries
        try:
            text = completion_text(completion)
        except (TypeError, ValueError, AttributeError) as error:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "%s: completion %d cannot be read (%s); it and any later unreadable completion are scored as "
                    "empty (%s)",
                    self.__name__,
                    index,
                    error,
                    "the model's score of the empty string" if self.rule.empty_score is None else self.rule.empty_score,
                )
            return [""]
        return policy_queries(text, self.cleaner, self.tool_arguments)

    def _rewards(self, texts: list[str], prompts: list[str] | None) -> list[float]:
        scorer = self.scorer
        if isinstance(scorer, QueryScorerClient):
            return scorer.rewards(texts, self.rule, raw=self.raw, prompts=prompts)
        return local_rewards(scorer, texts, self.rule, raw=self.raw, batch_size=self.batch_size, prompts=prompts)


class AsyncQueryReward(QueryReward):
    """[`QueryReward`] whose call is a coroutine: TRL (>= 1.16) runs async reward functions concurrently with
    each other on its event loop, so a remote `qrm serve` (or a model in this process) is asked while the other
    rewards are computed. The scoring itself runs in a worker thread; settings are those of `QueryReward`.

    Example:
        >>> reward = AsyncQueryReward("http://127.0.0.1:8000")  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=policy, reward_funcs=[reward, format_reward], ...)  # doctest: +SKIP
    """

    async def __call__(self, prompts: list[Any] | None = None, completions: list[Any] | None = None, **kwargs: Any):
        import asyncio

        return await asyncio.to_thread(QueryReward.__call__, self, prompts, completions, **kwargs)


def _cleaner(strip_policy_tokens: bool, policy_tokenizer: Any) -> PolicyTextCleaner | None:
    if not strip_policy_tokens:
        if policy_tokenizer is not None:
            raise ValueError("policy_tokenizer is read only with strip_policy_tokens=True")
        return None
    if policy_tokenizer is None:
        return PolicyTextCleaner()
    if isinstance(policy_tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        policy_tokenizer = AutoTokenizer.from_pretrained(str(policy_tokenizer))
    return PolicyTextCleaner.from_tokenizer(policy_tokenizer)


def make_reward_function(
    scorer_or_path: QueryScorer | QueryScorerClient | str | os.PathLike, **settings: Any
) -> QueryReward:
    """A reward function for TRL trainers: [`QueryReward`] with the same settings (kept for code written
    against earlier versions; `QueryReward` is the class to configure or subclass).

    Example:
        >>> reward = make_reward_function("runs/quickstart/final_model")  # or a URL  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=prompts)  # doctest: +SKIP
    """
    return QueryReward(scorer_or_path, **settings)


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


__all__ = [
    "AsyncQueryReward",
    "QueryReward",
    "RewardFunction",
    "assistant_tool_queries",
    "completion_text",
    "local_rewards",
    "make_reward_function",
    "prompt_text",
]
