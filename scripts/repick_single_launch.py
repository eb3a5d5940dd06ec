"""Re-choose the decode ``forward`` records of a tuning database with the tuner's one-launch rule,
from the raw results the records were chosen from (no GPU needed).

The tuner times CUDA-graph replays; at decode sizes the plain forward's ``sketch_gemm`` is three
launches (weight rotation, sketch, cuBLAS), whose host cost an eager call pays and a graph hides
(``ss1bench.tuning.selection.launches``). The tuner records a one-launch config within
``TuneOptions.single_launch_margin`` of a faster ``sketch_gemm``; this script applies that rule to
records chosen without it, using the same item's measured candidates: the record becomes the
fastest one-launch candidate (its time, dense time and gate errors as measured), and keeps its
date (the measurement is that run's) with a ``repicked`` note saying what it replaced.

    python scripts/repick_single_launch.py tuning_db/H200.json reports/H200/raw/tune_*.csv.gz [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ss1bench.kernels.config import LaunchConfig
from ss1bench.tuning import results
from ss1bench.tuning.db import read_database, write_records
from ss1bench.tuning.keys import LaunchKey
from ss1bench.tuning.records import TuningDatabase
from ss1bench.tuning.selection import launches, prefer_single_launch, prefers_single_launch
from ss1bench.tuning.space import describe
from ss1bench.tuning.work import TuneOptions


def repick(database: TuningDatabase, raw_paths: list[Path],
           margin: float = TuneOptions().single_launch_margin) -> TuningDatabase:
    """The records of ``database`` the rule changes, as a database of updates."""
    frames = [results.read_results(path) for path in raw_paths]
    matched = results.match_items(database, frames)
    errors = [results.gate_errors(frame) for frame in frames]
    updates = TuningDatabase(gpu=database.gpu)
    for item, (text, times, index) in sorted(matched.items()):
        key = LaunchKey.parse(text)
        record = database.launch[text]
        config = LaunchConfig.from_dict(record["config"])
        if not prefers_single_launch(key.kind, key.m) or launches(key.kind, config) == 1:
            continue
        ranked = sorted(times.items(), key=lambda entry: entry[1])
        chosen, ms = prefer_single_launch(ranked, key.kind, key.m, margin)
        if chosen == config or chosen not in errors[index].get(item, {}):
            continue
        rel_err, max_err = errors[index][item][chosen]
        updates.launch[text] = {
            **record, "config": chosen.to_dict(), "ms": round(ms, 6), "speedup": round(record["dense_ms"] / ms, 4),
            "gate_rel_err": float(f"{rel_err:.3e}"), "gate_max_err": float(f"{max_err:.3e}"),
            "repicked": (f"one launch within {margin:.0%} of {describe(config)} ({record['ms']:.6f} ms, three "
                         "launches), by scripts/repick_single_launch.py from the same run's measurements"),
        }
    return updates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path)
    parser.add_argument("raw", nargs="+", type=Path, help="the tuner's results CSVs (gzip allowed)")
    parser.add_argument("--margin", type=float, default=TuneOptions().single_launch_margin)
    parser.add_argument("--dry-run", action="store_true", help="list the changes, write nothing")
    args = parser.parse_args(argv)
    database = read_database(args.database)
    if database is None:
        parser.error(f"{args.database}: no such file")
    updates = repick(database, args.raw, args.margin)
    for text, record in sorted(updates.launch.items(), key=lambda entry: LaunchKey.parse(entry[0])):
        before = database.launch[text]
        print(f"{text:48} {describe(LaunchConfig.from_dict(before['config'])):24} {before['ms'] * 1e3:6.2f} us -> "
              f"{describe(LaunchConfig.from_dict(record['config'])):24} {record['ms'] * 1e3:6.2f} us")
    print(f"{len(updates.launch)} records {'would change' if args.dry_run else 'changed'}")
    if updates.launch and not args.dry_run:
        write_records(args.database, updates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
