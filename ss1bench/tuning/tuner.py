"""The tuner: drives a bench through one work item's search and turns the measurements into records.

For each ``(kind, M)`` pair of the item's *primary* structure (:class:`.work.WorkItem`):

1. **screen** every candidate of :func:`.space.launch_candidates` as its compile finishes: gate
   (NaN-poisoned output against the float64 reference), then a short ``do_bench`` median;
2. **refine** around the screening winner (group size, one stage more or less);
3. **confirm**: re-time the best :attr:`.work.TuneOptions.top_confirm` with longer runs, next to the
   dense cuBLAS baseline; the fastest confirmed config is the record, except that the plain
   ``forward`` at decode sizes records a one-launch config within
   :attr:`.work.TuneOptions.single_launch_margin` of a faster ``sketch_gemm`` (three launches, whose
   host cost the graph timing hides: :func:`.selection.launches`; that candidate is refined and
   confirmed too);
4. **probe** the other structure candidates with the primary's best
   :attr:`.work.TuneOptions.probe_top` configs (each gated too), on the prefill pairs
   (:meth:`.work.WorkItem.structure_pairs`).

The structure recorded for the item is the one with the lowest geometric-mean time over the
probed pairs, relative to the primary at the same configs; it must beat the primary by
:attr:`.work.TuneOptions.structure_min_gain` (else the default stays: structure is part of the
model, so it is not changed for noise; :func:`.selection.choose_structure`). Only prefill pairs are
probed because decode is bound by the read of the compressed weight, whose size the candidates
share (they all have the least padding); when a structure other than the primary wins, its decode
pairs are then timed with the primary's best configs so that every bucket gets a record. Records
are written after each item (resume point).

Compiles run ahead in a process pool (:mod:`.measure`); pairs are pipelined one step: pair i+1 is
screened while the compiles that pair i's refinement and probes need run in the pool. Everything
here is pure logic over a *bench* object
(:class:`ss1bench.tuning.measure.KernelBench` on a GPU, a fake in the tests).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ss1bench.kernels.config import LaunchConfig

from . import space
from .keys import LaunchKey, StructureKey
from .outcome import ItemOutcome, Measurement, PairResult
from .records import TuningDatabase, now_iso
from .selection import choose_structure, launches, prefer_single_launch, prefers_single_launch
from .work import TuneOptions, WorkItem, problem_for


class TuningAborted(Exception):
    """The device cannot go on (sticky CUDA error); records written so far stay."""


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
