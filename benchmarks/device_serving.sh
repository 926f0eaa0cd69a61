#!/usr/bin/env bash
# One device command for the serving work: install what the GPU machine lacks (from .whl/, see
# scripts/device_env.sh), run the GPU tests of ReducedPrefill, then benchmarks/serving.py.
# Run from the repository root:
#
#   bash benchmarks/device_serving.sh            # tests (~1 min) + benchmark (~3 min)
#   bash benchmarks/device_serving.sh --batches 1,4,8 --budget-s 150
#
# Writes $OUT/serving.json (and $OUT/gpu_serving_tests.txt); extra arguments go to serving.py.
set -uo pipefail
. scripts/device_env.sh
export PYTHONPATH="$PWD:/tmp/site"  # this checkout's autoprune (with its kernels), the carried wheels after it
OUT="${OUT:-benchmarks/results}"
nvidia-smi --query-gpu=name,driver_version,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.max.sm \
  --format=csv,noheader || true
python3 -P -m pytest -q --import-mode=append -p no:cacheprovider tests/test_gpu_serving.py 2>&1 \
  | tee "$OUT/gpu_serving_tests.txt" | tail -15
python3 -P benchmarks/serving.py --out "$OUT/serving.json" "$@"
