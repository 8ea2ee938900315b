"""The reward rule: how a policy's text becomes a reward, the same wherever the reward is computed.

The TRL reward function (in-process or remote), `POST /get_reward`, `POST /score` with a `reward_rule`, and
`QueryScorerClient.rewards` all call [`RewardRule.rewards`], so one completion gets one reward everywhere:

- text with no visible character (empty, whitespace, zero-width or control characters, U+FFFD) gets
  `empty_score` without running the model: the model's score of the empty string beats many real queries;
- the length guard (on by default) scales the score of text longer than the model's `max_length` tokens by
  `max_length / tokens`: the model sees only the first `max_length` tokens, so without it anything appended
  after a good prefix would be free;
- the repetition guard (`max_repeated_share`, 0.35 by default) gives `empty_score` (0 when that is None) to text
  in which more than that share of the words and symbols repeat an earlier one ("what what what", "? ? ? ?",
  a query twice);
- the content guard (`min_content_words`, 1 by default) gives `empty_score` to text with fewer words than that
  outside `FUNCTION_WORDS` (question words, pronouns, auxiliaries, prepositions, placeholder nouns): "What is
  it?" is well-formed and asks for nothing, and one such question would otherwise earn a policy a good reward
  for every prompt;
- the prompt guard (`min_prompt_overlap`, off by default) gives `empty_score` to text that shares fewer content
  words than that with its prompt, where the caller passes prompts (the TRL function and `/get_reward` do): a
  generic question with a placeholder noun ("What is the name of it?") passes the content guard, but it is about
  no prompt. Off by default because a multi-hop search agent's later queries may name what no prompt did.

Neither default guard touches a single query of the dataset's dev or test splits (the longest run of repeats there is
0.31 of a query's words, and every query has a content word); results/BENCHMARKS.md, 11c, measures both.

Standard library only, so a rollout worker with the client alone can build and send a rule.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

# Characters that show nothing: format (zero-width space, joiners, BOM), controls (NUL), surrogates, private use,
# unassigned, and the replacement character left by text that was not valid UTF-8.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_REPLACEMENT = "\ufffd"
_WORDS = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")

DEFAULT_MAX_REPEATED_SHARE = 0.35
DEFAULT_MIN_CONTENT_WORDS = 1
# Words that ask for nothing by themselves: English closed-class words (determiners, question words, pronouns,
# auxiliaries and modals, prepositions, conjunctions, a few adverbs) and placeholder nouns. A query needs a word
# outside them to be about something.
_FUNCTION_WORDS_TEXT = """
    a an the this that these those some any each every either neither no all both half such what whatever which
    whichever who whoever whom whose when whenever where wherever why how however whether if then than
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she her
    hers herself it its itself they them their theirs themselves one ones someone something somewhere anyone
    anything everyone everything nobody nothing thing things stuff
    be am is are was were been being do does did doing done have has had having can could may might must shall
    should will would ought
    to of in on at by for with without from into onto upon about above below over under between among through
    during before after around against along across toward towards up down out off near
    and or but nor so yet also too very just only even not there here please tell let know
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())

# (scores, token counts) of texts: what the rule needs from a model, in-process or behind a server.
ScoreAndCount = Callable[[list[str]], tuple[Sequence[float], Sequence[int]]]


# Letters that render as nothing (Hangul fillers, the blank Braille pattern): blank, as a reader sees them.
_BLANK_LETTERS = dict.fromkeys(map(ord, "\u115f\u1160\u3164\uffa0\u2800"), " ")
# Removed: format characters (zero-width space, joiners, soft hyphen, BOM), controls other than line breaks and
# tabs, private use and unassigned code points.
_REMOVED_CATEGORIES = frozenset({"Cf", "Cc", "Co", "Cn"})
# Removed as well: the combining marks Unicode calls default-ignorable (Default_Ignorable_Code_Point, not format
# characters): the combining grapheme joiner, Khmer's inherent vowels, Mongolian and other variation selectors.
# They show nothing, yet `Wh\u034fat` would split a word for the tokenizer and every guard.
_IGNORABLE_MARKS = re.compile("[\u034f\u17b4\u17b5\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def fold_text(text: str) -> str:
    """The one text both the model and every guard read: lone surrogates replaced by U+FFFD (as a UTF-8 decoder
    with errors="replace" does), Unicode compatibility folding (NFKC: fullwidth `Ｗｈａｔ` is `What`), format and
    control characters and default-ignorable marks removed (`Wh\u200bat` and `Wh\u034fat` are `What`), letters
    that render blank made spaces.

    Example:
        >>> fold_text("Wh\u200bat is \uff49\uff54?\u3164")
        'What is it? '
    """
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = unicodedata.normalize("NFKC", text).translate(_BLANK_LETTERS)
    if text.isascii() and text.isprintable():
        return text
    text = _IGNORABLE_MARKS.sub("", text)
    return "".join(char for char in text if char in "\t\n\r" or unicodedata.category(char) not in _REMOVED_CATEGORIES)


def has_visible_character(text: str) -> bool:
    """Whether `text` shows anything: a character that is not whitespace, not invisible, not U+FFFD.

    Example:
        >>> has_visible_character("\\u200b \\x00\\ufffd"), has_visible_character(" owls ")
        (False, True)
    """
    return any(
        not char.isspace() and char != _REPLACEMENT and unicodedata.category(char) not in _INVISIBLE_CATEGORIES
        for char in text
    )


def repeated_share(text: str) -> float:
    """The share of words and symbols (case-folded) that repeat an earlier one: 0 for all distinct.

    Example:
        >>> repeated_share("how do owls hunt ?"), repeated_share("what what what what")
        (0.0, 0.75)
    """
    words = _WORDS.findall(text.casefold())
    return 1.0 - len(set(words)) / len(words) if words else 0.0


def content_words(text: str) -> list[str]:
    """The words of `text` (case-folded) that are not `FUNCTION_WORDS`: what the query is about.

    Example:
        >>> content_words("What is it?"), content_words("How do owls hunt?")
        ([], ['owls', 'hunt'])
    """
    return [word for word in _WORD.findall(text.casefold()) if word not in FUNCTION_WORDS]


def prompt_overlap(text: str, prompt: str) -> int:
    """How many distinct content words of `text` its `prompt` also has (case-folded).

    Example:
        >>> prompt = "How do owls hunt?"
        >>> prompt_overlap("owls hunting at night", prompt), prompt_overlap("What is the name of it?", prompt)
        (1, 0)
    """
    return len(set(content_words(text)) & set(content_words(prompt)))


def without_prompt(query: str, prompt: str) -> str:
    """What the policy wrote: `query` (OpenRLHF sends prompt + response) without the `prompt` it starts with."""
    return query[len(prompt) :] if prompt and query.startswith(prompt) else query


@dataclass(frozen=True)
class RewardRule:
    """How scores become rewards; the same fields configure `make_reward_function`, `qrm serve` and requests.

    Example:
        >>> model = lambda texts: ([0.9] * len(texts), [7] * len(texts))  # scores and token counts
        >>> RewardRule(empty_score=0.0).rewards(["", "What is it?", "how do owls hunt ?"], model, 64)
        [0.0, 0.0, 0.9]
    """

    empty_score: float | None = 0.0
    length_guard: bool = True
    max_repeated_share: float | None = DEFAULT_MAX_REPEATED_SHARE
    min_content_words: int = DEFAULT_MIN_CONTENT_WORDS
    min_prompt_overlap: int = 0

    def __post_init__(self) -> None:
        if self.empty_score is not None and (
            isinstance(self.empty_score, bool)
            or not isinstance(self.empty_score, (int, float))
            or not math.isfinite(self.empty_score)
        ):
            raise ValueError(f"empty_score must be a finite number or None, got {self.empty_score!r}")
        if not isinstance(self.length_guard, bool):
            raise ValueError(f"length_guard must be true or false, got {self.length_guard!r}")
        share = self.max_repeated_share
        if share is not None and (
            isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0
        ):
            raise ValueError(f"max_repeated_share must be a number in [0, 1) or None, got {share!r}")
        for name in ("min_content_words", "min_prompt_overlap"):
            words = getattr(self, name)
            if isinstance(words, bool) or not isinstance(words, int) or words < 0:
                raise ValueError(f"{name} must be a whole number >= 0 (0: off), got {words!r}")

    @classmethod
    def from_dict(cls, values: Any) -> RewardRule:
        """A rule from a JSON object (a request's `reward_rule`); unknown keys are refused by name."""
        if not isinstance(values, dict):
            raise ValueError(f"reward_rule must be an object of {sorted(cls.field_names())}, got {values!r}")
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            raise ValueError(f"reward_rule has unknown keys {unknown}; known: {sorted(cls.field_names())}")
        return cls(**values)

    @classmethod
    def field_names(cls) -> set[str]:
        return {field.name for field in fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def is_empty(self, text: str) -> bool:
        """Whether `text` counts as writing nothing (scored `empty_score` when that is not None), read as the
        model reads it (`fold_text`): zero-width characters and blank letters show nothing."""
        return self.empty_score is not None and not has_visible_character(fold_text(text))

    def rewards(
        self,
        texts: Sequence[str],
        score_and_count: ScoreAndCount,
        max_length: int,
        prompts: Sequence[str] | None = None,
    ) -> list[float]:
        """The reward of each text, in order. `score_and_count` scores the texts that need the model and counts
        their tokens (special tokens included, as the model's `max_length` counts them); `prompts`, one per text,
        are what the prompt guard compares with."""
        texts = [text.strip() for text in texts]
        self.check_prompts(texts, prompts)
        written = self.to_score(texts)
        scores, counts = score_and_count([texts[index] for index in written]) if written else ([], [])
        return self.finish(texts, written, scores, counts, max_length, prompts)

    def check_prompts(self, texts: Sequence[str], prompts: Sequence[str] | None) -> None:
        """ValueError unless `prompts` is None or one string per text, and given when the prompt guard is on."""
        if prompts is None:
            if self.min_prompt_overlap:
                raise ValueError("min_prompt_overlap needs the prompts, one per text; none were given")
            return
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts: give one prompt per text")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(f"prompt {index} must be a string, got {type(prompt).__name__}")

    def to_score(self, texts: Sequence[str]) -> list[int]:
        """The indices of the texts the model must score: those that are not empty."""
        return [index for index, text in enumerate(texts) if not self.is_empty(text)]

    def finish(
        self,
        texts: Sequence[str],
        written: Sequence[int],
        scores: Sequence[float],
        counts: Sequence[int],
        max_length: int,
        prompts: Sequence[str] | None = None,
    ) -> list[float]:
        """Rewards of all `texts` from the scores and token counts of the `written` ones (see `to_score`)."""
        self.check_prompts(texts, prompts)
        rewards = [float(self.empty_score or 0.0)] * len(texts)
        for index, score, count in zip(written, scores, counts, strict=True):
            prompt = None if prompts is None else prompts[index]
            rewards[index] = self.adjust(texts[index].strip(), float(score), int(count), max_length, prompt)
        return rewards

    def adjust(self, text: str, score: float, tokens: int, max_length: int, prompt: str | None = None) -> float:
        """One text's reward from its model score and token count: the guards applied (the prompt guard when
        `prompt` is given) to the text as the model reads it (`fold_text`)."""
        text = fold_text(text)
        if self.max_repeated_share is not None and repeated_share(text) > self.max_repeated_share:
            return float(self.empty_score or 0.0)
        # Text that shows nothing is the empty rule's (scored by the model when empty_score is None).
        about_too_little = len(content_words(text)) < self.min_content_words
        if about_too_little and has_visible_character(text):
            return float(self.empty_score or 0.0)
        if self.min_prompt_overlap and prompt is not None and prompt_overlap(text, prompt) < self.min_prompt_overlap:
            return float(self.empty_score or 0.0)
        if self.length_guard and tokens > max_length:
            score *= max_length / tokens
        return score


__all__ = [
    "DEFAULT_MAX_REPEATED_SHARE",
    "DEFAULT_MIN_CONTENT_WORDS",
    "FUNCTION_WORDS",
    "RewardRule",
    "ScoreAndCount",
    "content_words",
    "fold_text",
    "has_visible_character",
    "prompt_overlap",
    "repeated_share",
    "without_prompt",
]
