"""`qrm serve`: serve a reward model over HTTP with continuous batching (OpenRLHF-compatible /get_reward).

    qrm serve --model runs/quickstart/final_model --port 8000
    qrm serve --model your-org/query-reward --host 0.0.0.0 --max-batch-tokens 16384 --dtype bfloat16
    qrm serve --model runs/quickstart/final_model --backend int8   # a faster CPU
    python -m qrm_hf.commands.serve --model runs/quickstart/final_model

Flags and their defaults are the fields of `qrm_hf.serving.config.ServeConfig`, parsed by transformers'
`HfArgumentParser`; torch, fastapi and uvicorn are imported only inside `main`, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import typing
from collections.abc import Iterator

from ..serving.config import ServeConfig


def optional_float(text: str) -> float | None:
    """A number, or `none` (the field's None)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'none': {text!r}") from None


def make_parser() -> argparse.ArgumentParser:
    """transformers' `HfArgumentParser` over ServeConfig, as `qrm search` parses RunConfig: one flag per field
    (`--max-batch-tokens` and `--max_batch_tokens`), its type, help, default and choices from the dataclass;
    booleans take `--flag`, `--flag false` and `--no-flag`; a `float | None` field also takes `none`. No torch
    is imported."""
    from transformers import HfArgumentParser

    class ServeConfigParser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
            HfArgumentParser._parse_dataclass_field(parser, field)
            if typing.get_type_hints(ServeConfig)[field.name] == (float | None):
                parser._option_string_actions[f"--{field.name}"].type = optional_float

    return ServeConfigParser(
        ServeConfig,
        prog="qrm serve",
        description="Serve a query reward model over HTTP: POST /score, POST /get_reward (OpenRLHF), "
        "GET /health, GET /info. Whenever the model is free it scores every query waiting, across requests, "
        "in length-sorted passes capped by --max-batch-tokens.",
        epilog="Stop it with SIGTERM or Ctrl-C: requests in flight are answered first, within "
        "--shutdown-grace-seconds.",
    )


def main(argv: list[str] | None = None) -> int:
    """Run `qrm serve`; returns 0 after a graceful shutdown, 2 for bad flags or a model that fails to load."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        config = ServeConfig(**vars(args))
    except ValueError as error:
        parser.error(str(error))

    from ..modeling.model_files import check_reward_model

    # Checked before listening, so a wrong --model fails at once instead of as a server that never gets ready.
    try:
        check_reward_model(config.model, config.revision)
    except (OSError, ValueError) as error:
        print(f"error: cannot load --model {config.model}: {error}", file=sys.stderr)
        return 2
    from ..scoring.scorer import resolve_device

    # The device too, so that `--device cuda` without a GPU never prints "Uvicorn running" after its error.
    try:
        if config.backend == "int8" and config.device not in (None, "cpu"):
            raise ValueError(f"--backend int8 runs on the CPU only, not on --device {config.device}")
        resolve_device(config.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        from ..serving.app import SERVE_EXTRA_HINT

        print(f"error: qrm serve needs {error.name}: {SERVE_EXTRA_HINT}", file=sys.stderr)
        return 2
    from ..serving.app import LoadError, load_model, serve

    # The whole model is loaded and scores a fixed text before the port opens: a folder that fails is one line
    # and exit 2, never a server that listens and then dies.
    debug = config.log_level == "debug"
    try:
        with load_warnings_held(show_on_failure=debug) as held:
            loaded = load_model(config)
    except LoadError as error:
        report = " (--log-level debug prints transformers' load report)" if held.records and not debug else ""
        print(f"error: {error}{report}", file=sys.stderr)
        return 2
    return serve(config, loaded)


@contextlib.contextmanager
def load_warnings_held(show_on_failure: bool) -> Iterator[_HeldRecords]:
    """While the model loads, transformers' warnings (its many-line load report) are held and its progress bars
    hidden: the warnings print after a load that succeeds, and after one that fails only with `show_on_failure`,
    so that a bad model folder is one error line."""
    from transformers.utils import logging as transformers_logging

    library = logging.getLogger("transformers")
    holder = _HeldRecords()
    transformers_logging.disable_default_handler()
    transformers_logging.disable_progress_bar()
    library.addHandler(holder)
    loaded = False
    try:
        yield holder
        loaded = True
    finally:
        library.removeHandler(holder)
        transformers_logging.enable_default_handler()
        transformers_logging.enable_progress_bar()
        if loaded or show_on_failure:
            for record in holder.records:
                library.handle(record)


class _HeldRecords(logging.Handler):
    """Keeps the log records it is given, to print them later or never."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


if __name__ == "__main__":
    sys.exit(main())
