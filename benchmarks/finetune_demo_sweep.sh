#!/usr/bin/env bash
# The finetuning modes of benchmarks/finetune_demo.py side by side on one GPU, from the
# weights in $INIT (default: the shipped ones). Writes $OUT/<variant>/demo.{safetensors,json}.
set -u
OUT=${OUT:-runs/finetune_demo}
INIT=${INIT:-autoprune/demo/weights}
BUDGET=${BUDGET:-200}
run() {
  local name=$1; shift
  mkdir -p "$OUT/$name"
  python3 benchmarks/finetune_demo.py --init-from "$INIT" --budget "$BUDGET" --out "$OUT/$name" "$@" \
    > "/tmp/finetune_$name.log" 2>&1 &
}
for v in ${VARIANTS:-fixed random random_lr1e-3 control}; do
  case $v in
    fixed) run fixed --mode fixed ;;
    random) run random --mode random ;;
    random_lr1e-3) run random_lr1e-3 --mode random --lr 1e-3 ;;
    random_p0.5_lr1e-3) run random_p0.5_lr1e-3 --mode random --lr 1e-3 --reduce-prob 0.5 ;;
    control) run control --mode control ;;
    *) echo "unknown variant $v" >&2 ;;
  esac
done
wait
grep -h "done:\|test (\|keep 0\|wrote\|Error\|error" /tmp/finetune_*.log
