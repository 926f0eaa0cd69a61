#!/usr/bin/env bash
# Train several demo-model recipes side by side on one GPU (the model is tiny and the GPU
# mostly waits on kernel launches, so three processes share it well). Each variant writes
# $OUT/<name>/ (weights, demo.json, summary.json, train.log); compare their summary.json.
#   BUDGET=360 bash benchmarks/train_demo_sweep.sh
set -u
OUT=${OUT:-runs/train_demo_sweep}
BUDGET=${BUDGET:-360}
run() {
  local name=$1; shift
  mkdir -p "$OUT/$name"
  python3 benchmarks/train_demo.py --budget "$BUDGET" --ft-budget 0 --out "$OUT/$name" "$@" \
    > "$OUT/$name/stdout.log" 2>&1 &
}
run base
run big_aux --tokens-per-step 68864 --lr 3e-3 --aux-weight 1.0
run slow --lr 1e-3 --seed 1
wait
for d in "$OUT"/*/; do echo "== $d"; tail -n 4 "$d/stdout.log"; done
