#!/usr/bin/env bash
# One device command: install what the GPU machine lacks (from files carried in .whl/),
# then run benchmarks/latency_model.py with the given arguments. Run from the repo root:
#
#   bash benchmarks/device_latency.sh --visual 16384 --profile --budget 420
#
# .whl/ (git-ignored, carried) may hold: wheels (transformers 5.24 and what it needs, optuna...),
# and mamba_ssm-2.3.2.post1.tar.gz (its pure-Python part installs in seconds without the
# CUDA build; the Mamba2 path NemotronH uses is Triton only). Results go to $OUT.
set -euo pipefail
# Same environment as every device run: wheels and mamba-ssm from .whl/ into /tmp/site.
. scripts/device_env.sh
set -euo pipefail
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,driver_version,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.max.sm \
  --format=csv,noheader || true
python3 benchmarks/latency_model.py "$@"
