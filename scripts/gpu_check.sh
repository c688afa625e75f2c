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
# The served-model check (issue 18): vLLM serving the tiny demo's NPO model, direct and reasoning through it
# against the same model loaded here. vLLM is not on the GPU machine and its wheels exceed what a call
# carries, so this step runs only where vLLM is importable, and says so otherwise.
if python3 -c "import vllm" >/dev/null 2>&1; then
  DEMO="$(python3 -c 'from lab.core import settings; print(settings.cache_dir() / "demo-tiny")')"
  python3 -m vllm.entrypoints.openai.api_server --model "$DEMO/models/npo" --served-model-name demo-npo \
    --port 8011 --max-model-len 256 >"$OUT/vllm.log" 2>&1 &
  VLLM=$!
  trap 'kill $VLLM 2>/dev/null || true' EXIT
  for _ in $(seq 120); do curl -sf http://127.0.0.1:8011/v1/models >/dev/null && break; sleep 1; done
  for side in "demo:npo" "openai+http://127.0.0.1:8011/v1#demo-npo?tokenizer=$DEMO/models/npo"; do
    LAB_DEMO_DIR="$DEMO" python3 -m lab audit --base demo:base --unlearned "$side" --audits direct,reasoning \
      --limit 20 --device cuda --db "$OUT/served.duckdb" --json "$OUT/served-$([ "$side" = demo:npo ] && echo local || echo vllm).json" \
      2>&1 | tee -a "$OUT/gpu_check.log"
  done
else
  echo "vLLM is not installed on this machine: the served-model check did not run" | tee -a "$OUT/gpu_check.log"
fi
