"""The prediction command: queries from arguments, files and stdin; tsv/jsonl out; clear errors with exit 2."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import BATCH_TOLERANCE, REPO

from qrm_hf.commands.predict import main as predict_main
from qrm_hf.scoring.scorer import QueryScorer

QUERIES = ["how do owls hunt ?", "owls", "what is the capital of france", "cheap flights to rome in may"]


@pytest.fixture(scope="module")
def expected(saved_model_dir) -> dict[str, float]:
    """Each query's score from the Python API, which the command must reproduce."""
    return dict(zip(QUERIES, QueryScorer.from_pretrained(saved_model_dir, device="cpu").score(QUERIES), strict=True))


def run(argv: list[str], stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    status = predict_main(argv, stdin=io.StringIO(stdin), stdout=out)
    return status, out.getvalue()


def parse_tsv(text: str) -> list[tuple[str, float]]:
    return [(query, float(score)) for query, score in (line.split("\t") for line in text.splitlines())]


def assert_scores_of_queries(scores: list[float], expected: dict[str, float]) -> None:
    """`scores` are the scorer's scores of QUERIES, in their order."""
    assert scores == pytest.approx([expected[query] for query in QUERIES], abs=BATCH_TOLERANCE)


def test_positional_queries_print_tsv_in_order(saved_model_dir, expected):
    status, out = run(["--model", str(saved_model_dir), *QUERIES])

    assert status == 0
    rows = parse_tsv(out)
    assert [query for query, _ in rows] == QUERIES
    assert_scores_of_queries([score for _, score in rows], expected)


def test_text_file_in_jsonl_file_out(saved_model_dir, expected, tmp_path):
    source = tmp_path / "queries.txt"
    source.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    target = tmp_path / "out" / "scores.jsonl"

    status, out = run(
        ["--model", str(saved_model_dir), "--input", str(source), "--output", str(target), "--output-format", "jsonl"]
    )

    assert status == 0 and out == ""
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [record["query"] for record in records] == QUERIES
    assert_scores_of_queries([record["score"] for record in records], expected)


def test_tsv_input_takes_the_first_column(saved_model_dir, expected, tmp_path):
    source = tmp_path / "test.tsv"
    source.write_text("".join(f"{query}\t0.8\n" for query in QUERIES), encoding="utf-8")

    status, out = run(["--model", str(saved_model_dir), "--input", str(source), "--format", "tsv"])

    assert status == 0
    rows = parse_tsv(out)
    assert [query for query, _ in rows] == QUERIES
    assert_scores_of_queries([score for _, score in rows], expected)


def test_jsonl_input_reads_the_named_field_and_skips_blank_lines(saved_model_dir, expected, tmp_path):
    source = tmp_path / "queries.jsonl"
    source.write_text("\n".join(json.dumps({"id": i, "text": q}) for i, q in enumerate(QUERIES)) + "\n\n", "utf-8")

    status, out = run(["--model", str(saved_model_dir), "--input", str(source), "--format", "jsonl", "--field", "text"])

    assert status == 0
    assert_scores_of_queries([score for _, score in parse_tsv(out)], expected)


def test_stdin_is_read_when_no_query_or_file_is_given(saved_model_dir, expected):
    status, out = run(["--model", str(saved_model_dir), "--raw"], stdin="owls\nhow do owls hunt ?\n")

    assert status == 0
    assert [query for query, _ in parse_tsv(out)] == ["owls", "how do owls hunt ?"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"query": "owls"}\n{"query": "owls", \n', r"queries.jsonl:2: not valid JSON"),
        ('{"query": "owls"}\n\n{"text": "owls"}\n', r"queries.jsonl:3: no field 'query' \(fields: \['text'\]\)"),
        ('{"query": 7}\n', r"queries.jsonl:1: field 'query' is int, not a string"),
        ('["owls"]\n', r"queries.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_jsonl_line_exits_2_naming_file_and_line(saved_model_dir, tmp_path, capsys, lines, message):
    source = tmp_path / "queries.jsonl"
    source.write_text(lines, encoding="utf-8")

    status, out = run(["--model", str(saved_model_dir), "--input", str(source), "--format", "jsonl"])

    assert status == 2 and out == ""
    assert re.search(f"^error: {re.escape(str(tmp_path))}/{message}", capsys.readouterr().err)


def test_missing_input_file_exits_2(saved_model_dir, tmp_path, capsys):
    status, _ = run(["--model", str(saved_model_dir), "--input", str(tmp_path / "nope.txt")])

    assert status == 2
    assert f"{tmp_path / 'nope.txt'}: no such file" in capsys.readouterr().err


def test_model_that_is_not_a_reward_model_exits_2(tiny_encoder_dir, capsys):
    status, _ = run(["--model", str(tiny_encoder_dir), "owls"])

    assert status == 2
    assert "model_type 'modernbert', expected 'query_reward'" in capsys.readouterr().err


def test_queries_and_input_together_are_a_usage_error(saved_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["--model", str(saved_model_dir), "--input", str(tmp_path / "q.txt"), "owls"])

    assert exit_info.value.code == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.slow
def test_script_scores_stdin_in_a_subprocess(saved_model_dir, expected, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(saved_model_dir), "--device", "cpu"],
        input="\n".join(QUERIES) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert_scores_of_queries([score for _, score in parse_tsv(result.stdout)], expected)


def run_bytes(argv: list[str], stdin: bytes) -> tuple[int, str]:
    """Run with stdin as a terminal or pipe gives it: text over a byte stream (`sys.stdin.buffer`)."""
    out = io.StringIO()
    status = predict_main(argv, stdin=io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"), stdout=out)
    return status, out.getvalue()


def test_invalid_utf8_on_stdin_names_the_line_and_byte(saved_model_dir, capsys):
    status, out = run_bytes(["--model", str(saved_model_dir)], b"owls\nbad \xff byte\n")

    assert status == 2 and out == ""
    assert (
        capsys.readouterr().err
        == "error: <stdin>:2: not UTF-8 text (invalid start byte at byte 9); re-encode it as UTF-8\n"
    )


def test_invalid_utf8_in_an_input_file_gives_the_same_error_with_its_name(saved_model_dir, tmp_path, capsys):
    source = tmp_path / "queries.txt"
    source.write_bytes(b"owls\nbad \xff byte\n")

    status, _ = run(["--model", str(saved_model_dir), "--input", str(source)])

    assert status == 2
    assert f"error: {source}:2: not UTF-8 text (invalid start byte at byte 9)" in capsys.readouterr().err


def test_a_byte_order_mark_is_neither_scored_nor_echoed(saved_model_dir, expected):
    status, out = run_bytes(["--model", str(saved_model_dir)], "\ufeffowls\nhow do owls hunt ?\n".encode())

    assert status == 0
    rows = parse_tsv(out)
    assert [query for query, _ in rows] == ["owls", "how do owls hunt ?"]
    assert [score for _, score in rows] == pytest.approx(
        [expected["owls"], expected["how do owls hunt ?"]], abs=BATCH_TOLERANCE
    )


def test_a_jsonl_surrogate_escape_is_scored_and_written_as_the_replacement_character(saved_model_dir, tmp_path):
    source = tmp_path / "queries.jsonl"
    source.write_text('{"query": "owls \\ud800"}\n{"query": "owls"}\n', encoding="utf-8")

    status, out = run(["--model", str(saved_model_dir), "--input", str(source), "--format", "jsonl"])

    assert status == 0
    assert [query for query, _ in parse_tsv(out)] == ["owls \ufffd", "owls"]


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_unwritable_output_is_refused_before_the_model_is_even_loaded(tmp_path, capsys, where):
    (tmp_path / "a_file").write_text("x")
    output = tmp_path if where == "folder" else tmp_path / "a_file" / "scores.tsv"

    # The model does not exist: the output error coming first shows nothing was loaded or scored.
    status, out = run(["--model", str(tmp_path / "no-model"), "--output", str(output), "owls"])

    assert status == 2 and out == ""
    err = capsys.readouterr().err
    if where == "folder":
        assert err.startswith(f"error: --output {tmp_path} is a folder; give a file path")
    else:
        assert err.startswith(f"error: --output {output}: cannot create it, {tmp_path / 'a_file'} is a file")


def test_input_that_is_a_folder_is_named(saved_model_dir, tmp_path, capsys):
    status, _ = run(["--model", str(saved_model_dir), "--input", str(tmp_path)])

    assert status == 2
    assert f"error: {tmp_path}: is a folder; --input takes a file of queries" in capsys.readouterr().err


def test_devices_this_machine_lacks_exit_2_naming_them(saved_model_dir, capsys, monkeypatch):
    import torch

    assert run(["--model", str(saved_model_dir), "--device", "tpu", "owls"])[0] == 2
    assert "error: device 'tpu' is not a device torch knows; available here: cpu" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run(["--model", str(saved_model_dir), "--device", "cuda", "owls"])[0] == 2
    assert "error: device 'cuda' is not available: torch" in capsys.readouterr().err


def test_a_model_path_that_does_not_exist_is_a_missing_folder(tmp_path, capsys):
    status, _ = run(["--model", str(tmp_path / "runs" / "final_model"), "owls"])

    assert status == 2
    assert f"{tmp_path / 'runs' / 'final_model'}: no such folder" in capsys.readouterr().err


def test_truncated_weights_exit_2_naming_the_file(saved_model_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(saved_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])

    status, _ = run(["--model", str(folder), "owls"])

    assert status == 2
    assert f"{weights} is incomplete or corrupt" in capsys.readouterr().err


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_quietly(saved_model_dir, tmp_path):
    """`qrm predict ... | head -1`: head closes the pipe after one line; no BrokenPipeError traceback, exit 0."""
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(f"how do owls hunt {i} ?" for i in range(20000)) + "\n")
    command = (
        f"{sys.executable} -m qrm_hf.commands.predict --model {saved_model_dir} --device cpu --input {queries} "
        "| head -1; echo status=${PIPESTATUS[0]}"
    )
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600)
    assert result.stdout.count("\n") == 2 and "status=0" in result.stdout, result.stdout[-500:]
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr[-2000:]
