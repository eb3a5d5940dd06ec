"""Validation of tuning database records: every problem in a database object, named by key.

A file that has any is refused whole (:meth:`~.records.TuningDatabase.from_json`); the checks are
those later reads and writes rely on: keys that parse, structures the tuner can choose, launch
configs that construct, finite positive times, and a gate error within the correctness gate's
tolerance (a recorded config must have passed it).
"""

from __future__ import annotations

import math
import re

from ss1bench.kernels.config import KINDS, LaunchConfig
from ss1bench.structure import REDUCTION_FACTORS

from .gate import GATE_TOLERANCE
from .keys import LaunchKey, StructureKey


def _positive_number(value: object) -> bool:
    """A finite number above 0 (JSON's ``Infinity`` and ``NaN`` are not: writes refuse them)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def validate_structure_record(key_text: str, record: object) -> list[str]:
    try:
        key = StructureKey.parse(key_text)
    except ValueError as exc:
        return [str(exc)]
    if not isinstance(record, dict):
        return [f"structures[{key_text}] is not an object"]
    problems = []
    if key.redn_factor not in REDUCTION_FACTORS:
        problems.append(f"structures[{key_text}]: reduction factor {key.redn_factor} not in {REDUCTION_FACTORS}")
    for name, limit in (("block_k", 128), ("block_n", 256)):
        value = record.get(name)
        if not isinstance(value, int) or value < 16 or value > limit or value & (value - 1):
            problems.append(f"structures[{key_text}].{name} = {value!r}: tuned structures are powers of two "
                            f"in 16..{limit}")
    times = record.get("relative_time", {})
    if not isinstance(times, dict):
        problems.append(f"structures[{key_text}].relative_time is not an object")
    else:
        bad = {name: value for name, value in times.items() if not _positive_number(value)}
        if bad:
            problems.append(f"structures[{key_text}].relative_time {bad!r}: expected positive finite numbers")
    return problems


def validate_launch_record(key_text: str, record: object) -> list[str]:
    try:
        key = LaunchKey.parse(key_text)
    except ValueError as exc:
        return [str(exc)]
    if not isinstance(record, dict):
        return [f"launch[{key_text}] is not an object"]
    problems = []
    if key.kind not in KINDS:
        problems.append(f"launch[{key_text}]: unknown kind")
    if key.redn_factor not in REDUCTION_FACTORS:
        problems.append(f"launch[{key_text}]: reduction factor {key.redn_factor} not in {REDUCTION_FACTORS}")
    for name, value in (("block_k", key.block_k), ("block_n", key.block_n)):
        if value < 16 or value & (value - 1):
            problems.append(f"launch[{key_text}]: {name} {value} is not a power of two >= 16")
    if key.in_features < 1 or key.out_features < 1 or key.m < 1:
        problems.append(f"launch[{key_text}]: K, N and M must be positive")
    try:
        LaunchConfig.from_dict(record.get("config", None) or {})
        if not isinstance(record.get("config"), dict):
            raise ValueError("missing")
    except (TypeError, ValueError) as exc:
        problems.append(f"launch[{key_text}].config: {exc}")
    for name in ("ms", "dense_ms", "speedup"):
        if name not in record:
            problems.append(f"launch[{key_text}] has no {name}")
        elif not _positive_number(record[name]):
            problems.append(f"launch[{key_text}].{name} = {record[name]!r}: expected a positive finite number")
    rel = record.get("gate_rel_err")
    bound = GATE_TOLERANCE.get(key.dtype, (0.0, 0.0))[0]
    if not isinstance(rel, (int, float)) or isinstance(rel, bool) or not 0 <= rel <= bound:
        problems.append(f"launch[{key_text}].gate_rel_err = {rel!r}: a shipped config must have passed the "
                        f"correctness gate (<= {bound:g})")
    return problems


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def validate_data(data: dict) -> list[str]:
    """Every problem in a database object (empty when valid)."""
    problems = []
    gpu = data.get("gpu")
    if not isinstance(gpu, str) or not re.fullmatch(r"[A-Z0-9]+", gpu or ""):
        problems.append(f"gpu = {gpu!r}: expected a normalized GPU name like 'H200'")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        problems.append("metadata is not an object")
    else:
        runs = metadata.get("runs", [])
        if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
            problems.append(f"metadata.runs = {_short(runs)}: expected a list of objects (one per tuning run)")
    for section, check in (("structures", validate_structure_record), ("launch", validate_launch_record)):
        records = data.get(section, {})
        if not isinstance(records, dict):
            problems.append(f"{section} is not an object")
            continue
        for key_text, record in records.items():
            problems.extend(check(key_text, record))
    extra = set(data) - {"schema", "version", "gpu", "metadata", "structures", "launch"}
    if extra:
        problems.append(f"unknown top-level fields {sorted(extra)}")
    return problems
