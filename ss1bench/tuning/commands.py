"""``ss1bench tune`` and ``ss1bench db``: click wrappers over :mod:`.runner` and :mod:`.db`.

Registered on the ``main`` group when ``ss1bench.cli`` imports this module. torch and triton are
imported inside the commands. Usage errors and missing prerequisites (no CUDA device, no device
matching ``--gpu``, a bad ``--shape`` or ``--devices``, a database file that is corrupted or cannot
be written) print one line (``ss1bench tune: error: ...``) and exit 2, before any GPU work. A
failure while tuning exits 1 and says what was kept and how to resume.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import click

from ss1bench.cli import AliasedOption, CommandError, fail, main
from ss1bench.kernels.config import FALLBACK_SHARED_MEMORY, KINDS
from ss1bench.provenance import command_line
from ss1bench.structure import REDUCTION_FACTORS

from . import db as tdb
from . import gpu as tgpu
from .shapes import DEFAULT_M_BUCKETS, SHAPE_SET_NAMES, ShapeError, parse_m_buckets, parse_shape, resolve_layers

DTYPE_CHOICES = ("fp16", "bf16", "fp32")


def _fail(command: str, message: str, code: int = 2) -> None:
    """One line on stderr, then exit ``code`` (no traceback, no usage block): :func:`ss1bench.cli.fail`."""
    fail(message, command, code)


def _check_devices(text: str | None) -> None:
    """``--devices``: 'all' or comma-separated device indices (checked before any device is asked)."""
    if text is None or text.strip() == "" or text.strip().lower() == "all":
        return
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        _fail("tune", f"--devices {text!r}: give 'all' or comma-separated CUDA device indices such as 0,1")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _choices(option: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    values = list(dict.fromkeys(_split(text)))
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        _fail("tune", f"{option} {text!r}: choose from {', '.join(allowed)}")
    return values


def _redn_factors(text: str) -> list[int]:
    try:
        values = list(dict.fromkeys(int(v) for v in _split(text)))
    except ValueError:
        _fail("tune", f"--redn-factors {text!r} is not a comma-separated list of integers")
    bad = [v for v in values if v not in REDUCTION_FACTORS]
    if bad or not values:
        _fail("tune", f"--redn-factors {text!r}: each must be one of {', '.join(map(str, REDUCTION_FACTORS))}")
    return values


def _plan_header(gpu: str, limit: int, layers, redn_factors, dtypes, kinds, source: str) -> str:
    return (f"GPU {gpu} ({source}), shared memory {limit} B/block; {len(layers)} layers x c {redn_factors} x "
            f"{dtypes}; kinds {list(kinds)}")


#: Short kind names of the dry-run table.
_KIND_LABELS = {"forward": "fwd", "forward_rotated": "fwr", "grad_input": "gin", "grad_weight": "gwt"}


@main.command("tune")
@click.option("--gpu", default=None, help="Tune the visible device whose name normalizes to NAME (H200, A100, ...).")
@click.option("--devices", default=None, help="'all' or comma-separated CUDA indices: one worker per GPU.")
@click.option("--shapes", "shape_sets", default=None,
              help=f"Comma-separated shape sets ({', '.join(SHAPE_SET_NAMES)}); default gpt2 unless --shape or "
                   "--model is given.")
@click.option("--shape", "custom_shapes", multiple=True, help="A custom MxKxN shape (repeatable).")
@click.option("--model", "model", default=None, metavar="NAME|CONFIG.JSON",
              help="Tune exactly the linear layers of a model that its SS1 conversion converts, at the "
                   "--redn-factors: a name (gpt2, gpt2-medium, bert-base, bert-large, llama-1b, ...) or a path to "
                   "a Hugging Face config.json (or its folder). Built on the meta device: nothing is downloaded.")
@click.option("--budget", "budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MINUTES",
              help="Tune for at most this long: the work runs by expected gain (layer count x predicted time x "
                   "the untuned shortfall, per second of tuning) and an item that would not finish in time is "
                   "skipped; records are written after every item, so the database is always usable. Re-run "
                   "to continue.")
@click.option("--m-buckets", default=None,
              help=f"M buckets for the shape sets (default {','.join(map(str, DEFAULT_M_BUCKETS))}).")
@click.option("--redn-factors", default="2,4,8,16", show_default=True, help="Reduction factors c.")
@click.option("--dtype", "dtypes", default="fp16", show_default=True, help="Comma-separated: fp16, bf16, fp32.")
@click.option("--kinds", default="forward", show_default=True,
              help=f"Comma-separated kernels: {', '.join(KINDS)} (forward_rotated: the forward with the layer's "
                   "rotated-weight cache on, for inference).")
@click.option("--db", "db_override", default=None,
              help="Database to write: a .json file or a directory of <GPU>.json (default: $SS1BENCH_DB or the "
                   "user data dir).")
@click.option("--force", is_flag=True, help="Re-tune keys the databases already have, the shipped database's "
              "included (with --no-structure-search the recorded block sizes stay; with the search, it is "
              "redone).")
@click.option("--dry-run", is_flag=True, help="Print the work items and candidate counts; no GPU needed.")
@click.option("--results-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV of every candidate (default: <user data dir>/results/tune-<GPU>-<time>.csv).")
@click.option("--compile-workers", type=click.IntRange(min=0), default=None,
              help="Processes compiling kernels ahead of timing (0: compile in the timing process).")
@click.option("--no-structure-search", is_flag=True, help="Keep the default structure; tune launch configs only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
def tune_command(gpu, devices, shape_sets, custom_shapes, model, budget, m_buckets, redn_factors, dtypes, kinds,
                 db_override, force, dry_run, results_csv, compile_workers, no_structure_search, seed) -> None:
    """Tune SS1 kernels on this machine's GPU and write the tuning database.

    Keys the user database or the shipped one already has are skipped (--force re-tunes them).
    """
    from .tuner import TuneOptions

    _check_devices(devices)
    sets = _split(shape_sets) if shape_sets else ([] if custom_shapes or model else ["gpt2"])
    factors = _redn_factors(redn_factors)
    try:
        buckets = parse_m_buckets(m_buckets) if m_buckets else DEFAULT_M_BUCKETS
        layers = resolve_layers(sets, list(custom_shapes), buckets)
        if model is not None:
            layers = _with_model_layers(layers, model, factors, buckets)
    except ShapeError as exc:
        _fail("tune", str(exc))
    dtype_list = _choices("--dtype", dtypes, DTYPE_CHOICES)
    kind_list = _choices("--kinds", kinds, KINDS)
    options = TuneOptions(kinds=tuple(kind_list), structure_search=not no_structure_search, force=force)
    from .runner import TuneRequest

    command = command_line()
    request = TuneRequest(layers, factors, dtype_list, options, db_override=db_override, results_csv=results_csv,
                          compile_workers=compile_workers, seed=seed, command=command,
                          budget_s=None if budget is None else budget * 60.0)
    if dry_run:
        _dry_run(request, gpu, devices)
        return
    try:
        chosen = tgpu.select_devices(gpu, devices)
    except tgpu.DeviceSelectionError as exc:
        _fail("tune", str(exc))
    _run(request, chosen)


def _with_model_layers(layers, model: str, factors: list[int], buckets: tuple[int, ...]):
    """``layers`` (from --shapes/--shape) with the model's converted layers; a shape in both is one
    layer (its buckets joined, tuned at every factor the model or the sets ask for)."""
    from .models import build_meta_model, model_layers
    from .shapes import Layer

    built, label = build_meta_model(model)
    merged = {(layer.in_features, layer.out_features): layer for layer in layers}
    for layer in model_layers(built, label, factors, buckets):
        key = (layer.in_features, layer.out_features)
        other = merged.get(key)
        if other is None:
            merged[key] = layer
            continue
        merged[key] = Layer(*key, tuple(sorted(set(other.m_buckets) | set(layer.m_buckets))),
                            tuple(dict.fromkeys(other.names + layer.names)), max(other.count, layer.count), ())
    return list(merged.values())


def _dry_run(request, gpu: str | None, devices: str | None) -> None:
    from .runner import plan_for_gpu
    from .space import launch_candidates
    from .tuner import estimate_units, problem_for

    name, limit, source = None, FALLBACK_SHARED_MEMORY, "no device: fallback limit"
    visible = tgpu.list_devices()
    if visible:
        try:
            device = tgpu.select_devices(gpu, devices)[0]
            import torch

            from ss1bench.kernels.ss1 import device_limits

            _, limit = device_limits(torch.device("cuda", device.index))
            name, source = device.gpu, f"cuda:{device.index} {device.name}"
        except tgpu.DeviceSelectionError:
            pass
    if name is None and gpu:
        name = tgpu.normalize_gpu_name(gpu)
        if name in tgpu.KNOWN_SHARED_MEMORY:
            limit, source = tgpu.KNOWN_SHARED_MEMORY[name], "not visible: limit from the known-GPU table"
        else:
            source = "not visible and not in the known-GPU table: fallback limit"
    name = name or "UNKNOWN"
    try:
        plan = plan_for_gpu(name, request)
    except tdb.DatabaseError as exc:
        _fail("tune", str(exc))
    todo, db_path = plan.todo, plan.db_path
    click.echo(_plan_header(name, limit, request.layers, request.redn_factors, request.dtypes,
                            request.options.kinds, source))
    click.echo(f"database: {db_path} ({'exists' if db_path.exists() else 'new'}); {_plan_counts(plan, request)}")
    header = f"{'item':34} {'structures':>10}  candidates per (kind, M): kept/pruned"
    if request.budget_s is not None:
        from .tuner import SECONDS_PER_UNIT, expected_gain_ms, order_by_gain

        todo = order_by_gain(todo, limit, 132, request.options)
        click.echo(f"budget {request.budget_s / 60:g} min: items by expected gain (ms saved per model step), about "
                   f"{SECONDS_PER_UNIT} s per measurement; items marked 'over budget' would be skipped")
        header = f"{'item':34} {'gain ms':>8} {'layers':>6} {'structures':>10}  candidates per (kind, M): kept/pruned"
    click.echo(header)
    total_units = 0
    for item in todo:
        parts = []
        for kind, m in item.pairs():
            if (kind, m) not in item.todo:
                parts.append(f"{_KIND_LABELS[kind]}@{m}: recorded")
                continue
            candidates = launch_candidates(problem_for(item, kind, m, item.primary), limit)
            parts.append(f"{_KIND_LABELS[kind]}@{m}: {len(candidates.kept)}/{len(candidates.rejected)}")
        units = estimate_units(item, request.options, limit, 132)
        total_units += units
        structures = f"{len(item.structures)}" + ("" if item.searches_structure else " (kept)")
        if request.budget_s is None:
            click.echo(f"{item.label:34} {structures:>10}  " + ", ".join(parts))
            continue
        over = "" if total_units * SECONDS_PER_UNIT <= request.budget_s else "over budget: "
        click.echo(f"{item.label:34} {expected_gain_ms(item):8.4f} {item.count:>6} {structures:>10}  {over}"
                   + ", ".join(parts))
    click.echo(f"total: {len(todo)} items, about {total_units} measurements (gate + time each)")


def _plan_counts(plan, request) -> str:
    """``3 items to tune, 61 already tuned (58 of them by the shipped database ...; --force re-tunes
    them ...); launch records: 300 of 320 recorded (290 by the shipped database)``."""
    text = f"{len(plan.todo)} items to tune, {len(plan.done)} already tuned"
    if request.options.force:
        return text + " (--force: every key is re-tuned)"
    if plan.shipped_done:
        text += (f" ({plan.shipped_done} of them by the shipped database {plan.shipped_path}; --force re-tunes "
                 "them into the user database)")
    asked, recorded, shipped = plan.pairs
    if plan.todo and recorded:
        text += (f"; launch records: {recorded} of {asked} recorded"
                 + (f" ({shipped} by the shipped database)" if shipped else "") + ", only the others are tuned")
    return text


def _check_results_csv(path: Path) -> None:
    """The results CSV can be written (its folder made, the file appended to): before GPU work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail("tune", f"--results-csv {path}: cannot create its folder ({exc.strerror or exc})")
    if path.is_dir():
        _fail("tune", f"--results-csv {path} is a folder; give a file name")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        _fail("tune", f"--results-csv {path}: cannot write there (permission denied)")


def _run(request, devices) -> None:
    from .runner import plan_for_gpu, run_tuning

    plans = {}
    for device in devices:
        if device.gpu in plans:
            continue
        try:
            plans[device.gpu] = plan_for_gpu(device.gpu, request)
            tdb.check_writable(plans[device.gpu].db_path)  # before any GPU work
        except tdb.DatabaseError as exc:
            _fail("tune", str(exc))
    if request.results_csv is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        request.results_csv = tdb.user_data_dir() / "results" / f"tune-{devices[0].gpu}-{stamp}.csv"
    _check_results_csv(request.results_csv)
    for gpu, plan in plans.items():
        names = ", ".join(d.describe() for d in devices if d.gpu == gpu)
        click.echo(f"{gpu}: {names}; database {plan.db_path}; {_plan_counts(plan, request)}")
    if not any(plan.todo for plan in plans.values()):
        click.echo("nothing to tune (every key is in the user or the shipped database; --force re-tunes)")
        return
    reports = run_tuning(request, devices, plans, click.echo)
    _print_summary(reports, request, plans)
    errors = [report for report in reports if report.error]
    for report in errors:
        CommandError(f"{report.device}: {report.error}", "tune", 1).show()
    if errors:
        raise SystemExit(1)


def _fmt_ms(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def _print_summary(reports, request, plans) -> None:
    rows = [row for report in reports for row in report.summary]
    if rows:
        click.echo("")
        click.echo(f"{'dtype':5} {'K':>6} {'N':>6} {'c':>3} {'struct':>7} {'kind':11} {'M':>6}  {'config':30} "
                   f"{'ms':>9} {'dense ms':>9} {'speedup':>7} {'ok/fail':>8}")
        for r in rows:
            speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
            click.echo(f"{r['dtype']:5} {r['K']:>6} {r['N']:>6} {r['c']:>3} {r['structure']:>7} {r['kind']:11} "
                       f"{r['M']:>6}  {r['config']:30} {_fmt_ms(r['ms']):>9} {_fmt_ms(r['dense_ms']):>9} "
                       f"{speed:>7} {str(r['ok']) + '/' + str(r['failed']):>8}")
    click.echo("")
    for report in reports:
        click.echo(
            f"{report.device}: {report.items} items, {report.measurements} candidates measured "
            f"({report.failed_gate} failed the gate, {report.failed_run} failed to compile or run), "
            f"{report.records} records written; compile workers {report.compile_workers} "
            f"({report.compile_worker_s:.0f} s of compiling), first launches in the timing process "
            f"{report.first_launch_s:.1f} s ({report.slow_first_launches} over 0.5 s)"
            + (f"; compile pool unavailable: {report.pool_error}" if report.pool_error else ""))
    skipped = [label for report in reports for label in report.skipped]
    if skipped:
        click.echo(f"budget of {request.budget_s / 60:g} min reached: {len(skipped)} items left untuned "
                   f"({', '.join(skipped[:6])}{', ...' if len(skipped) > 6 else ''}); every item tuned is in the "
                   "database, the others use the nearest tuned shape or the heuristic; re-run the same command "
                   "to continue")
    for gpu, plan in plans.items():
        try:
            database = tdb.read_database(plan.db_path)
        except tdb.DatabaseError:
            database = None
        if database is not None:
            wall = database.metadata.get("tuning_wall_time_s")
            click.echo(f"{gpu}: database {plan.db_path} (tuning wall time {wall} s)")
    if request.results_csv is not None:
        click.echo(f"results: {request.results_csv}")


# ---------------------------------------------------------------------------------------------
# ss1bench db
# ---------------------------------------------------------------------------------------------


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
        raise tdb.DatabaseError(f"{path}: no such file")
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
  gemv TNxTK [rowsR] wW sS = matrix-vector kernel: tile N x K_red, R rows of x per program
  resident TMxTN (K_red TK) wW sS = the whole K_red reduced in one step per M x N tile
  ms: the tuned config's median time; dense ms: cuBLAS F.linear at the same M, K, N; speedup = dense / ms"""

def _structure_legend() -> str:
    from .tuner import TuneOptions

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
@click.option("--dtype", "dtype", type=click.Choice(DTYPE_CHOICES), default="fp16", show_default=True,
              help="With --explain: the layer's dtype.")
def db_show_command(files, gpu, db_override, launch, explain_shape, redn_factors, dtype) -> None:
    """Print databases: metadata, recommended structures, and launch records (counted; --launch lists them).

    Without FILES: the files that serve the GPU (--gpu, else the current device): its own, or, when it
    has none, those of the closest GPU that has (same architecture first)."""
    from ss1bench.kernels.config import LaunchConfig

    from .space import describe

    factors: list[int] = []
    if explain_shape is not None:  # usage errors before anything else is said
        try:
            factors = list(dict.fromkeys(int(v) for v in _split(redn_factors)))
        except ValueError:
            factors = []
        if not factors or any(c not in REDUCTION_FACTORS for c in factors):
            _fail("db show", f"--redn-factors {redn_factors!r}: each must be one of "
                             f"{', '.join(map(str, REDUCTION_FACTORS))}")
        try:
            shape = parse_shape(explain_shape)
        except ShapeError as exc:
            _fail("db show", str(exc).replace("--shape", "--explain"))
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
        except tdb.DatabaseError as exc:
            _fail("db show", str(exc))
        meta = database.metadata
        if index:
            click.echo("")
        click.echo(f"== {path}  (GPU {database.gpu}; {meta.get('device_name', '?')}; torch {meta.get('torch', '?')}, "
                   f"triton {meta.get('triton', '?')}; {meta.get('date', '?')}; tuning wall time "
                   f"{meta.get('tuning_wall_time_s', '?')} s)")
        click.echo(f"structures ({len(database.structures)}): what a new SSL layer gets")
        if database.structures:
            click.echo("  " + _structure_legend())
        for key in sorted(database.structures, key=lambda k: tdb.StructureKey.parse(k)):
            record = database.structures[key]
            times = record.get("relative_time", {})
            note = "searched" if record.get("searched", True) else "default kept (not searched)"
            click.echo(f"  {key:24} block_k={record['block_k']:<4} block_n={record['block_n']:<4} {note}"
                       + (f"  relative time {times}" if times else ""))
        kinds: dict[str, int] = {}
        for key in database.launch:
            kind = tdb.LaunchKey.parse(key).kind
            kinds[kind] = kinds.get(kind, 0) + 1
        counts = ", ".join(f"{kind} {kinds[kind]}" for kind in KINDS if kind in kinds)
        click.echo(f"launch configs ({len(database.launch)}){': ' + counts if counts else ''}"
                   + ("" if launch or not database.launch else " (--launch lists them)"))
        if launch and database.launch:
            click.echo(LAUNCH_LEGEND)
            for key in sorted(database.launch, key=lambda k: tdb.LaunchKey.parse(k)):
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
        _fail("db show", "--explain needs a GPU: pass --gpu NAME (no CUDA device is visible)")
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
        except tdb.DatabaseError as exc:
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
    except tdb.DatabaseError as exc:
        _fail("db merge", str(exc))
    click.echo(f"{target}: {changed} records added or updated; now {len(merged.structures)} structures, "
               f"{len(merged.launch)} launch configs (GPU {merged.gpu})")
