#!/usr/bin/env bash
# One device call: install the checkout, then run the stages named in STAGES (default: tests).
#   tests      the GPU tests; every measured error goes to $OUT/errors_all.csv
#   host       host time per call of SSL against nn.Linear (scripts/host_profile.py)
#   baselines  eager forward/backward against dense on the original kernel's baseline rows (scripts/baselines.py)
#   bench      ss1bench bench: gpt2 + llama + bert sets, fp16 and bf16, fwd and fwd+bwd, CUDA-graph timing
#   e2e        ss1bench e2e: whole models, dense and SS1 side by side, eager / compiled / CUDA graphs,
#              inference and training steps (E2E_MODELS, E2E_COMPILE, E2E_ARGS override the defaults)
#   tune       ss1bench tune of the shipped shape sets into $OUT/<GPU>.json (TUNE_ARGS adds options)
# Usage on the GPU machine: OUT=/some/dir STAGES="tests e2e" bash scripts/gpu_check.sh
set -u
OUT=${OUT:-out}
STAGES=${STAGES:-tests}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

run_tests() {
    local errdir
    errdir=$(mktemp -d)
    SS1BENCH_ERRORS_CSV="$errdir/errors.csv" timeout "${TESTS_S:-300}" python3 -m pytest -q -m gpu -n 8 \
        -p no:cacheprovider tests/test_gpu.py > "$OUT/pytest_gpu.log" 2>&1
    echo "gpu tests rc=$?"; grep -E "passed|failed" "$OUT/pytest_gpu.log" | tail -1
    grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.log" | head -20
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

run_host() {
    timeout 120 python3 scripts/host_profile.py > "$OUT/host_profile.txt" 2>&1
    echo "host profile rc=$?"; grep -E "SSL|nn.Linear" "$OUT/host_profile.txt"
}

run_baselines() {
    timeout 240 python3 scripts/baselines.py --backward --out "$OUT/baselines.csv" > "$OUT/baselines.log" 2>&1
    echo "baselines rc=$?"; tail -20 "$OUT/baselines.log"
}

run_bench() {
    for dtype in fp16 bf16; do
        for mode in fwd fwd+bwd; do
            timeout "${BENCH_S:-280}" ss1bench bench --shapes gpt2,llama,bert --redn-factors 2,4,8,16 --cuda-graph \
                --warmup-ms 10 --rep-ms 30 --dtype "$dtype" --mode "$mode" --out "$OUT" > "$OUT/bench_${dtype}_${mode}.log" 2>&1
            echo "bench $dtype $mode rc=$?"
        done
    done
}

run_e2e() {
    timeout "${E2E_S:-480}" ss1bench e2e --models "${E2E_MODELS:-gpt2-padded,gpt2-medium,llama-1b}" \
        --redn-factors 4 --compile "${E2E_COMPILE:-none,default,reduce-overhead}" ${E2E_ARGS:-} \
        --out "$OUT" 2>&1 | tee "$OUT/e2e.log" | tail -40
}

run_tune() {
    timeout "${TUNE_S:-540}" ss1bench tune --gpu H200 --shapes gpt2 --db "$OUT/H200.json" ${TUNE_ARGS:-} \
        > "$OUT/tune.log" 2>&1
    echo "tune rc=$?"; tail -15 "$OUT/tune.log"
}

for stage in $STAGES; do
    case "$stage" in
        tests) run_tests ;;
        host) run_host ;;
        baselines) run_baselines ;;
        bench) run_bench ;;
        e2e) run_e2e ;;
        tune) run_tune ;;
        *) echo "unknown stage $stage (tests host baselines bench e2e tune)"; exit 2 ;;
    esac
done
