"""The performance targets of docs/perf-notes.md, read off ``ss1bench bench`` CSVs.

Prints, per dtype, the figures the targets table quotes: prefill forward fraction of ideal
(gpt2 + llama, prefill: M >= 1024) and the bound of its two-pass formulation, decode forward (M <= 64,
by c and by M, with and without the rotated-weight cache), forward + backward on gpt2 at
M >= 8192 (speed against dense and fraction of ideal), and the cases slower than dense where the
ideal is >= 1.2x faster. A shape timed in two sets counts once, as in the report's headline.

    python3 scripts/perf_targets.py reports/H200/bench_*_fwd.csv reports/H200/bench_*_fwdbwd.csv
"""

from __future__ import annotations

import argparse

import pandas as pd

from ss1bench.kernels.config import DECODE_MAX_M
from ss1bench.report import PREFILL_MIN_M

CS = [2, 4, 8, 16]
#: prefill forward goal (fraction of ideal) per reduction factor
PREFILL_GOAL = {2: 0.80, 4: 0.80, 8: 0.70, 16: 0.70}


def _by_c(rows: pd.DataFrame, column: str, how: str = "median") -> str:
    return " / ".join(f"{getattr(rows[rows.redn_factor == c][column], how)():.3f}" for c in CS)


def _prefill_fwd(frame: pd.DataFrame) -> None:
    rows = frame[(frame["mode"] == "fwd") & frame.shape_set.isin(["gpt2", "llama"]) & (frame.M >= PREFILL_MIN_M)]
    for provider in ("ss1_tuned", "ss1_cached"):
        p = rows[rows.provider == provider]
        goal = p.redn_factor.map(PREFILL_GOAL)
        met = (p.fraction_of_ideal >= goal).groupby(p.redn_factor).mean()
        at_goal = " / ".join(f"{met.get(c, float('nan')):.0%}" for c in CS)
        print(f"  prefill fwd {provider:10s} fraction median {_by_c(p, 'fraction_of_ideal')}"
              f"  min {_by_c(p, 'fraction_of_ideal', 'min')}"
              f"  rows at goal {at_goal}")


def _two_pass_bound(frame: pd.DataFrame, sketch_tbps: float) -> None:
    """Prefill forward against the bound of the two-pass formulation (``sketch_gemm``): the sketch
    reads x and writes xs at ``sketch_tbps`` (reads + writes), then cuBLAS runs at K/c (the
    ``dense_reduced`` provider's time in the same run); no gap between the two launches."""
    rows = frame[(frame["mode"] == "fwd") & frame.shape_set.isin(["gpt2", "llama"]) & (frame.M >= PREFILL_MIN_M)]
    key = ["M", "K", "N", "redn_factor"]
    ss1 = rows[rows.provider == "ss1_tuned"].set_index(key)
    gemm = rows[rows.provider == "dense_reduced"].set_index(key).median_ms
    if ss1.empty or gemm.empty:
        return
    m, k, c = (ss1.index.get_level_values(n) for n in ("M", "K", "redn_factor"))
    itemsize = 4 if ss1.dtype.iloc[0] == "fp32" else 2
    sketch_ms = m * k * (1 + 1 / c) * itemsize / (sketch_tbps * 1e12) * 1e3
    ss1 = ss1.assign(bound=ss1.ideal_ms / (sketch_ms + gemm.reindex(ss1.index)))
    ss1 = ss1.assign(of_bound=ss1.fraction_of_ideal / ss1.bound).reset_index()
    goal = ss1.redn_factor.map(PREFILL_GOAL)
    under = ss1[ss1.fraction_of_ideal < goal]
    print(f"  prefill fwd two-pass bound (sketch at {sketch_tbps} TB/s + cuBLAS at K/c): fraction median"
          f" {_by_c(ss1, 'bound')}; measured / bound median {_by_c(ss1, 'of_bound')}")
    print(f"  prefill fwd rows under their goal: {len(under)} of {len(ss1)}, of which"
          f" {(under.bound < goal[under.index]).sum()} with the two-pass bound under the goal too")


def _decode_fwd(frame: pd.DataFrame) -> None:
    rows = frame[(frame["mode"] == "fwd") & (frame.M <= DECODE_MAX_M)]
    for provider in ("ss1_tuned", "ss1_cached"):
        p = rows[rows.provider == provider]
        ms = sorted(int(m) for m in p.M.unique())
        by_m = " / ".join(f"{p[p['M'] == m].fraction_of_ideal.median():.2f}" for m in ms)
        print(f"  decode fwd  {provider:10s} fraction median {_by_c(p, 'fraction_of_ideal')}"
              f"  by M = {' / '.join(map(str, ms))}: {by_m}  min {p.fraction_of_ideal.min():.2f}")


def _fwdbwd(frame: pd.DataFrame) -> None:
    p = frame[(frame["mode"] == "fwd+bwd") & (frame.shape_set == "gpt2") & (frame.M >= 8192)
              & (frame.provider == "ss1_tuned")]
    if p.empty:
        return
    print(f"  fwd+bwd gpt2 M>=8192: speed vs dense min {_by_c(p, 'speedup_vs_dense', 'min')}"
          f"  median {_by_c(p, 'speedup_vs_dense')}")
    print(f"  fwd+bwd gpt2 M>=8192: fraction median {_by_c(p, 'fraction_of_ideal')}"
          f"  min {_by_c(p, 'fraction_of_ideal', 'min')}"
          f"  rows under 0.6: {(p.fraction_of_ideal < 0.6).sum()} of {len(p)}")
    for r in p[p.fraction_of_ideal < 0.6].itertuples():
        print(f"    {r.layer} M={r.M} c={r.redn_factor}: {r.fraction_of_ideal:.3f}")


def _never_worse(frame: pd.DataFrame) -> None:
    p = frame[frame.provider.isin(["ss1_tuned", "ss1_cached"]) & (frame.dense_ms / frame.ideal_ms >= 1.2)]
    for (provider, mode), g in p.groupby(["provider", "mode"]):
        slow = g[g.speedup_vs_dense < 1]
        where = slow.M.map(lambda m: "M=1" if m == 1 else "M=16" if m == 16 else "M=64" if m == 64 else "M>=1024")
        counts = ", ".join(f"{k} {v}" for k, v in where.value_counts().sort_index().items())
        print(f"  never worse {provider:10s} {mode:8s}: {len(slow)} of "
              f"{len(g)} slower ({counts or 'none'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", help="ss1bench bench CSV files")
    parser.add_argument("--sketch-tbps", type=float, default=3.4,
                        help="the sketch kernel's bandwidth, reads + writes (H200: 3.3-3.4, docs/perf-notes.md)")
    args = parser.parse_args()
    frame = pd.concat([pd.read_csv(path) for path in args.csv], ignore_index=True)
    # a shape in two sets (or twice in one) is timed once; count it once
    frame = frame.drop_duplicates(["dtype", "mode", "provider", "M", "K", "N", "redn_factor"])
    for dtype, rows in frame.groupby("dtype"):
        print(f"{dtype} (c = {' / '.join(map(str, CS))})")
        _prefill_fwd(rows)
        _two_pass_bound(rows, args.sketch_tbps)
        _decode_fwd(rows)
        _fwdbwd(rows)
        _never_worse(rows)


if __name__ == "__main__":
    main()
