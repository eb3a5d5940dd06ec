"""``ss1bench tune`` end to end: plan per GPU, run on one or several devices, write, summarize.

One device runs in this process; ``--devices`` with several runs one worker process per device
(spawned; each with its own compile pool), items split by estimated cost, progress and results
sent back over a queue. Every worker merges its records into the GPU's database file under the
file lock after each item, so nothing is lost and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import multiprocessing
import queue as queue_module
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .budget import SECONDS_PER_UNIT, order_by_gain
from .db import read_database, shipped_db_path, user_data_dir, user_db_path, write_records
from .gpu import Device
from .outcome import CSV_FIELDS, csv_rows, summary_rows
from .records import DatabaseError, TuningDatabase, now_iso
from .shapes import Layer
from .tuner import Tuner, TuningAborted
from .work import TuneOptions, WorkItem, estimate_units, plan_work


@dataclass
class TuneRequest:
    layers: list[Layer]
    redn_factors: list[int]
    dtypes: list[str]
    options: TuneOptions
    db_override: str | None = None
    results_csv: Path | None = None
    compile_workers: int | None = None
    seed: int = 0
    command: str = ""
    #: Devices tuning at once (splits the default compile workers between them).
    device_count: int = 1
    #: ``--budget``: seconds of tuning (None: no limit). Work runs by expected gain and an item that
    #: would not finish in the time left is skipped (:class:`Budget`).
    budget_s: float | None = None
    #: The budget's end (``time.time()``), set when the run starts (shared by the worker processes).
    deadline: float | None = None


def now() -> float:
    """Wall-clock seconds (``time.time``: the budget's deadline is shared by worker processes)."""
    return time.time()


class Budget:
    """Whether the next item fits in the time left (``--budget``).

    An item's time is predicted as its measurement count (:func:`~.work.estimate_units`) times the
    seconds per measurement this run has taken so far (:data:`~.budget.SECONDS_PER_UNIT` until it
    has measured something). An item predicted to end after the deadline is not started (a later,
    cheaper one may still fit); a started item always finishes, and its records are written as
    soon as it does, so the database is complete for every layer tuned when the run stops.
    """

    def __init__(self, deadline: float | None, clock=None) -> None:
        self.deadline = deadline
        self.clock = clock if clock is not None else now
        self.units = 0
        self.seconds = 0.0

    def seconds_per_unit(self) -> float:
        return self.seconds / self.units if self.units else SECONDS_PER_UNIT

    def allows(self, units: int) -> bool:
        if self.deadline is None:
            return True
        return self.clock() + units * self.seconds_per_unit() <= self.deadline

    def spent(self, units: int, seconds: float) -> None:
        self.units += units
        self.seconds += seconds


@dataclass
class DeviceReport:
    device: str
    gpu: str
    summary: list[dict] = field(default_factory=list)
    items: int = 0
    measurements: int = 0
    failed_gate: int = 0
    failed_run: int = 0
    records: int = 0
    first_launch_s: float = 0.0
    slow_first_launches: int = 0
    compile_worker_s: float = 0.0
    compile_workers: int = 0
    pool_error: str | None = None
    error: str | None = None
    #: Labels of the items the budget left untuned.
    skipped: list[str] = field(default_factory=list)


def environment(device_name: str) -> dict[str, str]:
    import torch
    import triton

    from ss1bench import __version__

    return {"device_name": device_name, "torch": torch.__version__, "triton": triton.__version__,
            "ss1bench": __version__}


def split_items(items: list[WorkItem], devices: int, cost, keep_order: bool = False) -> list[list[WorkItem]]:
    """Longest-processing-time-first split of ``items`` over ``devices`` (``cost(item)``); with
    ``keep_order`` (a budget: items come by expected gain), each device takes the next item in
    order when its share is the lightest, and keeps that order."""
    shares: list[list[WorkItem]] = [[] for _ in range(devices)]
    if keep_order:
        loads = [0] * devices
        for item in items:
            target = loads.index(min(loads))
            shares[target].append(item)
            loads[target] += cost(item)
        return shares
    loads = [0] * devices
    for item in sorted(items, key=cost, reverse=True):
        target = loads.index(min(loads))
        shares[target].append(item)
        loads[target] += cost(item)
    return shares


def _append_csv(path: Path, rows: list[dict]) -> None:
    from .db import locked

    if not rows:
        return
    with locked(path):
        new = not path.exists() or path.stat().st_size == 0
        fields = CSV_FIELDS
        if not new:  # keep the file's own columns (one written by an older version may lack some)
            with path.open(newline="", encoding="utf-8") as handle:
                fields = next(csv.reader(handle), None) or CSV_FIELDS
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)


def run_on_device(device: Device, items: list[WorkItem], request: TuneRequest, progress) -> DeviceReport:
    """Tune ``items`` on ``device`` (this process); records go to the GPU's database as they finish."""
    import torch

    from ss1bench.kernels.ss1 import device_limits

    from .lookup import DATABASE
    from .measure import KernelBench, default_compile_workers

    torch.cuda.set_device(device.index)
    cuda = torch.device("cuda", device.index)
    name, shared_memory = device_limits(cuda)
    sm_count = torch.cuda.get_device_properties(device.index).multi_processor_count
    workers = request.compile_workers
    if workers is None:
        workers = default_compile_workers(request.device_count)
    report = DeviceReport(device=device.describe(), gpu=device.gpu, compile_workers=workers)
    db_path = user_db_path(device.gpu, request.db_override)
    bench = KernelBench(cuda, compile_workers=workers, seed=request.seed)
    tuner = Tuner(bench, device.gpu, shared_memory, request.options, environment(name), sm_count=sm_count,
                  progress=progress)

    try:
        # Queue every item's screening compiles now: the pool works through them in item order
        # (lower priority first) while this process times, and a later item's kernels are
        # usually compiled long before it starts. Refinement and probe compiles of the current
        # item, queued later with its index, overtake the later items' screening compiles.
        for index, item in enumerate(items):
            tuner.precompile_item(item, index)
        budget = Budget(request.deadline)
        for index, item in enumerate(items):
            estimate = estimate_units(item, request.options, shared_memory, sm_count)
            if not budget.allows(estimate):
                report.skipped.append(item.label)
                progress(0, -estimate, item.label)
                continue
            started = budget.clock()
            try:
                outcome = tuner.tune_item(item, index)
            except TuningAborted as exc:
                report.error = f"stopped: {exc} (records written so far are kept; re-run to resume)"
                break
            rows = csv_rows(outcome, device.gpu, name)
            if request.results_csv is not None:  # first: kept even when the database write fails
                _append_csv(request.results_csv, rows)
            try:
                write_records(db_path, outcome.updates)
            except (DatabaseError, OSError) as exc:
                report.error = _unwritten(exc, outcome, device, db_path, request)
                break
            DATABASE.reset()
            report.items += 1
            report.records += len(outcome.updates.launch) + len(outcome.updates.structures)
            report.summary.extend(summary_rows(outcome))
            done = [x for x in outcome.measurements if x.status != "pruned"]
            report.measurements += len(done)
            report.failed_gate += sum(x.status == "failed_gate" for x in done)
            report.failed_run += sum(x.status == "failed_run" for x in done)
            progress(0, len(done) + _dense_count(outcome) - estimate, item.label)
            budget.spent(len(done) + _dense_count(outcome), budget.clock() - started)
    finally:
        report.first_launch_s = bench.first_launch_s
        report.slow_first_launches = bench.slow_first_launches
        report.compile_worker_s = bench.compile_worker_s
        report.pool_error = bench.pool_error
        bench.close()
    return report


def unwritten_path(request: TuneRequest, device: Device) -> Path:
    """Where a run keeps the records it measured but could not write to the database."""
    csv_path = request.results_csv or (user_data_dir() / "results" / "tune.csv")
    return csv_path.with_name(f"{csv_path.stem}-unwritten-cuda{device.index}.json")


def _unwritten(error: Exception, outcome, device: Device, db_path: Path, request: TuneRequest) -> str:
    """Keep ``outcome``'s records in a file of their own; the message says how to resume."""
    kept = [f"every measured candidate is in {request.results_csv}"] if request.results_csv else []
    pending = unwritten_path(request, device)
    try:
        write_records(pending, outcome.updates)
        kept.append(f"the records of {outcome.item.label} are in {pending} (add them with "
                    f"`ss1bench db merge {pending} --into {db_path}`)")
    except (DatabaseError, OSError) as exc:
        kept.append(f"the records of {outcome.item.label} could not be kept either ({exc})")
    return (f"could not write the tuning database: {error}. Kept: {'; '.join(kept)}. Fix the database file, then "
            "re-run the same command to resume (items already in the database are skipped)")


def _dense_count(outcome) -> int:
    return sum(1 for (s, _k, _m), r in outcome.results.items() if s == outcome.item.primary and r.dense_ms)


def _device_worker(device: Device, items: list[WorkItem], request: TuneRequest, channel) -> None:
    """Entry point of a per-device process (spawned)."""

    def progress(done: int, total: int, label: str) -> None:
        channel.put(("progress", done, total, f"cuda:{device.index} {label}"))

    try:
        report = run_on_device(device, items, request, progress)
        channel.put(("done", report))
    except BaseException as exc:  # reported by the parent, which sets the exit code
        channel.put(("done", DeviceReport(device=device.describe(), gpu=device.gpu,
                                          error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")))


class ProgressLine:
    """A one-line progress bar with ETA on stderr (a plain line every 10% when not a terminal)."""

    def __init__(self, total: int, stream=None, width: int = 28) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.label = ""
        self._last_draw = 0.0
        self._last_decile = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, total_delta: int, label: str) -> None:
        self.done += done
        self.total = max(self.total + total_delta, self.done, 1)
        self.label = label or self.label
        now = time.perf_counter()
        if self._tty and now - self._last_draw < 0.2 and self.done < self.total:
            return
        self._last_draw = now
        self._draw(now)

    def text(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = now - self.start
        fraction = min(self.done / self.total, 1.0)
        eta = elapsed / fraction - elapsed if fraction > 0 else float("nan")
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        return (f"[{bar}] {fraction:4.0%} {self.done}/{self.total}  elapsed {_clock(elapsed)}  "
                f"ETA {_clock(eta)}  {self.label}")

    def _draw(self, now: float) -> None:
        if self._tty:
            self.stream.write("\r\033[K" + self.text(now)[:200])
            self.stream.flush()
            return
        decile = int(10 * self.done / self.total)
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(self.text(now) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN or unknown
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class Plan(NamedTuple):
    """What ``tune`` will do for one GPU."""

    todo: list[WorkItem]
    done: list[WorkItem]
    #: The database file written (the user database).
    db_path: Path
    #: Its content (None: no file yet).
    database: TuningDatabase | None
    #: Items done only because the shipped database covers them (0 with ``--force``).
    shipped_done: int = 0
    #: The shipped file that covers them (None: no shipped file for this GPU).
    shipped_path: object = None
    #: (kind, M) launch records asked for, those recorded already, and those only the shipped file has.
    pairs: tuple[int, int, int] = (0, 0, 0)


def _known_records(user: TuningDatabase | None, shipped: TuningDatabase | None) -> TuningDatabase | None:
    """The records a layer would find: the shipped ones, shadowed key by key by the user's."""
    if shipped is None:
        return user
    if user is None:
        return shipped
    return TuningDatabase(gpu=user.gpu, structures={**shipped.structures, **user.structures},
                          launch={**shipped.launch, **user.launch}, path=user.path)


def plan_for_gpu(gpu: str, request: TuneRequest) -> Plan:
    """What to tune for ``gpu``: keys the user database or the shipped one already has are done
    (``--force`` re-tunes them). Raises DatabaseError for a bad user database file; a bad shipped
    file counts as absent."""
    db_path = user_db_path(gpu, request.db_override)
    database = read_database(db_path)
    if database is not None and database.gpu != gpu:
        raise DatabaseError(f"{db_path} holds tuning results for {database.gpu}, not {gpu}; pass another --db")
    shipped_path = shipped_db_path(gpu)
    try:
        shipped = read_database(shipped_path)
    except DatabaseError:
        shipped = None
    if shipped is not None and shipped.gpu != gpu:
        shipped = None
    known = _known_records(database, shipped)
    todo, done = plan_work(request.layers, request.redn_factors, request.dtypes, request.options, known)
    asked = sum(len(item.pairs()) for item in todo + done)
    recorded = sum(len(item.recorded) for item in todo) + sum(len(item.pairs()) for item in done)
    shipped_done, shipped_pairs = 0, 0
    if shipped is not None:
        user_todo, user_done = plan_work(request.layers, request.redn_factors, request.dtypes, request.options,
                                         database)
        shipped_done = len(done) - len(user_done)
        shipped_pairs = recorded - (sum(len(item.recorded) for item in user_todo)
                                    + sum(len(item.pairs()) for item in user_done))
    return Plan(todo, done, db_path, database, shipped_done, shipped_path if shipped is not None else None,
                (asked, recorded, shipped_pairs))


def run_tuning(request: TuneRequest, devices: list[Device], plans: dict[str, tuple], echo) -> list[DeviceReport]:
    """Tune on ``devices`` (their plans by GPU name). Returns one report per device."""
    from ss1bench.kernels.ss1 import device_limits

    start = time.perf_counter()
    by_gpu: dict[str, list[Device]] = {}
    for device in devices:
        by_gpu.setdefault(device.gpu, []).append(device)
    assignments: list[tuple[Device, list[WorkItem]]] = []
    total_units = 0
    import torch

    for gpu, group in by_gpu.items():
        todo = plans[gpu][0]
        _, limit = device_limits(torch.device("cuda", group[0].index))
        sm_count = torch.cuda.get_device_properties(group[0].index).multi_processor_count
        cost = lambda item, limit=limit, sm_count=sm_count: estimate_units(item, request.options, limit, sm_count)
        if request.budget_s is not None:
            todo = order_by_gain(todo, limit, sm_count, request.options)
        total_units += sum(cost(item) for item in todo)
        shares = split_items(todo, len(group), cost, keep_order=request.budget_s is not None)
        for device, share in zip(group, shares, strict=True):
            if share:
                assignments.append((device, share))
    request.device_count = len(assignments)
    if request.budget_s is not None:
        request.deadline = now() + request.budget_s
    progress = ProgressLine(total_units)
    reports: list[DeviceReport] = []
    try:
        if len(assignments) == 1:
            device, items = assignments[0]
            reports.append(run_on_device(device, items, request, progress.update))
        elif assignments:
            reports.extend(_run_processes(assignments, request, progress))
    finally:
        progress.close()
    wall = time.perf_counter() - start
    for gpu in by_gpu:
        gpu_reports = [r for r in reports if r.gpu == gpu]
        if not any(r.items for r in gpu_reports):
            continue
        env = environment(by_gpu[gpu][0].name)
        run = {**env, "date": now_iso(), "wall_time_s": round(wall, 1), "devices": [r.device for r in gpu_reports],
               "items_tuned": sum(r.items for r in gpu_reports), "items_skipped": len(plans[gpu][1]),
               "records_written": sum(r.records for r in gpu_reports), "command": request.command}
        if request.budget_s is not None:
            run["budget_s"] = request.budget_s
            run["items_over_budget"] = sum(len(r.skipped) for r in gpu_reports)
        try:
            write_records(plans[gpu][2], TuningDatabase(gpu=gpu), run=run)
        except (DatabaseError, OSError) as exc:  # the records are in; only the run's metadata is lost
            echo(f"{gpu}: could not record this run in the database metadata: {exc}")
    return reports


def _run_processes(assignments, request: TuneRequest, progress: ProgressLine) -> list[DeviceReport]:
    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    processes = []
    for device, items in assignments:
        process = context.Process(target=_device_worker, args=(device, items, request, channel), daemon=False)
        process.start()
        processes.append(process)
    reports: list[DeviceReport] = []
    while len(reports) < len(processes):
        try:
            message = channel.get(timeout=1.0)
        except queue_module.Empty:
            if not any(p.is_alive() for p in processes):
                break
            continue
        if message[0] == "progress":
            progress.update(message[1], message[2], message[3])
        else:
            reports.append(message[1])
    for process in processes:
        process.join(timeout=30)
    for process in processes:  # its report (and its records) are in: never wait on a stuck exit
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
    for (device, _items), process in zip(assignments, processes, strict=True):
        if process.exitcode not in (0, None) and not any(r.device == device.describe() for r in reports):
            reports.append(DeviceReport(device=device.describe(), gpu=device.gpu,
                                        error=f"worker process exited with code {process.exitcode}"))
    return reports
