#!/usr/bin/env bash
# Run every CPU benchmark one after another (nothing else should load the machine meanwhile); each prints
# its own table. Usage: bash scripts/bench/run_all.sh [output folder]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/bench}
mkdir -p "$out"
py=.venv/bin/python
run() { local name=$1; shift; echo "== $name: $*"; /usr/bin/time -v "$@" >"$out/$name.log" 2>&1 || { tail -20 "$out/$name.log"; exit 1; }; }
run train_throughput $py scripts/bench/train_throughput.py --rows 256 --repeats 3 --max-lengths 128 256
run inference $py scripts/bench/inference.py --repeats 3 --seed-queries 400
run search_overhead $py scripts/bench/search_overhead.py --trials 20
run pruning $py scripts/bench/pruning.py --trials 10 --pruners none median hyperband
