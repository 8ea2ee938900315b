"""The HTTP scorer: one loaded reward model shared by many clients, with micro-batching across their requests.

RL trainers (OpenRLHF's `--remote_rm_url`, verl, custom GRPO loops) call a reward service over HTTP instead of
loading the model in every rollout worker. Requests that arrive together are scored together: a
[`MicroBatcher`] merges them into batches of up to `max_batch_size` queries, waiting at most `max_wait_ms` to
fill one, and runs the model on a single worker thread so the event loop keeps answering while it computes.

    POST /score       {"queries": [str, ...], "raw": false} -> {"scores": [...], "model": ..., "decision_threshold": ..}
    POST /get_reward  OpenRLHF: {"query": [str, ...], "prompts": [...], ...} -> {"rewards": [...]}
    GET  /health      200 once the model is loaded, 503 before
    GET  /info        model, revision, max_length, device, dtype, limits, qrm_hf version, batching counters

Only the standard library is imported here at module level, so `qrm serve --help` and [`ServeConfig`] work
without torch being imported or the `serve` extra (fastapi, uvicorn) being installed.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime, and `Request` is
# imported inside create_app (where a postponed annotation could not be resolved).
import asyncio
import collections
import contextlib
import functools
import json
import logging
import math
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from .scoring import QueryScorer

# uvicorn configures this logger: the server's own lines (ready, load and batch failures) print beside its own.
logger = logging.getLogger("uvicorn.error")

DTYPES = ("float32", "bfloat16", "float16")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
SERVE_EXTRA_HINT = "install the serve extra: pip install 'qrm-hf[serve]' (fastapi, uvicorn)"


@dataclass(frozen=True)
class ServeConfig:
    """How `qrm serve` loads the model, where it listens, how it batches and what it accepts.

    Example:
        >>> ServeConfig(model="runs/quickstart/final_model", max_batch_size=128, max_wait_ms=5)  # doctest: +SKIP
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
            "help": f"One of {', '.join(DTYPES)} (default: bfloat16 on a CUDA GPU that supports it, else float32)."
        },
    )
    # Where it listens
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    # Micro-batching
    max_batch_size: int = field(
        default=64,
        metadata={"help": "Most queries in one forward pass, merged across requests; a larger request is split."},
    )
    max_wait_ms: float = field(
        default=5.0,
        metadata={"help": "Longest a query waits for others to fill its batch (0: score what is waiting at once)."},
    )
    # Limits: a request over them is refused with 413 before any scoring
    max_queries_per_request: int = field(default=10_000, metadata={"help": "Most queries in one request."})
    max_body_bytes: int = field(default=16 * 2**20, metadata={"help": "Largest request body in bytes."})
    log_level: str = field(
        default="info", metadata={"help": f"One of {', '.join(LOG_LEVELS)}; below info, no access log."}
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model (--model) is required: a saved reward model folder or a Hub repo id")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype (--dtype) must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port (--port) must be in 0..65535, got {self.port}")
        for name in ("max_batch_size", "max_queries_per_request", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):
            raise ValueError(f"max_wait_ms (--max-wait-ms) must be a finite number >= 0, got {self.max_wait_ms}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level (--log-level) must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")


# The micro-batcher


@dataclass(eq=False)
class _Request:
    """One caller's queries on their way through the batcher, and the scores that come back."""

    texts: list[str]
    future: asyncio.Future
    arrived: float
    taken: int = 0  # queries handed to batches so far
    scored: int = 0  # queries whose scores came back
    turn: int = 0  # queries taken in the current turn at the front of the line
    scores: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scores = [0.0] * len(self.texts)


class MicroBatcher:
    """Merge concurrent requests' queries into batches for `score_batch`, run on one worker thread.

    A batch starts when `max_batch_size` queries are waiting or the oldest one has waited `max_wait_ms`.
    Requests take turns: the one at the front of the line adds up to `max_batch_size` queries, then, if it
    has more, goes to the back, so a huge request is split and cannot hold back the small ones behind it.
    Each caller gets its own scores in its own order. A failing batch fails only the requests in it.

    Example:
        >>> batcher = MicroBatcher(scorer.score, max_batch_size=64, max_wait_ms=5)  # doctest: +SKIP
        >>> batcher.start()  # in the running event loop  # doctest: +SKIP
        >>> await batcher.score(["how do owls hunt ?", "owls hunt how"])  # doctest: +SKIP
    """

    def __init__(
        self, score_batch: Callable[[list[str]], Sequence[float]], max_batch_size: int, max_wait_ms: float
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not (math.isfinite(max_wait_ms) and max_wait_ms >= 0):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms}")
        self.score_batch = score_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.batches = 0  # batches scored so far
        self.queries = 0  # queries scored so far
        self._line: collections.deque[_Request] = collections.deque()
        self._waiting = 0  # queries in the line not yet handed to a batch
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread: the model never runs twice at once, and the event loop never waits on it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qrm-scorer")

    @property
    def queued(self) -> int:
        """Queries waiting for a batch."""
        return self._waiting

    def start(self) -> None:
        """Start taking batches; call from inside the running event loop."""
        if self._task is None:
            self._arrived = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="qrm-micro-batcher")

    async def close(self) -> None:
        """Stop batching; requests still waiting get a RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._line:
            request = self._line.popleft()
            if not request.future.done():
                request.future.set_exception(RuntimeError("the scorer is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def score(self, texts: Sequence[str]) -> list[float]:
        """The scores of `texts`, in their order, computed in batches shared with other callers."""
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() must be called before score()")
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(list(texts), loop.create_future(), loop.time())
        self._line.append(request)
        self._waiting += len(request.texts)
        self._arrived.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._line:
                self._arrived.clear()
                await self._arrived.wait()
            # The deadline counts from the oldest waiting query, so time spent behind a running batch counts.
            deadline = self._line[0].arrived + self.max_wait
            while self._waiting < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            texts = [text for request, start, end in batch for text in request.texts[start:end]]
            try:
                scores = await loop.run_in_executor(self._executor, self.score_batch, texts)
                if len(scores) != len(texts):
                    raise RuntimeError(f"score_batch returned {len(scores)} scores for {len(texts)} queries")
            except Exception as error:
                logger.exception("scoring a batch of %d queries failed", len(texts))
                for request, _, _ in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            self.batches += 1
            self.queries += len(texts)
            offset = 0
            for request, start, end in batch:
                request.scores[start:end] = scores[offset : offset + end - start]
                offset += end - start
                request.scored += end - start
                if request.scored == len(request.texts) and not request.future.done():
                    request.future.set_result(request.scores)

    def _take_batch(self) -> list[tuple[_Request, int, int]]:
        """Up to `max_batch_size` queries from the front of the line, as (request, start, end) slices."""
        batch: list[tuple[_Request, int, int]] = []
        size = 0
        while self._line and size < self.max_batch_size:
            request = self._line.popleft()
            left = len(request.texts) - request.taken
            if request.future.done():  # failed or its caller gave up: drop the rest
                self._waiting -= left
                continue
            count = min(left, self.max_batch_size - size, self.max_batch_size - request.turn)
            batch.append((request, request.taken, request.taken + count))
            request.taken += count
            request.turn += count
            size += count
            self._waiting -= count
            if request.taken < len(request.texts):
                if request.turn >= self.max_batch_size:  # its turn is over: to the back of the line
                    request.turn = 0
                    self._line.append(request)
                else:  # cut only because this batch is full: first in the next one
                    self._line.appendleft(request)
        return batch


# The HTTP app


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and a message that names the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a client wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


async def read_json_body(request: "Request", max_body_bytes: int) -> dict[str, Any]:
    """The request's JSON object; RequestError 413 over `max_body_bytes`, 400 if not JSON, 422 if not an object."""
    too_large = f"this server accepts at most {max_body_bytes} bytes per request body (--max-body-bytes): split it"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise RequestError(413, f"request body is {declared} bytes; {too_large}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise RequestError(413, f"request body is over {max_body_bytes} bytes; {too_large}")
    try:
        data = json.loads(body.decode("utf-8"))  # JSON over HTTP is UTF-8 (RFC 8259); json.loads would guess
    except json.JSONDecodeError as error:
        raise RequestError(400, f"request body is not valid JSON: {error}") from None
    except UnicodeDecodeError as error:
        raise RequestError(400, f"request body is not valid JSON: not UTF-8 text ({error.reason})") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"request body must be a JSON object, got {_json_type(data)}")
    return data


def string_list(data: dict[str, Any], name: str, max_items: int, required: bool = True) -> list[str] | None:
    """`data[name]` as a list of strings; RequestError 422 naming the field or item, 413 over `max_items`."""
    if name not in data or data[name] is None:
        if required:
            raise RequestError(422, f'missing field {name!r}: send {{{json.dumps(name)}: ["a query", ...]}}')
        return None
    values = data[name]
    if not isinstance(values, list):
        raise RequestError(422, f"{name!r} must be a list of strings, got {_json_type(values)}")
    if len(values) > max_items:
        raise RequestError(
            413,
            f"{name!r} has {len(values)} items; this server accepts at most {max_items} per request "
            "(--max-queries-per-request): split it",
        )
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise RequestError(422, f"{name}[{index}] is {_json_type(value)}, not a string: {json.dumps(value)[:80]}")
    return values


def clamp(scores: list[float]) -> list[float]:
    """Raw head outputs clamped to [0, 1], as `QueryScorer.score` clamps them."""
    return [min(max(score, 0.0), 1.0) for score in scores]


def without_prompt(query: str, prompt: str) -> str:
    """What the policy wrote: `query` (OpenRLHF sends prompt + response) without the `prompt` it starts with,
    stripped as the TRL reward function strips a completion."""
    return (query[len(prompt) :] if prompt and query.startswith(prompt) else query).strip()


@functools.cache
def qrm_hf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qrm-hf")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class _ServerState:
    scorer: "QueryScorer | None" = None
    batcher: MicroBatcher | None = None
    load_error: str | None = None


def create_app(
    config: ServeConfig,
    load_scorer: "Callable[[], QueryScorer] | None" = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> "FastAPI":
    """The FastAPI app of `config`; the model is loaded in the background once the app starts.

    `load_scorer` (default: `QueryScorer.from_pretrained` with `config`'s model, revision, device and dtype) runs
    in a thread, so /health answers 503 while it runs. If it fails, /health keeps answering 503 with the error
    and `on_load_error` is called (the `qrm serve` command stops the server there).
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
    except ImportError as error:
        raise ImportError(f"qrm serve needs fastapi: {SERVE_EXTRA_HINT}") from error

    if load_scorer is None:

        def load_scorer() -> "QueryScorer":
            from .scoring import QueryScorer

            return QueryScorer.from_pretrained(
                config.model,
                revision=config.revision,
                device=config.device,
                dtype=config.dtype,
                batch_size=config.max_batch_size,
            )

    state = _ServerState()

    def score_batch(texts: list[str]) -> list[float]:
        # Raw outputs, one forward pass; each request clamps its own, so raw and clamped requests share batches.
        return state.scorer.score(texts, raw=True, batch_size=len(texts), show_progress=False)

    async def load() -> None:
        try:
            scorer = await asyncio.to_thread(load_scorer)
        except Exception as error:
            state.load_error = f"cannot load model {config.model}: {type(error).__name__}: {error}"
            logger.error(state.load_error)
            if on_load_error is not None:
                on_load_error(error)
            return
        state.batcher = MicroBatcher(score_batch, config.max_batch_size, config.max_wait_ms)
        state.batcher.start()
        state.scorer = scorer
        logger.info("model %s loaded on %s (%s); ready", config.model, scorer.device, scorer.model.dtype)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(load())
        yield
        loading.cancel()
        if state.batcher is not None:
            await state.batcher.close()

    app = FastAPI(title="qrm_hf query reward scorer", version=qrm_hf_version(), lifespan=lifespan)
    app.state.qrm = state

    @app.exception_handler(RequestError)
    async def refuse(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    def not_ready() -> JSONResponse:
        if state.load_error is not None:
            return JSONResponse({"status": "failed", "detail": state.load_error}, status_code=503)
        return JSONResponse({"status": "loading", "detail": f"loading model {config.model}"}, status_code=503)

    async def scores_of(texts: list[str], raw: bool) -> list[float] | JSONResponse:
        if state.scorer is None:
            return not_ready()
        try:
            scores = await state.batcher.score(texts)
        except Exception as error:
            return JSONResponse({"detail": f"scoring failed: {type(error).__name__}: {error}"}, status_code=500)
        return scores if raw else clamp(scores)

    @app.post("/score")
    async def score(request: Request):
        """{"queries": [str, ...], "raw": false} -> {"scores": [...], "model": ..., "decision_threshold": ...}"""
        data = await read_json_body(request, config.max_body_bytes)
        queries = string_list(data, "queries", config.max_queries_per_request)
        raw = data.get("raw", False)
        if not isinstance(raw, bool):
            raise RequestError(422, f"'raw' must be true or false, got {_json_type(raw)}")
        scores = await scores_of(queries, raw)
        if isinstance(scores, JSONResponse):
            return scores
        threshold = state.scorer.decision_threshold
        return JSONResponse({"scores": scores, "model": config.model, "decision_threshold": threshold})

    @app.post("/get_reward")
    async def get_reward(request: Request):
        """OpenRLHF's remote reward: {"query": [str, ...], "prompts": [str, ...], ...} -> {"rewards": [...]}.

        Each query is scored without the prompt it starts with (OpenRLHF sends prompt + response); other
        fields (labels...) are ignored.
        """
        data = await read_json_body(request, config.max_body_bytes)
        queries = string_list(data, "query", config.max_queries_per_request)
        prompts = string_list(data, "prompts", config.max_queries_per_request, required=False)
        if prompts is not None:
            if len(prompts) != len(queries):
                raise RequestError(422, f"'prompts' has {len(prompts)} items but 'query' has {len(queries)}")
            queries = [without_prompt(query, prompt) for query, prompt in zip(queries, prompts, strict=True)]
        scores = await scores_of(queries, raw=False)
        if isinstance(scores, JSONResponse):
            return scores
        return JSONResponse({"rewards": scores})

    @app.get("/health")
    async def health():
        """200 once the model is loaded and requests are scored; 503 while loading or if loading failed."""
        if state.scorer is None:
            return not_ready()
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        """The served model and settings, and the batching counters since start."""
        if state.scorer is None:
            return not_ready()
        scorer, batcher = state.scorer, state.batcher
        return {
            "model": config.model,
            "revision": config.revision,
            "max_length": scorer.max_length,
            "decision_threshold": scorer.decision_threshold,
            "device": str(scorer.device),
            "dtype": str(scorer.model.dtype).removeprefix("torch."),
            "qrm_hf_version": qrm_hf_version(),
            "max_batch_size": config.max_batch_size,
            "max_wait_ms": config.max_wait_ms,
            "max_queries_per_request": config.max_queries_per_request,
            "max_body_bytes": config.max_body_bytes,
            "batches": batcher.batches,
            "queries": batcher.queries,
            "queued": batcher.queued,
        }

    return app


def serve(config: ServeConfig) -> int:
    """Run the server until SIGTERM or Ctrl-C; returns 0 after a graceful shutdown, 1 if the model failed to load.

    On SIGTERM uvicorn stops accepting connections, finishes the requests in flight, then stops the batcher.
    """
    try:
        import uvicorn
    except ImportError as error:
        raise ImportError(f"qrm serve needs uvicorn: {SERVE_EXTRA_HINT}") from error

    server: uvicorn.Server | None = None
    failures: list[BaseException] = []

    def stop(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(config, on_load_error=stop)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=LOG_LEVELS.index(config.log_level) >= LOG_LEVELS.index("info"),
        )
    )
    # After a graceful shutdown uvicorn raises the signal again so the previous handler runs: with the default
    # ones the process would die of SIGTERM (or a KeyboardInterrupt) instead of returning 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failures else 0


__all__ = [
    "DTYPES",
    "MicroBatcher",
    "RequestError",
    "ServeConfig",
    "clamp",
    "create_app",
    "read_json_body",
    "serve",
    "string_list",
    "without_prompt",
]
