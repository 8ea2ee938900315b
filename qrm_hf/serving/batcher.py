"""Continuous batching for the HTTP scorer: whenever the model is free, score what is waiting, at once.

Requests arrive as token ids (tokenized off the event loop by the server). The worker never waits for a batch
to fill while the model is idle. Before each forward pass it moves what waits into its pool (up to
`max_pool_tokens`; requests take turns beyond that), plans the whole pool as passes of at most
`max_batch_tokens` padded tokens and `max_batch_size` queries (as text-embeddings-inference caps its batches by
tokens), sorted by length so that queries of similar length share a pass, and runs the pass that holds the
oldest query. So no query waits behind one that came later, and one that arrives while a pass runs can share
the next pass instead of waiting for all that was planned before it. With `pass_overhead_tokens` the passes are
cut where they cost least, a pass costing its padded tokens plus that overhead: on a CPU compute follows the
padded tokens, so one wide pass of mixed lengths is slower than a few of even length, yet many tiny passes lose
to their fixed cost; a GPU runs a wide pass for about the price of a narrow one, so there the fewest passes win.

A request whose caller has gone is dropped before its queries are scored; a pass that fails is retried
request by request, so one bad query fails only its own request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# uvicorn configures this logger: the batcher's lines print beside the server's own.
logger = logging.getLogger("uvicorn.error")

ScoreIds = Callable[[list[list[int]]], Sequence[float]]


@dataclass(eq=False)
class _Request:
    """One caller's token-id sequences on their way through the batcher, and the scores that come back."""

    encoded: list[list[int]]
    future: asyncio.Future
    taken: int = 0  # sequences moved into the worker's pool so far
    scored: int = 0  # sequences whose scores came back
    scores: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scores = [0.0] * len(self.encoded)

    @property
    def gone(self) -> bool:
        """Answered, failed or cancelled (its caller disconnected): nothing more to score for it."""
        return self.future.done()


_Entry = tuple[_Request, int]  # one query: its request and its place in it


def plan_passes(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int, pass_overhead_tokens: int | None = None
) -> list[list[int]]:
    """Group sequence indices into forward passes: sorted by length, each pass at most `max_batch_size`
    sequences and `max_batch_tokens` padded tokens (its count times its longest); a sequence longer than the
    budget gets a pass of its own. Without `pass_overhead_tokens`, as few passes as the caps allow; with it, the
    cuts that minimize the total cost, each pass costing its padded tokens plus `pass_overhead_tokens`.

    Example:
        >>> plan_passes([5, 30, 6, 29], max_batch_tokens=64, max_batch_size=8)
        [[0, 2], [3, 1]]
        >>> plan_passes([5, 5, 5, 30], max_batch_tokens=200, max_batch_size=8, pass_overhead_tokens=10)
        [[0, 1, 2], [3]]
        >>> plan_passes([5, 5, 5, 30], max_batch_tokens=200, max_batch_size=8, pass_overhead_tokens=100)
        [[0, 1, 2, 3]]
    """
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    if pass_overhead_tokens is None:
        passes: list[list[int]] = []
        current: list[int] = []
        for index in order:
            longest = lengths[index]  # sorted ascending: the newcomer is the longest of its pass
            if current and (len(current) >= max_batch_size or longest * (len(current) + 1) > max_batch_tokens):
                passes.append(current)
                current = []
            current.append(index)
        if current:
            passes.append(current)
        return passes
    return [
        order[start:end]
        for start, end in _cheapest_cuts(
            [lengths[index] for index in order], max_batch_tokens, max_batch_size, pass_overhead_tokens
        )
    ]


def _cheapest_cuts(sorted_lengths: list[int], max_tokens: int, max_size: int, overhead: int) -> list[tuple[int, int]]:
    """(start, end) of each pass over ascending lengths: dynamic programming over where the last pass starts,
    the cost of a pass being `overhead` plus its size times its last (longest) length."""
    import numpy as np

    lengths = np.asarray(sorted_lengths, dtype=np.int64)
    best = np.zeros(len(lengths) + 1)  # best[j]: the cheapest passes over the first j sequences
    start_of = np.zeros(len(lengths) + 1, dtype=np.int64)
    for end in range(1, len(lengths) + 1):
        longest = int(lengths[end - 1])
        fits = max(1, min(max_size, max_tokens // longest))
        first = max(0, end - fits)
        starts = np.arange(first, end)
        costs = best[first:end] + overhead + (end - starts) * longest
        chosen = int(np.argmin(costs))
        best[end], start_of[end] = costs[chosen], first + chosen
    cuts, end = [], len(lengths)
    while end > 0:
        cuts.append((int(start_of[end]), end))
        end = int(start_of[end])
    return cuts[::-1]


class ContinuousBatcher:
    """Score token-id sequences for many concurrent callers on one worker thread (see the module docstring).

    Example:
        >>> batcher = ContinuousBatcher(scorer.score_ids, max_batch_tokens=8192)  # doctest: +SKIP
        >>> batcher.start()  # in the running event loop  # doctest: +SKIP
        >>> await batcher.score(scorer.encode(["how do owls hunt ?"]))  # doctest: +SKIP
    """

    def __init__(
        self,
        score_ids: ScoreIds,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 256,
        max_pool_tokens: int | None = None,
        pass_overhead_tokens: int | None = None,
    ) -> None:
        for name, value in (("max_batch_tokens", max_batch_tokens), ("max_batch_size", max_batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if pass_overhead_tokens is not None and pass_overhead_tokens < 0:
            raise ValueError(f"pass_overhead_tokens must be >= 0 or None, got {pass_overhead_tokens}")
        self.score_ids = score_ids
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.pass_overhead_tokens = pass_overhead_tokens
        self.max_pool_tokens = max_pool_tokens or 8 * max_batch_tokens
        self.batches = 0  # forward passes run so far
        self.queries = 0  # sequences scored so far
        self.dropped = 0  # sequences dropped because their caller had gone
        self._line: collections.deque[_Request] = collections.deque()
        self._pool: list[_Entry] = []  # queries taken from the line and not yet in a pass, oldest first
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread: the model never runs twice at once, and the event loop never waits on it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qrm-scorer")

    @property
    def queued(self) -> int:
        """Sequences waiting for a forward pass: in the line, or in the worker's pool but not yet in a pass."""
        in_line = sum(len(request.encoded) - request.taken for request in self._line if not request.gone)
        return in_line + sum(1 for request, _ in self._pool if not request.gone)

    def start(self) -> None:
        """Start the worker; call from inside the running event loop."""
        if self._task is None:
            self._arrived = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="qrm-continuous-batcher")

    async def close(self) -> None:
        """Stop the worker; requests still waiting get a RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting = {request: None for request, _ in self._pool}  # in order, each once
        waiting.update((request, None) for request in self._line)
        self._pool, self._line = [], collections.deque()
        for request in waiting:
            if not request.gone:
                request.future.set_exception(RuntimeError("the scorer is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def score(self, encoded: Sequence[list[int]]) -> list[float]:
        """Scores of `encoded` (token-id sequences), in order. Cancelling the awaiting task (a caller that
        disconnected) drops the sequences not yet scored."""
        if self._task is None:
            raise RuntimeError("ContinuousBatcher.start() must be called before score()")
        if not encoded:
            return []
        request = _Request(list(encoded), asyncio.get_running_loop().create_future())
        self._line.append(request)
        self._arrived.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        plan: list[list[_Entry]] = []  # the passes planned over the pool, valid while nothing joins or leaves it
        while True:
            while not self._line and not self._pool:
                self._arrived.clear()
                await self._arrived.wait()
            live = [entry for entry in self._pool if not entry[0].gone]
            self.dropped += len(self._pool) - len(live)
            if self._take_into(live) or len(live) != len(self._pool):
                self._pool = live
                lengths = [len(request.encoded[position]) for request, position in live]
                passes = plan_passes(lengths, self.max_batch_tokens, self.max_batch_size, self.pass_overhead_tokens)
                plan = [[live[index] for index in indices] for indices in passes]
            if not self._pool:
                continue
            # The pass holding the oldest query runs next: a query never waits behind one that came later, and a
            # query that arrives while a pass runs can share the very next one.
            oldest = self._pool[0]
            chosen = next(entries for entries in plan if any(entry is oldest for entry in entries))
            plan = [entries for entries in plan if entries is not chosen]
            taken = {id(entry) for entry in chosen}
            self._pool = [entry for entry in self._pool if id(entry) not in taken]
            await self._score_pass(loop, chosen)

    def _score_checked(self, sequences: list[list[int]]) -> list[float]:
        scores = list(self.score_ids(sequences))
        if len(scores) != len(sequences):
            raise RuntimeError(f"score_ids returned {len(scores)} scores for {len(sequences)} sequences")
        return scores

    async def _score_pass(self, loop, entries: list[_Entry]) -> None:
        """One forward pass over `entries`; if it fails, each request's queries of it on their own, so only a
        request whose own queries fail gets the error."""
        try:
            scores = await loop.run_in_executor(self._executor, self._score_checked, _sequences(entries))
        except Exception:
            logger.warning("a forward pass of %d queries failed: scoring its requests one by one", len(entries))
        else:
            self._deliver(entries, scores)
            return
        by_request: dict[_Request, list[_Entry]] = {}
        for entry in entries:
            by_request.setdefault(entry[0], []).append(entry)
        for request, own in by_request.items():
            if request.gone:
                continue
            try:
                scores = await loop.run_in_executor(self._executor, self._score_checked, _sequences(own))
            except Exception as error:
                logger.error("scoring a request failed: %s: %s", type(error).__name__, error)
                request.future.set_exception(error)
                continue
            self._deliver(own, scores)

    def _deliver(self, entries: list[_Entry], scores: Sequence[float]) -> None:
        self.batches += 1
        self.queries += len(entries)
        for (request, position), score in zip(entries, scores, strict=True):
            if request.gone:
                continue
            request.scores[position] = score
            request.scored += 1
            if request.scored == len(request.encoded):
                request.future.set_result(request.scores)

    def _take_into(self, pool: list[_Entry]) -> int:
        """Move waiting queries into `pool`, oldest request first, while it holds under `max_pool_tokens`
        tokens; a request cut off goes to the back of the line, so a huge one cannot hold back the small ones
        behind it. Returns how many joined."""
        tokens = sum(len(request.encoded[position]) for request, position in pool)
        joined = 0
        while self._line and tokens < self.max_pool_tokens:
            request = self._line.popleft()
            if request.gone:
                self.dropped += len(request.encoded) - request.taken
                continue
            start = request.taken
            while request.taken < len(request.encoded) and (tokens < self.max_pool_tokens or request.taken == start):
                tokens += len(request.encoded[request.taken])
                pool.append((request, request.taken))
                request.taken += 1
            joined += request.taken - start
            if request.taken < len(request.encoded):
                self._line.append(request)
        return joined


def _sequences(entries: list[_Entry]) -> list[list[int]]:
    return [request.encoded[position] for request, position in entries]


__all__ = ["ContinuousBatcher", "plan_passes"]
