"""The HTTP scorer: one loaded reward model shared by many clients, with continuous batching across requests.

RL trainers (OpenRLHF's `--remote_rm_url`, verl, custom GRPO loops) call a reward service over HTTP instead of
loading the model in every rollout worker. Each request is tokenized off the event loop and handed to the
[`ContinuousBatcher`], which scores whatever waits whenever the model is free, on one worker thread.

    POST /score       {"queries": [str, ...], "raw": false, "reward_rule": {...}?}
                      -> {"scores": [...], "rewards": [...] (with reward_rule), "model": ..., "decision_threshold": ..}
    POST /get_reward  OpenRLHF: {"query": [str, ...], "prompts": [...], ...} -> {"rewards": [...]}
    GET  /health      200 once the model is loaded, 503 before
    GET  /info        model, revision, max_length, device, dtype, backend, limits, reward rule, counters

Rewards follow [`RewardRule`], the rule of the TRL reward function too. Only the standard library is imported
at module level, so `qrm serve --help` and [`ServeConfig`] work without torch or the `serve` extra.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations at runtime, and
# `Request` is imported inside create_app (where a postponed annotation could not be resolved).
import asyncio
import contextlib
import functools
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .batcher import ContinuousBatcher
from .policy_text import PolicyTextCleaner, combine_rewards, policy_queries
from .reward_rule import RewardRule, without_prompt
from .serve_config import BACKENDS, DTYPES, LOG_LEVELS, ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from .scoring import QueryScorer

# uvicorn configures this logger: the server's own lines (ready, load and batch failures) print beside its own.
logger = logging.getLogger("uvicorn.error")

SERVE_EXTRA_HINT = "install the serve extra: pip install 'qrm-hf[serve]' (fastapi, uvicorn)"
# How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.05


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
    from starlette.requests import ClientDisconnect

    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise RequestError(413, f"request body is over {max_body_bytes} bytes; {too_large}")
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending its request") from None
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


@functools.cache
def qrm_hf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qrm-hf")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class ServerState:
    """What the handlers share: the config, and once loaded the scorer and its batcher."""

    config: ServeConfig
    scorer: "QueryScorer | None" = None
    batcher: ContinuousBatcher | None = None
    load_error: str | None = None
    cleaner: "PolicyTextCleaner | None" = None


class ClientGone(Exception):
    """The client disconnected (or timed out) before its answer was ready: its queries are dropped."""


class NotReady(Exception):
    """The model is still loading, or failed to load: 503 with the reason."""

    def __init__(self, state: ServerState) -> None:
        self.failed = state.load_error is not None
        detail = state.load_error if self.failed else f"loading model {state.config.model}"
        super().__init__(detail)
        self.detail = detail


# The handlers: plain functions of the server state and the decoded request.


def encode_for_rule(scorer: "QueryScorer", texts: list[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids (cut to max_length) and full token counts of `texts`: run in a thread, off the event loop."""
    from .scoring import normalize_query

    normalized = [normalize_query(text) for text in texts]
    encoded = scorer.encode(normalized)
    return encoded, scorer.token_counts(normalized, encoded)


async def scores_and_counts(state: ServerState, texts: list[str], until_gone) -> tuple[list[float], list[int]]:
    """Raw scores and token counts of `texts`, through the batcher; cancelled when the client goes away."""
    if state.scorer is None:
        raise NotReady(state)
    if not texts:
        return [], []
    encoded, counts = await asyncio.to_thread(encode_for_rule, state.scorer, texts)
    scoring = asyncio.ensure_future(state.batcher.score(encoded))
    watching = asyncio.ensure_future(until_gone())
    try:
        done, _ = await asyncio.wait({scoring, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if scoring not in done:
        scoring.cancel()
        raise ClientGone("the client disconnected")
    return scoring.result(), counts


async def rewards_of(
    state: ServerState, texts: list[str], rule: RewardRule, raw: bool, until_gone, prompts: list[str] | None = None
) -> list[float]:
    """[`RewardRule.rewards`] of `texts` on the served model (the TRL function's rule, computed here)."""
    texts = [text.strip() for text in texts]
    written = rule.to_score(texts)
    scores, counts = await scores_and_counts(state, [texts[index] for index in written], until_gone)
    return rule.finish(texts, written, scores if raw else clamp(scores), counts, state.scorer.max_length, prompts)


def checked_prompts(rule: RewardRule, queries: list[str], prompts: list[str] | None, field: str) -> None:
    """422 when `prompts` do not fit `queries`, or are missing while `rule` compares with them."""
    try:
        rule.check_prompts(queries, prompts)
    except ValueError as error:
        raise RequestError(422, f"'{field}': {error}") from None


async def handle_score(state: ServerState, data: dict[str, Any], until_gone) -> dict[str, Any]:
    """POST /score: the scores `QueryScorer.score` gives, in order; with `reward_rule` also the rewards."""
    config = state.config
    queries = string_list(data, "queries", config.max_queries_per_request)
    raw = data.get("raw", False)
    if not isinstance(raw, bool):
        raise RequestError(422, f"'raw' must be true or false, got {_json_type(raw)}")
    rule = None
    if data.get("reward_rule") is not None:
        try:
            rule = RewardRule.from_dict(data["reward_rule"])
        except (TypeError, ValueError) as error:
            raise RequestError(422, str(error)) from None
    prompts = string_list(data, "prompts", config.max_queries_per_request, required=False)
    if prompts is not None and rule is None:
        raise RequestError(422, "'prompts' are read by a reward_rule only: send one, or leave 'prompts' out")
    if rule is not None:
        checked_prompts(rule, queries, prompts, "prompts")
    scores, counts = await scores_and_counts(state, queries, until_gone)
    scores = scores if raw else clamp(scores)
    answer: dict[str, Any] = {"scores": scores}
    if rule is not None:
        if all(query == query.strip() for query in queries):  # the scores are those of the texts the rule reads
            written = rule.to_score(queries)
            chosen = [scores[i] for i in written], [counts[i] for i in written]
            answer["rewards"] = rule.finish(queries, written, *chosen, state.scorer.max_length, prompts)
        else:
            answer["rewards"] = await rewards_of(state, queries, rule, raw, until_gone, prompts)
    answer.update(model=config.model, decision_threshold=state.scorer.decision_threshold)
    return answer


async def handle_get_reward(state: ServerState, data: dict[str, Any], until_gone) -> dict[str, Any]:
    """POST /get_reward (OpenRLHF): each query without the prompt it starts with, under the server's rule."""
    config = state.config
    queries = string_list(data, "query", config.max_queries_per_request)
    prompts = string_list(data, "prompts", config.max_queries_per_request, required=False)
    if prompts is not None:
        if len(prompts) != len(queries):
            raise RequestError(422, f"'prompts' has {len(prompts)} items but 'query' has {len(queries)}")
        queries = [without_prompt(query, prompt) for query, prompt in zip(queries, prompts, strict=True)]
    rule = config.rule()
    checked_prompts(rule, queries, prompts, "prompts")
    # What the policy wrote: its tool calls' queries, else the response without template and special tokens.
    judged = [policy_queries(query, state.cleaner, config.tool_argument_names) for query in queries]
    flat = [text for texts in judged for text in texts]
    asked = [prompt for prompt, texts in zip(prompts, judged, strict=True) for _ in texts] if prompts else None
    values = await rewards_of(state, flat, rule, False, until_gone, asked)
    rewards, start = [], 0
    for texts in judged:
        rewards.append(combine_rewards(values[start : start + len(texts)], config.tool_combine))
        start += len(texts)
    return {"rewards": rewards}


def handle_info(state: ServerState) -> dict[str, Any]:
    """GET /info: the served model and settings, and the batching counters since start."""
    if state.scorer is None:
        raise NotReady(state)
    config, scorer, batcher = state.config, state.scorer, state.batcher
    return {
        "model": config.model,
        "revision": config.revision,
        "max_length": scorer.max_length,
        "decision_threshold": scorer.decision_threshold,
        "device": str(scorer.device),
        "dtype": str(next(scorer.model.parameters()).dtype).removeprefix("torch."),
        "backend": config.backend,
        "qrm_hf_version": qrm_hf_version(),
        "max_batch_tokens": config.max_batch_tokens,
        "max_batch_size": config.max_batch_size,
        "pass_overhead_tokens": batcher.pass_overhead_tokens,
        "max_queries_per_request": config.max_queries_per_request,
        "max_body_bytes": config.max_body_bytes,
        "reward_rule": config.rule().to_dict(),
        "batches": batcher.batches,
        "queries": batcher.queries,
        "dropped": batcher.dropped,
        "queued": batcher.queued,
    }


def default_loader(config: ServeConfig) -> "Callable[[], QueryScorer]":
    def load() -> "QueryScorer":
        from .scoring import QueryScorer

        return QueryScorer.from_pretrained(
            config.model, revision=config.revision, device=config.device, dtype=config.dtype, backend=config.backend
        )

    return load


def create_app(
    config: ServeConfig,
    load_scorer: "Callable[[], QueryScorer] | None" = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> "FastAPI":
    """The FastAPI app of `config`; the model is loaded in the background once the app starts.

    `load_scorer` (default: `QueryScorer.from_pretrained` with `config`'s model, revision, device, dtype and
    backend) runs in a thread, so /health answers 503 while it runs. If it fails, /health keeps answering 503
    with the error and `on_load_error` is called (the `qrm serve` command stops the server there).
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response
    except ImportError as error:
        raise ImportError(f"qrm serve needs fastapi: {SERVE_EXTRA_HINT}") from error

    state = ServerState(config)
    load_scorer = load_scorer or default_loader(config)

    async def load() -> None:
        try:
            state.cleaner = await asyncio.to_thread(config.cleaner)
            scorer = await asyncio.to_thread(load_scorer)
        except Exception as error:
            state.load_error = f"cannot load model {config.model}: {type(error).__name__}: {error}"
            logger.error(state.load_error)
            if on_load_error is not None:
                on_load_error(error)
            return
        # Raw outputs, one forward pass per call: each request clamps its own, so raw and clamped share passes.
        state.batcher = ContinuousBatcher(
            functools.partial(scorer.score_ids, raw=True),
            config.max_batch_tokens,
            config.max_batch_size,
            pass_overhead_tokens=config.pass_overhead(scorer.device.type),
        )
        state.batcher.start()
        state.scorer = scorer
        logger.info("model %s loaded on %s (%s); ready", config.model, scorer.device, config.backend)

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

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, error: NotReady) -> JSONResponse:
        status = "failed" if error.failed else "loading"
        return JSONResponse({"status": status, "detail": error.detail}, status_code=503)

    def watcher(request: Request):
        async def until_gone() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(DISCONNECT_POLL_SECONDS)

        return until_gone

    async def answer(handler, request: Request):
        try:
            data = await read_json_body(request, config.max_body_bytes)
            return JSONResponse(await handler(state, data, watcher(request)))
        except (RequestError, NotReady):
            raise
        except ClientGone:
            # One line, not a traceback: a client that gave up (a timeout) is an everyday event for a reward server.
            logger.info("%s: the client disconnected; its queries were dropped", request.url.path)
            return Response(status_code=499)
        except Exception as error:
            return JSONResponse({"detail": f"scoring failed: {type(error).__name__}: {error}"}, status_code=500)

    @app.post("/score")
    async def score(request: Request):
        """{"queries": [str, ...], "raw": false, "reward_rule": null} -> {"scores": [...], ...}"""
        return await answer(handle_score, request)

    @app.post("/get_reward")
    async def get_reward(request: Request):
        """OpenRLHF's remote reward: {"query": [str, ...], "prompts": [str, ...], ...} -> {"rewards": [...]}."""
        return await answer(handle_get_reward, request)

    @app.get("/health")
    async def health():
        """200 once the model is loaded and requests are scored; 503 while loading or if loading failed."""
        if state.scorer is None:
            raise NotReady(state)
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return handle_info(state)

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
    "BACKENDS",
    "DTYPES",
    "LOG_LEVELS",
    "RequestError",
    "ServeConfig",
    "ServerState",
    "clamp",
    "create_app",
    "handle_get_reward",
    "handle_info",
    "handle_score",
    "read_json_body",
    "serve",
    "string_list",
    "without_prompt",
]
