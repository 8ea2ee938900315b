"""qrm serve: the continuous batcher in-process, then the real server on 127.0.0.1, as clients see it.

What must happen while a request is in flight is ordered by the server's own signals (100 Continue, a refused
connection, /info's counters) or by a model held at a gate the test opens, never by a sleep that has to land
inside a window: the tests hold on a loaded machine and on a fast one alike. Deadlines only bound a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import BATCH_TOLERANCE, REPO, free_port

from qrm_hf.scoring.client import QueryScorerClient, ScoringRequestError
from qrm_hf.scoring.reward_rule import RewardRule
from qrm_hf.scoring.rewards import make_reward_function
from qrm_hf.scoring.scorer import QueryScorer
from qrm_hf.serving.app import ServeConfig, ServerState, create_app
from qrm_hf.serving.config import CPU_PASS_OVERHEAD_TOKENS

QUERIES = ["how do owls hunt ?", "owls", "what is the capital of france", "cheap flights to rome in may"]
# Of many lengths (a blank one, one far over max_length), so batches mix padding and truncation.
POOL = [*QUERIES, "   ", "why " * 600, "what", "is the sky blue because of rayleigh scattering ?", "x y z", "a"]
# The one upper bound on every wait in this file (a server to start, a process to exit, an answer to come): it
# only turns a hang into a failure, never a window to hit. Generous, since a test run at low priority beside a
# busy machine gets a sliver of a core: a server's start then takes minutes.
HANG_SECONDS = 1800


# The command line


HEAVY = "print(sorted(name for name in ('torch', 'transformers', 'fastapi', 'uvicorn') if name in sys.modules))"


def test_help_imports_neither_torch_nor_fastapi_and_the_client_nothing_heavy():
    help_code = "import sys; from qrm_hf.commands import serve; serve.make_parser().format_help(); " + HEAVY
    client_code = "import sys; from qrm_hf import QueryScorerClient; " + HEAVY
    helped, client = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_SECONDS)
        for code in (help_code, client_code)
    )

    assert helped.returncode == 0 and client.returncode == 0, helped.stderr + client.stderr
    assert helped.stdout.strip() == "['transformers']"  # its HfArgumentParser alone, as `qrm search --help`
    assert client.stdout.strip() == "[]"


def test_script_alias_runs_the_command():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "serve.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )

    assert result.returncode == 0, result.stderr
    assert "usage: qrm serve" in result.stdout and "--max-queries-per-request" in result.stdout


def test_qrm_dispatches_to_serve(capsys):
    from qrm_hf.commands import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--max-batch-size" in out and "--max-batch-tokens" in out and "(default: 127.0.0.1)" in out
    assert "--no-length-guard" in out and "--backend {torch,int8}" in out


def test_bad_flag_is_a_usage_error_naming_it(saved_model_dir, capsys):
    from qrm_hf.commands.serve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(saved_model_dir), "--max-batch-size", "0"])

    assert exit_info.value.code == 2
    assert "max_batch_size (--max-batch-size) must be >= 1, got 0" in capsys.readouterr().err


def test_model_that_is_not_a_reward_model_exits_2_before_listening(tiny_encoder_dir, capsys):
    from qrm_hf.commands.serve import main

    assert main(["--model", str(tiny_encoder_dir), "--port", str(free_port())]) == 2
    assert "model_type 'modernbert', expected 'query_reward'" in capsys.readouterr().err


def test_a_device_this_machine_lacks_exits_2_before_listening(saved_model_dir):
    """`--device cuda` without CUDA: the error, exit 2, and the server never says it is running."""
    command = [sys.executable, "-m", "qrm_hf.commands.serve", "--model", str(saved_model_dir), "--device", "cuda:7"]
    result = subprocess.run(
        [*command, "--port", str(free_port())], capture_output=True, text=True, timeout=HANG_SECONDS
    )

    assert result.returncode == 2
    assert "device 'cuda:7' is not available" in result.stderr and "Uvicorn running" not in result.stderr


# The real server


def http(
    method: str, url: str, payload=None, body: bytes | None = None, timeout: float = HANG_SECONDS
) -> tuple[int, dict]:
    """(status, decoded JSON answer) of one request; `body` sends those bytes as they are instead of `payload`."""
    if body is None and payload is not None:
        body = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@contextlib.contextmanager
def running_server(model_dir: Path, log: Path, *flags: str):
    """`python -m qrm_hf.commands.serve` on a free port of 127.0.0.1, yielded once /health answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "qrm_hf.commands.serve", "--model", str(model_dir), "--port", str(port)]
    command += ["--device", "cpu", "--log-level", "warning", *flags]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HANG_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                if http("GET", url + "/health", timeout=5)[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {HANG_SECONDS} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition, what: str) -> None:
    """Poll `condition()` until it holds; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + HANG_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {HANG_SECONDS} s"
        time.sleep(0.02)


def info_of(url: str) -> dict:
    return http("GET", url + "/info")[1]


@contextlib.contextmanager
def in_process_server(app, port: int):
    """`app` served by uvicorn on 127.0.0.1:`port` from a thread of this process, yielded as its URL once it
    listens; the tests that hold its model or its loader at a gate run it here."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to listen")
        assert thread.is_alive(), "uvicorn stopped before it listened"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=HANG_SECONDS)


class GatedScorer:
    """The real scorer, each forward pass held until the test opens `gate`: what waits for the model keeps waiting
    for as long as the test needs, on a fast machine as on a loaded one."""

    def __init__(self, scorer: QueryScorer) -> None:
        self.scorer = scorer
        self.gate = threading.Event()
        self.held: list[int] = []  # the queries of each pass that reached the gate

    def __getattr__(self, name: str):
        return getattr(self.scorer, name)

    def score_ids(self, encoded: list[list[int]], raw: bool = False) -> list[float]:
        self.held.append(len(encoded))
        if not self.gate.wait(timeout=HANG_SECONDS):
            raise TimeoutError(f"the test left the gate shut for {HANG_SECONDS} s")
        return self.scorer.score_ids(encoded, raw=raw)


@contextlib.contextmanager
def gated_server(model_dir: Path, gated: GatedScorer):
    """(URL, port) of a server in this process whose model is `gated`, with batches of at most 8 queries."""
    port = free_port()
    config = ServeConfig(str(model_dir), port=port, max_batch_size=8, max_batch_tokens=256, log_level="warning")
    app = create_app(config, loaded=ServerState(config, scorer=gated, cleaner=config.cleaner()))
    with in_process_server(app, port) as url:
        yield url, port


def post_head(port: int, path: str, length: int, *headers: str) -> bytes:
    """The head of a POST of `length` bytes of JSON, on a connection the server closes after its answer."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    lines += [f"Content-Length: {length}", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(connection: socket.socket) -> bytes:
    """The bytes of one response head, up to its blank line, and not a byte more."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = connection.recv(1)
        assert byte, f"the connection closed after {head!r}"
        head += byte
    return head


def read_answer(connection: socket.socket) -> tuple[int, dict]:
    """(status, decoded JSON) of the response on `connection`, read until the server closes it."""
    data = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=HANG_SECONDS).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture(scope="module")
def scorer(saved_model_dir) -> QueryScorer:
    return QueryScorer.from_pretrained(saved_model_dir, device="cpu")


# Room for 7 queries that fill the tiny model's max_length of 128 tokens, not for 8.
SERVER_MAX_REQUEST_TOKENS = 1000


@pytest.fixture(scope="module")
def server(saved_model_dir, tmp_path_factory) -> str:
    """The URL of a server with small batches and limits, shared by the module's HTTP tests."""
    flags = ["--max-batch-size", "8", "--max-batch-tokens", "256", "--max-queries-per-request", "50"]
    flags += ["--max-body-bytes", "20000", "--max-request-tokens", str(SERVER_MAX_REQUEST_TOKENS)]
    with running_server(saved_model_dir, tmp_path_factory.mktemp("serve") / "server.log", *flags) as (url, _):
        yield url


def test_encoding_a_chunk_at_a_time_gives_what_encoding_at_once_gives(scorer, monkeypatch):
    from qrm_hf.scoring.scorer import normalize_query
    from qrm_hf.serving import app as serve

    texts = [*POOL, *COMPLETIONS] * 3
    normalized = [normalize_query(text) for text in texts]
    monkeypatch.setattr(serve, "ENCODE_CHUNK_CHARS", 50)  # many chunks, and texts longer than one

    encoded, counts = serve.encode_for_rule(scorer, texts, max_tokens=10**6)

    assert encoded == scorer.encode(normalized)
    assert counts == scorer.token_counts(normalized)


def test_encoding_stops_at_the_first_chunk_over_the_token_limit(scorer, monkeypatch):
    from qrm_hf.serving import app as serve

    monkeypatch.setattr(serve, "ENCODE_CHUNK_CHARS", 12_000)
    texts = ["owls hunt at night " * 60] * 10_000  # 1140 characters, 128 tokens once cut: 10 texts a chunk

    with pytest.raises(serve.RequestError) as refused:
        serve.encode_for_rule(scorer, texts, max_tokens=1000)

    assert refused.value.status == 413
    assert "more than 1000 tokens (its first 10 texts hold 1280, each cut to 128)" in refused.value.message
    assert "at most 1000 tokens per request (--max-request-tokens)" in refused.value.message


@pytest.mark.slow
def test_score_matches_the_scorer_in_process(server, scorer, saved_model_dir):
    status, answer = http("POST", server + "/score", {"queries": POOL})

    assert status == 200
    assert answer["scores"] == pytest.approx(scorer.score(POOL), abs=BATCH_TOLERANCE)
    assert answer["model"] == str(saved_model_dir)
    assert answer["decision_threshold"] == scorer.decision_threshold

    raw = http("POST", server + "/score", {"queries": POOL, "raw": True})[1]["scores"]
    assert raw == pytest.approx(scorer.score(POOL, raw=True), abs=BATCH_TOLERANCE)


@pytest.mark.slow
def test_empty_list_gives_empty_scores(server):
    status, answer = http("POST", server + "/score", {"queries": []})

    assert status == 200 and answer["scores"] == []
    assert http("POST", server + "/get_reward", {"query": []}) == (200, {"rewards": []})


@pytest.mark.slow
def test_get_reward_answers_openrlhf_without_the_prompt(server, scorer):
    prompts = [f"<|user|>write a search query about topic {i}<|assistant|>" for i in range(len(QUERIES))]
    body = {
        "query": [p + " " + q + "\n" for p, q in zip(prompts, QUERIES, strict=True)],
        "prompts": prompts,
        "labels": ["x"] * 4,
    }

    status, answer = http("POST", server + "/get_reward", body)

    assert status == 200
    assert answer["rewards"] == pytest.approx(scorer.score(QUERIES), abs=BATCH_TOLERANCE)
    # Without prompts, the chat template's assistant header still marks where the response starts.
    whole = http("POST", server + "/get_reward", {"query": body["query"]})[1]["rewards"]
    assert whole == pytest.approx(scorer.score(QUERIES), abs=BATCH_TOLERANCE)


# Completions a policy may write, empty-looking ones included: each must get one reward wherever it is computed.
COMPLETIONS = [
    "how do owls hunt ?",
    "",
    "   \n",
    "\u200b",
    "\ufffd",
    "\x00",
    "\ud800",
    " what is the capital of france\n",
    "why " * 600,
    "owls hunt",
    "".join(f" word{index}" for index in range(600)),
]


@pytest.mark.slow
def test_server_and_trl_function_give_the_same_reward_for_the_same_completion(server, scorer):
    local = make_reward_function(scorer)(prompts=["p"] * len(COMPLETIONS), completions=COMPLETIONS)
    empty = [1, 2, 3, 4, 5, 6]
    assert [local[i] for i in empty] == [0.0] * len(empty)
    # The repetition guard: one word 600 times earns empty_score.
    assert local[8] == 0.0
    # The length guard: 600 distinct words, far over max_length, earn that fraction of the truncated text's score.
    [tokens] = scorer.token_counts([COMPLETIONS[10].strip()])
    assert tokens > 600 > scorer.max_length
    assert local[10] == pytest.approx(scorer.score([COMPLETIONS[10].strip()])[0] * scorer.max_length / tokens)

    prompts = [f"<|user|>query {i}<|assistant|>" for i in range(len(COMPLETIONS))]
    body = {"query": [p + c for p, c in zip(prompts, COMPLETIONS, strict=True)], "prompts": prompts}
    status, answer = http("POST", server + "/get_reward", body)
    assert status == 200 and answer["rewards"] == pytest.approx(local, abs=BATCH_TOLERANCE)
    # A response that is only the prompt, or the prompt and whitespace, is empty too.
    echoed = {"query": [prompts[0], prompts[0] + " \n"], "prompts": [prompts[0]] * 2}
    assert http("POST", server + "/get_reward", echoed)[1]["rewards"] == [0.0, 0.0]

    remote = make_reward_function(server)(prompts=["p"] * len(COMPLETIONS), completions=COMPLETIONS)
    assert remote == pytest.approx(local, abs=BATCH_TOLERANCE)
    assert QueryScorerClient(server).rewards(COMPLETIONS) == pytest.approx(local, abs=BATCH_TOLERANCE)
    rule = {"empty_score": -1.0, "length_guard": False, "max_repeated_share": 0.5}
    status, answer = http("POST", server + "/score", {"queries": COMPLETIONS, "reward_rule": rule})
    strict = make_reward_function(scorer, empty_score=-1.0, length_guard=False, max_repeated_share=0.5)
    assert status == 200 and answer["rewards"] == pytest.approx(
        strict(prompts=[], completions=COMPLETIONS), abs=BATCH_TOLERANCE
    )
    assert answer["rewards"][8] == -1.0  # "why why why ...": repeated
    # The prompt guard: each completion against its prompt, the same on the server and in the TRL function.
    asked = ["How do owls hunt?"] * len(COMPLETIONS)
    guarded = make_reward_function(scorer, min_prompt_overlap=1)(prompts=asked, completions=COMPLETIONS)
    assert [guarded[i] for i in (0, 9)] == pytest.approx([local[0], local[9]], abs=BATCH_TOLERANCE)
    assert guarded[7] == guarded[10] == 0.0  # France and word0..word599 are not about owls
    prompted = {"queries": COMPLETIONS, "prompts": asked, "reward_rule": {"min_prompt_overlap": 1}}
    status, answer = http("POST", server + "/score", prompted)
    assert status == 200 and answer["rewards"] == pytest.approx(guarded, abs=BATCH_TOLERANCE)
    client = QueryScorerClient(server).rewards(COMPLETIONS, RewardRule(min_prompt_overlap=1), prompts=asked)
    assert client == pytest.approx(guarded, abs=BATCH_TOLERANCE)


@pytest.mark.slow
def test_a_client_that_gives_up_leaves_no_work_behind(saved_model_dir, scorer):
    """A request whose client gave up (closed its connection, as a client that timed out does) is dropped from the
    queue instead of being scored for nobody. The model is held at a gate while the clients leave, so all their
    queries are still waiting then, however fast the machine."""
    queries = [f"{QUERIES[i % 4]} {i}" for i in range(50)]
    body = json.dumps({"queries": queries}).encode()
    gated = GatedScorer(scorer)
    try:
        with gated_server(saved_model_dir, gated) as (url, port):
            clients = [socket.create_connection(("127.0.0.1", port), timeout=HANG_SECONDS) for _ in range(40)]
            for client in clients:
                client.sendall(post_head(port, "/score", len(body)) + body)
            # Every query reaches the batcher: those of the first pass wait at the gate, the rest in the queue.
            wait_until(
                lambda: gated.held and info_of(url)["queued"] + gated.held[0] == 40 * len(queries),
                "the 40 requests in the batcher",
            )
            for client in clients:
                client.close()
            wait_until(lambda: info_of(url)["queued"] == 0, "the server to see that every client has gone")
            gated.gate.set()
            in_flight = gated.held[0]  # the pass that held the model when the clients left
            wait_until(lambda: info_of(url)["dropped"] == 40 * len(queries) - in_flight, "the queries to be dropped")
            info = info_of(url)
            answer = http("POST", url + "/score", {"queries": QUERIES})[1]["scores"]
    finally:
        gated.gate.set()

    assert info["queries"] == in_flight < 40 * len(queries)  # nothing but the pass in flight was scored
    assert answer == pytest.approx(scorer.score(QUERIES), abs=BATCH_TOLERANCE)


@pytest.mark.slow
def test_health_and_info_describe_the_served_model(server, scorer, saved_model_dir):
    assert http("GET", server + "/health") == (200, {"status": "ok"})

    status, info = http("GET", server + "/info")

    assert status == 200
    assert info["model"] == str(saved_model_dir) and info["revision"] is None
    assert info["max_length"] == scorer.max_length
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    assert info["max_batch_size"] == 8 and info["max_batch_tokens"] == 256 and info["backend"] == "torch"
    assert info["pass_overhead_tokens"] == CPU_PASS_OVERHEAD_TOKENS  # the CPU default: no flag given
    assert info["max_request_tokens"] == SERVER_MAX_REQUEST_TOKENS and info["shutdown_grace_seconds"] == 10.0
    assert info["reward_rule"] == {
        "empty_score": 0.0,
        "length_guard": True,
        "max_repeated_share": 0.35,
        "min_content_words": 1,
        "min_prompt_overlap": 0,
    }
    assert info["qrm_hf_version"]


BAD_REQUESTS = [
    ("/score", b'{"queries": ["owls",', 400, "request body is not valid JSON: Expecting value"),
    ("/score", b"\xff\xfe", 400, "request body is not valid JSON: not UTF-8 text"),
    ("/score", b'["owls"]', 422, "request body must be a JSON object, got array"),
    ("/score", b"{}", 422, "missing field 'queries'"),
    ("/score", b'{"queries": "owls"}', 422, "'queries' must be a list of strings, got string"),
    ("/score", b'{"queries": ["owls", 7]}', 422, "queries[1] is number, not a string: 7"),
    ("/score", b'{"queries": ["owls", "a", null]}', 422, "queries[2] is null, not a string"),
    ("/score", b'{"queries": ["owls"], "raw": "yes"}', 422, "'raw' must be true or false, got string"),
    ("/score", json.dumps({"queries": ["owls"] * 51}).encode(), 413, "'queries' has 51 items; this server accepts"),
    ("/score", json.dumps({"queries": ["owls " * 1000] * 5}).encode(), 413, "at most 20000 bytes per request body"),
    ("/get_reward", b'{"prompts": ["p"]}', 422, "missing field 'query'"),
    ("/get_reward", b'{"query": [["owls"]]}', 422, "query[0] is array, not a string"),
    ("/get_reward", b'{"query": ["a", "b"], "prompts": ["p"]}', 422, "'prompts' has 1 items but 'query' has 2"),
    ("/score", b'{"queries": ["a"], "reward_rule": {"empty": 1}}', 422, "reward_rule has unknown keys ['empty']"),
    ("/score", b'{"queries": ["a"], "reward_rule": {"empty_score": "x"}}', 422, "empty_score must be a finite"),
    ("/score", b'{"queries": ["a"], "prompts": ["p"]}', 422, "'prompts' are read by a reward_rule only"),
    ("/score", b'{"queries": ["a"], "reward_rule": {"min_prompt_overlap": 1}}', 422, "needs the prompts"),
    ("/score", b'{"queries": ["a"], "prompts": [], "reward_rule": {}}', 422, "0 prompts for 1 texts"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_request_gets_a_clear_error(server, path, body, status, message):
    answer = http("POST", server + path, body=body)

    assert answer[0] == status
    assert message in answer[1]["detail"]


@pytest.mark.slow
def test_32_concurrent_clients_each_get_their_own_scores_in_order(saved_model_dir, scorer):
    """32 clients, two requests each, every one its own size and order. The model is held at a gate until every
    client's first request is waiting in the batcher, so those requests share passes however fast or loaded the
    machine is; the second ones arrive while passes run."""
    expected = dict(zip(POOL, scorer.score(POOL), strict=True))

    def queries_of(number: int, round_: int) -> list[str]:
        # Each client its own order and size (1 to 12 queries: some split over batches of 8).
        return [POOL[(number + round_ + i * 7) % len(POOL)] for i in range(1 + (number * 5 + round_) % 12)]

    gated = GatedScorer(scorer)
    try:
        with gated_server(saved_model_dir, gated) as (url, _):
            before = info_of(url)

            def client(number: int) -> list[tuple[list[str], list[float]]]:
                answers = []
                for round_ in range(2):
                    queries = queries_of(number, round_)
                    if number % 4 == 0:  # bad requests mixed in must not disturb anyone's answer
                        assert http("POST", url + "/score", body=b'{"queries": [1]}')[0] == 422
                    status, answer = http("POST", url + "/score", {"queries": queries})
                    assert status == 200
                    answers.append((queries, answer["scores"]))
                return answers

            with ThreadPoolExecutor(max_workers=32) as pool:
                running = pool.map(client, range(32))
                first_round = sum(len(queries_of(number, 0)) for number in range(32))
                wait_until(
                    lambda: gated.held and info_of(url)["queued"] + gated.held[0] == first_round,
                    "every client's first request in the batcher",
                )
                gated.gate.set()
                results = [answer for answers in running for answer in answers]
            after = info_of(url)
    finally:
        gated.gate.set()

    for queries, scores in results:
        assert scores == pytest.approx([expected[query] for query in queries], abs=BATCH_TOLERANCE)
    assert after["queries"] - before["queries"] == sum(len(queries) for queries, _ in results)
    unmerged = sum(math.ceil(len(queries) / 8) for queries, _ in results)  # batches if each request went alone
    assert after["batches"] - before["batches"] < unmerged
    assert after["queued"] == 0


@pytest.mark.slow
def test_client_and_remote_reward_function_match_the_scorer(server, scorer):
    client = QueryScorerClient(server)

    assert client.score(QUERIES) == pytest.approx(scorer.score(QUERIES), abs=BATCH_TOLERANCE)
    assert client.score(QUERIES, raw=True) == pytest.approx(scorer.score(QUERIES, raw=True), abs=BATCH_TOLERANCE)
    assert client.classify(QUERIES) == scorer.classify(QUERIES)
    assert client.classify(QUERIES, threshold=0.0) == [True] * 4
    assert client.score([]) == []

    reward = make_reward_function(server + "/")
    completions = [f" {QUERIES[0]}\n", [{"role": "assistant", "content": QUERIES[1]}]]
    assert reward.__name__ == "query_wellformedness"
    assert reward(prompts=["p", "p"], completions=completions, completion_ids=[[1], [2]]) == pytest.approx(
        scorer.score(QUERIES[:2]), abs=BATCH_TOLERANCE
    )


@pytest.mark.slow
def test_client_errors_name_the_problem(server):
    with pytest.raises(ScoringRequestError, match=r"HTTP 422: queries\[1\] is number, not a string") as error:
        QueryScorerClient(server).score(["owls", 7])
    assert error.value.status == 422
    with pytest.raises(ScoringRequestError, match="HTTP 413: 'queries' has 51 items"):
        QueryScorerClient(server).score(["owls"] * 51)
    with pytest.raises(TypeError, match="not a single string"):
        QueryScorerClient(server).score("owls")

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=rf"POST {dead}/score failed after 2 attempts: .*refused"):
        QueryScorerClient(dead, retries=1, backoff=0).score(["owls"])
    with pytest.raises(ValueError, match="apply to a model loaded in this process"):
        make_reward_function(server, device="cpu")


@pytest.mark.slow
def test_server_still_answers_after_bad_requests(server, scorer):
    for path, body, _, _ in BAD_REQUESTS:
        http("POST", server + path, body=body)

    assert http("POST", server + "/score", {"queries": QUERIES})[1]["scores"] == pytest.approx(
        scorer.score(QUERIES), abs=BATCH_TOLERANCE
    )


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_and_exits_0(saved_model_dir, scorer, tmp_path):
    """A request the server has begun when SIGTERM comes is answered in full before it exits 0. Its client asks for
    100 Continue and sends the body only once the server has taken the signal (it refuses new connections), so the
    request is in flight then on any machine, and all of its scoring runs during the shutdown."""
    log = tmp_path / "server.log"
    queries = [QUERIES[i % 4] + f" number {i}" for i in range(300)]
    body = json.dumps({"queries": queries}).encode()
    # Small passes: the request is about a hundred passes of work for the batcher after the signal. A grace far
    # longer than the request takes, however slow the machine.
    flags = ["--max-batch-tokens", "32", "--shutdown-grace-seconds", "600"]
    with running_server(saved_model_dir, log, *flags) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_SECONDS) as client:
            client.sendall(post_head(port, "/score", len(body), "Expect: 100-continue"))
            # The server says 100 Continue when its handler starts reading the body: the request is in flight.
            assert read_head(client).startswith(b"HTTP/1.1 100 ")
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: refuses_connections(port), "the server to stop accepting connections on SIGTERM")
            assert process.poll() is None  # still running: it waits for the request
            client.sendall(body)
            status, answer = read_answer(client)
        assert process.wait(timeout=HANG_SECONDS) == 0, log.read_text()

    assert status == 200
    assert answer["scores"] == pytest.approx(scorer.score(queries), abs=BATCH_TOLERANCE)
    assert "Traceback" not in log.read_text()
    with pytest.raises(OSError):
        http("GET", url + "/health", timeout=5)


def broken_copy(saved_model_dir: Path, folder: Path, breakage: str) -> Path:
    """A copy of the saved model broken one way: its weights, a config.json key, or the scores it computes."""
    shutil.copytree(saved_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    if breakage == "corrupt weights":
        (folder / "model.safetensors").write_bytes(b"not weights")
    elif breakage == "weights that score NaN":
        from safetensors.torch import load_file, save_file

        tensors = {name: tensor.fill_(math.nan) for name, tensor in load_file(folder / "model.safetensors").items()}
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        key, value = {"unknown pooling": ("pooling", "max"), "negative max_length": ("max_length", -1),
                      "ensemble_size the weights lack": ("ensemble_size", 3),
                      "another model_type": ("model_type", "bert")}[breakage]  # fmt: skip
        (folder / "config.json").write_text(json.dumps({**config, key: value}))
    return folder


BROKEN_MODELS = {
    "corrupt weights": ["model.safetensors", "save or download the model again"],
    "weights that score NaN": ["scores the query", "as nan", "config.json"],
    "unknown pooling": ["config.json", "pooling must be one of ('cls', 'mean'), got 'max'"],
    "negative max_length": ["config.json: max_length = -1"],
    "ensemble_size the weights lack": ["as nan", "config.json", "ensemble_size"],
    "another model_type": ["config.json has model_type 'bert'"],
}


@pytest.mark.slow
@pytest.mark.parametrize("breakage", BROKEN_MODELS)
def test_a_model_that_fails_to_load_is_one_error_line_and_exit_2_before_the_port_opens(
    saved_model_dir, tmp_path, breakage
):
    """The whole load (files, config.json, weights, a finite score on a fixed text) runs before uvicorn starts:
    the port never accepts a connection while the command runs, and stderr is the one line naming the problem."""
    broken = broken_copy(saved_model_dir, tmp_path / "broken-model", breakage)
    port = free_port()
    command = [sys.executable, "-m", "qrm_hf.commands.serve", "--model", str(broken), "--port", str(port)]
    process = subprocess.Popen(command + ["--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    accepted = 0
    deadline = time.monotonic() + HANG_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            accepted += 1
        time.sleep(0.05)
    out, err = process.communicate(timeout=HANG_SECONDS)

    assert process.returncode == 2, err
    assert accepted == 0
    assert err.strip().splitlines() == [err.strip()] and "Uvicorn running" not in out + err, out + err
    assert err.startswith(f"error: cannot load --model {broken}: ")
    for words in BROKEN_MODELS[breakage]:
        assert words in err


def test_health_is_503_until_the_model_is_loaded_and_the_client_retries_through_it(saved_model_dir, scorer):
    """The model loads only once the client's first try has been refused 503, and that refusal reaches the client
    only once the model is loaded: the client must retry, and its one retry finds the server ready."""
    release = threading.Event()
    refused: list[str] = []  # the path of each request answered 503

    def load_slowly() -> QueryScorer:
        assert release.wait(timeout=HANG_SECONDS), "the client's first try never came"
        return scorer  # the same model from_pretrained gives, loaded already

    def releasing_on_the_clients_first_try(app):
        """`app`, where the second /score answered 503 (the client's first try, after the test's own) lets the
        model load, and goes out once it has."""
        state = app.state.qrm

        async def observed(scope, receive, send):
            async def sending(message):
                if message["type"] == "http.response.start" and message["status"] == 503:
                    refused.append(scope["path"])
                    if refused.count("/score") == 2:
                        release.set()
                        deadline = time.monotonic() + HANG_SECONDS
                        while state.scorer is None:
                            assert time.monotonic() < deadline, "the model did not load once released"
                            await asyncio.sleep(0.01)
                await send(message)

            await app(scope, receive, sending)

        return observed

    port = free_port()
    config = ServeConfig(model=str(saved_model_dir), port=port, log_level="warning")
    app = releasing_on_the_clients_first_try(create_app(config, load_scorer=load_slowly))
    try:
        with in_process_server(app, port) as url:
            assert http("GET", url + "/health") == (
                503,
                {"status": "loading", "detail": f"loading model {saved_model_dir}"},
            )
            assert http("POST", url + "/score", {"queries": ["owls"]})[0] == 503

            scores = QueryScorerClient(url, retries=1, backoff=0.1).score(["owls"])

            assert refused == ["/health", "/score", "/score"]  # the client's first try was refused, its retry not
            assert scores == pytest.approx(scorer.score(["owls"]), abs=BATCH_TOLERANCE)
            assert http("GET", url + "/health") == (200, {"status": "ok"})
    finally:
        release.set()


# Guarded text hidden behind characters that show nothing, and fullwidth look-alikes: each must earn empty_score
# on every reward path, as its plain spelling does.
DISGUISED = [
    "Wh\u200bat is it?",  # zero-width space
    "Wh\u00adat is it?",  # soft hyphen
    "What\u2060 is\u2060 it?",  # word joiner
    "what\u200d what\u200c what\u200d what",  # joiners between repeated words
    "\u3164",  # Hangul filler alone
    "\u115f\u1160 \uffa0\u2800",  # other blank letters
    "\uff37\uff48\uff41\uff54 \uff49\uff53 \uff49\uff54\uff1f",  # fullwidth "What is it?"
    "\ufeff\u200bWhat is it?\u200b",
    "Wh\u034fat i\ufe0fs i\U000e0100t?",  # default-ignorable marks: grapheme joiner, variation selectors
]


@pytest.mark.slow
def test_invisible_characters_do_not_beat_the_guards_on_any_reward_path(server, scorer):
    prompts = ["p"] * len(DISGUISED)
    assert make_reward_function(scorer)(prompts=prompts, completions=DISGUISED) == [0.0] * len(DISGUISED)
    assert make_reward_function(server)(prompts=prompts, completions=DISGUISED) == [0.0] * len(DISGUISED)
    assert QueryScorerClient(server).rewards(DISGUISED) == [0.0] * len(DISGUISED)
    assert http("POST", server + "/get_reward", {"query": DISGUISED})[1]["rewards"] == [0.0] * len(DISGUISED)
    rule = {"empty_score": -1.0}
    answer = http("POST", server + "/score", {"queries": DISGUISED, "reward_rule": rule})[1]
    assert answer["rewards"] == [-1.0] * len(DISGUISED)
    # A real query with the same characters earns what its plain spelling earns, and the model reads it plainly.
    hidden = ["how\u200b do\u00ad owls hunt ?", "\uff48\uff4f\uff57 do owls hunt ?"]
    plain = scorer.score(["how do owls hunt ?"])[0]
    assert scorer.score(hidden) == pytest.approx([plain, plain], abs=BATCH_TOLERANCE)
    assert make_reward_function(server)(prompts=["p", "p"], completions=hidden) == pytest.approx(
        [plain, plain], abs=BATCH_TOLERANCE
    )


# Shutting down whatever the clients do


def stalled_clients(port: int, large_request: bytes) -> dict[str, bytes]:
    """What each stalled client sends, then it sends nothing more and reads nothing."""
    head = f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    return {
        "connected, silent": b"",
        "half its headers": head.encode()[:40],
        "its headers, then half the body they declare": f"{head}Content-Length: 1000\r\n\r\n".encode()
        + b'{"queries": ["ow',
        "a chunked body never ended": f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + b'5\r\n{"que\r\n',
        "a large request, its answer never read": f"{head}Content-Length: {len(large_request)}\r\n\r\n".encode()
        + large_request,
    }


@pytest.mark.slow
def test_sigterm_exits_0_within_the_grace_whatever_the_clients_do(saved_model_dir, tmp_path):
    """Stalled clients of several shapes at once, and a keep-alive one: SIGTERM still ends the server within
    --shutdown-grace-seconds (2 here), where a half-sent request used to hold it for good."""
    log = tmp_path / "server.log"
    large = json.dumps({"queries": [QUERIES[i % 4] + f" number {i}" for i in range(3000)]}).encode()
    flags = ["--shutdown-grace-seconds", "2", "--max-batch-tokens", "32"]
    with running_server(saved_model_dir, log, *flags) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        clients = []
        for message in stalled_clients(port, large).values():
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so an unread answer fills it early
            client.connect(("127.0.0.1", port))
            client.sendall(message)
            clients.append(client)
        idle = socket.create_connection(("127.0.0.1", port))  # answered once, then kept open
        idle.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        # Queued, scored or dropped: the counters only grow, so a fast server cannot slip past this check.
        wait_until(
            lambda: sum(info_of(url)[key] for key in ("queued", "queries", "dropped")) > 0,
            "the large request to reach the batcher",
        )

        process.send_signal(signal.SIGTERM)
        try:
            # Ended at all, where a half-sent request used to hold it for good; the log shows the grace ran out.
            code = process.wait(timeout=HANG_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"qrm serve still runs {HANG_SECONDS} s after SIGTERM with a 2 s grace:\n{log.read_text()}")
        finally:
            for client in [*clients, idle]:
                client.close()

    text = log.read_text()
    assert code == 0, text
    # The half-sent requests held the server until the grace ran out; each was cancelled with one line.
    assert "timeout graceful shutdown exceeded" in text
    assert text.count("unanswered when the shutdown's grace ran out; cancelled") >= 2
    assert "Traceback" not in text


# Malformed bodies: every shape of JSON in every field, and bytes that are not JSON, are 4xx, never 500

# One value of each JSON type, the containers a list of strings could be confused with, and a lone surrogate.
JSON_VALUES = [None, True, 0, -1, 2.5, 1e308, "", "owls", "\ud800", [], [None], [1], ["owls", 7], [[]], [["owls"]]]
JSON_VALUES += [[{}], [{"q": 1}], {}, {"queries": ["owls"]}, {"\ud800": 1}]
DEEP = "[" * 5000 + "]" * 5000  # past the JSON parser's recursion limit
LONG_NUMBER = "7" * 5000  # past Python's digits for an int


def malformed_bodies() -> list[tuple[str, bytes]]:
    bodies = []
    for path, base in (("/score", {"queries": ["owls"]}), ("/get_reward", {"query": ["owls"]})):
        bodies += [(path, json.dumps(value).encode()) for value in JSON_VALUES]  # a top level that is not an object
        for field in [*base, "prompts", "raw", "reward_rule", "unknown"]:
            for value in JSON_VALUES:
                bodies.append((path, json.dumps({**base, field: value}).encode()))
            for raw in (DEEP, LONG_NUMBER, "NaN", "-Infinity", f"[{LONG_NUMBER}]", f'["owls", {DEEP}]'):
                bodies.append((path, json.dumps({**base, field: None}).replace("null", raw).encode()))
        for field in RewardRule.field_names():
            bodies += [(path, json.dumps({**base, "reward_rule": {field: value}}).encode()) for value in JSON_VALUES]
        bodies += [(path, body) for body in (DEEP.encode(), LONG_NUMBER.encode(), b"", b" ", b"\xef\xbb\xbf{}")]
        bodies += [(path, b'{"queries": ["\xff\xfe"], "query": ["\xc0\xaf"]}'), (path, b"queries=owls&query=owls")]
        bodies += [(path, b'{"queries": ["owls"], "query": ["owls"]'), (path, b"\x00" * 10)]
    return bodies


def post_bytes(url: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, bytes]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HANG_SECONDS) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.slow
def test_no_malformed_body_gets_a_500(server, scorer):
    bodies = malformed_bodies()
    answers = [(path, body, *post_bytes(server + path, body)) for path, body in bodies]

    server_errors = [(path, body[:80], status, text[:200]) for path, body, status, text in answers if status >= 500]
    assert server_errors == []
    refused = [(status, json.loads(text)) for _, _, status, text in answers if status != 200]
    assert len(refused) > len(bodies) // 2
    assert all(status in (400, 413, 422) and isinstance(answer["detail"], str) for status, answer in refused)
    assert http("POST", server + "/score", {"queries": QUERIES})[1]["scores"] == pytest.approx(
        scorer.score(QUERIES), abs=BATCH_TOLERANCE
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (DEEP.encode(), "request body nests arrays or objects too deeply to read"),
        (b'{"queries": [' + DEEP.encode() + b"]}", "request body nests arrays or objects too deeply to read"),
        (b'{"queries": ["owls"], "raw": ' + LONG_NUMBER.encode() + b"}", "Exceeds the limit (4300 digits)"),
        (b"queries=owls", "request body is not valid JSON"),
    ],
)
def test_bodies_the_decoder_chokes_on_are_400_naming_why(server, body, message):
    status, text = post_bytes(server + "/score", body)

    assert status == 400 and message in json.loads(text)["detail"]
    assert "set_int_max_str_digits" not in json.loads(text)["detail"]


@pytest.mark.slow
def test_the_content_type_is_not_what_decides(server, scorer):
    """A JSON body is read as JSON whatever its Content-Type says (curl -d sends form-urlencoded); a body that is
    not JSON is 400 whatever it says."""
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, text = post_bytes(server + "/score", json.dumps({"queries": ["owls"]}).encode(), content_type)
        assert status == 200 and json.loads(text)["scores"] == pytest.approx(scorer.score(["owls"]), abs=1e-4)
        assert post_bytes(server + "/get_reward", b"query=owls", content_type)[0] == 400


@pytest.mark.slow
def test_a_tool_call_nested_past_the_parser_is_judged_by_its_text(server):
    """A policy's <tool_call> block nested deeper than the JSON parser reads is unreadable, as a block that is not
    JSON is: its completion still gets a reward, not a 500."""
    nested = '<tool_call>{"name": "search", "arguments": ' + DEEP + "}</tool_call>"
    unreadable = '<tool_call>{"name": "search", "arguments": [}</tool_call>'

    status, answer = http("POST", server + "/get_reward", {"query": [nested, unreadable]})

    assert status == 200 and len(answer["rewards"]) == 2 and all(math.isfinite(r) for r in answer["rewards"])


# Requests bounded in tokens

FULL = "owls hunt at night " * 60  # far over the tiny model's max_length of 128 tokens: cut to exactly 128


@pytest.mark.slow
def test_a_request_at_the_token_limit_is_scored(server, scorer):
    queries = [FULL + str(i) for i in range(7)]  # 7 x 128 = 896 tokens of 1000

    status, answer = http("POST", server + "/score", {"queries": queries})

    assert status == 200 and answer["scores"] == pytest.approx(scorer.score(queries), abs=BATCH_TOLERANCE)


OVER_TOKEN_LIMIT = [
    ("/score", {"queries": [FULL] * 8}),  # 8 x 128 = 1024 tokens
    # Many short ones: 50 x 21 = 1050 tokens.
    ("/score", {"queries": ["how do owls hunt in the dark forest and what do they eat when the moon is new ?"] * 50}),
    ("/score", {"queries": [f" {FULL}\n"] * 8, "reward_rule": {}}),  # rewards of texts that need stripping
    ("/get_reward", {"query": [FULL] * 8}),
    # One completion, eight tool calls: eight texts to score from one query.
    ("/get_reward", {"query": [('<tool_call>{"arguments": {"query": "' + FULL + '"}}</tool_call>') * 8]}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "payload"), OVER_TOKEN_LIMIT)
def test_a_request_over_the_token_limit_is_413_naming_it(server, path, payload):
    before = http("GET", server + "/info")[1]["queries"]

    status, answer = http("POST", server + path, payload)

    assert status == 413
    assert (
        f"at most {SERVER_MAX_REQUEST_TOKENS} tokens per request (--max-request-tokens): split it" in answer["detail"]
    )
    assert http("GET", server + "/info")[1]["queries"] == before  # refused before any scoring


def rss_bytes(pid: int) -> int:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024


@pytest.mark.slow
def test_ten_thousand_queries_that_fill_max_length_are_refused_and_leave_memory_as_it_was(saved_model_dir, tmp_path):
    """The request that held a server for minutes and 0.9 GB: with the default limits it is a prompt 413, and
    sending it again and again does not grow the server."""
    payload = {"queries": [FULL + str(i) for i in range(10_000)]}  # 1.28 M tokens as the model reads them
    with running_server(saved_model_dir, tmp_path / "server.log") as (url, process):
        for _ in range(2):  # the allocator's first requests set its pools' size
            status, answer = http("POST", url + "/score", payload)
            assert status == 413 and "(--max-request-tokens)" in answer["detail"]
        settled = rss_bytes(process.pid)
        for _ in range(3):
            assert http("POST", url + "/score", payload)[0] == 413
        grown = rss_bytes(process.pid) - settled
        assert http("GET", url + "/info")[1]["queries"] == 0

    assert grown < 64 * 2**20, f"the server grew {grown / 2**20:.0f} MiB over three refused requests"
