"""The tuner's results CSV (``--results-csv``, one row per candidate; ``outcome.CSV_FIELDS``) read back.

Used offline: ``scripts/heuristic_eval.py`` (the heuristic's picks against the records) and
``scripts/repick_single_launch.py`` (re-choosing records from what was measured). An *item* is
``(kind, dtype, K, N, c, block_k, block_n, M)``; its *times* map every config timed for it to
milliseconds: the median of its confirm-phase times where it has some (longer runs), else the
median of its other times (screen, refine, probe).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ss1bench.kernels.config import LaunchConfig

from .keys import LaunchKey
from .records import TuningDatabase

CONFIG_FIELDS = ("tile_m", "tile_n", "tile_k", "num_warps", "num_stages", "group_m", "split_m", "algorithm",
                 "split_k")
ITEM_FIELDS = ("kind", "dtype", "K", "N", "c", "block_k", "block_n", "M")


def _optional_int(row, name: str) -> int:
    """``row[name]`` as an int; 0 where the row has none (results CSVs written before the field)."""
    value = row.get(name)
    return 0 if value is None or value == "" or pd.isna(value) else int(value)


def config_of(row) -> LaunchConfig:
    """The LaunchConfig of one results row (a mapping or a pandas row); ``maxnreg`` and
    ``block_gather`` are unset where the row has none."""
    return LaunchConfig(**{name: (str(row[name]) if name == "algorithm" else int(row[name]))
                           for name in CONFIG_FIELDS},
                        maxnreg=_optional_int(row, "maxnreg"), block_gather=bool(_optional_int(row, "block_gather")))


def item_of(key: LaunchKey) -> tuple:
    return (key.kind, key.dtype, key.in_features, key.out_features, key.redn_factor, key.block_k, key.block_n,
            key.m)


def read_results(path: Path | str) -> pd.DataFrame:
    """The rows of one results CSV (gzip allowed) that ran and passed the gate."""
    frame = pd.read_csv(path)
    return frame[frame.status == "ok"]


def item_times(rows: pd.DataFrame) -> dict[tuple, dict[LaunchConfig, float]]:
    """item -> {config: ms} (see the module doc)."""
    times: dict[tuple, dict[LaunchConfig, float]] = {}
    for key, group in rows.groupby(list(ITEM_FIELDS)):
        measured: dict[LaunchConfig, list[tuple[bool, float]]] = defaultdict(list)
        for row in group.to_dict("records"):
            measured[config_of(row)].append((row["phase"] == "confirm", float(row["ms"])))
        table = {}
        for config, values in measured.items():
            chosen = [ms for confirm, ms in values if confirm] or [ms for _, ms in values]
            table[config] = float(pd.Series(chosen).median())
        times[tuple(int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                    for v in key)] = table
    return times


def gate_errors(rows: pd.DataFrame) -> dict[tuple, dict[LaunchConfig, tuple[float, float]]]:
    """item -> {config: (gate_rel_err, gate_max_err)} from the rows that were gated."""
    errors: dict[tuple, dict[LaunchConfig, tuple[float, float]]] = defaultdict(dict)
    gated = rows[rows.gate_rel_err.notna()]
    for row in gated.to_dict("records"):
        item = tuple(int(row[f]) if f not in ("kind", "dtype") else row[f] for f in ITEM_FIELDS)
        errors[item][config_of(row)] = (float(row["gate_rel_err"]), float(row["gate_max_err"]))
    return errors


def match_items(database: TuningDatabase, frames: Iterable[pd.DataFrame]) -> dict[tuple, tuple[str, dict, int]]:
    """item -> (record key text, its times, index of the frame they come from), for every record a
    results frame timed. When several frames time an item (a later re-tune), the one whose time for
    the record's config is nearest the record's ``ms`` is taken (the run that wrote the record)."""
    per_frame = [item_times(frame) for frame in frames]
    matched = {}
    for text, record in database.launch.items():
        item = item_of(LaunchKey.parse(text))
        config = LaunchConfig.from_dict(record["config"])
        best = None
        for index, times in enumerate(per_frame):
            table = times.get(item)
            if not table or config not in table:
                continue
            mismatch = abs(table[config] - record["ms"])
            if best is None or mismatch < best[0]:
                best = (mismatch, table, index)
        if best is not None:
            matched[item] = (text, best[1], best[2])
    return matched
