"""Reading results: the CSVs named on the command line (files, or folders of them), each checked
whole before anything is drawn, with their JSON sidecars."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ss1bench.bench.schema import CASE_KEY, E2E_COLUMNS, E2E_KEY, RESULT_COLUMNS, SUPERSEDED_DEFINITIONS

from .common import ReportError

#: Result files a folder argument expands to.
RESULT_GLOBS = ("bench_*.csv", "e2e_*.csv")


def result_files(paths: list[Path]) -> list[Path]:
    """CSV files named by ``paths``: files as given, folders expanded to their ``bench_*.csv`` and
    ``e2e_*.csv``."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = [file for pattern in RESULT_GLOBS for file in sorted(path.glob(pattern))]
            if not found:
                raise ReportError(f"{path}: no {' or '.join(RESULT_GLOBS)} files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ReportError(f"{path}: no such file or folder")
    return files


def load_results(paths: list[Path]):
    """(DataFrame of every row, [(csv path, sidecar metadata or None)]).

    Rows of a provider the file's run measured under a superseded definition are left out
    (:func:`superseded_providers`). Rows repeated across files (same case and provider; for e2e
    rows, the same compile mode) keep the most recent run's: files are taken in the order of their
    sidecars' ``date`` (files without one first, in the order given), so a re-run of some rows
    replaces exactly those.
    """
    import pandas as pd

    frames, sources = [], []
    for path in result_files(paths):
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as error:
            raise ReportError(f"{path}: cannot read as CSV ({error})") from None
        missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
        if missing:
            raise ReportError(f"{path}: not an ss1bench bench CSV (missing columns: {', '.join(missing)})")
        _check_complete(path)
        frame = _numeric(path, frame)
        sidecar = path.with_suffix(".json")
        metadata = None
        if sidecar.is_file():
            try:
                metadata = json.loads(sidecar.read_text())
            except ValueError as error:
                raise ReportError(f"{sidecar}: not valid JSON ({error})") from None
        stale = superseded_providers(metadata)
        if stale:
            frame = frame[~frame["provider"].isin(stale)]
        frames.append(frame[[*RESULT_COLUMNS, *(c for c in E2E_COLUMNS if c in frame.columns)]])
        sources.append((path, metadata))
    order = sorted(range(len(sources)), key=lambda i: _run_date(sources[i][1]))  # stable: ties keep order
    frames, sources = [frames[i] for i in order], [sources[i] for i in order]
    frame = pd.concat(frames, ignore_index=True)
    key = [*CASE_KEY, "provider", *(c for c in E2E_KEY if c in frame.columns)]  # e2e: one row per compile mode
    frame = frame.drop_duplicates(subset=key, keep="last").reset_index(drop=True)
    if frame.empty:
        raise ReportError("the results hold no rows")
    return frame, sources


def superseded_providers(metadata: dict | None) -> list[str]:
    """Providers whose rows in a results file were measured under a superseded definition
    (``schema.SUPERSEDED_DEFINITIONS``, going by the definitions its sidecar records): they do not
    measure what the report's definitions say, so the report leaves them out."""
    recorded = metadata.get("providers") if isinstance(metadata, dict) else None
    if not isinstance(recorded, dict):
        return []
    return [name for name, old in SUPERSEDED_DEFINITIONS.items() if recorded.get(name) in old]


def _run_date(metadata: dict | None) -> str:
    """The run's ISO date from its sidecar ("" without one: such files count as the oldest)."""
    date = metadata.get("date") if isinstance(metadata, dict) else None
    return date if isinstance(date, str) else ""


#: Columns that hold numbers (empty where not measured); anything else there is a damaged file.
NUMERIC_COLUMNS = ("M", "K", "N", "redn_factor", "block_k", "block_n", "k_red", "weight_params", "flops",
                   "dense_flops", "median_ms", "p20_ms", "p80_ms", "tflops", "dense_equiv_tflops", "dense_ms",
                   "ideal_ms", "speedup_vs_dense", "fraction_of_ideal", "peak_mem_mib")


def _check_complete(path: Path) -> None:
    """Every row has the header's number of fields and the file ends with a line break (a file cut
    off in mid-row, e.g. by a run killed while writing, is refused rather than read short)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            for row in reader:
                if row and len(row) != len(header):
                    raise ReportError(f"{path}: line {reader.line_num} has {len(row)} fields, the header "
                                      f"{len(header)}: the file is truncated or damaged")
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) not in (b"\n", b"\r"):
                    raise ReportError(f"{path}: the last line ends in mid-row: the file is truncated")
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ReportError(f"{path}: cannot read as CSV ({error})") from None


def _numeric(path: Path, frame):
    """``frame`` with NUMERIC_COLUMNS as numbers; ReportError naming the first value that is not one."""
    import pandas as pd

    for column in NUMERIC_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & values.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ReportError(f"{path}: line {row + 2}, column {column}: {frame[column].iloc[row]!r} is not a "
                              "number")
        frame = frame.assign(**{column: values})
    return frame
