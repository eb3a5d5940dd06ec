#!/usr/bin/env bash
# One device call: install the checkout, then run the stages named in STAGES (default: tests).
#   tests      the GPU tests; every measured error goes to $OUT/errors_all.csv
#   host       host time per call of SSL against nn.Linear (scripts/host_profile.py)
#   autocast   one layer in the training setting (float32 parameters, bf16 autocast) against nn.Linear and
#              the ideal, GPU and wall time (scripts/autocast_layer_bench.py at c = 4 and 8; AUTOCAST_ARGS added)
#   baselines  eager forward/backward against dense on the original kernel's baseline rows (scripts/baselines.py)
#   bench      ss1bench bench: gpt2 + llama + bert sets, fp16 and bf16, fwd and fwd+bwd, CUDA-graph timing
#   e2e        ss1bench e2e: whole models, dense and SS1 side by side, eager / compiled / CUDA graphs,
#              inference and training steps (E2E_MODELS, E2E_COMPILE, E2E_ARGS override the defaults)
#   tune       ss1bench tune of the shipped shape sets into $OUT/<GPU>.json (TUNE_ARGS adds options)
#   retune     re-tune a slice of the shipped records and measure it: ss1bench tune --force
#              --no-structure-search of RETUNE_SHAPES (gpt2) at RETUNE_M (1,16,64), RETUNE_C (8,16),
#              RETUNE_DTYPES (fp16), RETUNE_KINDS (forward,forward_rotated) into $OUT/H200_retune.json,
#              then the bench of that slice with the shipped database and with the re-tuned records,
#              their time ratios, and (when RETUNE_C has 8 and 16) scripts/c16_vs_c8.py on both
#   decode     retune with its defaults: GPT-2 decode forward at c = 8 and 16
#   frozendecode  scripts/compiled_decode_ab.py: compiled SS1 layers at decode sizes with and without
#              Inductor's parameter freezing, against compiled nn.Linear and the eager cached path
#              (FROZEN_ARGS overrides --shapes gpt2,llama --m 1,16,64 --redn-factors 4)
#   trainprof  scripts/train_step_profile.py on compiled GPT-2 training steps (dense and SS1) at
#              TRAINPROF_LAYERS (6,12) layers, with TRAINPROF_ARGS added (e.g. --python-functions 40
#              --code-dir $OUT/code): wall against kernel and host time, the GPU's idle gaps, the
#              garbage collector per step
#   trainab    the compiled GPT-2 training step (TRAINAB_LAYERS, 12) of SS1 under each package tree of
#              TRAINAB_TREES (space-separated folders holding an ss1bench/ and tuning_db/, "." for this
#              checkout; made with `git archive REV ss1bench tuning_db | tar -x -C out/REV` and carried),
#              each tree with its own Inductor cache, TRAINAB_ROUNDS (2) rounds in alternating order,
#              dense once, TRAINAB_ARGS added (e.g. --launch-host): wall against kernel time, launches;
#              with TRAINAB_TASKSET (a CPU list) every process runs under `taskset -c` on those CPUs
#              (output files named *_pinned)
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

run_autocast() {
    local c
    for c in 4 8; do
        # shellcheck disable=SC2086  # AUTOCAST_ARGS is a list of options
        timeout 120 python3 scripts/autocast_layer_bench.py --redn-factors "$c" ${AUTOCAST_ARGS:-} \
            > "$OUT/autocast_layer_c$c.txt" 2>&1
        echo "autocast layer bench c=$c rc=$?"; grep -v -i warn "$OUT/autocast_layer_c$c.txt"
    done
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

run_retune() {
    local db="$OUT/H200_retune.json" which dtype
    local shapes=${RETUNE_SHAPES:-gpt2} m=${RETUNE_M:-1,16,64} c=${RETUNE_C:-8,16}
    local dtypes=${RETUNE_DTYPES:-fp16} kinds=${RETUNE_KINDS:-forward,forward_rotated}
    timeout "${TUNE_S:-240}" ss1bench tune --gpu H200 --shapes "$shapes" --m-buckets "$m" --redn-factors "$c" \
        --dtype "$dtypes" --kinds "$kinds" --force --no-structure-search --db "$db" \
        --results-csv "$OUT/tune_retune.csv" > "$OUT/tune_retune.log" 2>&1
    echo "retune tune rc=$?"; tail -5 "$OUT/tune_retune.log"
    for which in shipped retuned; do
        for dtype in ${dtypes//,/ }; do
            # the re-tuned records are read over the shipped ones; "shipped": no user database
            SS1BENCH_DB=$([ "$which" = retuned ] && echo "$db" || echo "$OUT/no_user_db") \
                timeout "${BENCH_S:-120}" ss1bench bench --shapes "$shapes" --m-buckets "$m" --redn-factors "$c" \
                --dtype "$dtype" --mode fwd --providers ss1_tuned,ss1_cached --cuda-graph --warmup-ms 5 --rep-ms 20 \
                --out "$OUT/retune_$which" > "$OUT/retune_${which}_$dtype.log" 2>&1
            echo "retune bench $which $dtype rc=$?"
        done
        if [[ ",$c," == *,8,* && ",$c," == *,16,* ]]; then python3 scripts/c16_vs_c8.py "$OUT/retune_$which"/*.csv; fi
    done
    python3 - "$OUT" <<'PY'
import glob, sys
import numpy as np
import pandas as pd
out = sys.argv[1]
key = ["provider", "dtype", "redn_factor", "M", "K", "N"]


def timings(which: str) -> pd.Series:
    frame = pd.concat(pd.read_csv(f) for f in glob.glob(f"{out}/retune_{which}/*.csv"))
    frame = frame[frame.status == "ok"] if "status" in frame else frame
    return frame.drop_duplicates(key).set_index(key).median_ms


shipped, retuned = timings("shipped"), timings("retuned")
ratio = (retuned / shipped).dropna()
print("re-tuned / shipped time, geometric mean by provider, dtype, c, M:")
print(ratio.groupby(level=["provider", "dtype", "redn_factor", "M"])
      .apply(lambda r: float(np.exp(np.log(r).mean()))).unstack("M").round(3).to_string())
PY
}

run_frozendecode() {
    timeout "${FROZEN_S:-420}" python3 scripts/compiled_decode_ab.py \
        ${FROZEN_ARGS:---shapes gpt2,llama --m 1,16,64 --redn-factors 4} --out "$OUT/compiled_decode_ab.csv" \
        > "$OUT/compiled_decode_ab.log" 2>&1
    echo "compiled_decode_ab rc=$?"; grep -v -i warn "$OUT/compiled_decode_ab.log" | tail -40
}

run_trainprof() {
    local layers
    for layers in ${TRAINPROF_LAYERS//,/ }; do
        # shellcheck disable=SC2086  # TRAINPROF_ARGS is a list of options
        timeout "${TRAINPROF_S:-200}" python3 scripts/train_step_profile.py --modes compiled --layers "$layers" \
            ${TRAINPROF_ARGS:-} > "$OUT/train_step_profile_${layers}.txt" 2>&1
        echo "train_step_profile $layers layers rc=$?"; tail -3 "$OUT/train_step_profile_${layers}.txt"
    done
}

run_trainab() {
    local round tree trees name pythonpath pin=() tag=""
    if [ -n "${TRAINAB_TASKSET:-}" ]; then pin=(taskset -c "$TRAINAB_TASKSET"); tag=_pinned; fi
    # shellcheck disable=SC2086  # TRAINAB_ARGS is a list of options
    for round in $(seq "${TRAINAB_ROUNDS:-2}"); do
        trees=${TRAINAB_TREES:-.}
        # every other round in reverse order, so no tree always runs first after the compiles
        [ $((round % 2)) = 0 ] && trees=$(echo "$trees" | tr ' ' '\n' | tac | tr '\n' ' ')
        for tree in $trees; do
            name=$(basename "$(realpath "$tree")")
            pythonpath=$([ "$tree" = . ] && echo "" || realpath "$tree")
            PYTHONPATH=$pythonpath TORCHINDUCTOR_CACHE_DIR="/tmp/trainab_cache_$name" timeout "${TRAINAB_S:-200}" \
                "${pin[@]}" python3 scripts/train_step_profile.py --modes compiled --providers ss1 \
                --layers "${TRAINAB_LAYERS:-12}" ${TRAINAB_ARGS:-} > "$OUT/trainab_${name}_$round$tag.txt" 2>&1
            echo "trainab $name round $round$tag rc=$? $(grep -E '^compiled ' "$OUT/trainab_${name}_$round$tag.txt")"
            grep -E '^---- compiled .* by thread' "$OUT/trainab_${name}_$round$tag.txt" | sed 's/.*switches): /    threads: /'
        done
    done
    timeout "${TRAINAB_S:-200}" "${pin[@]}" python3 scripts/train_step_profile.py --modes compiled --providers dense \
        --layers "${TRAINAB_LAYERS:-12}" ${TRAINAB_ARGS:-} > "$OUT/trainab_dense$tag.txt" 2>&1
    echo "trainab dense$tag rc=$? $(grep -E '^compiled ' "$OUT/trainab_dense$tag.txt")"
    grep -E '^---- compiled .* by thread' "$OUT/trainab_dense$tag.txt" | sed 's/.*switches): /    threads: /'
}

for stage in $STAGES; do
    case "$stage" in
        tests) run_tests ;;
        host) run_host ;;
        autocast) run_autocast ;;
        baselines) run_baselines ;;
        bench) run_bench ;;
        e2e) run_e2e ;;
        tune) run_tune ;;
        retune) run_retune ;;
        decode) RETUNE_M=1,16,64 RETUNE_C=8,16 RETUNE_DTYPES=fp16 RETUNE_KINDS=forward,forward_rotated run_retune ;;
        frozendecode) run_frozendecode ;;
        trainprof) TRAINPROF_LAYERS=${TRAINPROF_LAYERS:-6,12} run_trainprof ;;
        trainab) run_trainab ;;
        *) echo "unknown stage $stage (tests host autocast baselines bench e2e tune retune decode frozendecode trainprof trainab)"
           exit 2 ;;
    esac
done
