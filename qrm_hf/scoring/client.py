"""A client of `qrm serve`: score queries on a remote reward model as `QueryScorer` scores them locally.

Standard library only (no torch), so a rollout worker that only sends text needs nothing else.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from .reward_rule import RewardRule

# Worth another try: the server is loading its model (503), failed a batch (500), or a proxy in between (502, 504).
RETRY_STATUSES = frozenset({500, 502, 503, 504})


class ScoringRequestError(ValueError):
    """The server refused the request (HTTP 4xx); the message is the server's, naming the problem."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class QueryScorerClient:
    """Score queries with a reward model served by `qrm serve` at `url` (e.g. `http://127.0.0.1:8000`).

    Each call is one POST to `/score`, with `timeout` seconds per attempt; a connection error, a timeout or an
    answer of 500/502/503/504 is retried `retries` times, waiting `backoff` seconds, then twice as long each
    time. A refused request (4xx: a non-string query, too many queries) raises ScoringRequestError at once.

    Example:
        >>> client = QueryScorerClient("http://127.0.0.1:8000")  # doctest: +SKIP
        >>> client.score(["how do owls hunt ?", "owls hunt how"])  # doctest: +SKIP
        [0.93, 0.12]
    """

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 3, backoff: float = 0.5) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {backoff}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.decision_threshold: float | None = None  # the served model's, once a response has told it

    def score(self, queries: Iterable[str], raw: bool = False) -> list[float]:
        """One score per query, in input order: clamped to [0, 1], or the head's raw output with `raw=True`."""
        if isinstance(queries, (str, bytes)):
            raise TypeError("queries must be a list of strings, not a single string: wrap one query as [query]")
        response = self.request("POST", "/score", {"queries": list(queries), "raw": raw})
        self.decision_threshold = response["decision_threshold"]
        return response["scores"]

    def rewards(
        self,
        texts: Iterable[str],
        rule: RewardRule | None = None,
        raw: bool = False,
        prompts: Iterable[str] | None = None,
    ) -> list[float]:
        """The reward of each text under `rule` (default: `RewardRule()`), computed by the server with the same
        code as the in-process reward function: empty text, length, repetition, content and prompt guards
        (`prompts`, one per text, for the last)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a list of strings, not a single string: wrap one text as [text]")
        rule = rule or RewardRule()
        payload = {"queries": list(texts), "raw": raw, "reward_rule": rule.to_dict()}
        if prompts is not None:
            payload["prompts"] = list(prompts)
        rule.check_prompts(payload["queries"], payload.get("prompts"))
        response = self.request("POST", "/score", payload)
        self.decision_threshold = response["decision_threshold"]
        return response["rewards"]

    def classify(self, queries: Iterable[str], threshold: float | None = None) -> list[bool]:
        """Whether each query is well-formed: its score at or above `threshold` (default: the served model's
        `decision_threshold`)."""
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        scores = self.score(queries)
        cut = self.decision_threshold if threshold is None else float(threshold)
        return [score >= cut for score in scores]

    def info(self) -> dict[str, Any]:
        """The server's /info: model, revision, max_length, device, dtype, limits, batching counters."""
        return self.request("GET", "/info")

    def request(self, method: str, path: str, payload: Any = None) -> Any:
        """The decoded JSON answer of `method path` (with `payload` as the JSON body), retried as above."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    return json.loads(answer.read())
            except urllib.error.HTTPError as error:
                detail = _detail(error)
                if error.code not in RETRY_STATUSES:
                    raise ScoringRequestError(error.code, detail) from None
                failure = f"HTTP {error.code}: {detail}"
            except (urllib.error.URLError, OSError) as error:  # refused, reset, timed out
                failure = str(getattr(error, "reason", error))
            if attempt + 1 < attempts:
                time.sleep(self.backoff * 2**attempt)
        raise ConnectionError(f"{method} {self.url}{path} failed after {attempts} attempts: {failure}")


def _detail(error: urllib.error.HTTPError) -> str:
    """The server's `detail` message, or the raw body of an answer that is not the server's JSON."""
    text = error.read().decode("utf-8", "replace")
    try:
        return str(json.loads(text)["detail"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or error.reason


__all__ = ["RETRY_STATUSES", "QueryScorerClient", "ScoringRequestError"]
