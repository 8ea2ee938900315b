"""Command-line parsing shared by the scripts: RunConfig fields become flags, YAML sets their defaults."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from .run_config import RunConfig

_PACKAGE = Path(__file__).resolve().parent
# configs/ at the top of a source checkout, or inside the package of an installed wheel.
DEFAULT_CONFIG = next(
    (
        path
        for path in (_PACKAGE.parent / "configs" / "default.yaml", _PACKAGE / "configs" / "default.yaml")
        if path.is_file()
    ),
    _PACKAGE.parent / "configs" / "default.yaml",
)
YAML_ONLY = {"search_space", "training", "sampler_options", "warm_start"}


def _flag_type(field: dataclasses.Field) -> Any:
    text = str(field.type)
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def make_parser(description: str) -> argparse.ArgumentParser:
    """A parser with `--config` and one flag per RunConfig field (None = keep the YAML's value)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML run configuration (default: %(default)s).")
    for field in dataclasses.fields(RunConfig):
        if field.name in YAML_ONLY:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if field.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, type=_flag_type(field), default=None, help=help_text)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = {key: value for key, value in vars(args).items() if key != "config"}
    return RunConfig.from_yaml(args.config, **overrides)


def setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def search_main(argv: list[str] | None = None) -> int:
    """`scripts/search.py` and the `qrm-search` command: search, retrain, report, save (and push)."""
    import json
    import sys

    from .data import DataFormatError
    from .run_config import ConfigError
    from .search import SamplerOptionsError, StudyMismatchError
    from .search_space import SearchSpaceError
    from .storage import StorageError

    parser = make_parser("Search hyperparameters, retrain the best model on train+dev, report test metrics, save it.")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        config = config_from_args(args)
        from .pipeline import run_pipeline

        result = run_pipeline(config)
    except (
        ConfigError,
        SearchSpaceError,
        SamplerOptionsError,
        DataFormatError,
        StorageError,
        StudyMismatchError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the study is saved; run the same command to resume it", file=sys.stderr)
        return 130
    from accelerate import PartialState

    if result.model_dir is not None and PartialState().is_main_process:
        print(json.dumps({"test_metrics": result.test_metrics, "model_dir": str(result.model_dir)}, indent=2))
    return 0


def push_main(argv: list[str] | None = None) -> int:
    """`scripts/push.py`: upload a saved model folder (with its card) to the Hub."""
    import sys

    parser = argparse.ArgumentParser(description="Push a saved query reward model folder to the Hugging Face Hub.")
    parser.add_argument("folder", help="A saved model folder, e.g. results/<model>/final_model.")
    parser.add_argument("repo_id", help="Hub repository, e.g. your-org/query-reward.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Branch to push to (default: main).")
    parser.add_argument("--commit-message", default=None, help="Commit message on the Hub.")
    args = parser.parse_args(argv)
    setup_logging()
    from .final import push_folder
    from .scoring import check_reward_model

    try:
        check_reward_model(args.folder)
        url = push_folder(Path(args.folder), args.repo_id, args.private, args.commit_message, args.revision)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(url)
    return 0


__all__ = ["DEFAULT_CONFIG", "config_from_args", "make_parser", "push_main", "search_main", "setup_logging"]
