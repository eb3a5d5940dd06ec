#!/usr/bin/env bash
# One device call: install, then the stages named in STAGES (default: tests baselines).
#   tests      GPU tests; every measured error goes to $OUT/errors_all.csv
#   baselines  scripts/baselines.py: eager forward/backward vs dense on the BASELINES.md rows
#   bench      ss1bench bench (gpt2 + llama sets, fp16 forward, CUDA-graph timing)
#   tune       the issue's timed run (gpt2, c = 2/4/8/16, fp16, alone on GPU 0) and, with 4 GPUs, the
#              rest of the shipped database (llama fp16+bf16, gpt2 bf16) on GPUs 1-3 at the same
#              time, all into $OUT/db/H200.json (concurrent writers under the file lock)
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

run_tune() {
    local gpus db common
    gpus=$(nvidia-smi -L | wc -l)
    db="$OUT/db/H200.json"
    mkdir -p "$OUT/db"
    common=(--gpu H200 --redn-factors 2,4,8,16 --db "$db")
    if [ "$gpus" -ge 4 ]; then
        timeout 560 ss1bench tune "${common[@]}" --devices 1,2 --shapes llama --dtype fp16,bf16 \
            --compile-workers 10 --results-csv "$OUT/tune_llama.csv" > "$OUT/tune_llama.log" 2>&1 &
        timeout 560 ss1bench tune "${common[@]}" --devices 3 --shapes gpt2 --dtype bf16 \
            --compile-workers 14 --results-csv "$OUT/tune_gpt2_bf16.csv" > "$OUT/tune_gpt2_bf16.log" 2>&1 &
        workers=24
    else
        workers=0  # default: every core for the one device
    fi
    local wargs=()
    [ "$workers" -gt 0 ] && wargs=(--compile-workers "$workers")
    { time timeout 480 ss1bench tune "${common[@]}" --devices 0 --shapes gpt2 --dtype fp16 "${wargs[@]}" \
        --results-csv "$OUT/tune_gpt2_fp16.csv" ; } > "$OUT/tune_gpt2_fp16.log" 2>&1
    echo "tune gpt2 fp16 rc=$?"; tail -8 "$OUT/tune_gpt2_fp16.log"
    if [ "$gpus" -lt 4 ]; then
        timeout "${REST_S:-60}" ss1bench tune "${common[@]}" --shapes gpt2,llama --dtype fp16,bf16 \
            --results-csv "$OUT/tune_rest.csv" > "$OUT/tune_rest.log" 2>&1
    fi
    wait
    for f in "$OUT"/tune_*.log; do echo "== $f"; grep -E "items to tune|real|ETA" "$f" | tail -3; done
    # every candidate's row, one archive (few files come back from a device call)
    (cd "$OUT" && tar czf tune_results.tgz tune_*.csv && rm -f tune_*.csv)
    ss1bench db validate "$db"; ss1bench db show "$db" --no-launch | head -5
    python3 -m pytest -q -m gpu tests/test_tuning_gpu.py 2>&1 | tail -2
}

for stage in $STAGES; do
    case "$stage" in
        tests) run_tests ;;
        baselines) run_baselines ;;
        bench) run_bench ;;
        tune) run_tune ;;
        *) echo "unknown stage $stage (tests, baselines, bench, tune)"; exit 2 ;;
    esac
done
