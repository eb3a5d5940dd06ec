"""``ss1bench db``: inspect, validate and merge tuning databases (click wrappers over :mod:`.db`).

Registered on the ``main`` group when ``ss1bench.cli`` imports this module; no command needs a GPU
(``db show --explain`` reads a visible device's shared memory when there is one). Usage errors and
files that cannot be read print one line (``ss1bench db show: error: ...``) and exit 2; ``db
validate`` lists every file and exits 1 if any is invalid.
"""

from __future__ import annotations

from pathlib import Path

import click

from ss1bench.cli import AliasedOption, fail, main
from ss1bench.cli_options import positive_ints
from ss1bench.dtypes import TORCH_DTYPES
from ss1bench.kernels.config import FALLBACK_SHARED_MEMORY, KINDS
from ss1bench.structure import REDUCTION_FACTORS

from . import db as tdb
from . import gpu as tgpu
from .keys import LaunchKey, StructureKey
from .records import DatabaseError
from .shapes import ShapeError, parse_shape


@main.group("db")
def db_command() -> None:
    """Inspect, validate and merge tuning databases."""


def _current_gpu(gpu: str | None) -> str | None:
    if gpu:
        return tgpu.normalize_gpu_name(gpu)
    visible = tgpu.list_devices()
    if not visible:
        return None
    index = tgpu.current_device_index()
    return next((d.gpu for d in visible if d.index == index), visible[0].gpu)


def _all_files(db_override: str | None) -> list:
    location = tdb.user_location(db_override)
    files: list = []
    if location.suffix == ".json":
        files.append(location)
    elif location.is_dir():
        files.extend(sorted(location.glob("*.json")))
    files.extend(tdb.shipped_db_path(g) for g in tdb.shipped_gpus())
    return files


def _files_for(files: tuple[str, ...], gpu: str | None, db_override: str | None) -> list:
    if files:
        return [Path(f) for f in files]
    if gpu:
        candidates = [tdb.user_db_path(gpu, db_override), tdb.shipped_db_path(gpu)]
        return [f for f in candidates if f.is_file()]
    return _all_files(db_override)


def _read(path):
    """The database in ``path`` (a file or the shipped package's); DatabaseError for anything wrong."""
    database = tdb.read_database(path)
    if database is None:
        raise DatabaseError(f"{path}: no such file")
    return database


def _note_missing_env() -> None:
    note = tdb.missing_env_location()
    if note is not None:
        click.echo(f"note: {note}", err=True)


@db_command.command("path")
@click.option("--gpu", default=None, help="GPU name (default: the current CUDA device).")
@click.option("--db", "db_override", default=None, help="Database override (as for tune).")
def db_path_command(gpu, db_override) -> None:
    """Where the user and shipped databases are (looked up in this order)."""
    if db_override is None:
        _note_missing_env()
    name = _current_gpu(gpu)
    if name is None:
        click.echo(f"user:    {tdb.user_location(db_override)}  (<GPU>.json inside unless it is a .json file)")
        click.echo(f"shipped: {tdb.shipped_dir()}  ({', '.join(tdb.shipped_gpus()) or 'no files'})")
        return
    user = tdb.user_db_path(name, db_override)
    shipped = tdb.shipped_db_path(name)
    click.echo(f"user:    {user}  ({'exists' if user.is_file() else 'missing'})")
    click.echo(f"shipped: {shipped}  ({'exists' if shipped.is_file() else 'missing'})")


#: What ``db show --launch`` prints, line by line (the tile strings come from ``space.describe``).
LAUNCH_LEGEND = """\
legend: KIND/DTYPE/K<in>/N<out>/c<reduction>/bk<block_k>/bn<block_n>/M<bucket>  CONFIG  ms  dense ms  speedup
  CONFIG of the fused kernel: TMxTNxTK wW sS gG [splitX] [splitkY] = tile along M x N x K_red, W warps,
    S pipeline stages, grouped ordering G rows of tiles wide, M reduction split X ways (grad_weight),
    K_red reduction split Y ways (forward at decode sizes)
  sketch+gemm TMxTK wW = the sketch kernel's tile (M x K_red) and warps, then cuBLAS for the product
  gemv TNxTK [rowsR] [block] wW sS = matrix-vector kernel: tile N x K_red, R rows of x per program;
    block: the sketch's c members gathered as one block (each x element added once per program)
  resident TMxTN wW sS = the whole K_red reduced in one step per M x N tile
  rR (any but sketch+gemm) = ptxas given a cap of R registers per thread (lifts its own register
    target: a decode kernel then issues the sketch's member loads together)
  ms: the tuned config's median time; dense ms: cuBLAS F.linear at the same M, K, N; speedup = dense / ms"""

def _structure_legend() -> str:
    from .work import TuneOptions

    gain = TuneOptions().structure_min_gain
    return ("legend: DTYPE/K<in>/N<out>/c<reduction>  block_k/block_n: the structure a new SSL layer gets; "
            "relative time: each candidate BKxBN's time over the default structure's (geometric mean over the "
            f"prefill buckets; lower is faster; another structure is chosen only when {gain:.0%} faster)")


@db_command.command("show")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--gpu", default=None, help="GPU name (default: the current CUDA device, else every file).")
@click.option("--db", "db_override", default=None, help="Database override (as for tune).")
@click.option("--launch/--no-launch", default=False, show_default=True,
              help="List every launch record (with a legend of the config strings); by default only their "
                   "count per kind.")
@click.option("--explain", "explain_shape", default=None, metavar="MxKxN",
              help="Say what an SSL layer of this shape gets on the GPU (structure, then each kernel's launch "
                   "config) and why: a record, the nearest tuned shape's record, or the heuristic.")
@click.option("--redn-factors", "redn_factors", cls=AliasedOption, aliases=("--redn-factor",), default="4",
              show_default=True, help="With --explain: the layer's reduction factor c (comma-separated: each).")
@click.option("--dtype", "dtype", type=click.Choice(tuple(TORCH_DTYPES)), default="fp16", show_default=True,
              help="With --explain: the layer's dtype.")
def db_show_command(files, gpu, db_override, launch, explain_shape, redn_factors, dtype) -> None:
    """Print databases: metadata, recommended structures, and launch records (counted; --launch lists them).

    Without FILES: the files that serve the GPU (--gpu, else the current device): its own, or, when it
    has none, those of the closest GPU that has (same architecture first)."""
    from ss1bench.kernels.config import LaunchConfig

    from .space import describe

    factors: list[int] = []
    if explain_shape is not None:  # usage errors before anything else is said
        factors = list(dict.fromkeys(positive_ints("--redn-factors", redn_factors)))
        if any(c not in REDUCTION_FACTORS for c in factors):
            fail(f"--redn-factors {redn_factors!r}: each must be one of {', '.join(map(str, REDUCTION_FACTORS))}",
                 "db show")
        try:
            shape = parse_shape(explain_shape)
        except ShapeError as exc:
            fail(str(exc).replace("--shape", "--explain"), "db show")
    if not files and db_override is None:
        _note_missing_env()
    name = gpu if gpu else (None if files else _current_gpu(None))
    if explain_shape is not None:
        for index, c in enumerate(factors):
            if index:
                click.echo("")
            _explain(shape, c, dtype, name, db_override)
        return
    paths = _files_for(files, name, db_override)
    if not paths and name and not files:
        serving = _serving(name, db_override)
        if serving.sibling is not None:
            click.echo(f"GPU {serving.gpu} has no database file: served by {serving.describe()}")
            paths = [database.path for database in serving.chain]
    elif name and not files:
        click.echo(f"GPU {tgpu.normalize_gpu_name(name)} is served by {_serving(name, db_override).describe()}")
    if not paths:
        click.echo("no tuning database files found")
        return
    for index, path in enumerate(paths):
        try:
            database = _read(path)
        except DatabaseError as exc:
            fail(str(exc), "db show")
        meta = database.metadata
        if index:
            click.echo("")
        click.echo(f"== {path}  (GPU {database.gpu}; {meta.get('device_name', '?')}; torch {meta.get('torch', '?')}, "
                   f"triton {meta.get('triton', '?')}; {meta.get('date', '?')}; tuning wall time "
                   f"{meta.get('tuning_wall_time_s', '?')} s)")
        click.echo(f"structures ({len(database.structures)}): what a new SSL layer gets")
        if database.structures:
            click.echo("  " + _structure_legend())
        for key in sorted(database.structures, key=lambda k: StructureKey.parse(k)):
            record = database.structures[key]
            times = record.get("relative_time", {})
            note = "searched" if record.get("searched", True) else "default kept (not searched)"
            click.echo(f"  {key:24} block_k={record['block_k']:<4} block_n={record['block_n']:<4} {note}"
                       + (f"  relative time {times}" if times else ""))
        kinds: dict[str, int] = {}
        for key in database.launch:
            kind = LaunchKey.parse(key).kind
            kinds[kind] = kinds.get(kind, 0) + 1
        counts = ", ".join(f"{kind} {kinds[kind]}" for kind in KINDS if kind in kinds)
        click.echo(f"launch configs ({len(database.launch)}){': ' + counts if counts else ''}"
                   + ("" if launch or not database.launch else " (--launch lists them)"))
        if launch and database.launch:
            click.echo(LAUNCH_LEGEND)
            for key in sorted(database.launch, key=lambda k: LaunchKey.parse(k)):
                record = database.launch[key]
                config = describe(LaunchConfig.from_dict(record["config"]))
                click.echo(f"  {key:46} {config:30} {record['ms']:.4f} ms  dense {record['dense_ms']:.4f} ms  "
                           f"{record['speedup']:.2f}x")


def _serving(gpu: str, db_override: str | None):
    from .lookup import DatabaseLookup

    return DatabaseLookup(db_override).serving(gpu)


def _explain_limit(gpu: str) -> tuple[int, str]:
    """Shared memory per block for ``--explain``: the visible device's, else the known-GPU table's."""
    for device in tgpu.list_devices():
        if device.gpu == gpu:
            import torch

            from ss1bench.kernels.ss1 import device_limits

            return device_limits(torch.device("cuda", device.index))[1], f"cuda:{device.index}"
    if gpu in tgpu.KNOWN_SHARED_MEMORY:
        return tgpu.KNOWN_SHARED_MEMORY[gpu], "known-GPU table"
    return FALLBACK_SHARED_MEMORY, "not visible, not in the known-GPU table: fallback"


def _explain(shape: tuple[int, int, int], redn_factor: int, dtype: str, gpu: str | None,
             db_override: str | None) -> None:
    """``db show --explain MxKxN``: what a layer of shape ``(M, K, N)`` gets on ``gpu``, and why."""
    from ss1bench.kernels.config import Problem
    from ss1bench.kernels.heuristic import REFERENCE_GPU

    from .lookup import DatabaseLookup
    from .space import default_structure, describe

    m, k, n = shape
    if gpu is None:
        fail("--explain needs a GPU: pass --gpu NAME (no CUDA device is visible)", "db show")
    name = tgpu.normalize_gpu_name(gpu)
    lookup = DatabaseLookup(db_override)
    serving = lookup.serving(name)
    limit, limit_source = _explain_limit(name)
    click.echo(f"{m}x{k}x{n} {dtype} c={redn_factor} on {name} (shared memory {limit} B/block, {limit_source})")
    click.echo(f"database: {serving.describe()}")
    structure = lookup.structure_for_gpu(name, dtype, k, n, redn_factor)
    if structure is None:
        block_k, block_n = default_structure(k, redn_factor)
        click.echo(f"structure: block_k={block_k} block_n={block_n} (the default: no structure record for "
                   f"{dtype}/K{k}/N{n}/c{redn_factor})")
    else:
        block_k, block_n = structure
        click.echo(f"structure: block_k={block_k} block_n={block_n} (record {dtype}/K{k}/N{n}/c{redn_factor})")
    for kind in KINDS:
        problem = Problem(kind, m, k, n, redn_factor, block_k, block_n, dtype, name)
        answer = lookup.explain(problem, limit)
        if answer.source == "record":
            why = f"record {answer.key} ({answer.file})"
        elif answer.source == "nearest shape":
            why = (f"nearest tuned shape: record {answer.key} at distance {answer.distance:.2f} ({answer.file}), "
                   "adapted to this shape")
        elif answer.key:
            why = (f"heuristic: the learned rule, nearest {REFERENCE_GPU} layer {answer.key} at distance "
                   f"{answer.distance:.2f}, adapted to this shape")
        else:
            why = "heuristic: the fixed rule (the learned rule has no examples for this dtype or kind)"
        click.echo(f"  {kind:16} {describe(answer.config):32} {why}")


@db_command.command("validate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--db", "db_override", default=None, help="Database override (as for tune).")
def db_validate_command(files, db_override) -> None:
    """Check database files (default: every user and shipped file); exit 1 if any is invalid."""
    if not files and db_override is None:
        _note_missing_env()
    paths = [Path(f) for f in files] if files else _all_files(db_override)
    if not paths:
        click.echo("no tuning database files found")
        return
    bad = 0
    for path in paths:
        try:
            database = _read(path)
        except DatabaseError as exc:
            bad += 1
            click.echo(f"invalid: {exc}")
            continue
        click.echo(f"ok: {path} (GPU {database.gpu}: {len(database.structures)} structures, "
                   f"{len(database.launch)} launch configs)")
    if bad:
        raise SystemExit(1)


@db_command.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--into", "target", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Database file to merge into (created if missing), e.g. tuning_db/H200.json.")
def db_merge_command(sources, target) -> None:
    """Merge database files into one.

    A key two files have: the record with the later date wins (dates are compared as instants,
    offsets honoured). On the same instant the faster record (smaller ms) wins, then the one whose
    JSON text sorts first, so the result does not depend on the order of the files.
    """
    try:
        merged, changed = tdb.merge_files([Path(s) for s in sources], target)
    except DatabaseError as exc:
        fail(str(exc), "db merge")
    click.echo(f"{target}: {changed} records added or updated; now {len(merged.structures)} structures, "
               f"{len(merged.launch)} launch configs (GPU {merged.gpu})")
