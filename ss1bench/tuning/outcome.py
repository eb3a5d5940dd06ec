"""What tuning one item yields: every measurement, the best result per ``(structure, kind, M)``, the
database updates, and the rows made from them (the results CSV, the end-of-run summary table).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ss1bench.kernels.config import LaunchConfig

from . import space
from .records import TuningDatabase
from .work import WorkItem

#: Columns of the results CSV (one row per candidate, pruned ones included).
CSV_FIELDS = (
    "gpu", "device_name", "dtype", "kind", "M", "K", "N", "c", "block_k", "block_n", "phase", "status",
    "algorithm", "tile_m", "tile_n", "tile_k", "num_warps", "num_stages", "group_m", "split_m", "split_k",
    "maxnreg", "block_gather", "ms", "dense_ms", "speedup", "gate_rel_err", "gate_max_err", "first_launch_s", "error",
)


@dataclass
class Measurement:
    """One candidate on one structure: what happened and how fast it was."""

    kind: str
    m: int
    structure: tuple[int, int]
    config: LaunchConfig
    phase: str  # screen | refine | confirm | probe | recorded | pruned
    status: str  # ok | failed_gate | failed_run | pruned
    ms: float | None = None
    gate_rel_err: float | None = None
    gate_max_err: float | None = None
    first_launch_s: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class PairResult:
    """Outcome of one (kind, M) pair for one structure."""

    kind: str
    m: int
    structure: tuple[int, int]
    config: LaunchConfig | None = None
    ms: float | None = None
    dense_ms: float | None = None
    gate_rel_err: float | None = None
    gate_max_err: float | None = None
    ok: int = 0
    failed: int = 0

    @property
    def speedup(self) -> float | None:
        if self.ms and self.dense_ms:
            return self.dense_ms / self.ms
        return None


@dataclass
class ItemOutcome:
    item: WorkItem
    chosen: tuple[int, int]
    scores: dict[tuple[int, int], float]
    results: dict[tuple[tuple[int, int], str, int], PairResult]
    measurements: list[Measurement]
    updates: TuningDatabase
    seconds: float


def csv_rows(outcome: ItemOutcome, gpu: str, device_name: str) -> list[dict]:
    item = outcome.item
    dense = {(kind, m): r.dense_ms for (_s, kind, m), r in outcome.results.items() if r.dense_ms}
    rows = []
    for x in outcome.measurements:
        dense_ms = dense.get((x.kind, x.m))
        row = {
            "gpu": gpu, "device_name": device_name, "dtype": item.dtype, "kind": x.kind, "M": x.m,
            "K": item.in_features, "N": item.out_features, "c": item.redn_factor, "block_k": x.structure[0],
            "block_n": x.structure[1], "phase": x.phase, "status": x.status,
            **asdict(x.config),  # every field (a record's to_dict leaves unset ones out)
            "block_gather": int(x.config.block_gather),
            "ms": _fmt(x.ms), "dense_ms": _fmt(dense_ms),
            "speedup": _fmt(dense_ms / x.ms if x.ms and dense_ms else None),
            "gate_rel_err": _fmt(x.gate_rel_err), "gate_max_err": _fmt(x.gate_max_err),
            "first_launch_s": _fmt(x.first_launch_s), "error": x.error,
        }
        rows.append(row)
    return rows


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}"


def summary_rows(outcome: ItemOutcome) -> list[dict]:
    """One row per (kind, M) of the recorded structure."""
    item = outcome.item
    rows = []
    for kind, m in item.pairs():
        result = outcome.results.get((outcome.chosen, kind, m)) or outcome.results.get((item.primary, kind, m))
        if result is None:
            continue
        resumed = (kind, m) not in item.todo and result.structure == item.primary
        rows.append({
            "dtype": item.dtype, "K": item.in_features, "N": item.out_features, "c": item.redn_factor,
            "structure": f"{result.structure[0]}x{result.structure[1]}", "kind": kind, "M": m,
            "config": space.describe(result.config) if result.config else ("(kept)" if resumed else "none passed"),
            "ms": result.ms, "dense_ms": result.dense_ms, "speedup": result.speedup,
            "ok": result.ok, "failed": result.failed,
        })
    return rows
