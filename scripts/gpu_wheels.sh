#!/usr/bin/env bash
# The wheels the GPU machine's image lacks, for Python 3.12, into .whl/ (git-ignored). The image has torch,
# transformers, accelerate, pandas, pyarrow, scipy, scikit-learn, peft, jinja2, absl-py, tqdm. A call
# carries at most 64 MiB with the working tree, and duckdb (~24 MB) and bitsandbytes (~43 MB) together
# exceed it, so there are two sets, one per call of scripts/gpu_check.sh on the same warm machine:
#   bash scripts/gpu_wheels.sh suite   # duckdb, captum, plotly, rouge-score, nltk: the audit suite
#   bash scripts/gpu_wheels.sh bnb     # bitsandbytes: the quantization audit's paper backend
# sae-lens and its dependency tree do not fit either call: the sae audit is reported as not installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
case "${1:-suite}" in
  suite) binary="duckdb==2.0.0 captum==0.9.0 plotly==7.1.0 narwhals nltk"; source="rouge-score==0.1.2" ;;
  bnb) binary="bitsandbytes==0.50.2"; source="" ;;
  *) echo "usage: $0 suite|bnb" >&2; exit 2 ;;
esac
for pkg in $binary; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$pkg"
done
[ -z "$source" ] || python3 -m pip wheel -q --no-deps -w .whl $source
du -sh .whl
