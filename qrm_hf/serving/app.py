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

from ..scoring.policy_text import PolicyTextCleaner, combine_rewards, policy_queries
from ..scoring.reward_rule import RewardRule, without_prompt
from .batcher import ContinuousBatcher
from .config import BACKENDS, DTYPES, LOG_LEVELS, ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from ..scoring.scorer import QueryScorer

# uvicorn configures this logger: the server's own lines (ready, load and batch failures) print beside its own.
logger = logging.getLogger("uvicorn.error")

SERVE_EXTRA_HINT = "install the serve extra: pip install 'qrm-hf[serve]' (fastapi, uvicorn)"
# How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.05
# A request's text is tokenized this many characters at a time: the tokenizer's memory for it stays bounded, and
# one over --max-request-tokens is refused after the first chunk that passes the limit, not after all of it.
ENCODE_CHUNK_CHARS = 2**18


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
    # Whatever the decoder raises is the body's fault: JSON over HTTP is UTF-8 (RFC 8259; json.loads would guess).
    try:
        data = json.loads(body.decode("utf-8"))
    except json.JSONDecodeError as error:
        raise RequestError(400, f"request body is not valid JSON: {error}") from None
    except UnicodeDecodeError as error:
        raise RequestError(400, f"request body is not valid JSON: not UTF-8 text ({error.reason})") from None
    except RecursionError:
        raise RequestError(400, "request body nests arrays or objects too deeply to read") from None
    except ValueError as error:  # a number of more digits than Python converts (sys.get_int_max_str_digits)
        raise RequestError(400, f"request body is not JSON this server reads: {str(error).split(';')[0]}") from None
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


# Reading a request: every value a client sent is checked here, before any is used, and becomes a typed request.


@dataclass(frozen=True)
class ScoreRequest:
    """A checked POST /score body."""

    queries: list[str]
    raw: bool = False
    rule: RewardRule | None = None
    prompts: list[str] | None = None


@dataclass(frozen=True)
class RewardRequest:
    """A checked POST /get_reward body: each query already without the prompt it starts with."""

    queries: list[str]
    prompts: list[str] | None = None


def checked_prompts(rule: RewardRule, queries: list[str], prompts: list[str] | None, field: str) -> None:
    """422 when `prompts` do not fit `queries`, or are missing while `rule` compares with them."""
    try:
        rule.check_prompts(queries, prompts)
    except ValueError as error:
        raise RequestError(422, f"'{field}': {error}") from None


def parse_score(data: dict[str, Any], config: ServeConfig) -> ScoreRequest:
    """The /score request in `data`; RequestError naming the first field that is wrong."""
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
    return ScoreRequest(queries, raw, rule, prompts)


def parse_get_reward(data: dict[str, Any], config: ServeConfig) -> RewardRequest:
    """The /get_reward request in `data` (OpenRLHF's body); RequestError naming the first field that is wrong."""
    queries = string_list(data, "query", config.max_queries_per_request)
    prompts = string_list(data, "prompts", config.max_queries_per_request, required=False)
    if prompts is not None:
        if len(prompts) != len(queries):
            raise RequestError(422, f"'prompts' has {len(prompts)} items but 'query' has {len(queries)}")
        queries = [without_prompt(query, prompt) for query, prompt in zip(queries, prompts, strict=True)]
    checked_prompts(config.rule(), queries, prompts, "prompts")
    return RewardRequest(queries, prompts)


def parse_request(parse: "Callable[[dict[str, Any], ServeConfig], Any]", data: dict[str, Any], config: ServeConfig):
    """`parse(data, config)`, where any failure is the client's: a body of a shape the checks miss is still
    refused with 422, never answered 500, and logged with its traceback so that the check can be written."""
    try:
        return parse(data, config)
    except RequestError:
        raise
    except Exception as error:
        logger.warning("a request body no check refused failed to parse", exc_info=True)
        raise RequestError(422, f"request body cannot be read: {type(error).__name__}: {error}") from None


# The handlers: plain functions of the server state and a checked request.


def encode_for_rule(scorer: "QueryScorer", texts: list[str], max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Token ids (cut to max_length) and full token counts of `texts`, tokenized `ENCODE_CHUNK_CHARS` characters
    at a time; RequestError 413 as soon as the ids pass `max_tokens`. Run in a thread, off the event loop."""
    from ..scoring.scorer import MAX_CHARS_PER_TOKEN, normalize_query

    read = scorer.max_length * MAX_CHARS_PER_TOKEN  # what `encode` reads of a text
    encoded: list[list[int]] = []
    counts: list[int] = []
    tokens, start = 0, 0
    while start < len(texts):
        end, chars = start + 1, min(len(texts[start]), read)
        while end < len(texts) and chars + min(len(texts[end]), read) <= ENCODE_CHUNK_CHARS:
            chars += min(len(texts[end]), read)
            end += 1
        normalized = [normalize_query(text) for text in texts[start:end]]
        ids = scorer.encode(normalized)
        tokens += sum(len(sequence) for sequence in ids)
        if tokens > max_tokens:
            raise RequestError(
                413,
                f"the request has more than {max_tokens} tokens (its first {end} texts hold {tokens}, each cut to "
                f"{scorer.max_length}); this server accepts at most {max_tokens} tokens per request "
                "(--max-request-tokens): split it",
            )
        encoded += ids
        counts += scorer.token_counts(normalized, ids)
        start = end
    return encoded, counts


async def scores_and_counts(state: ServerState, texts: list[str], until_gone) -> tuple[list[float], list[int]]:
    """Raw scores and token counts of `texts`, through the batcher; cancelled when the client goes away."""
    if state.scorer is None:
        raise NotReady(state)
    if not texts:
        return [], []
    limit = state.config.max_request_tokens
    encoded, counts = await asyncio.to_thread(encode_for_rule, state.scorer, texts, limit)
    scoring = asyncio.ensure_future(state.batcher.score(encoded))
    watching = asyncio.ensure_future(until_gone())
    try:
        done, _ = await asyncio.wait({scoring, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not scoring.done():  # the client left, or the shutdown's grace ran out: its queries are dropped
            scoring.cancel()
    if scoring not in done:
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


async def handle_score(state: ServerState, request: ScoreRequest, until_gone) -> dict[str, Any]:
    """POST /score: the scores `QueryScorer.score` gives, in order; with `reward_rule` also the rewards."""
    queries, rule, prompts = request.queries, request.rule, request.prompts
    scores, counts = await scores_and_counts(state, queries, until_gone)
    scores = scores if request.raw else clamp(scores)
    answer: dict[str, Any] = {"scores": scores}
    if rule is not None:
        if all(query == query.strip() for query in queries):  # the scores are those of the texts the rule reads
            written = rule.to_score(queries)
            chosen = [scores[i] for i in written], [counts[i] for i in written]
            answer["rewards"] = rule.finish(queries, written, *chosen, state.scorer.max_length, prompts)
        else:
            answer["rewards"] = await rewards_of(state, queries, rule, request.raw, until_gone, prompts)
    answer.update(model=state.config.model, decision_threshold=state.scorer.decision_threshold)
    return answer


async def handle_get_reward(state: ServerState, request: RewardRequest, until_gone) -> dict[str, Any]:
    """POST /get_reward (OpenRLHF): each query without the prompt it starts with, under the server's rule."""
    config, prompts = state.config, request.prompts
    # What the policy wrote: its tool calls' queries, else the response without template and special tokens.
    judged = [policy_queries(query, state.cleaner, config.tool_argument_names) for query in request.queries]
    flat = [text for texts in judged for text in texts]
    asked = [prompt for prompt, texts in zip(prompts, judged, strict=True) for _ in texts] if prompts else None
    values = await rewards_of(state, flat, config.rule(), False, until_gone, asked)
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
        "max_request_tokens": config.max_request_tokens,
        "max_body_bytes": config.max_body_bytes,
        "shutdown_grace_seconds": config.shutdown_grace_seconds,
        "reward_rule": config.rule().to_dict(),
        "batches": batcher.batches,
        "queries": batcher.queries,
        "dropped": batcher.dropped,
        "queued": batcher.queued,
    }


def default_loader(config: ServeConfig) -> "Callable[[], QueryScorer]":
    def load() -> "QueryScorer":
        from ..scoring.scorer import QueryScorer

        return QueryScorer.from_pretrained(
            config.model, revision=config.revision, device=config.device, dtype=config.dtype, backend=config.backend
        )

    return load


class LoadError(Exception):
    """The model or the policy tokenizer failed to load: the message, one line, names which and why."""


def one_line(error: BaseException) -> str:
    """`error`'s message on one line; its type named where the message alone is not a loader's own."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message if isinstance(error, (OSError, ValueError)) else f"{type(error).__name__}: {message}"


def load_model(config: ServeConfig) -> ServerState:
    """The state of a server whose model is loaded: `config`'s policy-text cleaner and its scorer, which
    `QueryScorer.from_pretrained` checks (the folder's files and config.json, then a finite score on a fixed
    text). Raises LoadError naming the flag, the file and the key, before any port is opened."""
    state = ServerState(config)
    try:
        state.cleaner = config.cleaner()
    except Exception as error:
        raise LoadError(f"cannot load --policy-tokenizer {config.policy_tokenizer}: {one_line(error)}") from error
    try:
        state.scorer = default_loader(config)()
    except Exception as error:
        raise LoadError(f"cannot load --model {config.model}: {one_line(error)}") from error
    return state


def create_app(
    config: ServeConfig,
    load_scorer: "Callable[[], QueryScorer] | None" = None,
    on_load_error: Callable[[BaseException], None] | None = None,
    loaded: ServerState | None = None,
) -> "FastAPI":
    """The FastAPI app of `config`: ready as soon as it starts with a `loaded` state (from [`load_model`], as
    `qrm serve` does), else the model is loaded in the background once the app starts.

    `load_scorer` (default: `QueryScorer.from_pretrained` with `config`'s model, revision, device, dtype and
    backend) runs in a thread, so /health answers 503 while it runs. If it fails, /health keeps answering 503
    with the error and `on_load_error` is called.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response
    except ImportError as error:
        raise ImportError(f"qrm serve needs fastapi: {SERVE_EXTRA_HINT}") from error

    state = ServerState(config) if loaded is None else loaded
    load_scorer = load_scorer or default_loader(config)

    def start(scorer: "QueryScorer") -> None:
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
        start(scorer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = None
        if loaded is None:
            loading = asyncio.create_task(load())
        else:
            start(loaded.scorer)  # before uvicorn listens: no request finds the scorer without its batcher
        yield
        if loading is not None:
            loading.cancel()
        if state.batcher is not None:
            await state.batcher.close()

    app = FastAPI(title="qrm_hf query reward scorer", version=qrm_hf_version(), lifespan=lifespan)
    app.state.qrm = state

    def refusal(status: int, content: dict[str, Any]) -> Response:
        # ASCII JSON: a message that quotes a client's lone surrogate ("\ud800") still encodes.
        return Response(json.dumps(content), status_code=status, media_type="application/json")

    @app.exception_handler(RequestError)
    async def refuse(request: Request, error: RequestError) -> Response:
        return refusal(error.status, {"detail": error.message})

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, error: NotReady) -> Response:
        return refusal(503, {"status": "failed" if error.failed else "loading", "detail": error.detail})

    def watcher(request: Request):
        async def until_gone() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(DISCONNECT_POLL_SECONDS)

        return until_gone

    async def answer(parse, handler, request: Request):
        try:
            data = await read_json_body(request, config.max_body_bytes)
            return JSONResponse(await handler(state, parse_request(parse, data, config), watcher(request)))
        except (RequestError, NotReady):
            raise
        except ClientGone:
            # One line, not a traceback: a client that gave up (a timeout) is an everyday event for a reward server.
            logger.info("%s: the client disconnected; its queries were dropped", request.url.path)
            return Response(status_code=499)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when --shutdown-grace-seconds are over: a line and a 503 the client
            # may send again elsewhere, rather than a traceback per request.
            logger.warning("%s: unanswered when the shutdown's grace ran out; cancelled", request.url.path)
            return refusal(503, {"detail": "the server shut down before this request was answered: send it again"})
        except Exception as error:
            return refusal(500, {"detail": f"scoring failed: {type(error).__name__}: {error}"})

    @app.post("/score")
    async def score(request: Request):
        """{"queries": [str, ...], "raw": false, "reward_rule": null} -> {"scores": [...], ...}"""
        return await answer(parse_score, handle_score, request)

    @app.post("/get_reward")
    async def get_reward(request: Request):
        """OpenRLHF's remote reward: {"query": [str, ...], "prompts": [str, ...], ...} -> {"rewards": [...]}."""
        return await answer(parse_get_reward, handle_get_reward, request)

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


def serve(config: ServeConfig, loaded: ServerState | None = None) -> int:
    """Run the server until SIGTERM or Ctrl-C; returns 0 once it has stopped.

    The model is loaded first ([`load_model`], unless `loaded` is given), so a model that fails raises LoadError
    before the port is opened. On SIGTERM uvicorn stops accepting connections and gives the requests in flight
    `config.shutdown_grace_seconds` to finish; then it cancels what is left (a client that sent half a request,
    or reads no answer), stops the batcher and returns.
    """
    try:
        import uvicorn
    except ImportError as error:
        raise ImportError(f"qrm serve needs uvicorn: {SERVE_EXTRA_HINT}") from error

    app = create_app(config, loaded=loaded if loaded is not None else load_model(config))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=LOG_LEVELS.index(config.log_level) >= LOG_LEVELS.index("info"),
            timeout_graceful_shutdown=config.shutdown_grace_seconds,
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
    return 0


__all__ = [
    "BACKENDS",
    "DTYPES",
    "LOG_LEVELS",
    "LoadError",
    "RequestError",
    "RewardRequest",
    "ScoreRequest",
    "ServeConfig",
    "ServerState",
    "clamp",
    "create_app",
    "handle_get_reward",
    "handle_info",
    "handle_score",
    "load_model",
    "parse_get_reward",
    "parse_request",
    "parse_score",
    "read_json_body",
    "serve",
    "string_list",
    "without_prompt",
]
