"""Offline evaluation of the launch-config heuristic against the tuned records, from the tuner's raw
results (every candidate it timed), leaving each layer shape out of the heuristic's examples.

For every tuned item (kind, dtype, K, N, c, structure, M bucket) of the database:

- the **tuned** time is the database record's config as the raw CSV timed it (a config timed in
  the confirm phase counts with its confirm time, else the median of its screening times);
- the **heuristic** pick is :func:`ss1bench.kernels.heuristic.learned_config` with the examples of
  every *other* layer shape ``(K, N)`` (the shape's own records, all dtypes, c and M buckets, left
  out), or the fixed rule where it has none, at the GPU's shared-memory limit and SM count; its
  time is read from the same item's raw rows. A pick the tuner never timed for that item has no
  time: it is counted apart (``not measured``), never guessed;
- the **old rule** (``fallback_config``, the heuristic before the learned rule) is read the same way.

Ratios are tuned time / picked time (1 = as fast as tuned). Geometric means by regime and kernel
group: ``forward`` (forward and forward_rotated), ``backward`` (grad_input and grad_weight), and
``fwd+bwd`` (one ratio per layer and M: the sum of the forward, grad_input and grad_weight tuned
times over the sum of the picks' times). When several raw files time the same item (a later
re-tune), the file whose timing of the record's config matches the record's ``ms`` best is used.

    python scripts/heuristic_eval.py                      # H200: tuning_db/H200.json, reports/H200/raw
    python scripts/heuristic_eval.py --db DB.json --out OUT.csv RAW.csv.gz ...

Writes one row per item to ``reports/<GPU>/heuristic_vs_tuned.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
from pathlib import Path

import pandas as pd

from ss1bench.kernels import heuristic
from ss1bench.kernels.config import LaunchConfig, Problem, fallback_config
from ss1bench.tuning import results
from ss1bench.tuning.db import read_database
from ss1bench.tuning.gpu import KNOWN_SHARED_MEMORY
from ss1bench.tuning.records import TuningDatabase
from ss1bench.tuning.space import describe

ROOT = Path(__file__).resolve().parents[1]
#: Regimes of the table, in order, and the kernel groups.
REGIMES = (1, 16, 64, 4096, 16384)
GROUPS = {"forward": ("forward", "forward_rotated"), "backward": ("grad_input", "grad_weight")}
FWD_BWD = ("forward", "grad_input", "grad_weight")
#: The issue's targets (geometric mean of tuned / heuristic time).
TARGETS = {"decode": 0.90, "prefill": 0.95, "row": 0.70}


def problem_of(item: tuple, device_name: str) -> Problem:
    kind, dtype, k, n, c, bk, bn, m = item
    return Problem(kind, m, k, n, c, bk, bn, dtype, device_name)


def evaluate(database: TuningDatabase, raw_paths: list[Path], shared_memory_limit: int,
             sm_count: int) -> pd.DataFrame:
    """One row per item: tuned and picked configs and times (see the module doc)."""
    items = results.match_items(database, [results.read_results(path) for path in raw_paths])
    examples = heuristic.examples_from_records(database.launch)
    device = database.metadata.get("device_name", "")
    rows = []
    for item, (text, times, _) in sorted(items.items()):
        record = database.launch[text]
        problem = problem_of(item, device)
        others = heuristic.leave_shape_out(examples, problem.in_features, problem.out_features)
        found = heuristic.nearest_config(problem, others, shared_memory_limit, sm_count)
        pick, source = (found[0], found[1].key) if found else (fallback_config(problem, shared_memory_limit),
                                                               "fixed rule")
        old = fallback_config(problem, shared_memory_limit)
        tuned_config = LaunchConfig.from_dict(record["config"])
        tuned_ms = times[tuned_config]
        row = dict(zip(results.ITEM_FIELDS, item, strict=True))
        row.update(tuned_config=describe(tuned_config), tuned_ms=tuned_ms, heuristic_config=describe(pick),
                   heuristic_from=source, heuristic_ms=times.get(pick, math.nan),
                   heuristic_measured=pick in times, old_rule_config=describe(old),
                   old_rule_ms=times.get(old, math.nan), old_rule_measured=old in times)
        row["ratio"] = tuned_ms / row["heuristic_ms"] if row["heuristic_measured"] else math.nan
        row["old_rule_ratio"] = tuned_ms / row["old_rule_ms"] if row["old_rule_measured"] else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _geomean(values) -> float:
    values = [v for v in values if v == v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def fwd_bwd_ratios(frame: pd.DataFrame, column: str = "heuristic_ms") -> pd.DataFrame:
    """One row per (dtype, K, N, c, M) with all three kinds timed: summed tuned over summed picked."""
    parts = frame[frame.kind.isin(FWD_BWD)]
    rows = []
    for key, group in parts.groupby(["dtype", "K", "N", "c", "M"]):
        if len(group) != len(FWD_BWD):
            continue
        picked = group[column].sum(min_count=len(FWD_BWD))
        rows.append(dict(zip(("dtype", "K", "N", "c", "M"), key, strict=True),
                         ratio=group.tuned_ms.sum() / picked if picked == picked else math.nan))
    return pd.DataFrame(rows, columns=["dtype", "K", "N", "c", "M", "ratio"])


def _in_regime(rows: pd.DataFrame, regime) -> pd.DataFrame:
    """Rows of one M bucket, of ``decode`` (M <= 64), ``prefill`` or ``all``."""
    if regime == "all":
        return rows
    if regime == "decode":
        return rows[rows.M <= 64]
    if regime == "prefill":
        return rows[rows.M > 64]
    return rows[rows.M.eq(regime)]


def summary(frame: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """(table rows, failed targets): per regime and group, the heuristic's geometric mean and
    minimum, and the old rule's geometric mean."""
    table, failed = [], []
    groups = {name: (frame[frame.kind.isin(kinds)], "ratio", "old_rule_ratio") for name, kinds in GROUPS.items()}
    groups["fwd+bwd"] = (fwd_bwd_ratios(frame), "ratio", None)
    old_fwd_bwd = fwd_bwd_ratios(frame, "old_rule_ms")
    for regime in (*REGIMES, "decode", "prefill", "all"):
        row = {"M": regime}
        for name, (rows, ratio, old_ratio) in groups.items():
            chosen = _in_regime(rows, regime)
            old = _in_regime(old_fwd_bwd, regime)["ratio"] if old_ratio is None else chosen[old_ratio]
            row[name] = _geomean(chosen[ratio])
            row[f"{name} min"] = chosen[ratio].min() if len(chosen) else math.nan
            row[f"{name} old rule"] = _geomean(old)
            if regime in ("decode", "prefill") and row[name] < TARGETS[regime]:
                failed.append(f"{name} {regime} {row[name]:.3f} < {TARGETS[regime]}")
        table.append(row)
    return table, failed


def print_report(frame: pd.DataFrame, worst: int = 12) -> list[str]:
    table, failed = summary(frame)
    print("tuned time / heuristic time, geometric mean (min); old rule = the fixed rule before the learned one")
    print(f"{'M':>8} | {'forward':>15} {'old':>6} | {'backward':>15} {'old':>6} | {'fwd+bwd':>15} {'old':>6}")
    for row in table:
        cells = []
        for name in ("forward", "backward", "fwd+bwd"):
            cells.append(f"{row[name]:6.3f} ({row[name + ' min']:5.2f}) {row[name + ' old rule']:6.3f}")
        print(f"{row['M']!s:>8} | " + " | ".join(cells))
    unmeasured = frame[~frame.heuristic_measured]
    print(f"items: {len(frame)}; heuristic picks the tuner never timed for that item (not counted above): "
          f"{len(unmeasured)}; old rule not timed: {int((~frame.old_rule_measured).sum())}")
    below = frame[frame.ratio < TARGETS["row"]]
    print(f"rows below {TARGETS['row']}: {len(below)} of {int(frame.heuristic_measured.sum())} (per kernel); "
          f"fwd+bwd rows below: {int((fwd_bwd_ratios(frame).ratio < TARGETS['row']).sum())}")
    if len(below):
        failed.append(f"{len(below)} rows below {TARGETS['row']}")
    print("worst rows:")
    for _, row in frame.sort_values("ratio").head(worst).iterrows():
        print(f"  {row['kind']:15} {row['dtype']} M={row.M:<5} K={row.K:<5} N={row.N:<5} c={row.c:<2} {row.ratio:.3f}  "
              f"tuned {row.tuned_config} {row.tuned_ms * 1e3:.1f} us, heuristic {row.heuristic_config} "
              f"{row.heuristic_ms * 1e3:.1f} us (from {row.heuristic_from})")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", nargs="*", type=Path, help="raw tune CSVs (default reports/<GPU>/raw/tune_*.csv.gz)")
    parser.add_argument("--db", type=Path, default=ROOT / "tuning_db" / f"{heuristic.REFERENCE_GPU}.json")
    parser.add_argument("--out", type=Path, default=None, help="CSV (default reports/<GPU>/heuristic_vs_tuned.csv)")
    parser.add_argument("--sm-count", type=int, default=heuristic.DEFAULT_SM_COUNT)
    parser.add_argument("--shared-memory", type=int, default=None, help="bytes (default: the GPU's known limit)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    database = read_database(args.db)
    if database is None:
        parser.error(f"{args.db}: no such file")
    raw = args.raw or [Path(p) for p in sorted(glob.glob(str(ROOT / "reports" / database.gpu / "raw" / "tune_*.csv*")))]
    limit = args.shared_memory or KNOWN_SHARED_MEMORY.get(database.gpu, 232448)
    frame = evaluate(database, raw, limit, args.sm_count)
    out = args.out or ROOT / "reports" / database.gpu / "heuristic_vs_tuned.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    failed = print_report(frame)
    print(f"wrote {out}")
    if failed:
        print("targets missed: " + "; ".join(failed))
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
