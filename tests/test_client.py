"""QueryScorerClient against a real HTTP server on 127.0.0.1 that answers as told: retries, refusals, payloads."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qrm_hf.scoring.client import QueryScorerClient, ScoringRequestError
from qrm_hf.scoring.reward_rule import RewardRule


class ScriptedServer:
    """Answers each request with the next (status, body) of `answers` and records what it was sent."""

    def __init__(self, answers: list[tuple[int, dict]]) -> None:
        self.answers = list(answers)
        self.received: list[tuple[str, str, dict | None]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                scripted.received.append((self.command, self.path, body))
                status, payload = scripted.answers.pop(0) if scripted.answers else (500, {"detail": "no answer left"})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(*answers):
        server = ScriptedServer(list(answers))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


SCORES = {"scores": [0.9, 0.1], "model": "m", "decision_threshold": 0.6}


def test_score_posts_the_queries_and_keeps_the_served_threshold(scripted):
    server = scripted((200, SCORES), (200, SCORES))
    client = QueryScorerClient(server.url + "/")

    assert client.score(("how do owls hunt ?", "owls hunt"), raw=True) == [0.9, 0.1]
    assert server.received == [("POST", "/score", {"queries": ["how do owls hunt ?", "owls hunt"], "raw": True})]
    assert client.decision_threshold == 0.6
    assert client.classify(["how do owls hunt ?", "owls hunt"]) == [True, False]


def test_loading_and_failing_servers_are_retried_then_answer(scripted):
    server = scripted((503, {"status": "loading", "detail": "loading"}), (502, {"detail": "proxy"}), (200, SCORES))

    assert QueryScorerClient(server.url, retries=2, backoff=0).score(["a", "b"]) == [0.9, 0.1]
    assert len(server.received) == 3


def test_a_refused_request_raises_at_once_with_the_servers_message(scripted):
    server = scripted((422, {"detail": "queries[1] is number, not a string: 7"}), (200, SCORES))

    with pytest.raises(ScoringRequestError, match=r"HTTP 422: queries\[1\] is number") as error:
        QueryScorerClient(server.url, retries=3, backoff=0).score(["a", "b"])
    assert error.value.status == 422 and len(server.received) == 1


def test_retries_run_out_with_the_last_failure_named(scripted):
    server = scripted(*[(500, {"detail": "scoring failed: boom"})] * 3)

    with pytest.raises(ConnectionError, match=r"failed after 3 attempts: HTTP 500: scoring failed: boom"):
        QueryScorerClient(server.url, retries=2, backoff=0).score(["a"])


def test_rewards_send_the_rule_so_the_server_applies_the_same_one(scripted):
    server = scripted((200, {**SCORES, "rewards": [0.9, 0.0]}))
    rule = RewardRule(empty_score=-1.0, length_guard=False, max_repeated_share=0.4)

    assert QueryScorerClient(server.url).rewards(["how do owls hunt ?", ""], rule) == [0.9, 0.0]
    [(_, path, body)] = server.received
    assert path == "/score" and body["reward_rule"] == {
        "empty_score": -1.0,
        "length_guard": False,
        "max_repeated_share": 0.4,
        "min_content_words": 1,
        "min_prompt_overlap": 0,
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"url": "127.0.0.1:8000"}, "url must start with http:// or https://"),
        ({"url": "http://h", "timeout": 0}, "timeout must be > 0 seconds"),
        ({"url": "http://h", "retries": -1}, "retries must be >= 0"),
        ({"url": "http://h", "backoff": -1}, "backoff must be >= 0 seconds"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        QueryScorerClient(**arguments)


def test_a_single_string_and_a_bad_threshold_are_refused_before_any_request(scripted):
    server = scripted((200, SCORES))
    client = QueryScorerClient(server.url)
    with pytest.raises(TypeError, match="not a single string"):
        client.score("owls")
    with pytest.raises(TypeError, match="not a single string"):
        client.rewards("owls")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 2"):
        client.classify(["a", "b"], threshold=2)
    assert server.received == []
