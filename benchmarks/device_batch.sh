#!/usr/bin/env bash
# The GPU runs of one stop in one device command (each step bounded by `timeout`, its output kept
# under $OUT even when a later step fails). Run from the repository root after
# scripts/build_device_wheels.sh, carrying .whl/:
#
#   bash benchmarks/device_batch.sh 1     # tests, serving, Qwen3.5, Falcon-H1
#   bash benchmarks/device_batch.sh 2     # kernel tests, Falcon-H1, Zamba2, latency few-shot (16k)
#   bash benchmarks/device_batch.sh 3     # search scaling baseline (1 worker), hf omni
#   bash benchmarks/device_batch.sh 4     # every GPU test (kernels first, then runtime/serving), scaling baseline
#   bash benchmarks/device_batch.sh 5     # hf omni measured study (16 routed experts), scaling baseline (16 trials)
#   bash benchmarks/device_batch.sh 6     # runtime/serving GPU tests (verbose), serving batches 8 and 16
#   bash benchmarks/device_batch.sh 7     # hf omni measured study (predictor corrected by measurement), serving batches
#   bash benchmarks/device_batch.sh 8     # scaling baseline on a cold machine (Triton compiles in it), runtime GPU tests
#   bash benchmarks/device_batch.sh 9     # scaling baseline on a cold machine, hf omni on 4 videos x 3 questions
#   bash benchmarks/device_batch.sh 10    # scaling baseline alone, 8 trials (what a session's last minutes allow)
#   bash benchmarks/device_batch.sh 11    # serving (headline 16k, ragged 4 and 8, batch-4 kernel profile), Qwen3.5
#                                         # with fla and profiled scoring share, ragged/serving GPU tests
#   bash benchmarks/device_batch.sh 12    # Qwen3.5 prefill (fla, DeltaNet exact-form kernel), kernels_gpu (checks, timings)
#   bash benchmarks/device_batch.sh 13    # Qwen3.5 prefill again, latency few-shot at 16k (per-prune-point correction), GPU serving tests
set -uo pipefail
part="${1:?part 1 to 13}"
. scripts/device_env.sh
export PYTHONPATH="$PWD:/tmp/site"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT/run"
R="$OUT/run"
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${secs}s)"
  timeout "$secs" "$@" > "$R/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc in $((SECONDS - t0))s"; tail -25 "$R/$name.log"
  tar -C "$OUT" -czf "$OUT/run.tgz" run
}
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader > "$R/nvidia-smi.txt"
if [ "$part" = 1 ]; then
  step gpu_tests 170 python3 -P -m pytest -q --import-mode=append -p no:cacheprovider \
      tests/test_gpu_runtime.py tests/kernels tests/adapters/test_gpu_families.py tests/test_gpu_serving.py
  step serving 190 python3 -P benchmarks/serving.py --out "$R/serving.json" --budget-s 150
  step prefill_speed_linear 110 python3 -P benchmarks/prefill_speed_linear.py --shape qwen3.5-9b --visual 16384 \
      --rep-ms 1000 --out "$R/prefill_speed_linear.json"
  step prefill_speed_falcon 60 python3 -P benchmarks/prefill_speed.py --shape falcon-h1-7b --visual 16384 \
      --rep-ms 800 --output "$R/prefill_speed-falcon-h1-7b.json"
elif [ "$part" = 2 ]; then
  step kernel_tests 100 python3 -P -m pytest -q --import-mode=append -p no:cacheprovider \
      tests/kernels/test_deltanet_evidence.py tests/adapters/test_gpu_families.py
  step prefill_speed_falcon 120 python3 -P benchmarks/prefill_speed.py --shape falcon-h1-7b --visual 16384 \
      --rep-ms 600 --output "$R/prefill_speed-falcon-h1-7b.json"
  step prefill_speed_zamba2 120 python3 -P benchmarks/prefill_speed.py --shape zamba2-7b --visual 16384 \
      --rep-ms 600 --output "$R/prefill_speed-zamba2-7b.json"
  step latency_quick 190 python3 -P benchmarks/latency_model.py --visual 16384 --no-energy --repeats 3 --budget 150 --quick-from autoprune/data/profiles/measured/h100-sxm5-80gb/nemotron-h-8b.json --out "$R"
elif [ "$part" = 4 ]; then
  # -rA: each test's outcome by name in the log (the last runs timed out without saying which ran)
  step gpu_kernel_tests 230 python3 -P -m pytest -q -rA --durations=15 --import-mode=append -p no:cacheprovider \
      tests/kernels tests/adapters/test_gpu_families.py
  step gpu_runtime_tests 190 python3 -P -m pytest -q -rA --durations=15 --import-mode=append -p no:cacheprovider \
      tests/test_gpu_runtime.py tests/test_gpu_serving.py tests/test_runtime_ragged.py
  step search_scaling 130 python3 -P benchmarks/search_scaling.py --measure --trials 24 \
      --out "$R/search_scaling_h200.json"
elif [ "$part" = 5 ]; then
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  step hf_omni 390 python3 -P benchmarks/gpu_hf_omni.py "$R/hf_omni" --experts 16
  step search_scaling 170 python3 -P benchmarks/search_scaling.py --measure --trials 16 \
      --out "$R/search_scaling_h200.json"
elif [ "$part" = 6 ]; then
  # -v: each test's name as it finishes (part 4 timed out after 5 tests without naming them)
  step gpu_runtime_tests 330 python3 -P -m pytest -v --durations=15 --import-mode=append -p no:cacheprovider \
      tests/test_gpu_runtime.py tests/test_gpu_serving.py tests/test_runtime_ragged.py
  step serving_batches 200 python3 -P benchmarks/serving.py --out "$R/serving_batches.json" --headline 16384 \
      --batches 8,16 --budget-s 160
elif [ "$part" = 7 ]; then
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  step hf_omni 410 python3 -P benchmarks/gpu_hf_omni.py "$R/hf_omni" --experts 16
  step serving_batches 150 python3 -P benchmarks/serving.py --out "$R/serving_batches.json" --headline 16384 \
      --batches 8,16 --budget-s 120
elif [ "$part" = 8 ]; then
  step search_scaling 250 python3 -P benchmarks/search_scaling.py --measure --trials 16 \
      --out "$R/search_scaling_h200.json"
  step gpu_runtime_tests 240 python3 -P -m pytest -v --durations=15 --import-mode=append -p no:cacheprovider \
      tests/test_gpu_runtime.py tests/test_gpu_serving.py tests/test_runtime_ragged.py
elif [ "$part" = 9 ]; then
  step search_scaling 250 python3 -P benchmarks/search_scaling.py --measure --trials 16 \
      --out "$R/search_scaling_h200.json"
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  step hf_omni 300 python3 -P benchmarks/gpu_hf_omni.py "$R/hf_omni" --experts 16 --videos 4 --extra-trials 4
elif [ "$part" = 10 ]; then
  step search_scaling 280 python3 -P benchmarks/search_scaling.py --measure --trials 8 \
      --out "$R/search_scaling_h200.json"
elif [ "$part" = 11 ]; then
  step serving 250 python3 -P benchmarks/serving.py --out "$R/serving.json" --headline 16384 --batches 4,8 \
      --profile-batches 4 --budget-s 200
  step prefill_speed_linear 170 python3 -P benchmarks/prefill_speed_linear.py --shape qwen3.5-9b --visual 16384 \
      --rep-ms 800 --out "$R/prefill_speed_linear.json"
  step gpu_serving_tests 130 python3 -P -m pytest -v --import-mode=append -p no:cacheprovider \
      tests/test_gpu_serving.py tests/test_runtime_ragged.py tests/profiler/test_ranges.py
elif [ "$part" = 12 ]; then
  step prefill_speed_linear 200 python3 -P benchmarks/prefill_speed_linear.py --shape qwen3.5-9b --visual 16384 \
      --rep-ms 800 --out "$R/prefill_speed_linear.json"
  step kernels_gpu 230 env OUT="$R" python3 -P benchmarks/kernels_gpu.py --sweep-after-s 100
elif [ "$part" = 13 ]; then
  step prefill_speed_linear 160 python3 -P benchmarks/prefill_speed_linear.py --shape qwen3.5-9b --visual 16384 \
      --rep-ms 600 --out "$R/prefill_speed_linear.json"
  step latency_quick_16k 190 python3 -P benchmarks/latency_model.py --visual 16384 --no-energy --repeats 3 --budget 170 --quick-from autoprune/data/profiles/measured/h100-sxm5-80gb/nemotron-h-8b.json --out "$R"
  step gpu_serving_tests 170 python3 -P -m pytest -v --import-mode=append -p no:cacheprovider tests/test_gpu_serving.py
else
  step latency_quick_64k 160 python3 -P benchmarks/latency_model.py --visual 65536 --no-energy --repeats 2 --budget 140 --quick-from autoprune/data/profiles/measured/h100-sxm5-80gb/nemotron-h-8b.json --out "$R"
  step search_scaling 130 python3 -P benchmarks/search_scaling.py --measure --trials 16 \
      --out "$R/search_scaling_h200.json"
  step hf_omni 170 python3 -P benchmarks/gpu_hf_omni.py "$R/hf_omni" --experts 64 --extra-trials 0
fi
tar -C "$OUT" -czf "$OUT/run.tgz" run && rm -rf "$R"
