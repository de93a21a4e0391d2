#!/usr/bin/env bash
# The GPU checks in one go, on a machine with a CUDA GPU and hepta's dependencies installed:
# the GPU tests, then the decode, training, serving, MoE-layer and long-prompt benchmarks on the GPU. Logs go to $1 (default runs/gpu).
#
#     bash benchmarks/gpu.sh [LOG_DIR]
#
# Each part has its own time limit, so one that hangs does not take the others with it.
set -u
logs=${1:-runs/gpu}
mkdir -p "$logs"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
run() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$logs/$name.log" | tail -n 40
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run tests 230 "$python" -m pytest -q -p no:cacheprovider tests/gpu tests/test_devices.py
run decode 50 "$python" benchmarks/decode.py --device cuda --rounds 5 --json "$logs/decode.json"
run train_step 100 "$python" benchmarks/train_step.py --device cuda --bf16 --preset small --batch 16 --seq 1024 \
    --rounds 5 --warmup 2 --json "$logs/train_step.json"
run serve 170 "$python" benchmarks/serve.py --device cuda --shape olmoe-200m --dtype bfloat16 --rounds 1 \
    --output-len 32 --clients 16 --requests-per-client 1 --json "$logs/serve.json"
run moe_layer 120 "$python" benchmarks/moe_layer.py --device cuda --rounds 5 --shapes 64x8x256 128x8x128 \
    --json "$logs/moe_layer.json"
run long_prompt 90 "$python" benchmarks/long_prompt.py --device cuda --rounds 3
