"""The tuning database's files: one JSON file per GPU (``H200.json``), shipped and per user.

Where files live, looked up in this order (the first file that has a key answers):

1. the user database: ``--db PATH`` or ``$SS1BENCH_DB`` if set, else ``$XDG_DATA_HOME/ss1bench``,
   else ``~/.local/share/ss1bench`` (the XDG default; platformdirs is not a dependency). A PATH
   ending in ``.json`` is that one file; anything else is a directory of ``<GPU>.json`` files.
2. the shipped database: ``<GPU>.json`` inside the ``ss1bench.tuning_db`` package (``tuning_db/``).

A GPU without a file of its own is served by the closest GPU's (:func:`serving_chain`). What a file
holds: :mod:`.records`.

Writes take a file lock (``<file>.lock``), re-read the file, merge (see
:meth:`~.records.TuningDatabase.merge`: the record with the later ``date`` instant wins a key both
sides have), write a temporary file in the same directory and ``os.replace`` it: concurrent writers
lose nothing and a reader never sees half a file. Temporary files a killed writer left behind are
removed by the next writer (under the lock). The file keeps its permission bits; a file without the
owner's write bit (``chmod 444``) is refused with :class:`~.records.DatabaseError` rather than
replaced. A symlinked database is written through the link (the target is replaced, the link
stays). A file that does not parse (bad JSON, not UTF-8, nested too deeply) or has an unknown
schema raises :class:`~.records.DatabaseError` naming it and is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .records import DatabaseError, TuningDatabase

ENV_VAR = "SS1BENCH_DB"
#: Seconds a writer waits for another writer's lock before giving up with an error.
LOCK_TIMEOUT_S = 120

logger = logging.getLogger("ss1bench.tuning")


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

