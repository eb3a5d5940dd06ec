#!/usr/bin/env bash
# One device call: install, GPU tests, then `ss1bench bench` (fp16, forward, CUDA-graph timing)
# and the eager baseline table. Usage on the GPU machine: OUT=/some/dir bash scripts/gpu_bench.sh
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
timeout 200 python3 -m pytest -q -m gpu -n 8 tests/test_gpu.py > "$OUT/pytest_gpu.log" 2>&1
echo "gpu tests rc=$?"; tail -2 "$OUT/pytest_gpu.log"
timeout 300 ss1bench bench --shapes gpt2,llama --redn-factors 2,4,8,16 --dtype fp16 --mode fwd --cuda-graph \
    --warmup-ms 10 --rep-ms 40 --out "$OUT" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; tail -40 "$OUT/bench.log"
