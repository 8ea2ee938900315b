#!/usr/bin/env bash
# Create .venv and install qrm_hf with its test tools. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# A pinned torch first: on a CPU machine an unpinned one would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==${QRM_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# OpenRLHF's own remote-reward client, for the /get_reward tests: its code, without the GPU stack it lists
# (deepspeed, flash-attn, ray, vllm), which that client does not import.
.venv/bin/python -m pip install --quiet --no-deps "openrlhf==0.11.2"
.venv/bin/python -m pip install --quiet "aiohttp>=3.9" "pylatexenc>=2.10"
# The storage tests start a private PostgreSQL server from Debian's server binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "note: install the PostgreSQL server (e.g. apt-get install postgresql) for the storage tests" >&2
    fi
fi
