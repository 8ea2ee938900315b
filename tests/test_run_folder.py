"""The run folder: writable or refused, one final-model writer, and final_model.json through one typed class."""

import json
import os
import socket

import pytest
from conftest import final_summary

from qrm_hf.run_config import ConfigError, RunLayout
from qrm_hf.run_folder import (
    FinalModelClaimed,
    check_writable,
    claim_final_model,
    offset_advice,
    read_final_summary,
    write_final_summary,
)


def test_an_output_dir_that_cannot_be_written_is_refused_by_name(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"--output-dir .*a-file/run: cannot write there \(.*a-file is a file"):
        check_writable(blocker / "run")
    check_writable(tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()  # checked, nothing created


def test_one_worker_claims_the_final_model_and_the_next_is_told_who(tmp_path):
    layout = RunLayout(tmp_path)
    with claim_final_model(layout):
        holder = json.loads(layout.final_lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        second = claim_final_model(layout)
        with pytest.raises(FinalModelClaimed, match=rf"trained by {socket.gethostname()} pid {os.getpid()}"):
            second.__enter__()
    assert not layout.final_lock.exists()


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path):
    layout = RunLayout(tmp_path)
    layout.final_lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "since": "then"}))
    with claim_final_model(layout):
        assert json.loads(layout.final_lock.read_text())["pid"] == os.getpid()


def test_the_final_summary_is_written_and_read_by_one_pair_of_functions(tmp_path):
    summary = final_summary(
        final_max_epochs=3,
        combine="ensemble",
        combined=["trial 0", "trial 8"],
        candidates=[{"label": "trial 0", "dev_mse": 0.07}],
    )
    path = tmp_path / "final_model.json"
    write_final_summary(summary, path)
    assert read_final_summary(path) == summary
    assert read_final_summary(tmp_path / "none.json") is None


def test_offset_advice_names_encoder_dropout_only_where_it_is_on():
    assert "encoder_dropout 0" in offset_advice(0.1)
    assert "encoder_dropout 0" in offset_advice(None)  # None keeps the encoder's own dropout
    assert "encoder_dropout 0" not in offset_advice(0.0)
    assert "off already" in offset_advice(0.0)
