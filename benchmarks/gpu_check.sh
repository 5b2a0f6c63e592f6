#!/usr/bin/env bash
# One command that checks and times goemo on a lent GPU (about 8 minutes), or rehearses the
# same code on the CPU with --cpu-dry-run. Figures go to OUT/gpu_check.{json,md}.
#   benchmarks/gpu_check.sh --out "$OUT" --minilm carry/minilm-bf16 --data-dir carry/goemotions
#   benchmarks/gpu_check.sh --cpu-dry-run --out /tmp/gpu-check
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
