#!/usr/bin/env bash
# Source this on the GPU machine (device tool) from the repository root:
#   . scripts/device_env.sh
# Installs the wheels carried in .whl/ (autoprune itself, transformers 5.24, optuna 5
# and its dependencies) and the pure-Python part of mamba-ssm (its Mamba2 path is
# Triton only; the Mamba1 CUDA extension is not built — autoprune's import shim covers
# its unguarded import) into /tmp/site, and puts /tmp/site on PYTHONPATH.
# Build .whl/ on the CPU machine first: scripts/build_device_wheels.sh
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip install -q --no-deps --no-build-isolation \
    --no-cache-dir --target /tmp/site .whl/mamba_ssm-2.3.2.post1.tar.gz
export PYTHONPATH=/tmp/site
export PYTHONUNBUFFERED=1
set +e
python3 -c "import torch, transformers, triton, optuna; print('device env: torch', torch.__version__, '| transformers', transformers.__version__, '| triton', triton.__version__, '| optuna', optuna.__version__, '|', torch.cuda.get_device_name())"
