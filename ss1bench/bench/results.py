"""What a benchmark run writes: the results CSV and its JSON sidecar (run metadata, rewritten after
every shape so an interrupted run keeps what it measured), the progress line, the file name stem and
the end-of-run summary table. ``RunInfo``, ``ResultWriter`` and ``use_tuning_database`` are shared
with ``ss1bench e2e``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ss1bench.provenance import command_line

from .measure import RETIMES, SPREAD_LIMIT
from .schema import (
    CASE_KEY,
    FLOP_COUNTS,
    MEMORY_FLOOR,
    MODES,
    OPTIONAL_PROVIDERS,
    RESULT_COLUMNS,
    mode_slug,
    providers_in,
)

# ---- files and metadata -----------------------------------------------------------------------


def _git_commit() -> str | None:
    """HEAD of the checkout (``-dirty`` with uncommitted changes); ``SS1BENCH_GIT_COMMIT`` wins
    (a copy of the tree on a remote machine may carry a stale ``.git``)."""
    override = os.environ.get("SS1BENCH_GIT_COMMIT")
    if override:
        return override
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def _digest(path: Path) -> str:
    """First 12 hex digits of the file's sha256 (which database a result was measured with)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def write_results(rows: list[dict], metadata: dict, csv_path: Path, json_path: Path,
                  columns: Sequence[str] = RESULT_COLUMNS):
    """Write the results CSV (``columns``: :data:`RESULT_COLUMNS`, and ``e2e``'s own after them;
    integer columns that SS1-less rows leave empty as nullable ints) and its JSON sidecar; return
    the DataFrame. Shared with ``e2e``."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns)).astype(
        {"block_k": "Int64", "block_n": "Int64", "k_red": "Int64", "weight_params": "Int64"})
    frame.to_csv(csv_path, index=False)
    json_path.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    return frame


def use_tuning_database(gpu: str) -> str:
    """Describe the tuning database files that serve ``gpu`` (SSL layers read them on first use):
    its user file (``SS1BENCH_DB`` or the user data dir) and its shipped ``tuning_db/<GPU>.json``,
    else a sibling GPU's (``tuning.db.serving_chain``). The description goes into the run's metadata."""
    from ss1bench.tuning.db import serving_chain, shipped_db_path, user_db_path

    def described(user: Path, shipped: Path) -> list[str]:
        files = [f"user {user} (sha256 {_digest(user)})"] if user.is_file() else []
        if shipped.is_file():  # named inside the package: the same on every machine
            files.append(f"shipped ss1bench/tuning_db/{shipped.name} (sha256 {_digest(shipped)})")
        return files

    files = described(user_db_path(gpu), shipped_db_path(gpu))
    if files:
        return "; ".join(files)
    serving = serving_chain(gpu, on_error=lambda error: None)
    if serving.sibling is not None:
        files = described(user_db_path(serving.sibling), shipped_db_path(serving.sibling))
        if files:
            return f"{'; '.join(files)}: {serving.sibling}'s records serve {gpu} ({serving.why})"
    return f"no database file for {gpu} or a GPU of its architecture (SS1 launches use the heuristic)"


@dataclass
class RunInfo:
    """What the JSON sidecar records about a run."""

    gpu: str
    device_name: str
    database: str
    copy_bandwidth_gbs: float
    args: dict
    started: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"))

    def metadata(self, cases_total: int, cases_done: int, wall_s: float, complete: bool) -> dict:
        import triton

        return {
            "gpu": self.gpu, "device_name": self.device_name,
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "date": self.started, "git_commit": _git_commit(),
            "database": self.database, "copy_bandwidth_gbs": self.copy_bandwidth_gbs,
            "timing": "triton.testing.do_bench median (p20/p80 spread), L2 flushed before each call; "
                      f"a run with p80 > {SPREAD_LIMIT} x p20 re-timed up to {RETIMES} times, the tightest kept"
                      + ("; every call replayed from a CUDA graph" if self.args.get("cuda_graph") else ""),
            "flop_counts": FLOP_COUNTS, "memory_floor": MEMORY_FLOOR,
            "providers": {p.name: p.description for mode in self.args.get("modes", MODES)
                          for p in providers_in(mode, self.args.get("providers"))},
            "args": self.args, "cases_total": cases_total, "cases_done": cases_done,
            "wall_s": round(wall_s, 1), "complete": complete, "command": command_line(),
        }


class ResultWriter:
    """A run's results: its rows so far, its progress line, and its CSV + JSON sidecar, rewritten
    by every :meth:`flush` (an interrupted run keeps what it measured). Shared with ``e2e``, whose
    ``adjust_metadata`` edits the sidecar's entries in place and whose rows have more ``columns``."""

    def __init__(self, info: RunInfo, out_dir: Path, stem: str, total: int,
                 adjust_metadata: Callable[[dict], None] | None = None,
                 columns: Sequence[str] = RESULT_COLUMNS) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
        self.info, self.rows, self.progress = info, [], Progress(total)
        self.start = time.monotonic()
        self._adjust_metadata = adjust_metadata
        self.columns = tuple(columns)

    def flush(self, complete: bool):
        """Rewrite the CSV and its sidecar; return the DataFrame."""
        metadata = self.info.metadata(self.progress.total, self.progress.done, time.monotonic() - self.start,
                                      complete)
        if self._adjust_metadata is not None:
            self._adjust_metadata(metadata)
        return write_results(self.rows, metadata, self.csv_path, self.json_path, self.columns)


def output_stem(set_names: list[str], dtypes: list[str], modes: list[str],
                providers: list[str] | None = None) -> str:
    """File name stem of a run's CSV and sidecar, e.g. ``bench_gpt2_fp16_fwd``; a run of some of the
    optional providers ends in their names, e.g. ``bench_gpt2_fp16_fwd_ss1_heuristic``, so it
    never overwrites a full run's results (``ss1bench report`` on the folder reads both, the
    newer rows of a case and provider winning)."""
    parts = ["-".join(set_names) or "custom", "-".join(dtypes), "-".join(mode_slug(m) for m in modes)]
    if providers is not None and set(providers) != set(OPTIONAL_PROVIDERS):
        parts.append("-".join(providers))
    return "bench_" + "_".join(parts)


# ---- progress ---------------------------------------------------------------------------------


class Progress:
    """One line with count, percent and ETA on stderr: redrawn on a terminal, else every 15 s."""

    def __init__(self, total: int, stream=None, interval_s: float = 15.0) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.interval_s = interval_s
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        now = time.monotonic()
        if not self.tty and now - self.last < self.interval_s and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / self.done * (self.total - self.done)
        line = (f"[{self.done:>{len(str(self.total))}}/{self.total}] {100 * self.done / self.total:3.0f}% "
                f"elapsed {_duration(elapsed)} eta {_duration(eta)}  {label}")
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# ---- end-of-run table -------------------------------------------------------------------------


#: Speedup columns of the end-of-run table besides SS1 (tuning database)'s, in order.
SPEEDUP_COLUMNS = {"ss1_cached": "cached x", "ss1_heuristic": "heuristic x", "lowrank": "low-rank x",
                   "monarch": "Monarch x"}


def summary_table(frame) -> str:
    """One line per case (a shape two sets share is listed once): dense and the ideal, SS1 (tuning
    database) against them, and the speedups of the heuristic, the rotated-weight cache and the
    peers; a provider the run has no rows of (``--providers``, ``ss1_cached`` outside ``fwd``) has
    no column."""
    import pandas as pd

    present = set(frame["provider"])
    by_key = {(row["provider"], *(row[k] for k in CASE_KEY)): row for row in frame.to_dict("records")}
    cases = frame[frame["provider"] == "dense"]  # a yardstick: every case has its row
    cases = cases.drop_duplicates(subset=["dtype", "mode", "M", "K", "N", "redn_factor"])
    lines = []
    for row in cases.to_dict("records"):
        key = tuple(row[k] for k in CASE_KEY)

        def value(provider: str, column: str, key=key) -> float:
            return by_key.get((provider, *key), {}).get(column, math.nan)

        line = {"dtype": row["dtype"], "mode": row["mode"], "M": row["M"], "K": row["K"], "N": row["N"],
                "c": row["redn_factor"], "dense ms": row["dense_ms"], "ideal ms": row["ideal_ms"]}
        if "ss1_tuned" in present:
            line.update({"SS1 ms": value("ss1_tuned", "median_ms"), "speedup": value("ss1_tuned", "speedup_vs_dense"),
                         "of ideal": value("ss1_tuned", "fraction_of_ideal")})
        line.update({column: value(provider, "speedup_vs_dense") for provider, column in SPEEDUP_COLUMNS.items()
                     if provider in present})
        lines.append(line)
    if not lines:
        return "(no results)"
    return pd.DataFrame(lines).to_string(index=False, float_format=lambda v: f"{v:.4g}")
