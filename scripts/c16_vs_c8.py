"""Shipped shapes whose SS1 layer is slower at c = 16 than at c = 8, read off ``ss1bench bench`` CSVs.

A layer at c = 16 moves half the weight of c = 8 and does half the product's work, so it should
never be slower; where it is, the tuned records (or the kernels) leave speed on the table. For each
provider (``ss1_tuned``, ``ss1_cached``; ``--providers`` to change), dtype, mode and layer shape
``(M, K, N)`` (a shape two sets share counts once), the median time at c = 16 is compared with c = 8;
rows slower by more than ``--tolerance`` (default 3%, about the spread of one bench row) are listed.

    python scripts/c16_vs_c8.py reports/H200/bench_*.csv [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

PROVIDERS = ("ss1_tuned", "ss1_cached")
KEY = ["provider", "dtype", "mode", "M", "K", "N"]


def slower_at_16(frame: pd.DataFrame, providers=PROVIDERS, tolerance: float = 0.03) -> pd.DataFrame:
    """One row per (provider, dtype, mode, M, K, N) with both c = 8 and c = 16 timed: ``ms_c8``,
    ``ms_c16``, ``ratio`` (c16 / c8), ``slower`` (ratio > 1 + tolerance), ``layer``."""
    rows = frame[frame.provider.isin(providers) & frame.redn_factor.isin([8, 16])]
    if "status" in rows:
        rows = rows[rows.status == "ok"]
    rows = rows.drop_duplicates([*KEY, "redn_factor"])
    table = rows.pivot_table(index=KEY, columns="redn_factor", values="median_ms", aggfunc="first")
    layers = rows.drop_duplicates(KEY).set_index(KEY)["layer"] if "layer" in rows else None
    table = table.reindex(columns=[8, 16])  # a factor with no row at all: an empty comparison
    table = table.dropna(subset=[8, 16]).rename(columns={8: "ms_c8", 16: "ms_c16"}).reset_index()
    table.columns.name = None
    table["ratio"] = table.ms_c16 / table.ms_c8
    table["slower"] = table.ratio > 1 + tolerance
    if layers is not None:
        table["layer"] = [layers.get(tuple(key), "") for key in table[KEY].itertuples(index=False)]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", type=Path)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--check", action="store_true", help="exit 1 when any shape is slower at c = 16")
    args = parser.parse_args(argv)
    frame = pd.concat([pd.read_csv(path) for path in args.csv], ignore_index=True)
    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    table = slower_at_16(frame, providers, args.tolerance)
    if table.empty:
        parser.error(f"no layer shape of {', '.join(providers)} is timed at both c = 8 and c = 16 in "
                     f"{', '.join(str(path) for path in args.csv)}")
    for (provider, dtype, mode), group in table.groupby(["provider", "dtype", "mode"]):
        slow = group[group.slower]
        print(f"{provider} {dtype} {mode}: {len(slow)} of {len(group)} shapes slower at c = 16 than at c = 8 "
              f"(by > {args.tolerance:.0%}; worst {group.ratio.max():.2f}x)")
        for row in slow.sort_values("ratio", ascending=False).to_dict("records"):
            print(f"    {row.get('layer', ''):26} {row['M']:>6} x {row['K']:>5} x {row['N']:>5}  "
                  f"c8 {row['ms_c8'] * 1e3:7.1f} us  c16 {row['ms_c16'] * 1e3:7.1f} us  {row['ratio']:.2f}x")
    slower = int(table.slower.sum())
    print(f"total: {slower} of {len(table)} (provider, dtype, mode, shape) rows slower at c = 16")
    return 1 if args.check and slower else 0


if __name__ == "__main__":
    sys.exit(main())
