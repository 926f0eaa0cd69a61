#!/usr/bin/env bash
# On the CPU machine: fill the git-ignored .whl/ with what the GPU machine lacks
# (it has no network): autoprune built from this checkout, transformers 5.24,
# optuna 5 and its dependencies, flash-linear-attention (the Gated DeltaNet kernels transformers'
# Qwen3.5 / Qwen3-Next layers call when it is importable) and the mamba-ssm sdist.
set -e
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
rm -f .whl/autoprune-*.whl
python -m pip wheel -q --no-deps --no-build-isolation -w .whl . 2>/dev/null || python -m pip wheel -q --no-deps -w .whl .
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
for spec in transformers==5.24.0 optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3 greenlet==3.5.6 regex==2026.11.19 \
    flash-linear-attention==0.6.0 fla-core==0.6.0; do
  name=${spec%%==*}
  ls .whl | grep -qi "^${name}-" || python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl "$spec"
done
[ -f .whl/mamba_ssm-2.3.2.post1.tar.gz ] || cp ../shared/sdist/mamba_ssm-2.3.2.post1.tar.gz .whl/
du -sh .whl
