"""How `qrm serve` loads the model, where it listens, how it batches, what it accepts, and its reward rule.

Standard library only, so `qrm serve --help` answers without torch or the serve extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..scoring.reward_rule import DEFAULT_MAX_REPEATED_SHARE, DEFAULT_MIN_CONTENT_WORDS, RewardRule

DTYPES = ("float32", "bfloat16", "float16")
BACKENDS = ("torch", "int8")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# What a forward pass costs on a CPU beyond its padded tokens, in tokens (results/BENCHMARKS.md, 7c and 7d): passes
# are cut where the padding saved outweighs it. 256 rather than 128: fewer small passes, so one client's request
# stays one pass and the p99 at 8 clients is no worse than passes of one request. A GPU runs a wide pass for
# about the price of a narrow one, so there the fewest passes the caps allow win.
CPU_PASS_OVERHEAD_TOKENS = 256
# 32 passes of the default max_batch_tokens: 10,000 search queries of 26 tokens, yet not 10,000 that each fill a
# max_length of 64, whose tokenizing and scoring held a 2-core server for minutes.
DEFAULT_MAX_REQUEST_TOKENS = 2**18


@dataclass(frozen=True)
class ServeConfig:
    """How `qrm serve` loads the model, where it listens, how it batches and what it accepts.

    Example:
        >>> ServeConfig(model="runs/quickstart/final_model", max_batch_tokens=8192)  # doctest: +SKIP
    """

    # The model
    model: str = field(metadata={"help": "A saved reward model folder or a Hub repo id."})
    revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub model."})
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1, mps... (default: the fastest available)."}
    )
    dtype: str | None = field(
        default=None,
        metadata={
            "help": f"One of {', '.join(DTYPES)} (default: bfloat16 on a CUDA GPU that supports it, else float32).",
            "choices": DTYPES,
        },
    )
    # Where it listens
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    backend: str = field(
        default="torch",
        metadata={
            "help": f"One of {', '.join(BACKENDS)}: int8 quantizes the Linear layers (CPU only).",
            "choices": BACKENDS,
        },
    )
    # Continuous batching
    max_batch_tokens: int = field(
        default=8192,
        metadata={"help": "Most padded tokens (queries x the longest) in one forward pass, across requests."},
    )
    max_batch_size: int = field(
        default=256, metadata={"help": "Most queries in one forward pass, merged across requests."}
    )
    pass_overhead_tokens: int | None = field(
        default=None,
        metadata={
            "help": "What one forward pass costs beyond its padded tokens, in tokens: the waiting queries are cut "
            "into the passes of least total cost (default: "
            f"{CPU_PASS_OVERHEAD_TOKENS} on a CPU; on a GPU none, so the fewest passes the caps allow)."
        },
    )
    # The reward rule of /get_reward (and the default of /score's reward_rule)
    empty_score: float | None = field(
        default=0.0,
        metadata={"help": "Reward of a completion with no visible character, without running the model."},
    )
    length_guard: bool = field(
        default=True,
        metadata={"help": "Scale the reward of text over the model's max_length tokens by max_length / tokens."},
    )
    max_repeated_share: float | None = field(
        default=DEFAULT_MAX_REPEATED_SHARE,
        metadata={"help": "Reward empty_score to text in which more than this share of words repeat; none: off."},
    )
    min_content_words: int = field(
        default=DEFAULT_MIN_CONTENT_WORDS,
        metadata={
            "help": "Reward empty_score to text with fewer words than this outside the function words "
            "('What is it?' has none); 0: off."
        },
    )
    min_prompt_overlap: int = field(
        default=0,
        metadata={
            "help": "Reward empty_score to text sharing fewer content words than this with its prompt (OpenRLHF "
            "sends the prompts to /get_reward); 0: off."
        },
    )
    # What /get_reward judges in the raw text a policy's client sends
    strip_policy_tokens: bool = field(
        default=True,
        metadata={
            "help": "On /get_reward, judge the response alone: the text after the last chat-template assistant "
            "header, cut at the first end-of-turn token, other special tokens removed (OpenRLHF decodes with them)."
        },
    )
    policy_tokenizer: str | None = field(
        default=None,
        metadata={"help": "The policy's tokenizer (folder or Hub id): its special tokens are removed as well."},
    )
    tool_arguments: str = field(
        default="query",
        metadata={
            "help": "Comma-separated tool-call arguments that hold a query: a response with <tool_call> blocks "
            "is judged by their queries; empty: off."
        },
    )
    tool_combine: str = field(
        default="mean",
        metadata={"help": "How a response's several tool-call queries combine: mean, min or max.",
                  "choices": ("mean", "min", "max")},
    )  # fmt: skip
    # Limits: a request over them is refused with 413 before any scoring
    max_queries_per_request: int = field(default=10_000, metadata={"help": "Most queries in one request."})
    max_request_tokens: int = field(
        default=DEFAULT_MAX_REQUEST_TOKENS,
        metadata={
            "help": "Most tokens in one request, counted as the model reads them (each query cut to max_length, "
            "special tokens included): what bounds the memory and time one request takes."
        },
    )
    max_body_bytes: int = field(default=16 * 2**20, metadata={"help": "Largest request body in bytes."})
    # Shutting down
    shutdown_grace_seconds: float = field(
        default=10.0,
        metadata={
            "help": "On SIGTERM or Ctrl-C, how long requests in flight may take to finish; then they are cancelled "
            "and the server exits, whatever its clients do (a half-sent request, an answer never read)."
        },
    )
    log_level: str = field(
        default="info",
        metadata={"help": f"One of {', '.join(LOG_LEVELS)}; below info, no access log.", "choices": LOG_LEVELS},
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model (--model) is required: a saved reward model folder or a Hub repo id")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype (--dtype) must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port (--port) must be in 0..65535, got {self.port}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend (--backend) must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        limits = (
            "max_batch_tokens",
            "max_batch_size",
            "max_queries_per_request",
            "max_request_tokens",
            "max_body_bytes",
        )
        for name in limits:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.shutdown_grace_seconds < math.inf:
            raise ValueError(
                f"shutdown_grace_seconds (--shutdown-grace-seconds) must be a number of seconds >= 0, "
                f"got {self.shutdown_grace_seconds}"
            )
        if self.pass_overhead_tokens is not None and self.pass_overhead_tokens < 0:
            raise ValueError(
                f"pass_overhead_tokens (--pass-overhead-tokens) must be >= 0, got {self.pass_overhead_tokens}"
            )
        try:
            self.rule()
        except ValueError as error:
            name = str(error).split(" ", 1)[0]
            raise ValueError(f"{name} (--{name.replace('_', '-')}): {error}") from None
        if self.tool_combine not in ("mean", "min", "max"):
            raise ValueError(f"tool_combine (--tool-combine) must be mean, min or max, got {self.tool_combine!r}")
        if self.policy_tokenizer is not None and not self.strip_policy_tokens:
            raise ValueError("policy_tokenizer (--policy-tokenizer) is read only with --strip-policy-tokens")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level (--log-level) must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")

    def pass_overhead(self, device_type: str) -> int | None:
        """`pass_overhead_tokens`, or its default for a device of `device_type` ("cpu", "cuda", ...)."""
        if self.pass_overhead_tokens is not None:
            return self.pass_overhead_tokens
        return CPU_PASS_OVERHEAD_TOKENS if device_type == "cpu" else None

    @property
    def tool_argument_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.tool_arguments.split(",") if name.strip())

    def cleaner(self):
        """The policy-text cleaner of /get_reward (None: off); loads `policy_tokenizer` when one is named."""
        from ..scoring.policy_text import PolicyTextCleaner

        if not self.strip_policy_tokens:
            return None
        if self.policy_tokenizer is None:
            return PolicyTextCleaner()
        from transformers import AutoTokenizer

        return PolicyTextCleaner.from_tokenizer(AutoTokenizer.from_pretrained(self.policy_tokenizer))

    def rule(self) -> RewardRule:
        """The reward rule of `/get_reward`, and of `/score` requests that ask for rewards without one."""
        return RewardRule(
            self.empty_score,
            self.length_guard,
            self.max_repeated_share,
            self.min_content_words,
            self.min_prompt_overlap,
        )


__all__ = ["BACKENDS", "CPU_PASS_OVERHEAD_TOKENS", "DEFAULT_MAX_REQUEST_TOKENS", "DTYPES", "LOG_LEVELS", "ServeConfig"]
