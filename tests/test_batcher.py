"""The continuous batcher in-process: passes by length and token budget, turns, failures, callers that leave.

What must happen while a pass runs is ordered by a gated model (its pass waits until the test opens the gate),
never by sleeps that have to land inside a pass: the tests hold on a loaded machine and on a fast one alike.
"""

from __future__ import annotations

import asyncio
import threading
import time

from qrm_hf.serving.batcher import ContinuousBatcher, plan_passes

# An upper bound on any wait for the batcher, to fail a hang instead of blocking: never a window to hit.
HANG_SECONDS = 300


class Recorder:
    """A scoring function of token-id sequences that records each forward pass; a sequence scores its first id.

    `gated=True`: each pass, once recorded, waits until the test opens `gate`; `pass_started()` tells the test
    that one has begun, so it orders what happens while a pass runs without racing a timer.
    """

    def __init__(self, fail_on: int | None = None, gated: bool = False) -> None:
        self.passes: list[list[list[int]]] = []
        self.fail_on = fail_on
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self._started = threading.Semaphore(0)

    def __call__(self, sequences: list[list[int]]) -> list[float]:
        self.passes.append([list(ids) for ids in sequences])
        self._started.release()
        if not self.gate.wait(timeout=HANG_SECONDS):
            raise TimeoutError(f"the test left the gate shut for {HANG_SECONDS} s")
        if any(ids[0] == self.fail_on for ids in sequences):
            raise RuntimeError(f"cannot score {self.fail_on}")
        return [float(ids[0]) for ids in sequences]

    async def pass_started(self) -> None:
        """Return once the next forward pass not yet waited for has begun (it holds the model while gated)."""
        started = await asyncio.to_thread(self._started.acquire, timeout=HANG_SECONDS)
        assert started, f"no forward pass began within {HANG_SECONDS} s"


async def until(condition, what: str) -> None:
    """Let the event loop run until `condition()` holds; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + HANG_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {HANG_SECONDS} s"
        await asyncio.sleep(0.001)


class FrozenClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock stands still: a timer set on it (asyncio.sleep, wait_for) never fires, so what
    completes on it waited for no timer."""

    def time(self) -> float:
        return 0.0


def run_on_a_frozen_clock(main):
    """`main()` on a FrozenClockLoop, in a thread that the real clock bounds."""
    outcome: dict = {}

    def run() -> None:
        try:
            with asyncio.Runner(loop_factory=FrozenClockLoop) as runner:
                outcome["result"] = runner.run(main())
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=HANG_SECONDS)
    assert not thread.is_alive(), f"still running after {HANG_SECONDS} s: it waits on a timer or for company"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def requests_of(sizes: list[int], length=lambda r, i: 1 + (r + i) % 5) -> list[list[list[int]]]:
    """Request r holds sequences starting 100r, 100r+1, ...: each score says which request and place it is from."""
    return [[[100 * r + i] * length(r, i) for i in range(size)] for r, size in enumerate(sizes)]


def run_concurrently(batcher: ContinuousBatcher, requests) -> list:
    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.score(encoded) for encoded in requests), return_exceptions=True)
        finally:
            await batcher.close()

    return asyncio.run(main())


def expected_scores(request) -> list[float]:
    return [float(ids[0]) for ids in request]


def test_passes_are_sorted_by_length_and_capped_by_tokens_and_size():
    assert plan_passes([3, 1, 2, 9, 1], max_batch_tokens=100, max_batch_size=2) == [[1, 4], [2, 0], [3]]
    # 4 sequences of 5 tokens fill 20 padded tokens; a sequence longer than the budget gets a pass of its own.
    assert plan_passes([5, 5, 5, 5, 5, 30], max_batch_tokens=20, max_batch_size=99) == [[0, 1, 2, 3], [4], [5]]


def brute_force_cost(lengths, max_tokens, max_size, overhead):
    """The least total cost over every way of cutting the sorted lengths into contiguous passes."""
    ordered = sorted(lengths)
    best = [0.0] + [float("inf")] * len(ordered)
    for end in range(1, len(ordered) + 1):
        for start in range(end):
            size = end - start
            if size == 1 or (size <= max_size and size * ordered[end - 1] <= max_tokens):
                best[end] = min(best[end], best[start] + overhead + size * ordered[end - 1])
    return best[-1]


def pass_cost(passes, lengths, overhead):
    return sum(overhead + len(p) * max(lengths[i] for i in p) for p in passes)


def test_a_pass_overhead_cuts_passes_where_they_cost_least():
    lengths = [4, 4, 4, 5, 9, 9, 10, 30, 31, 2]
    # Without an overhead, the fewest passes the caps allow: one, padded to 31.
    assert plan_passes(lengths, max_batch_tokens=1000, max_batch_size=99) == [
        sorted(range(10), key=lengths.__getitem__)
    ]
    # A small overhead: the short, middle and long ones apart; a large one: back to a single pass.
    cheap = plan_passes(lengths, max_batch_tokens=1000, max_batch_size=99, pass_overhead_tokens=5)
    assert [sorted(lengths[i] for i in p) for p in cheap] == [[2, 4, 4, 4, 5], [9, 9, 10], [30, 31]]
    assert len(plan_passes(lengths, max_batch_tokens=1000, max_batch_size=99, pass_overhead_tokens=500)) == 1
    # Optimal against every contiguous cut, and within the caps, on many random rounds.
    import random

    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 12))]
        tokens, size, overhead = rng.choice([60, 120, 400]), rng.randint(1, 6), rng.choice([0, 3, 20, 100])
        passes = plan_passes(lengths, tokens, size, pass_overhead_tokens=overhead)
        assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
        assert all(len(p) == 1 or (len(p) <= size and len(p) * max(lengths[i] for i in p) <= tokens) for p in passes)
        assert pass_cost(passes, lengths, overhead) == brute_force_cost(lengths, tokens, size, overhead)


def test_a_batcher_with_a_pass_overhead_of_zero_scores_in_passes_of_even_length():
    recorder = Recorder()
    requests = requests_of([6] * 8, length=lambda r, i: 1 + 4 * (i % 3))  # lengths 1, 5 and 9 in every request

    results = run_concurrently(
        ContinuousBatcher(recorder, max_batch_tokens=1000, max_batch_size=99, pass_overhead_tokens=0), requests
    )

    assert results == [expected_scores(request) for request in requests]
    assert all(len({len(ids) for ids in batch}) == 1 for batch in recorder.passes)


def test_waiting_requests_share_passes_and_each_gets_its_own_scores_in_order():
    recorder = Recorder()
    requests = requests_of([5] * 12)

    results = run_concurrently(ContinuousBatcher(recorder, max_batch_tokens=64, max_batch_size=16), requests)

    assert results == [expected_scores(request) for request in requests]
    assert all(len(batch) <= 16 and len(batch) * max(map(len, batch)) <= 64 for batch in recorder.passes)
    assert len(recorder.passes) < len(requests)  # merged across requests
    for batch in recorder.passes:  # length-sorted: little padding
        assert [len(ids) for ids in batch] == sorted(len(ids) for ids in batch)


def test_a_lone_request_is_scored_at_once_without_waiting_for_company():
    """On a clock that never moves: a batcher that waited for company (a timer, a deadline) would never answer."""
    recorder = Recorder()

    async def main():
        batcher = ContinuousBatcher(recorder, max_batch_tokens=8192)
        batcher.start()
        scores = await batcher.score([[1, 2], [2]])
        await batcher.close()
        return scores

    scores = run_on_a_frozen_clock(main)

    assert scores == [1.0, 2.0] and recorder.passes == [[[2], [1, 2]]]


def test_a_huge_request_does_not_hold_back_a_small_one_behind_it():
    recorder = Recorder()
    huge, small = requests_of([100, 3], length=lambda r, i: 1)

    batcher = ContinuousBatcher(recorder, max_batch_tokens=10, max_batch_size=10, max_pool_tokens=20)
    results = run_concurrently(batcher, [huge, small])

    assert results == [expected_scores(huge), expected_scores(small)]
    # The huge request had one round (20 sequences), then the small one came in the second.
    first_ids = [ids[0] for batch in recorder.passes for ids in batch]
    assert first_ids.index(100) < 40 and set(first_ids[:20]) == set(range(20))


def test_a_failing_pass_fails_only_the_request_whose_query_fails():
    recorder = Recorder(fail_on=0)
    requests = requests_of([1, 2, 2], length=lambda r, i: 1)

    results = run_concurrently(ContinuousBatcher(recorder, max_batch_tokens=64), requests)

    assert isinstance(results[0], RuntimeError) and "cannot score 0" in str(results[0])
    assert results[1:] == [expected_scores(request) for request in requests[1:]]


def test_a_request_whose_caller_has_gone_is_dropped_unscored():
    recorder = Recorder(gated=True)

    async def main():
        batcher = ContinuousBatcher(recorder, max_batch_tokens=64)
        batcher.start()
        busy = asyncio.ensure_future(batcher.score([[1]]))
        await recorder.pass_started()  # [1] holds the model until the gate opens
        abandoned = asyncio.ensure_future(batcher.score([[7]] * 50))
        await until(lambda: batcher.queued == 50, "the 50 queries in the line")
        abandoned.cancel()  # its caller leaves while the model is busy
        gone_from_queue = batcher.queued
        recorder.gate.set()
        scores = await busy
        kept = await batcher.score([[2]])
        await batcher.close()
        return scores, kept, batcher.dropped, gone_from_queue

    scores, kept, dropped, gone_from_queue = asyncio.run(asyncio.wait_for(main(), timeout=HANG_SECONDS))

    assert scores == [1.0] and kept == [2.0]
    assert gone_from_queue == 0  # a request whose caller left no longer counts as waiting
    assert dropped == 50 and recorder.passes == [[[1]], [[2]]]


def test_the_event_loop_keeps_running_while_the_model_computes():
    """The loop ticks while a pass holds the model, and it is the loop that lets the pass end: were the model run
    on the loop, the pass would wait at the gate for good and the test fail on the gate's deadline."""
    recorder = Recorder(gated=True)

    async def main():
        batcher = ContinuousBatcher(recorder, max_batch_tokens=64)
        batcher.start()
        scoring = asyncio.ensure_future(batcher.score([[1]]))
        await recorder.pass_started()
        ticks = 0
        while ticks < 10:
            await asyncio.sleep(0.01)
            ticks += 1
        computing = not scoring.done()  # still in its pass, however long the ticks took
        recorder.gate.set()
        scores = await scoring
        await batcher.close()
        return ticks, computing, scores

    ticks, computing, scores = asyncio.run(asyncio.wait_for(main(), timeout=HANG_SECONDS))

    assert ticks >= 10 and computing and scores == [1.0]


def test_empty_request_needs_no_pass():
    recorder = Recorder()

    assert run_concurrently(ContinuousBatcher(recorder, max_batch_tokens=64), [[]]) == [[]]
    assert recorder.passes == []


def test_a_query_that_arrives_while_a_pass_runs_shares_the_next_pass_and_the_oldest_query_goes_first():
    recorder = Recorder(gated=True)
    early = [[10], [11], [12, 0], [13, 0], [14, 0, 0], [15, 0, 0]]  # lengths 1, 1, 2, 2, 3, 3: three passes of two

    async def main():
        batcher = ContinuousBatcher(recorder, max_batch_tokens=64, max_batch_size=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.score(early))
        await recorder.pass_started()  # the first pass runs, the other four queries are planned
        late = asyncio.ensure_future(batcher.score([[20]]))
        await until(lambda: batcher.queued == 5, "the late query in the line beside the four planned")
        recorder.gate.set()
        results = await asyncio.gather(first, late)
        await batcher.close()
        return results

    results = asyncio.run(asyncio.wait_for(main(), timeout=HANG_SECONDS))

    assert results == [[10.0, 11.0, 12.0, 13.0, 14.0, 15.0], [20.0]]
    firsts = [[ids[0] for ids in batch] for batch in recorder.passes]
    # The late query joined the second pass, beside the oldest query still waiting, not after the early request.
    assert firsts == [[10, 11], [20, 12], [13, 14], [15]]


def test_closing_fails_every_request_still_waiting_also_those_already_planned():
    recorder = Recorder(gated=True)

    async def main():
        batcher = ContinuousBatcher(recorder, max_batch_tokens=64, max_batch_size=1)
        batcher.start()
        planned = asyncio.ensure_future(batcher.score([[1], [2], [3]]))  # in the pool, one pass at a time
        await recorder.pass_started()  # [1] holds the model; [2] and [3] are planned
        waiting = asyncio.ensure_future(batcher.score([[4]]))
        await until(lambda: batcher.queued == 3, "[4] in the line beside [2] and [3] in the pool")
        try:
            await batcher.close()
        finally:
            recorder.gate.set()  # the pass in flight ends; its scores go nowhere
        return await asyncio.gather(planned, waiting, return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(main(), timeout=HANG_SECONDS))

    assert len(results) == 2
    assert all(isinstance(error, RuntimeError) and "shutting down" in str(error) for error in results)
    assert recorder.passes == [[[1]]]  # nothing was scored after the close
