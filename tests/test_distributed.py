"""Rank agreement: in a single process rank 0's value is the value itself (the 2-process case runs in
tests/test_workers.py under accelerate launch)."""

from qrm_hf.run.distributed import from_rank_zero


def test_single_process_returns_the_value_itself():
    value = {"prune": True}
    assert from_rank_zero(value) is value
