"""`qrm search`: search hyperparameters, train the final model, report on test, save (and push) it.

qrm search --config cpu                                   # a packaged config by name
qrm search --config my-run.yaml --n-trials 30 --force     # flags override the YAML
accelerate launch scripts/search.py --config default      # several GPUs, mixed precision
"""

from __future__ import annotations

import argparse
import json
import sys

from . import error_exit, setup_logging

DESCRIPTION = "Search hyperparameters, train the final model, report test metrics, save (and push) it."


def make_parser() -> argparse.ArgumentParser:
    """`--config` plus one flag per RunConfig field (transformers' HfArgumentParser; no torch imported)."""
    from ..run.config import make_run_parser

    return make_run_parser(DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the test metrics and model folder printed (rank 0), 2 for bad input, 1 for a run with nothing
    worth saving (every trial diverged, say), 130 on Ctrl-C."""
    from ..run.config import ConfigError, parse_run_config

    parser = make_parser()
    try:
        config = parse_run_config(parser, argv)
    except ConfigError as error:
        return error_exit(error)
    setup_logging()
    from ..data import DataFormatError
    from ..modeling.model_files import EncoderError
    from ..pipeline import RunFailed, run_pipeline
    from ..search.space import SearchSpaceError
    from ..search.storage import StorageError
    from ..search.study import SamplerOptionsError, StudyMismatchError
    from ..training.final import TrainingDiverged

    try:
        result = run_pipeline(config)
    except (
        ConfigError,
        SearchSpaceError,
        SamplerOptionsError,
        DataFormatError,
        EncoderError,
        StorageError,
        StudyMismatchError,
    ) as error:
        return error_exit(error)
    except (RunFailed, TrainingDiverged) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the study is saved; run the same command to resume it", file=sys.stderr)
        return 130
    from accelerate import PartialState

    from ..run.folder import finite_json

    if result.model_dir is not None and PartialState().is_main_process:
        printed = {"test_metrics": finite_json(result.test_metrics), "model_dir": str(result.model_dir)}
        print(json.dumps(printed, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
