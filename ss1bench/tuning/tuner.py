"""The tuner: what to tune (work items), in what order, and how winners are chosen.

One work item is a layer ``(dtype, K, N, c)`` with its M buckets and kernel kinds. For each
``(kind, M)`` pair of the item's *primary* structure (the default, or the structure already
recorded for it):

1. **screen** every candidate of :func:`.space.launch_candidates` as its compile finishes: gate
   (NaN-poisoned output against the float64 reference), then a short ``do_bench`` median;
2. **refine** around the screening winner (group size, one stage more or less);
3. **confirm**: re-time the best :attr:`TuneOptions.top_confirm` with longer runs, next to the
   dense cuBLAS baseline; the fastest confirmed config is the record, except that the plain
   ``forward`` at decode sizes records a one-launch config within
   :attr:`TuneOptions.single_launch_margin` of a faster ``sketch_gemm`` (three launches, whose host
   cost the graph timing hides: :func:`launches`; that candidate is refined and confirmed too);
4. **probe** the other structure candidates with the primary's best :attr:`TuneOptions.probe_top`
   configs (each gated too), on the prefill pairs (:func:`structure_pairs`).

The structure recorded for the item is the one with the lowest geometric-mean time over the
probed pairs, relative to the primary at the same configs; it must beat the primary by
:attr:`TuneOptions.structure_min_gain` (else the default stays: structure is part of the model,
so it is not changed for noise). Only prefill pairs are probed because decode is bound by the read
of the compressed weight, whose size the candidates share (they all have the least padding); when
a structure other than the primary wins, its decode pairs are then timed with the primary's best
configs so that every bucket gets a record. Records are written after each item (resume point).

Compiles run ahead in a process pool (:mod:`.measure`); pairs are pipelined one step: pair i+1 is
screened while the compiles that pair i's refinement and probes need run in the pool. Everything
here is pure logic over a *bench* object
(:class:`ss1bench.tuning.measure.KernelBench` on a GPU, a fake in the tests).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ss1bench.kernels.config import LaunchConfig, Problem
from ss1bench.structure import reduced_width

from . import space
from .db import LaunchKey, StructureKey, TuningDatabase, now_iso
from .shapes import Layer

#: Columns of the results CSV (one row per candidate, pruned ones included).
CSV_FIELDS = (
    "gpu", "device_name", "dtype", "kind", "M", "K", "N", "c", "block_k", "block_n", "phase", "status",
    "algorithm", "tile_m", "tile_n", "tile_k", "num_warps", "num_stages", "group_m", "split_m", "split_k",
    "ms", "dense_ms", "speedup", "gate_rel_err", "gate_max_err", "first_launch_s", "error",
)


@dataclass(frozen=True)
class TuneOptions:
    kinds: tuple[str, ...] = ("forward",)
    structure_search: bool = True
    force: bool = False
    refine: bool = True
    #: Screening winners re-timed with longer runs before one is recorded.
    top_confirm: int = 3
    #: Best configs of the primary structure tried on each other structure.
    probe_top: int = 2
    #: A structure other than the primary must be this much faster (geometric mean) to be chosen.
    structure_min_gain: float = 0.03
    #: Decode ``forward``: a one-launch config within this fraction of a faster ``sketch_gemm`` is
    #: recorded instead (see :func:`launches`).
    single_launch_margin: float = 0.05


def launches(kind: str, config: LaunchConfig) -> int:
    """Kernel launches of one eager call: ``sketch_gemm`` is three for the plain ``forward`` (rotate
    the weight, sketch, cuBLAS) and two for the others (pass, cuBLAS); every other algorithm one.

    The tuner times CUDA-graph replays, which hide the host's cost of a launch; an eager call pays
    it. At decode sizes that cost is the kernel's whole time: on the H200 an eager forward of
    64 x 768 x 3072 at c = 16 took 46 us with its ``sketch_gemm`` record (11.2 us in a graph)
    against 8.5 us at c = 8 with a fused one (issue 20). So at decode sizes the plain forward
    records a one-launch config when it is within :attr:`TuneOptions.single_launch_margin` of the
    ``sketch_gemm`` winner (:func:`prefer_single_launch`).
    """
    if config.algorithm != "sketch_gemm":
        return 1
    return 3 if kind == "forward" else 2


def prefers_single_launch(kind: str, m: int) -> bool:
    """Whether :func:`prefer_single_launch` applies to ``(kind, M)``: the plain decode forward."""
    return kind == "forward" and space.is_decode(m)


def prefer_single_launch(ranked: list[tuple[LaunchConfig, float]], kind: str, m: int,
                         margin: float) -> tuple[LaunchConfig, float] | None:
    """The ``(config, ms)`` to record from ``ranked`` (fastest first): the fastest, unless it takes
    more launches than the fastest one-launch entry and that one is within ``margin`` of it (only
    where :func:`prefers_single_launch`). None for an empty list."""
    if not ranked:
        return None
    best = ranked[0]
    if not prefers_single_launch(kind, m) or launches(kind, best[0]) == 1:
        return best
    single = next((entry for entry in ranked if launches(kind, entry[0]) == 1), None)
    if single is not None and single[1] <= best[1] * (1 + margin):
        return single
    return best


class TuningAborted(Exception):
    """The device cannot go on (sticky CUDA error); records written so far stay."""


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------


@dataclass
class WorkItem:
    dtype: str
    in_features: int
    out_features: int
    redn_factor: int
    m_buckets: tuple[int, ...]
    kinds: tuple[str, ...]
    primary: tuple[int, int]
    structures: list[tuple[int, int]]
    todo: list[tuple[str, int]]
    recorded: dict[tuple[str, int], LaunchConfig] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    #: The database already has a structure record for this layer (never replaced by an unsearched one).
    structure_recorded: bool = False
    #: Layers of this shape in the model tuned for (``tune --model``), else 1.
    count: int = 1

    @property
    def label(self) -> str:
        return f"{self.dtype} K={self.in_features} N={self.out_features} c={self.redn_factor}"

    @property
    def searches_structure(self) -> bool:
        return len(self.structures) > 1

    def pairs(self) -> list[tuple[str, int]]:
        return [(kind, m) for kind in self.kinds for m in self.m_buckets]

    def structure_pairs(self) -> list[tuple[str, int]]:
        """The pairs on which structures are compared: the prefill ones (all pairs if none is)."""
        prefill = [(kind, m) for kind, m in self.pairs() if not space.is_decode(m)]
        return prefill or self.pairs()


def plan_work(layers: list[Layer], redn_factors: list[int], dtypes: list[str], options: TuneOptions,
              database: TuningDatabase | None) -> tuple[list[WorkItem], list[WorkItem]]:
    """(items to tune, items already done), from the layers and what ``database`` holds.

    Resume rules: a recorded structure is kept and only missing launch records of it are tuned; an
    item whose structure and launch records all exist is done. ``force`` re-tunes every launch
    record asked for, and the structure too when ``structure_search`` is on (without it, the
    recorded structure stays: re-tuning some buckets never moves a layer to another structure).
    """
    todo_items, done_items = [], []
    for dtype in dtypes:
        for layer in layers:
            k, n = layer.in_features, layer.out_features
            for c in redn_factors:
                if layer.redn_factors and c not in layer.redn_factors:
                    continue  # the model keeps this layer dense at c
                existing = None
                if database is not None and not (options.force and options.structure_search):
                    existing = database.structure(StructureKey(dtype, k, n, c))
                searched = bool(existing and existing.get("searched", True))
                if existing is not None:
                    primary = (int(existing["block_k"]), int(existing["block_n"]))
                else:
                    primary = space.default_structure(k, c)
                if options.structure_search and not searched:
                    structures = [primary] + [s for s in space.structure_candidates(k, n, c) if s != primary]
                else:
                    structures = [primary]
                pairs = [(kind, m) for kind in options.kinds for m in layer.m_buckets]
                todo, recorded = [], {}
                for kind, m in pairs:
                    record = None
                    if database is not None and not options.force:
                        record = database.launch_record(LaunchKey(kind, dtype, k, n, c, *primary, m))
                    if record is None:
                        todo.append((kind, m))
                    else:
                        recorded[(kind, m)] = LaunchConfig.from_dict(record["config"])
                item = WorkItem(dtype, k, n, c, layer.m_buckets, tuple(options.kinds), primary, structures, todo,
                                recorded, layer.names, structure_recorded=existing is not None, count=layer.count)
                needs_structure = existing is None or (options.structure_search and not searched)
                (todo_items if todo or needs_structure else done_items).append(item)
    return todo_items, done_items


def problem_for(item: WorkItem, kind: str, m: int, structure: tuple[int, int], device_name: str = "") -> Problem:
    return Problem(kind, m, item.in_features, item.out_features, item.redn_factor, structure[0], structure[1],
                   item.dtype, device_name)


def estimate_units(item: WorkItem, options: TuneOptions, shared_memory_limit: int, sm_count: int) -> int:
    """Measurements an item will take (the progress bar's unit)."""
    units = 0
    others = len(item.structures) - 1
    compared = set(item.structure_pairs())
    for kind, m in item.pairs():
        probed = others if (kind, m) in compared else 0
        if (kind, m) in item.todo:
            kept = len(space.launch_candidates(problem_for(item, kind, m, item.primary), shared_memory_limit,
                                               sm_count).kept)
            units += kept + (3 if options.refine else 0) + options.top_confirm + 1
            units += probed * min(options.probe_top, kept)
        elif item.searches_structure:
            units += 1 + probed
    return units


#: Seconds one measurement (gate + time) takes, before a run has measured its own: 244 s for 3,726
#: candidates in the H200's cold-cache gpt2 tune (issue 20), compiles included.
SECONDS_PER_UNIT = 0.065
#: Expected (tuned time / untuned time) per kind and regime (decode True): what a layer runs at
#: without its own records, i.e. with the nearest tuned shape's or the learned heuristic's config.
#: Leave-one-shape-out geometric means of scripts/heuristic_eval.py on the H200's records
#: (reports/H200/heuristic_vs_tuned.csv); they weigh the expected gain of tuning a layer.
EXPECTED_UNTUNED_RATIO = {
    ("forward", True): 0.98, ("forward", False): 0.985,
    ("forward_rotated", True): 0.98, ("forward_rotated", False): 0.985,  # prefill: the forward's
    ("grad_input", True): 0.96, ("grad_input", False): 0.96,
    ("grad_weight", True): 0.94, ("grad_weight", False): 0.99,
}
#: Nominal device for :func:`predicted_ms` (H200: HBM3e bandwidth, dense fp16 tensor-core rate,
#: a launch's floor).
NOMINAL_BYTES_PER_S, NOMINAL_FLOPS, NOMINAL_LAUNCH_S = 4.0e12, 7.0e14, 5e-6


def predicted_ms(kind: str, m: int, item: WorkItem) -> float:
    """Roofline time of one ``kind`` call at ``m`` rows (the larger of the bytes each kernel moves
    at :data:`NOMINAL_BYTES_PER_S` and its GEMM at :data:`NOMINAL_FLOPS`, plus a launch): only to
    rank layers against each other."""
    k, n = item.in_features, item.out_features
    k_red = reduced_width(k, item.redn_factor, item.primary[0])
    size = 4 if item.dtype == "fp32" else 2
    elements = {"forward": m * k + n * k_red + m * n, "forward_rotated": m * k + n * k_red + m * n,
                "grad_input": m * n + n * k_red + m * k, "grad_weight": m * n + m * k + n * k_red}[kind]
    seconds = max(elements * size / NOMINAL_BYTES_PER_S, 2 * m * n * k_red / NOMINAL_FLOPS) + NOMINAL_LAUNCH_S
    return seconds * 1e3


def expected_gain_ms(item: WorkItem) -> float:
    """Milliseconds per model step (one call of each pair to tune, for each of the ``count`` layers
    of this shape) that tuning ``item`` is expected to save over running it untuned."""
    gain = 0.0
    for kind, m in item.todo:
        ratio = EXPECTED_UNTUNED_RATIO.get((kind, space.is_decode(m)), 0.9)
        gain += predicted_ms(kind, m, item) * (1 / ratio - 1)
    return gain * item.count


def order_by_gain(items: list[WorkItem], shared_memory_limit: int, sm_count: int,
                  options: TuneOptions) -> list[WorkItem]:
    """Items by expected gain per second of tuning (:func:`expected_gain_ms` over
    :func:`estimate_units`), most first: a budget spent in this order buys the most speed first.
    Items that only need a structure search (no launch pair to tune) come last."""
    def rate(item: WorkItem) -> float:
        units = max(estimate_units(item, options, shared_memory_limit, sm_count), 1)
        return expected_gain_ms(item) / units

    return sorted(items, key=rate, reverse=True)


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------


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


def choose_structure(primary: tuple[int, int], per_structure: dict[tuple[int, int], dict[tuple[str, int], float]],
                     min_gain: float) -> tuple[tuple[int, int], dict[tuple[int, int], float]]:
    """Pick a structure from best screening times per ``(kind, M)`` pair.

    Score = geometric mean over the pairs of ``time(structure) / time(primary)``; a structure
    missing any pair the primary has (all its candidates failed) is out. The lowest score wins
    if it is below ``1 - min_gain``; otherwise the primary stays. Ties go to the earlier entry.

    Returns (chosen structure, scores).
    """
    base = per_structure.get(primary, {})
    scores: dict[tuple[int, int], float] = {primary: 1.0} if base else {}
    for structure, times in per_structure.items():
        if structure == primary or not base:
            continue
        if any(pair not in times for pair in base):
            continue
        logs = [math.log(times[pair] / base[pair]) for pair in base]
        scores[structure] = math.exp(sum(logs) / len(logs))
    best = primary
    for structure, score in scores.items():
        if score < scores.get(best, 1.0) and score < 1.0 - min_gain:
            best = structure
    return best, scores


class Tuner:
    """Drives a bench through work items and turns measurements into database records.

    Args:
        bench: the device side (``prepare``, ``precompile``, ``as_ready``, ``gate``, ``time``,
            ``dense_ms``, ``structure``; see :class:`ss1bench.tuning.measure.KernelBench`).
        gpu: normalized GPU name (the database file).
        shared_memory_limit: bytes per block, from the device.
        environment: ``device_name``, ``torch``, ``triton``, ``ss1bench`` (stored in records).
        progress: ``progress(done, total_delta, label)`` after every measurement.
    """

    def __init__(self, bench, gpu: str, shared_memory_limit: int, options: TuneOptions,
                 environment: dict[str, str], sm_count: int = space.DEFAULT_SM_COUNT,
                 progress: Callable[[int, int, str], None] | None = None) -> None:
        self.bench = bench
        self.gpu = gpu
        self.limit = shared_memory_limit
        self.sm_count = sm_count
        self.options = options
        self.environment = environment
        self.progress = progress or (lambda done, total, label: None)
        self._label = ""
        self._item_index = 0

    # ---- helpers ------------------------------------------------------------------------------
    def _structure(self, item: WorkItem, structure: tuple[int, int]):
        return self.bench.structure(item.in_features, item.out_features, item.redn_factor, *structure)

    def _candidates(self, item: WorkItem, kind: str, m: int) -> space.CandidateSet:
        return space.launch_candidates(problem_for(item, kind, m, item.primary), self.limit, self.sm_count)

    def _precompile(self, item: WorkItem, kind: str, m: int, structure: tuple[int, int],
                    configs: list[LaunchConfig], item_index: int) -> None:
        self.bench.precompile(kind, m, self._structure(item, structure), item.dtype, configs, priority=item_index)

    def precompile_item(self, item: WorkItem, item_index: int) -> None:
        """Queue the screening compiles of ``item`` (priority ``item_index``)."""
        for kind, m in item.pairs():
            if (kind, m) in item.todo:
                configs = self._candidates(item, kind, m).kept
            elif item.searches_structure and (kind, m) in item.recorded:
                configs = [item.recorded[(kind, m)]]
            else:
                continue
            self._precompile(item, kind, m, item.primary, configs, item_index)

    def _measure(self, case, config: LaunchConfig, phase: str, structure: tuple[int, int],
                 dtype: str) -> Measurement:
        from .measure import MeasurementError

        measurement = Measurement(case.kind, case.m, structure, config, phase, "ok")
        try:
            gate, first_launch = self.bench.gate(case, config, dtype)
            measurement.first_launch_s = first_launch
            measurement.gate_rel_err, measurement.gate_max_err = gate.rel_err, gate.max_err_over_rms
        except MeasurementError as exc:
            self._record_failure(measurement, exc)
            gate = None
        if gate is not None:
            if gate.passed:
                self._time_into(measurement, case, config, confirm=False)
            else:
                measurement.status, measurement.error = "failed_gate", gate.reason
        self.progress(1, 0, self._label)
        return measurement

    def _record_failure(self, measurement: Measurement, exc) -> None:
        """A failed compile/launch is recorded; a sticky device error ends the run."""
        if exc.fatal:
            raise TuningAborted(f"{self._label}: {exc}") from None
        measurement.status, measurement.error = "failed_run", str(exc)

    def _time_into(self, measurement: Measurement, case, config: LaunchConfig, confirm: bool) -> None:
        from .measure import MeasurementError

        try:
            measurement.ms = self.bench.time(case, config, confirm=confirm)
        except MeasurementError as exc:
            self._record_failure(measurement, exc)

    def _retime(self, case, measurement: Measurement) -> Measurement:

        again = Measurement(case.kind, case.m, measurement.structure, measurement.config, "confirm", "ok",
                            gate_rel_err=measurement.gate_rel_err, gate_max_err=measurement.gate_max_err)
        self._time_into(again, case, measurement.config, confirm=True)
        self.progress(1, 0, self._label)
        return again

    # ---- one item -----------------------------------------------------------------------------
    def tune_item(self, item: WorkItem, item_index: int = 0) -> ItemOutcome:
        """Tune one item (its screening compiles may have been queued by :meth:`precompile_item`)."""
        start = time.perf_counter()
        self._label = item.label
        measurements: list[Measurement] = []
        results: dict[tuple[tuple[int, int], str, int], PairResult] = {}
        # per structure: (kind, M) -> best screening ms (the structure comparison's input)
        per_structure: dict[tuple[int, int], dict[tuple[str, int], float]] = {s: {} for s in item.structures}
        # per structure and pair: the ok measurements (to confirm a non-primary winner)
        probes: dict[tuple[tuple[int, int], str, int], list[Measurement]] = {}

        pending: deque = deque()
        for kind, m in item.pairs():
            state = self._screen(item, kind, m, item_index, measurements)
            if state is None:
                continue
            pending.append(state)
            if len(pending) > 1:
                self._finish(item, pending.popleft(), measurements, results, per_structure, probes)
        while pending:
            self._finish(item, pending.popleft(), measurements, results, per_structure, probes)

        chosen, scores = item.primary, {}
        if item.searches_structure:
            chosen, scores = choose_structure(item.primary, per_structure, self.options.structure_min_gain)
            if chosen != item.primary:
                self._confirm_structure(item, chosen, probes, results, measurements)
        updates = self._records(item, chosen, scores, results)
        return ItemOutcome(item, chosen, scores, results, measurements, updates, time.perf_counter() - start)

    def _screen(self, item: WorkItem, kind: str, m: int, item_index: int, measurements: list[Measurement]):
        """Screen one pair of the primary structure; returns the state :meth:`_finish` needs."""
        full = (kind, m) in item.todo
        if not full and not ((kind, m) in item.recorded and item.searches_structure):
            return None
        structure = self._structure(item, item.primary)
        if full:
            candidates = self._candidates(item, kind, m)
            for config, reason in candidates.rejected:
                measurements.append(Measurement(kind, m, item.primary, config, "pruned", "pruned", error=reason))
            configs = candidates.kept
        else:
            configs = [item.recorded[(kind, m)]]
        self._precompile(item, kind, m, item.primary, configs, item_index)
        try:
            case = self.bench.prepare(kind, m, structure, item.dtype)
        except Exception as exc:  # e.g. out of memory for the inputs: every candidate fails
            for config in configs:
                measurements.append(Measurement(kind, m, item.primary, config, "screen", "failed_run",
                                                error=f"inputs: {type(exc).__name__}: {exc}"[:300]))
                self.progress(1, 0, self._label)
            return None
        screened = []
        for config in self.bench.as_ready(kind, m, structure, item.dtype, configs):
            measurement = self._measure(case, config, "screen" if full else "recorded", item.primary, item.dtype)
            measurements.append(measurement)
            screened.append(measurement)
        ranking = sorted((x for x in screened if x.ok), key=lambda x: x.ms)
        state = {"kind": kind, "m": m, "full": full, "case": case, "screened": screened, "ranking": ranking,
                 "tried": set(configs), "refinements": [], "item_index": item_index}
        if ranking and full and self.options.refine:
            problem = problem_for(item, kind, m, item.primary)
            state["refinements"] = space.refinements(ranking[0].config, problem, self.limit, state["tried"])
            single = self._best_single_launch(kind, m, ranking)
            if single is not None and single is not ranking[0]:  # its neighbours may close the gap
                more = space.refinements(single.config, problem, self.limit, state["tried"])
                state["refinements"] = list(dict.fromkeys(state["refinements"] + more))
            self._precompile(item, kind, m, item.primary, state["refinements"], item_index)
        probe_configs = [x.config for x in ranking[: self.options.probe_top if full else 1]]
        state["probe_configs"] = probe_configs
        if (kind, m) in item.structure_pairs():
            for other in item.structures[1:]:
                self._precompile(item, kind, m, other, probe_configs, item_index)
        return state

    def _best_single_launch(self, kind: str, m: int, ranking: list[Measurement]) -> Measurement | None:
        """The fastest one-launch measurement of ``ranking`` where a multi-launch one leads it and
        :func:`prefers_single_launch`; else None."""
        if not ranking or not prefers_single_launch(kind, m) or launches(kind, ranking[0].config) == 1:
            return None
        return next((x for x in ranking if launches(kind, x.config) == 1), None)

    def _finish(self, item: WorkItem, state: dict, measurements: list[Measurement],
                results: dict, per_structure: dict, probes: dict) -> None:
        kind, m, case = state["kind"], state["m"], state["case"]
        structure = self._structure(item, item.primary)
        ranking: list[Measurement] = state["ranking"]
        screened: list[Measurement] = state["screened"]
        for config in self.bench.as_ready(kind, m, structure, item.dtype, state["refinements"]):
            measurement = self._measure(case, config, "refine", item.primary, item.dtype)
            measurements.append(measurement)
            screened.append(measurement)
        ranking = sorted((x for x in screened if x.ok), key=lambda x: x.ms)
        result = PairResult(kind, m, item.primary, ok=len(ranking), failed=len(screened) - len(ranking))
        by_config = {x.config: x for x in ranking}
        if state["full"] and ranking:
            top = ranking[: self.options.top_confirm]
            single = self._best_single_launch(kind, m, ranking)
            if single is not None and single not in top:  # confirmed too, to compare like with like
                top = [*top, single]
            confirmed = [self._retime(case, x) for x in top]
            measurements.extend(confirmed)
            confirmed = sorted((x for x in confirmed if x.ok), key=lambda x: x.ms)
            chosen = prefer_single_launch([(x.config, x.ms) for x in confirmed], kind, m,
                                          self.options.single_launch_margin)
            if chosen is not None:
                best = next(x for x in confirmed if x.config == chosen[0])
                screen = by_config[best.config]
                result.config, result.ms = best.config, best.ms
                result.gate_rel_err, result.gate_max_err = screen.gate_rel_err, screen.gate_max_err
        if ranking or not state["full"]:
            from .measure import MeasurementError

            try:
                result.dense_ms = self.bench.dense_ms(case)
            except MeasurementError as exc:
                if exc.fatal:
                    raise TuningAborted(f"{self._label}: {exc}") from None
            self.progress(1, 0, self._label)
        results[(item.primary, kind, m)] = result
        # the structure comparison: primary's screening times of the probe configs
        probe_configs = state["probe_configs"]
        probes[(item.primary, kind, m)] = [by_config[c] for c in probe_configs if c in by_config]
        _release(case)
        if (kind, m) not in item.structure_pairs():
            return
        primary_times = [x.ms for x in probes[(item.primary, kind, m)]]
        if primary_times:
            per_structure[item.primary][(kind, m)] = min(primary_times)
        for other in item.structures[1:]:
            other_structure = self._structure(item, other)
            try:
                other_case = self.bench.prepare(kind, m, other_structure, item.dtype)
            except Exception:  # this structure just gets no result for the pair (so it cannot win)
                continue
            ok = []
            for config in self.bench.as_ready(kind, m, other_structure, item.dtype, probe_configs):
                measurement = self._measure(other_case, config, "probe", other, item.dtype)
                measurements.append(measurement)
                if measurement.ok:
                    ok.append(measurement)
            _release(other_case)
            probes[(other, kind, m)] = ok
            if ok:
                per_structure[other][(kind, m)] = min(x.ms for x in ok)
            results[(other, kind, m)] = PairResult(kind, m, other, dense_ms=result.dense_ms, ok=len(ok),
                                                   failed=len(probe_configs) - len(ok))

    def _confirm_structure(self, item: WorkItem, chosen: tuple[int, int], probes: dict, results: dict,
                           measurements: list[Measurement]) -> None:
        """Re-time the chosen structure's probe configs with long runs; its best become records.

        Pairs that were not probed (decode) are first measured on the chosen structure with the
        primary's best configs (gated like any candidate)."""
        structure = self._structure(item, chosen)
        compared = set(item.structure_pairs())
        for kind, m in item.pairs():
            primary_result = results.get((item.primary, kind, m))
            try:
                case = self.bench.prepare(kind, m, structure, item.dtype)
            except Exception:  # no record for this pair then
                continue
            if (kind, m) not in compared and primary_result is not None:
                configs = [x.config for x in probes.get((item.primary, kind, m), [])]
                tried = [self._measure(case, config, "probe", chosen, item.dtype) for config in configs]
                measurements.extend(tried)
                probes[(chosen, kind, m)] = [x for x in tried if x.ok]
                results[(chosen, kind, m)] = PairResult(kind, m, chosen, dense_ms=primary_result.dense_ms,
                                                        ok=len(probes[(chosen, kind, m)]),
                                                        failed=len(tried) - len(probes[(chosen, kind, m)]))
            ok = probes.get((chosen, kind, m), [])
            result = results.get((chosen, kind, m))
            if not ok or result is None:
                _release(case)
                continue
            retimed = [self._retime(case, x) for x in ok]
            _release(case)
            measurements.extend(retimed)
            confirmed = sorted((x for x in retimed if x.ok), key=lambda x: x.ms)
            if confirmed:
                best = confirmed[0]
                screen = next(x for x in ok if x.config == best.config)
                result.config, result.ms = best.config, best.ms
                result.gate_rel_err, result.gate_max_err = screen.gate_rel_err, screen.gate_max_err

    # ---- records ------------------------------------------------------------------------------
    def _stamp(self) -> dict:
        env = self.environment
        return {"date": now_iso(), "torch": env.get("torch", ""), "triton": env.get("triton", ""),
                "device_name": env.get("device_name", ""), "ss1bench": env.get("ss1bench", "")}

    def _records(self, item: WorkItem, chosen: tuple[int, int], scores: dict, results: dict) -> TuningDatabase:
        updates = TuningDatabase(gpu=self.gpu)
        stamp = self._stamp()
        for (structure, kind, m), result in results.items():
            if result.config is None or result.ms is None or result.dense_ms is None:
                continue
            if structure == item.primary and (kind, m) not in item.todo:
                continue  # resumed: the existing record stays
            if structure != item.primary and structure != chosen:
                continue
            key = LaunchKey(kind, item.dtype, item.in_features, item.out_features, item.redn_factor, *structure, m)
            updates.launch[key.text()] = {
                "config": result.config.to_dict(), "ms": round(result.ms, 6), "dense_ms": round(result.dense_ms, 6),
                "speedup": round(result.dense_ms / result.ms, 4), "gate_rel_err": float(f"{result.gate_rel_err:.3e}"),
                "gate_max_err": float(f"{result.gate_max_err:.3e}"), "candidates_ok": result.ok,
                "candidates_failed": result.failed, **stamp,
            }
        if item.searches_structure and scores:
            key = StructureKey(item.dtype, item.in_features, item.out_features, item.redn_factor)
            updates.structures[key.text()] = {
                "block_k": chosen[0], "block_n": chosen[1], "searched": True,
                "default": list(space.default_structure(item.in_features, item.redn_factor)),
                "relative_time": {f"{bk}x{bn}": round(score, 4) for (bk, bn), score in scores.items()},
                "m_buckets": list(item.m_buckets), "kinds": list(item.kinds), **stamp,
            }
        elif not item.searches_structure and not item.structure_recorded:
            key = StructureKey(item.dtype, item.in_features, item.out_features, item.redn_factor)
            updates.structures[key.text()] = {
                "block_k": item.primary[0], "block_n": item.primary[1], "searched": False,
                "default": list(space.default_structure(item.in_features, item.redn_factor)),
                "m_buckets": list(item.m_buckets), "kinds": list(item.kinds), **stamp,
            }
        return updates


def _release(case) -> None:
    release = getattr(case, "release", None)
    if release is not None:
        release()


# ---------------------------------------------------------------------------------------------
# rows for the CSV and the summary
# ---------------------------------------------------------------------------------------------


def csv_rows(outcome: ItemOutcome, gpu: str, device_name: str) -> list[dict]:
    item = outcome.item
    dense = {(kind, m): r.dense_ms for (_s, kind, m), r in outcome.results.items() if r.dense_ms}
    rows = []
    for x in outcome.measurements:
        dense_ms = dense.get((x.kind, x.m))
        row = {
            "gpu": gpu, "device_name": device_name, "dtype": item.dtype, "kind": x.kind, "M": x.m,
            "K": item.in_features, "N": item.out_features, "c": item.redn_factor, "block_k": x.structure[0],
            "block_n": x.structure[1], "phase": x.phase, "status": x.status, **x.config.to_dict(),
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
