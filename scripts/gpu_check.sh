#!/usr/bin/env bash
# One device call: install, GPU tests (errors to CSV), baseline timing table.
# Usage on the GPU machine: OUT=/some/dir bash scripts/gpu_check.sh [pytest args...]
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
ERRDIR=$(mktemp -d)
SS1BENCH_ERRORS_CSV="$ERRDIR/errors.csv" timeout 420 python3 -m pytest -q -m gpu -n 8 tests/test_gpu.py "$@" \
    > "$OUT/pytest_gpu.log" 2>&1
echo "gpu tests rc=$?"; tail -5 "$OUT/pytest_gpu.log"
timeout 240 python3 scripts/baselines.py --out "$OUT/baselines_fp16.csv" --backward > "$OUT/baselines.log" 2>&1
echo "baselines rc=$?"
python3 - "$OUT" "$ERRDIR" <<'PY'
import sys, pandas as pd
out, errdir = sys.argv[1], sys.argv[2]
try:
    import glob
    e = pd.concat([pd.read_csv(f) for f in glob.glob(f"{errdir}/errors.csv.*")])
    e.to_csv(f"{out}/errors_all.csv", index=False)
    print(e.groupby(["quantity", "dtype"])["rel_error"].max().unstack().to_string())
except Exception as exc:
    print("no errors.csv:", exc)
PY
tail -20 "$OUT/baselines.log"
