#!/usr/bin/env bash
# One device call: install, then the stages named in STAGES (default: tests baselines).
#   tests      GPU tests; every measured error goes to $OUT/errors_all.csv
#   baselines  scripts/baselines.py: eager forward/backward vs dense on the BASELINES.md rows
#   bench      ss1bench bench (gpt2 + llama sets, fp16 forward, CUDA-graph timing)
# Usage on the GPU machine: OUT=/some/dir STAGES="tests bench" bash scripts/gpu_check.sh
set -u
OUT=${OUT:-out}
STAGES=${STAGES:-tests baselines}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

run_tests() {
    local errdir
    errdir=$(mktemp -d)
    SS1BENCH_ERRORS_CSV="$errdir/errors.csv" timeout 420 python3 -m pytest -q -m gpu -n 8 tests/test_gpu.py \
        > "$OUT/pytest_gpu.log" 2>&1
    echo "gpu tests rc=$?"; tail -3 "$OUT/pytest_gpu.log"
    python3 - "$OUT" "$errdir" <<'PY'
import glob, sys
import pandas as pd
out, errdir = sys.argv[1], sys.argv[2]
files = glob.glob(f"{errdir}/errors.csv.*")
if not files:
    sys.exit("no errors.csv: the GPU tests recorded nothing")
errors = pd.concat([pd.read_csv(f) for f in files])
errors.to_csv(f"{out}/errors_all.csv", index=False)
print(errors.groupby(["quantity", "dtype"])["rel_error"].max().unstack().to_string())
PY
}

run_baselines() {
    timeout 240 python3 scripts/baselines.py --out "$OUT/baselines_fp16.csv" --backward > "$OUT/baselines.log" 2>&1
    echo "baselines rc=$?"; tail -22 "$OUT/baselines.log"
}

run_bench() {
    timeout 300 ss1bench bench --shapes gpt2,llama --redn-factors 2,4,8,16 --dtype fp16 --mode fwd --cuda-graph \
        --warmup-ms 10 --rep-ms 40 --out "$OUT" > "$OUT/bench.log" 2>&1
    echo "bench rc=$?"; tail -40 "$OUT/bench.log"
}

for stage in $STAGES; do
    case "$stage" in
        tests) run_tests ;;
        baselines) run_baselines ;;
        bench) run_bench ;;
        *) echo "unknown stage $stage (tests, baselines, bench)"; exit 2 ;;
    esac
done
