"""The `qrm` command line: one module per subcommand, each with `make_parser()` and `main(argv=None) -> int`.

    qrm search --config cpu        qrm predict --model FOLDER "how do owls hunt ?"
    qrm report --storage URL ...   qrm push FOLDER org/name     qrm serve --model FOLDER     qrm env
    qrm probe --model FOLDER       qrm distill --teacher FOLDER

`qrm --help` lists the subcommands from the table below without importing any of them, and each subcommand
imports torch and transformers only inside its `main`, so every `--help` answers at once.
"""

from __future__ import annotations

import importlib
import logging
import sys

# Subcommand -> what it does (shown by `qrm --help`); the module is qrm_hf.commands.<name>.
COMMANDS = {
    "search": "Search hyperparameters, train the final model, report on test, save (and push) it.",
    "predict": "Score queries with a saved reward model (arguments, a file or stdin).",
    "report": "Rebuild a study's report.md and plots from its Optuna storage.",
    "push": "Upload a saved reward model folder, with its card, to the Hugging Face Hub.",
    "serve": "Serve a reward model over HTTP with continuous batching (OpenRLHF-compatible /get_reward).",
    "probe": "Measure how gameable the reward is: degenerate rewrites of real queries, per reward rule.",
    "distill": "Train a small student reward model on a large teacher's scores (and the labels).",
    "env": "Print versions, device and CUDA/bf16 availability, for bug reports.",
}


def setup_logging() -> None:
    """Timestamped INFO logs for the long-running commands, without the HTTP clients' chatter."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def error_exit(error: BaseException) -> int:
    """Print `error: <message>` on stderr and return 2, the exit status of every command's bad input."""
    print(f"error: {error}", file=sys.stderr)
    return 2


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: qrm <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, summary in COMMANDS.items()]
    lines += ["", "Run `qrm <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The `qrm` console script: dispatch to `qrm_hf.commands.<command>.main`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"qrm: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(f"{__name__}.{command}").main(rest)


__all__ = ["COMMANDS", "error_exit", "main", "setup_logging", "usage"]
