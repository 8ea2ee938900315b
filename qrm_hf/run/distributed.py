"""Agreement between the ranks of a distributed run: rank 0 decides, every other rank follows."""

from __future__ import annotations

from typing import Any

from accelerate import PartialState
from accelerate.utils import broadcast_object_list


def from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` on every rank of a distributed run; `value` itself in a single process.

    Call it only once TrainingArguments exist: they set up the distributed state that PartialState reads.
    """
    if PartialState().num_processes == 1:
        return value
    return broadcast_object_list([value], from_process=0)[0]


__all__ = ["from_rank_zero"]
