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
SITE=/tmp/site
mkdir -p "$SITE"
shopt -s nullglob
wheels=(.whl/*.whl)
if (( ${#wheels[@]} )); then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" "${wheels[@]}"
fi
for sdist in .whl/mamba_ssm-*.tar.gz; do
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip install -q --no-deps --no-build-isolation \
    --target "$SITE" "$sdist"
done
# The source tree last: a carried autoprune wheel would win, otherwise the checkout is used.
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.max.sm \
  --format=csv,noheader || true
python3 benchmarks/latency_model.py "$@"
