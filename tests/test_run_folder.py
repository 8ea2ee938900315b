"""The run folder: writable or refused, one final-model writer, final_model.json through one typed class, and every
file a run leaves written and read through `run.folder`."""

import json
import os
import socket

import numpy as np
import pytest
from conftest import final_summary

from qrm_hf.run.config import ConfigError, RunLayout
from qrm_hf.run.folder import (
    FinalModelClaimed,
    check_writable,
    claim_final_model,
    load_test_predictions,
    offset_advice,
    read_final_summary,
    read_probe,
    read_test_metrics,
    save_test_predictions,
    write_final_summary,
    write_probe,
    write_test_metrics,
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


def test_predictions_round_trip_exactly(tmp_path):
    path = save_test_predictions((np.array([[0.123456789], [0.9]]),), [1.0, 0.2], tmp_path / "p.json")
    predicted, true = load_test_predictions(path)
    assert predicted.tolist() == [0.123456789, 0.9] and true.tolist() == [1.0, 0.2]


def test_nan_predictions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="predictions contain 1 values that are nan"):
        save_test_predictions([0.1, float("nan")], [0.0, 1.0], tmp_path / "p.json")


def test_a_file_the_run_has_not_written_reads_as_none(tmp_path):
    layout = RunLayout(tmp_path)
    assert read_test_metrics(layout.test_metrics) is None and read_probe(layout.probe) is None
    assert load_test_predictions(layout.test_predictions) is None and read_final_summary(layout.final_summary) is None


def test_what_the_run_folder_writes_it_reads_back(tmp_path):
    layout = RunLayout(tmp_path)
    write_test_metrics({"mse": 0.05, "pearson": float("nan")}, layout.test_metrics)
    write_probe({"families": {"shuffled": {"mean_gap": -0.3}}}, layout.probe)
    assert read_test_metrics(layout.test_metrics)["pearson"] is None
    assert "pearson" in read_test_metrics(layout.test_metrics)["undefined"]
    assert read_probe(layout.probe) == {"families": {"shuffled": {"mean_gap": -0.3}}}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["probe.json", "test_metrics.json"]
