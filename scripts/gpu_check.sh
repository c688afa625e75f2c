#!/usr/bin/env bash
# The GPU check, prepared for one call of the device tool (about 8 minutes on an H100/H200):
#   run: bash scripts/gpu_check.sh   carry: [".whl"]   timeout_s: 540
# The GPU machine has torch and transformers but no internet: the wheels it lacks are carried in .whl/
# (made here by scripts/gpu_wheels.sh). Writes $OUT/gpu_check.json and $OUT/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 LAB_DEMO_DIR=/tmp/lab-demo XDG_CACHE_HOME=/tmp/lab-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu_check.log" || true
python3 -m lab gpucheck --shape "${SHAPE:-llama-3.2-1b}" --out "$OUT/gpu_check.json" 2>&1 | tee -a "$OUT/gpu_check.log"
