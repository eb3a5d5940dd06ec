"""The tuning database: one JSON file per GPU (``H200.json``), shipped and per user.

Where files live, looked up in this order (the first file that has a key answers):

1. the user database: ``--db PATH`` or ``$SS1BENCH_DB`` if set, else ``$XDG_DATA_HOME/ss1bench``,
   else ``~/.local/share/ss1bench`` (the XDG default; platformdirs is not a dependency). A PATH
   ending in ``.json`` is that one file; anything else is a directory of ``<GPU>.json`` files.
2. the shipped database: ``<GPU>.json`` inside the ``ss1bench.tuning_db`` package (``tuning_db/``).

File layout (schema ``ss1bench.tuning_db`` version 1), written with sorted keys and one-space
indent so a re-tune diffs line by line::

    {"schema": "ss1bench.tuning_db", "version": 1, "gpu": "H200",
     "metadata": {"device_name", "torch", "triton", "date", "tuning_wall_time_s", "runs": [...]},
     "structures": {"fp16/K768/N3072/c4": {"block_k", "block_n", "relative_time", "m_buckets", ...}},
     "launch": {"forward/fp16/K768/N3072/c4/bk64/bn128/M16":
                {"config": {...}, "ms", "dense_ms", "speedup", "gate_rel_err", "triton", "date", ...}}}

``structures`` is record kind (1) of DESIGN.md section 3 (the structure a new layer gets);
``launch`` is kind (2) (a launch config per structure and M bucket).

Writes take a file lock (``<file>.lock``), re-read the file, merge (see :meth:`TuningDatabase.merge`:
the record with the later ``date`` instant wins a key both sides have), write a temporary file in the
same directory and ``os.replace`` it: concurrent writers lose nothing and a reader never sees half a
file. Temporary files a killed writer left behind are removed by the next writer (under the lock).
The file keeps its permission bits; a file without the owner's write bit (``chmod 444``) is refused
with :class:`DatabaseError` rather than replaced. A symlinked database is written through the link
(the target is replaced, the link stays). A file that does not parse (bad JSON, not UTF-8, nested
too deeply) or has an unknown schema raises :class:`DatabaseError` naming it and is never
overwritten.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ss1bench.kernels.config import KINDS, LaunchConfig
from ss1bench.structure import REDUCTION_FACTORS

from .gate import GATE_TOLERANCE

SCHEMA = "ss1bench.tuning_db"
SCHEMA_VERSION = 1
ENV_VAR = "SS1BENCH_DB"
DTYPES = ("fp32", "fp16", "bf16")
#: Run entries kept in the metadata (oldest dropped first).
MAX_RUNS = 50
#: Seconds a writer waits for another writer's lock before giving up with an error.
LOCK_TIMEOUT_S = 120

logger = logging.getLogger("ss1bench.tuning")


class DatabaseError(Exception):
    """A database file that cannot be used; the message names the file."""


# ---------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------

_STRUCTURE_KEY = re.compile(r"(fp32|fp16|bf16)/K(\d+)/N(\d+)/c(\d+)")
_LAUNCH_KEY = re.compile(
    r"(" + "|".join(KINDS) + r")/(fp32|fp16|bf16)/K(\d+)/N(\d+)/c(\d+)/bk(\d+)/bn(\d+)/M(\d+)")


@dataclass(frozen=True, order=True)
class StructureKey:
    """Key of a recommended structure: ``fp16/K768/N3072/c4``."""

    dtype: str
    in_features: int
    out_features: int
    redn_factor: int

    def text(self) -> str:
        return f"{self.dtype}/K{self.in_features}/N{self.out_features}/c{self.redn_factor}"

    @classmethod
    def parse(cls, text: str) -> StructureKey:
        match = _STRUCTURE_KEY.fullmatch(text)
        if not match:
            raise ValueError(f"bad structure key {text!r} (expected like 'fp16/K768/N3072/c4')")
        dtype, k, n, c = match.groups()
        return cls(dtype, int(k), int(n), int(c))


@dataclass(frozen=True, order=True)
class LaunchKey:
    """Key of a tuned launch config: ``forward/fp16/K768/N3072/c4/bk64/bn128/M16``."""

    kind: str
    dtype: str
    in_features: int
    out_features: int
    redn_factor: int
    block_k: int
    block_n: int
    m: int

    def text(self) -> str:
        return (f"{self.kind}/{self.dtype}/K{self.in_features}/N{self.out_features}/c{self.redn_factor}"
                f"/bk{self.block_k}/bn{self.block_n}/M{self.m}")

    @property
    def family(self) -> tuple:
        """Everything but the M bucket: the keys nearest-bucket lookup chooses among."""
        return (self.kind, self.dtype, self.in_features, self.out_features, self.redn_factor,
                self.block_k, self.block_n)

    @classmethod
    def parse(cls, text: str) -> LaunchKey:
        match = _LAUNCH_KEY.fullmatch(text)
        if not match:
            raise ValueError(f"bad launch key {text!r} (expected like 'forward/fp16/K768/N3072/c4/bk64/bn128/M16')")
        kind, dtype, *ints = match.groups()
        return cls(kind, dtype, *(int(v) for v in ints))


def nearest_bucket(m: int, buckets: list[int] | tuple[int, ...] | set[int]) -> int:
    """The bucket closest to ``m`` in log2 (ties go to the smaller bucket: its smaller tiles waste
    less when the problem is smaller than the bucket, and still launch when it is larger)."""
    import math

    if not buckets:
        raise ValueError("no buckets to choose from")
    target = math.log2(max(m, 1))
    return min(sorted(buckets), key=lambda b: (abs(math.log2(max(b, 1)) - target), b))


# ---------------------------------------------------------------------------------------------
# the in-memory database
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
        sorted JSON text sorts first. With ``other_wins_ties`` (:func:`write_records`: what is being
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


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def parse_text(text: str, path: Path | str) -> TuningDatabase:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatabaseError(f"{path}: not valid JSON ({exc}); fix or move the file away (it is never "
                            "overwritten)") from None
    except RecursionError:
        raise DatabaseError(f"{path}: nested too deeply to be a tuning database; fix or move the file away "
                            "(it is never overwritten)") from None
    return TuningDatabase.from_json(data, path)


def read_text(path) -> str | None:
    """The UTF-8 text of ``path`` (a Path or a package Traversable); None when it does not exist.
    Raises DatabaseError for a file that cannot be read or is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise DatabaseError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); fix or move the file "
                            "away (it is never overwritten)") from None
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read ({exc})") from None


def read_database(path) -> TuningDatabase | None:
    """The database in ``path`` (a Path, a str or a package Traversable); None when the file does
    not exist. Raises DatabaseError (naming the file) for anything else that keeps it from use."""
    if isinstance(path, str):
        path = Path(path)
    text = read_text(path)
    return None if text is None else parse_text(text, path)


def _target(path: Path | str) -> Path:
    """The file a write to ``path`` changes: through a symlink (even a dangling one), its target."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock on ``<path>.lock`` (between processes and threads)."""
    import filelock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            yield
    except filelock.Timeout:
        raise DatabaseError(f"{path}: another process has held its lock for {LOCK_TIMEOUT_S} s") from None


def _temporary_files(path: Path) -> list[Path]:
    """Temporary files :func:`_atomic_write` makes for ``path`` (``<name>.<random>.tmp``)."""
    return [entry for entry in path.parent.glob(f"{_glob_escape(path.name)}.*.tmp") if entry.is_file()]


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def check_writable(path: Path | str) -> Path:
    """Raise DatabaseError unless a write to ``path`` can succeed; returns the file written.

    Checks, without writing anything: the folder exists or can be made, and can be written; an
    existing file is readable, valid and has its owner's write bit. Run it before any GPU work.
    """
    target = _target(path)
    folder = target.parent
    existing = folder
    while not existing.exists():  # the first folder up the chain that exists decides
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise DatabaseError(f"{target}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DatabaseError(f"{target}: cannot write in {existing} (permission denied); pass another --db")
    if target.exists():
        mode = target.stat().st_mode
        if not mode & stat.S_IWUSR:
            raise DatabaseError(f"{target}: the file is read-only (mode {stat.S_IMODE(mode):o}); make it writable "
                                "(chmod u+w) or pass another --db")
        if not os.access(target, os.R_OK):
            raise DatabaseError(f"{target}: cannot read the file (permission denied)")
        read_database(target)  # raises for a corrupted file
    return target


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` (a regular file or none: resolve links first) by ``text``, atomically.

    The caller holds the file's lock: temporary files of ``path`` still there are left by a killed
    writer and are removed. The new file keeps the old one's permission bits (new files: 0666
    less the umask); a file without its owner's write bit is refused.
    """
    mode = None
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(path.stat().st_mode)
    if mode is not None and not mode & stat.S_IWUSR:
        raise DatabaseError(f"{path}: the file is read-only (mode {mode:o}); make it writable (chmod u+w) to "
                            "update it, or pass another --db")
    for stale in _temporary_files(path):
        with contextlib.suppress(OSError):
            stale.unlink()
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_records(path: Path | str, updates: TuningDatabase, run: dict | None = None) -> TuningDatabase:
    """Merge ``updates`` into the file at ``path`` under its lock; returns what was written.

    The file is re-read inside the lock, so records another process wrote since are kept; a key
    both have goes to the record with the later date, and to ``updates`` on the same date.
    Raises DatabaseError (file untouched) if the existing file is corrupted, has an unknown
    schema, belongs to another GPU or is read-only. A symlink is written through (its target).
    """
    path = _target(path)
    with locked(path):
        current = read_database(path) or TuningDatabase(gpu=updates.gpu, path=path)
        current.path = path
        current.merge(updates, other_wins_ties=True)
        if run is not None:
            current.add_run(run)
        _atomic_write(path, current.dumps())
        return current


def merge_files(sources: list[Path | str], target: Path | str) -> tuple[TuningDatabase, int]:
    """Merge database files into ``target`` (created if missing). Returns (result, records changed).

    Every source is read and validated before the target is touched. Which record wins a key:
    :meth:`TuningDatabase.merge` (the later date instant; ties do not depend on the order).
    """
    databases = []
    for source in sources:
        database = read_database(source)
        if database is None:
            raise DatabaseError(f"{source}: no such file")
        databases.append(database)
    if not databases:
        raise DatabaseError("nothing to merge")
    target = _target(target)
    changed = 0
    with locked(target):
        current = read_database(target) or TuningDatabase(gpu=databases[0].gpu, path=target)
        current.path = target
        for database in databases:
            changed += current.merge(database)
        _atomic_write(target, current.dumps())
    return current, changed


# ---------------------------------------------------------------------------------------------
# where the files are
# ---------------------------------------------------------------------------------------------


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/ss1bench`` or ``~/.local/share/ss1bench``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ss1bench"


def user_location(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$SS1BENCH_DB``, else :func:`user_data_dir` (a .json file or a directory)."""
    chosen = override if override not in (None, "") else os.environ.get(ENV_VAR) or None
    return Path(chosen).expanduser() if chosen is not None else user_data_dir()


def user_db_path(gpu: str, override: str | os.PathLike | None = None) -> Path:
    """The user database file for ``gpu`` (see :func:`user_location`)."""
    location = user_location(override)
    return location if location.suffix == ".json" else location / f"{gpu}.json"


def shipped_dir():
    """The shipped database directory (the ``ss1bench.tuning_db`` package)."""
    return resources.files("ss1bench.tuning_db")


def shipped_db_path(gpu: str):
    """The shipped file for ``gpu`` (a Traversable; may not exist)."""
    return shipped_dir() / f"{gpu}.json"


def shipped_gpus() -> list[str]:
    return sorted(entry.name[:-5] for entry in shipped_dir().iterdir()
                  if entry.name.endswith(".json") and entry.is_file())


def missing_env_location() -> str | None:
    """A one-line note when ``$SS1BENCH_DB`` names something that does not exist, else None."""
    chosen = os.environ.get(ENV_VAR)
    if not chosen:
        return None
    location = Path(chosen).expanduser()
    exists = location.is_file() if location.suffix == ".json" else location.is_dir()
    if exists:
        return None
    return (f"{ENV_VAR}={chosen} does not exist: only the shipped tuning database is read (`ss1bench tune` "
            "creates it)")


_warned_locations: set[str] = set()


def warn_missing_env_location() -> None:
    """Log :func:`missing_env_location` once per process and value."""
    note = missing_env_location()
    if note is not None and note not in _warned_locations:
        _warned_locations.add(note)
        logger.warning("%s", note)


def load_chain(gpu: str, override: str | os.PathLike | None = None, on_error=None) -> list[TuningDatabase]:
    """The databases for ``gpu`` in lookup order (user, shipped), those that exist.

    A file that exists but cannot be used raises DatabaseError, or, with ``on_error``, is passed to
    ``on_error(error)`` and skipped (the other file still answers).
    """
    if override in (None, ""):
        warn_missing_env_location()
    chain = []
    for source in (user_db_path(gpu, override), shipped_db_path(gpu)):
        try:
            database = read_database(source)
        except DatabaseError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        if database is not None and database.gpu == gpu:
            chain.append(database)
    return chain


def available_gpus(override: str | os.PathLike | None = None) -> list[str]:
    """GPUs with a database file: the user's (a directory's ``<GPU>.json`` files, or the one file
    ``--db``/``$SS1BENCH_DB`` names) and the shipped ones."""
    names = set(shipped_gpus())
    location = user_location(override)
    if location.suffix == ".json":
        with contextlib.suppress(DatabaseError, OSError):
            database = read_database(location)
            if database is not None:
                names.add(database.gpu)
    elif location.is_dir():
        names.update(entry.stem for entry in location.glob("*.json") if re.fullmatch(r"[A-Z0-9]+", entry.stem))
    return sorted(names)


def sibling_gpu(gpu: str, override: str | os.PathLike | None = None) -> tuple[str, str] | None:
    """``(GPU, why)`` whose files serve ``gpu`` when it has none of its own (see
    :func:`ss1bench.tuning.gpu.closest_gpu`: same architecture first), or None."""
    from .gpu import closest_gpu

    return closest_gpu(gpu, available_gpus(override))


@dataclass
class Serving:
    """Which databases answer for a GPU: its own files, or a sibling GPU's (``sibling`` set)."""

    gpu: str
    chain: list[TuningDatabase]
    sibling: str | None = None
    why: str = ""

    @property
    def files(self) -> list[str]:
        return [str(database.path) for database in self.chain]

    def describe(self) -> str:
        """One line: which file(s) serve ``gpu`` and why."""
        if not self.chain:
            return (f"no tuning database for {self.gpu} (nor for a GPU of its architecture): default structures, "
                    "heuristic launch configs")
        files = ", ".join(self.files)
        if self.sibling is None:
            return f"{files} ({self.gpu}'s own)"
        return (f"{files} ({self.sibling}'s records: no {self.gpu} file, {self.why}; configs over this GPU's "
                "shared memory are skipped)")


def serving_chain(gpu: str, override: str | os.PathLike | None = None, on_error=None) -> Serving:
    """:func:`load_chain` for ``gpu``, or, when it has no file, for its sibling (:func:`sibling_gpu`)."""
    chain = load_chain(gpu, override, on_error)
    if chain:
        return Serving(gpu, chain)
    found = sibling_gpu(gpu, override)
    if found is None:
        return Serving(gpu, [])
    sibling, why = found
    chain = load_chain(sibling, override, on_error)
    return Serving(gpu, chain, sibling if chain else None, why if chain else "")

