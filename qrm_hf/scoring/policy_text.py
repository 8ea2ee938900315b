"""What a policy wrote, out of the raw text an RL framework sends: chat-template markers and special tokens off.

RL clients often decode a rollout with the policy's special tokens kept (OpenRLHF's remote reward client decodes
prompt + response with `skip_special_tokens=False`), so the reward model would judge `"how do owls hunt ?"` as
`"how do owls hunt ?<|im_end|><|endoftext|><|endoftext|>"`, a different and worse-scoring text. The cleaner
keeps the response alone: the text after the last assistant header of a chat template, cut at the first
end-of-turn marker, with every other special token removed. The common templates' markers are known (ChatML/Qwen,
Llama 3, Gemma, Phi, Mistral/Llama 2, DeepSeek, Cohere); a policy's tokenizer adds its own special tokens.

Example:
    >>> PolicyTextCleaner().clean("how do owls hunt ?<|im_end|>\\n<|endoftext|><|endoftext|>")
    'how do owls hunt ?'
    >>> PolicyTextCleaner().clean("<|im_start|>user\\nowls<|im_end|>\\n<|im_start|>assistant\\nhow do owls hunt ?")
    'how do owls hunt ?'
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Text after the last of these is the assistant's turn.
ASSISTANT_HEADERS: tuple[str, ...] = (
    "<|im_start|>assistant",  # ChatML: Qwen, Hermes, SmolLM
    "<|start_header_id|>assistant<|end_header_id|>",  # Llama 3
    "<start_of_turn>model",  # Gemma
    "<|assistant|>",  # Phi-3, Zephyr
    "<｜Assistant｜>",  # DeepSeek
    "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",  # Cohere
    "[/INST]",  # Mistral, Llama 2
)
# The turn (and what the policy meant to write) ends at the first of these.
END_OF_TURN: tuple[str, ...] = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|end|>",
    "<|return|>",
    "<｜end▁of▁sentence｜>",
    "<|END_OF_TURN_TOKEN|>",
    "</s>",
    "<eos>",
)
# Removed wherever they stand: padding and begin-of-sequence tokens.
NOISE_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<｜begin▁of▁sentence｜>",
    "<bos>",
    "<s>",
    "<pad>",
    "<|pad|>",
    "[PAD]",
    "<|finetune_right_pad_id|>",
    "<|dummy_0|>",
)


@functools.lru_cache(maxsize=8)
def _header_patterns(headers: tuple[str, ...]) -> list[re.Pattern]:
    """Each header as a pattern that allows white space between its tokens and words: a tokenizer that decodes
    with spaces (WordPiece) writes `<|im_start|> assistant` for `<|im_start|>assistant`."""
    patterns = []
    for header in headers:
        parts = [part for part in re.split(r"(?<=[>\]])|(?=[<\[])", header) if part]
        patterns.append(re.compile(r"\s*".join(re.escape(part) for part in parts)))
    return patterns


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class PolicyTextCleaner:
    """Strips chat-template markers and special tokens from raw policy text (see the module docstring).

    `extra_special_tokens` (e.g. a policy tokenizer's, [`from_tokenizer`]) are removed wherever they stand; an
    end-of-sequence token among them also ends the turn."""

    assistant_headers: tuple[str, ...] = ASSISTANT_HEADERS
    end_of_turn: tuple[str, ...] = END_OF_TURN
    noise_tokens: tuple[str, ...] = NOISE_TOKENS
    extra_special_tokens: tuple[str, ...] = field(default=())

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PolicyTextCleaner:
        """A cleaner that also knows `tokenizer`'s special tokens (its eos token ends a turn)."""
        special = {str(token) for token in getattr(tokenizer, "all_special_tokens", []) if token}
        for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
            if getattr(added, "special", False) and added.content:
                special.add(added.content)
        eos = getattr(tokenizer, "eos_token", None)
        end = END_OF_TURN + ((str(eos),) if eos and str(eos) not in END_OF_TURN else ())
        return cls(end_of_turn=end, extra_special_tokens=tuple(sorted(special, key=len, reverse=True)))

    def clean(self, text: str) -> str:
        """The response alone, stripped of surrounding white space."""
        if not isinstance(text, str) or "<" not in text and "[" not in text:
            return text.strip() if isinstance(text, str) else text
        ends_of_headers = [match.end() for pattern in _header_patterns(self.assistant_headers)
                           for match in pattern.finditer(text)]  # fmt: skip
        if ends_of_headers:
            text = text[max(ends_of_headers) :]
        ends = [position for marker in self.end_of_turn if (position := text.find(marker)) >= 0]
        if ends:
            text = text[: min(ends)]
        for token in (*self.extra_special_tokens, *self.noise_tokens):
            if token in text:
                text = text.replace(token, "")
        return text.strip()

    def clean_all(self, texts: Iterable[str]) -> list[str]:
        return [self.clean(text) for text in texts]


# How the rewards of one completion's several tool-call queries become its one reward.
TOOL_COMBINES = {"mean": lambda values: sum(values) / len(values), "min": min, "max": max}


def policy_queries(text: str, cleaner: PolicyTextCleaner | None, argument_names: Sequence[str]) -> list[str]:
    """What to judge in one raw completion text: the queries of its `<tool_call>` blocks if it has any (the
    query a search agent sends is its tool call's argument, not the prose around it), else the text itself,
    cleaned of policy tokens when a `cleaner` is given."""
    if argument_names and "<tool_call>" in text:
        queries = tool_call_queries(text, argument_names)
        if queries:
            return queries
    return [cleaner.clean(text) if cleaner is not None else text]


def combine_rewards(values: Sequence[float], how: str) -> float:
    """One reward from a completion's per-query rewards (`how`: mean, min or max)."""
    return float(TOOL_COMBINES[how](list(values)))


def tool_call_queries(text: str, argument_names: Sequence[str]) -> list[str]:
    """The query arguments of the `<tool_call>{...}</tool_call>` blocks in raw text (the Hermes/Qwen format a
    policy writes before a framework parses it): for each call, the first of `argument_names` its arguments hold
    as a string. Blocks that are not JSON, or nest deeper than the JSON decoder goes, are skipped.

    Example:
        >>> tool_call_queries('<tool_call>{"name": "search", "arguments": {"query": "owls"}}</tool_call>', ["query"])
        ['owls']
    """
    queries = []
    for block in _TOOL_CALL_BLOCK.findall(text):
        try:
            call = json.loads(block)
        except (ValueError, RecursionError):
            continue
        query = argument_query(call.get("arguments") if isinstance(call, dict) else None, argument_names)
        if query is not None:
            queries.append(query)
    return queries


def argument_query(arguments: Any, argument_names: Sequence[str]) -> str | None:
    """The first of `argument_names` that `arguments` (a mapping, or its JSON text) holds as a string."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict):
        return None
    for name in argument_names:
        if isinstance(arguments.get(name), str):
            return arguments[name]
    return None


__all__ = [
    "ASSISTANT_HEADERS",
    "END_OF_TURN",
    "NOISE_TOKENS",
    "TOOL_COMBINES",
    "PolicyTextCleaner",
    "argument_query",
    "combine_rewards",
    "policy_queries",
    "tool_call_queries",
]
