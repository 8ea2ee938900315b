#!/usr/bin/env bash
# Create .venv and install qrm_hf with its test tools. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# A pinned torch first: on a CPU machine an unpinned one would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==${QRM_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
