"""One GPU's tuning records in memory (:class:`TuningDatabase`), their JSON form, and the merge rule.

JSON layout (schema ``ss1bench.tuning_db`` version 1), written with sorted keys and one-space
indent so a re-tune diffs line by line::

    {"schema": "ss1bench.tuning_db", "version": 1, "gpu": "H200",
     "metadata": {"device_name", "torch", "triton", "date", "tuning_wall_time_s", "runs": [...]},
     "structures": {"fp16/K768/N3072/c4": {"block_k", "block_n", "relative_time", "m_buckets", ...}},
     "launch": {"forward/fp16/K768/N3072/c4/bk64/bn128/M16":
                {"config": {...}, "ms", "dense_ms", "speedup", "gate_rel_err", "triton", "date", ...}}}

``structures`` holds the structure a new layer gets (``block_k`` and ``block_n`` as defined in
``ss1bench/structure.py``); ``launch`` a launch config per structure and M bucket. Keys:
:mod:`.keys`; what a valid object is: :mod:`.validation`. Which record wins a key two databases
both have: :meth:`TuningDatabase.merge` (the later ``date`` instant). Reading and writing the files,
under a lock and atomically: :mod:`.db`.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .keys import LaunchKey, StructureKey
from .validation import validate_data

SCHEMA = "ss1bench.tuning_db"
SCHEMA_VERSION = 1
#: Run entries kept in the metadata (oldest dropped first).
MAX_RUNS = 50


class DatabaseError(Exception):
    """A database file that cannot be used; the message names the file."""


# ---------------------------------------------------------------------------------------------
# dates and the merge rule
# ---------------------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_OLDEST = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


def parse_instant(text: object) -> datetime.datetime | None:
    """The instant an ISO 8601 date names (``2026-01-01T00:00:00Z``, ``...+05:00``; no offset: UTC),
    or None when ``text`` is not such a date."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        instant = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=datetime.timezone.utc)
    return instant


def record_instant(record: dict) -> datetime.datetime:
    """The instant of a record's ``date``; records without a readable one sort first."""
    return parse_instant(record.get("date")) or _OLDEST


def _tie_key(record: dict) -> tuple:
    ms = record.get("ms")
    speed = ms if isinstance(ms, (int, float)) and not isinstance(ms, bool) and math.isfinite(ms) else math.inf
    return (speed, json.dumps(record, sort_keys=True, default=str))


def _preferred(candidate: dict, current: dict, candidate_wins_ties: bool = False) -> bool:
    """Whether ``candidate`` replaces ``current`` in a merge (see :meth:`TuningDatabase.merge`)."""
    new, old = record_instant(candidate), record_instant(current)
    if new != old:
        return new > old
    return candidate_wins_ties or _tie_key(candidate) < _tie_key(current)


@dataclass
class TuningDatabase:
    """One GPU's records. ``structures`` and ``launch`` map key text to a record dict."""

    gpu: str
    metadata: dict = field(default_factory=dict)
    structures: dict[str, dict] = field(default_factory=dict)
    launch: dict[str, dict] = field(default_factory=dict)
    path: Path | str | None = None

    # ---- records ------------------------------------------------------------------------------
    def structure(self, key: StructureKey) -> dict | None:
        return self.structures.get(key.text())

    def launch_record(self, key: LaunchKey) -> dict | None:
        return self.launch.get(key.text())

    def launch_families(self) -> dict[tuple, dict[int, tuple[LaunchKey, dict]]]:
        """family -> {M bucket: (key, record)} (for nearest-bucket lookups)."""
        families: dict[tuple, dict[int, tuple[LaunchKey, dict]]] = {}
        for text, record in self.launch.items():
            key = LaunchKey.parse(text)
            families.setdefault(key.family, {})[key.m] = (key, record)
        return families

    def merge(self, other: TuningDatabase, other_wins_ties: bool = False) -> int:
        """Take ``other``'s records where this has none or an older one. Returns how many changed.

        Records are compared by the instant of their ``date`` (ISO 8601; an offset such as
        ``+05:00`` is honoured, ``Z`` and dates without an offset are UTC; a missing or unreadable
        date is older than any date). The later instant wins. On equal instants the outcome does not
        depend on which side is which (so merging files gives the same result in any order): the
        faster record wins (smaller ``ms``; structure records have none), then the record whose
        sorted JSON text sorts first. With ``other_wins_ties`` (:func:`.db.write_records`: what is being
        written replaces a record of the same instant) ``other``'s record wins equal instants.
        """
        if other.gpu != self.gpu:
            raise DatabaseError(f"{other.path or 'source'} holds {other.gpu} results; "
                                f"{self.path or 'the target'} is for {self.gpu}")
        changed = 0
        for mine, theirs in ((self.structures, other.structures), (self.launch, other.launch)):
            for key, record in theirs.items():
                current = mine.get(key)
                if current is None or _preferred(record, current, other_wins_ties):
                    if current != record:
                        changed += 1
                    mine[key] = record
        runs = self.metadata.get("runs", []) + [r for r in other.metadata.get("runs", [])
                                                 if r not in self.metadata.get("runs", [])]
        runs.sort(key=lambda r: record_instant(r))
        if runs:
            self.metadata["runs"] = runs[-MAX_RUNS:]
            latest = runs[-1]
            for name in ("device_name", "torch", "triton", "date"):
                if name in latest:
                    self.metadata[name] = latest[name]
            if "wall_time_s" in latest:
                self.metadata["tuning_wall_time_s"] = latest["wall_time_s"]
        return changed

    def add_run(self, run: dict) -> None:
        """Record one tuning run in the metadata (the top-level fields describe the latest run)."""
        runs = [*self.metadata.get("runs", []), run]
        self.metadata["runs"] = runs[-MAX_RUNS:]
        for name in ("device_name", "torch", "triton", "date"):
            if name in run:
                self.metadata[name] = run[name]
        if "wall_time_s" in run:
            self.metadata["tuning_wall_time_s"] = run["wall_time_s"]

    # ---- serialization ------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "gpu": self.gpu, "metadata": self.metadata,
                "structures": self.structures, "launch": self.launch}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, data: object, path: Path | str | None = None) -> TuningDatabase:
        """Parse and validate; raises :class:`DatabaseError` naming ``path``."""
        where = str(path) if path is not None else "<data>"
        if not isinstance(data, dict):
            raise DatabaseError(f"{where}: not a tuning database (top level is not an object)")
        if data.get("schema") != SCHEMA:
            raise DatabaseError(f"{where}: unknown schema {data.get('schema')!r} (expected {SCHEMA!r}); "
                                "not an ss1bench tuning database, left untouched")
        if data.get("version") != SCHEMA_VERSION:
            raise DatabaseError(f"{where}: schema version {data.get('version')!r} is not supported (this ss1bench "
                                f"reads version {SCHEMA_VERSION}); upgrade ss1bench or use another file")
        problems = validate_data(data)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise DatabaseError(f"{where}: invalid tuning database: {shown}")
        return cls(gpu=data["gpu"], metadata=dict(data.get("metadata", {})),
                   structures=dict(data.get("structures", {})), launch=dict(data.get("launch", {})), path=path)
