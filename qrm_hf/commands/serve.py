"""`qrm serve`: serve a reward model over HTTP with micro-batching (OpenRLHF-compatible /get_reward).

    qrm serve --model runs/quickstart/final_model --port 8000
    qrm serve --model your-org/query-reward --host 0.0.0.0 --max-batch-size 128 --max-wait-ms 5 --dtype bfloat16
    python -m qrm_hf.commands.serve --model runs/quickstart/final_model

Flags and their defaults are the fields of `qrm_hf.serve.ServeConfig`; torch, transformers, fastapi and uvicorn
are imported only inside `main`, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..serve import DTYPES, LOG_LEVELS, ServeConfig, serve

# Flag -> argparse type and choices; help and default come from the ServeConfig field of the same name.
FLAGS: dict[str, dict] = {
    "model": {"type": str, "required": True},
    "revision": {"type": str},
    "host": {"type": str},
    "port": {"type": int},
    "max_batch_size": {"type": int},
    "max_wait_ms": {"type": float},
    "device": {"type": str},
    "dtype": {"type": str, "choices": DTYPES},
    "max_queries_per_request": {"type": int},
    "max_body_bytes": {"type": int},
    "log_level": {"type": str, "choices": LOG_LEVELS},
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qrm serve",
        description="Serve a query reward model over HTTP: POST /score, POST /get_reward (OpenRLHF), "
        "GET /health, GET /info. Concurrent requests are scored together in micro-batches.",
        epilog="Stop it with SIGTERM or Ctrl-C: requests in flight are answered first.",
    )
    fields = {field.name: field for field in dataclasses.fields(ServeConfig)}
    for name, options in FLAGS.items():
        field = fields[name]
        default = None if field.default is dataclasses.MISSING else field.default
        shown = "" if options.get("required") or default is None else " (default: %(default)s)"
        parser.add_argument(
            f"--{name.replace('_', '-')}", default=default, help=field.metadata["help"] + shown, **options
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `qrm serve`; returns 0 after a graceful shutdown, 2 for bad flags or a model that is not one."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        config = ServeConfig(**vars(args))
    except ValueError as error:
        parser.error(str(error))

    from ..scoring import check_reward_model

    # Checked before listening, so a wrong --model fails at once instead of as a server that never gets ready.
    try:
        check_reward_model(config.model, config.revision)
    except (OSError, ValueError) as error:
        print(f"error: cannot load --model {config.model}: {error}", file=sys.stderr)
        return 2
    try:
        return serve(config)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
