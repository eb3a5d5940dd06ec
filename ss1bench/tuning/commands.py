"""``ss1bench tune``: a click wrapper over :mod:`.runner` (``ss1bench db`` is in :mod:`.db_commands`).

Registered on the ``main`` group when ``ss1bench.cli`` imports this module. torch and triton are
imported inside the command. Usage errors and missing prerequisites (no CUDA device, no device
matching ``--gpu``, a bad ``--shape`` or ``--devices``, a database file that is corrupted or cannot
be written) print one line (``ss1bench tune: error: ...``) and exit 2, before any GPU work. A
failure while tuning exits 1 and says what was kept and how to resume.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import click

from ss1bench.cli import CommandError, fail, main
from ss1bench.cli_options import choices, positive_ints, split_list
from ss1bench.dtypes import TORCH_DTYPES
from ss1bench.kernels.config import FALLBACK_SHARED_MEMORY, KINDS
from ss1bench.provenance import command_line
from ss1bench.structure import REDUCTION_FACTORS

from . import db as tdb
from . import gpu as tgpu
from .records import DatabaseError
from .shapes import DEFAULT_M_BUCKETS, SHAPE_SET_NAMES, ShapeError, parse_m_buckets, resolve_layers


def _redn_factors(text: str) -> list[int]:
    """``--redn-factors``: the distinct factors of ``text`` in the order given, each one of
    ``REDUCTION_FACTORS``."""
    values = list(dict.fromkeys(positive_ints("--redn-factors", text)))
    if any(v not in REDUCTION_FACTORS for v in values):
        fail(f"--redn-factors {text!r}: each must be one of {', '.join(map(str, REDUCTION_FACTORS))}", "tune")
    return values


def _check_devices(text: str | None) -> None:
    """``--devices``: 'all' or comma-separated device indices (checked before any device is asked)."""
    if text is None or text.strip() == "" or text.strip().lower() == "all":
        return
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        fail(f"--devices {text!r}: give 'all' or comma-separated CUDA device indices such as 0,1", "tune")


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
                   "rotated-weight cache on, for inference; grad_input, grad_weight: the fused backward kernels; "
                   "SSL's training path runs its backward products in cuBLAS and takes at most the unsketch tile "
                   "of a grad_input record).")
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
    from .work import TuneOptions

    _check_devices(devices)
    sets = split_list(shape_sets) if shape_sets else ([] if custom_shapes or model else ["gpt2"])
    factors = _redn_factors(redn_factors)
    try:
        buckets = parse_m_buckets(m_buckets) if m_buckets else DEFAULT_M_BUCKETS
        layers = resolve_layers(sets, list(custom_shapes), buckets)
        if model is not None:
            layers = _with_model_layers(layers, model, factors, buckets)
    except ShapeError as exc:
        fail(str(exc), "tune")
    dtype_list = list(dict.fromkeys(choices("--dtype", dtypes, tuple(TORCH_DTYPES))))
    kind_list = list(dict.fromkeys(choices("--kinds", kinds, KINDS)))
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
        fail(str(exc), "tune")
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
    from .work import estimate_units, problem_for

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
    except DatabaseError as exc:
        fail(str(exc), "tune")
    todo, db_path = plan.todo, plan.db_path
    click.echo(_plan_header(name, limit, request.layers, request.redn_factors, request.dtypes,
                            request.options.kinds, source))
    click.echo(f"database: {db_path} ({'exists' if db_path.exists() else 'new'}); {_plan_counts(plan, request)}")
    header = f"{'item':34} {'structures':>10}  candidates per (kind, M): kept/pruned"
    if request.budget_s is not None:
        from .budget import SECONDS_PER_UNIT, expected_gain_ms, order_by_gain

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
        fail(f"--results-csv {path}: cannot create its folder ({exc.strerror or exc})", "tune")
    if path.is_dir():
        fail(f"--results-csv {path} is a folder; give a file name", "tune")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"--results-csv {path}: cannot write there (permission denied)", "tune")


def _run(request, devices) -> None:
    from .runner import plan_for_gpu, run_tuning

    plans = {}
    for device in devices:
        if device.gpu in plans:
            continue
        try:
            plans[device.gpu] = plan_for_gpu(device.gpu, request)
            tdb.check_writable(plans[device.gpu].db_path)  # before any GPU work
        except DatabaseError as exc:
            fail(str(exc), "tune")
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
        except DatabaseError:
            database = None
        if database is not None:
            wall = database.metadata.get("tuning_wall_time_s")
            click.echo(f"{gpu}: database {plan.db_path} (tuning wall time {wall} s)")
    if request.results_csv is not None:
        click.echo(f"results: {request.results_csv}")
