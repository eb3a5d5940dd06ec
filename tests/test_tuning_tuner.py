"""Tuner logic with a fake bench (selection, gate, failures, structure choice, resume), and the real
gate on real kernels in Triton's CPU interpreter."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ss1bench import reference
from ss1bench.kernels.config import LaunchConfig
from ss1bench.tuning import db as tdb
from ss1bench.tuning import gate, measure, results, space
from ss1bench.tuning.budget import expected_gain_ms, order_by_gain
from ss1bench.tuning.keys import LaunchKey, StructureKey
from ss1bench.tuning.measure import MeasurementError
from ss1bench.tuning.outcome import csv_rows, summary_rows
from ss1bench.tuning.records import TuningDatabase
from ss1bench.tuning.selection import choose_structure, launches, prefer_single_launch
from ss1bench.tuning.shapes import Layer
from ss1bench.tuning.tuner import Tuner
from ss1bench.tuning.validation import validate_launch_record
from ss1bench.tuning.work import TuneOptions, WorkItem, estimate_units, plan_work, problem_for

HOPPER = 227 * 1024
ENV = {"device_name": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "ss1bench": "0.1.0"}
PASS = gate.GateResult(True, 1e-3, 5e-3)


@dataclasses.dataclass
class FakeCase:
    kind: str
    m: int
    structure: tuple


class FakeBench:
    """Times are a deterministic function of the config (and a per-structure factor)."""

    def __init__(self, wrong=(), broken=(), structure_factor=None, confirm_penalty=None):
        self.wrong = set(wrong)
        self.broken = set(broken)
        self.structure_factor = structure_factor or {}
        self.confirm_penalty = confirm_penalty or {}
        self.gated: list[tuple] = []
        self.precompiled: list[tuple] = []

    def structure(self, k, n, c, bk, bn):
        return (k, n, c, bk, bn)

    def prepare(self, kind, m, structure, dtype):
        return FakeCase(kind, m, structure)

    def precompile(self, kind, m, structure, dtype, configs, priority=0):
        self.precompiled.append((kind, m, structure, len(configs), priority))

    def as_ready(self, kind, m, structure, dtype, configs):
        yield from configs

    def gate(self, case, config, dtype):
        self.gated.append((case.kind, case.m, case.structure, config))
        if config in self.broken:
            raise MeasurementError("CompilationError: out of registers")
        if config in self.wrong:
            return gate.GateResult(False, 0.06, 3.0, "relative error 6.00e-02 > 1e-02"), 0.01
        return PASS, 0.01

    def speed(self, config: LaunchConfig) -> float:
        return 1.0 + ((config.tile_m * 7 + config.tile_n * 3 + config.tile_k + config.num_warps * 5
                       + config.num_stages * 11 + config.group_m) % 89) / 100

    def time(self, case, config, confirm=False):
        ms = self.speed(config) * self.structure_factor.get(case.structure[3:], 1.0)
        if confirm:
            ms *= self.confirm_penalty.get(config, 1.0)
        return ms

    def dense_ms(self, case):
        return 2.0


def item(k=768, n=3072, c=4, buckets=(16, 4096), structures=None, kinds=("forward",)) -> WorkItem:
    primary = space.default_structure(k, c)
    structures = structures if structures is not None else [primary]
    pairs = [(kind, m) for kind in kinds for m in buckets]
    return WorkItem("fp16", k, n, c, tuple(buckets), tuple(kinds), primary, structures, pairs)


def tuner(bench, **options) -> Tuner:
    return Tuner(bench, "H200", HOPPER, TuneOptions(**options), ENV)


def screening_order(bench, it, m):
    candidates = space.launch_candidates(problem_for(it, "forward", m, it.primary), HOPPER)
    return sorted(candidates.kept, key=bench.speed)


def test_a_fastest_but_wrong_candidate_is_never_chosen():
    it = item()
    probe = FakeBench()
    fastest = screening_order(probe, it, 4096)[0]
    bench = FakeBench(wrong={fastest})
    outcome = tuner(bench).tune_item(it)
    result = outcome.results[(it.primary, "forward", 4096)]
    assert result.config is not None and result.config != fastest
    assert ("forward", 4096, (768, 3072, 4, *it.primary), fastest) in bench.gated
    wrong = [x for x in outcome.measurements if x.config == fastest and x.m == 4096]
    assert wrong[0].status == "failed_gate" and wrong[0].ms is None
    record = outcome.updates.launch[LaunchKey("forward", "fp16", 768, 3072, 4, *it.primary, 4096).text()]
    assert record["config"] == result.config.to_dict()
    assert record["speedup"] == pytest.approx(2.0 / result.ms, rel=1e-3)
    assert validate_launch_record(LaunchKey("forward", "fp16", 768, 3072, 4, *it.primary, 4096).text(),
                                      record) == []


def test_compile_failures_are_recorded_not_raised():
    it = item(buckets=(16,))
    configs = screening_order(FakeBench(), it, 16)
    bench = FakeBench(broken=set(configs[:3]))
    outcome = tuner(bench).tune_item(it)
    failed = [x for x in outcome.measurements if x.status == "failed_run"]
    assert len(failed) == 3 and all("CompilationError" in x.error for x in failed)
    assert outcome.results[(it.primary, "forward", 16)].config not in configs[:3]
    pruned = [x for x in outcome.measurements if x.status == "pruned"]
    assert pruned and all(x.error for x in pruned)


def test_confirmation_retimes_the_top_few():
    it = item(buckets=(4096,))
    order = screening_order(FakeBench(), it, 4096)
    bench = FakeBench(confirm_penalty={order[0]: 3.0})  # fastest at screening, slow when re-timed
    outcome = tuner(bench, refine=False).tune_item(it)
    assert outcome.results[(it.primary, "forward", 4096)].config == order[1]
    confirm = [x for x in outcome.measurements if x.phase == "confirm"]
    assert len(confirm) == 3


def test_choose_structure_needs_a_clear_gain():
    primary, other, worse = (64, 128), (64, 256), (32, 128)
    times = {primary: {("forward", 1): 1.0, ("forward", 4096): 2.0},
             other: {("forward", 1): 0.9, ("forward", 4096): 1.8},
             worse: {("forward", 1): 0.5}}  # missing a pair: out
    chosen, scores = choose_structure(primary, times, min_gain=0.03)
    assert chosen == other and scores[other] == pytest.approx(0.9) and worse not in scores
    chosen, _ = choose_structure(primary, times, min_gain=0.2)
    assert chosen == primary


@pytest.mark.parametrize("factor, expect_other", [(0.8, True), (0.99, False)])
def test_structure_search_end_to_end(factor, expect_other):
    primary = space.default_structure(768, 4)
    other = (64, 256)
    it = item(structures=[primary, other])
    bench = FakeBench(structure_factor={other: factor})
    outcome = tuner(bench).tune_item(it)
    chosen = other if expect_other else primary
    assert outcome.chosen == chosen
    record = outcome.updates.structures["fp16/K768/N3072/c4"]
    assert (record["block_k"], record["block_n"]) == chosen and record["searched"] is True
    # primary launch records always, the chosen structure's too
    written = {LaunchKey.parse(key).family[5:] for key in outcome.updates.launch}
    assert written == {primary, chosen}
    assert any(x.phase == "probe" and x.structure == other for x in outcome.measurements)
    # structures are compared on the prefill bucket only; decode is measured on the winner alone
    decode_probes = [x for x in outcome.measurements if x.structure == other and x.m == 16]
    assert bool(decode_probes) == expect_other
    assert all(x.phase in ("probe", "confirm") for x in decode_probes)
    rows = summary_rows(outcome)
    assert [row["structure"] for row in rows] == [f"{chosen[0]}x{chosen[1]}"] * 2
    assert all(row["speedup"] for row in rows)
    written_rows = csv_rows(outcome, "H200", "NVIDIA H200")
    assert len(written_rows) == len(outcome.measurements)
    # every measured config reads back from its results row (the block-gathered gemv's included)
    assert [results.config_of(row) for row in written_rows] == [x.config for x in outcome.measurements]
    assert any(x.config.block_gather for x in outcome.measurements)


def test_resume_skips_tuned_keys_and_force_redoes_them(tmp_path):
    layers = [Layer(768, 3072, (16, 4096), ("gpt2 mlp.fc",))]
    options = TuneOptions(structure_search=False)
    todo, done = plan_work(layers, [4], ["fp16"], options, None)
    assert len(todo) == 1 and not done and todo[0].todo == [("forward", 16), ("forward", 4096)]
    outcome = tuner(FakeBench(), structure_search=False).tune_item(todo[0])
    path = tmp_path / "H200.json"
    tdb.write_records(path, outcome.updates)
    database = tdb.read_database(path)
    todo, done = plan_work(layers, [4], ["fp16"], options, database)
    assert not todo and len(done) == 1
    todo, _ = plan_work(layers, [4], ["fp16"], dataclasses.replace(options, force=True), database)
    assert len(todo) == 1 and len(todo[0].todo) == 2
    # a new bucket: only it is tuned, the recorded structure is kept
    more = [Layer(768, 3072, (16, 64, 4096), ("gpt2 mlp.fc",))]
    todo, _ = plan_work(more, [4], ["fp16"], options, database)
    assert todo[0].todo == [("forward", 64)] and set(todo[0].recorded) == {("forward", 16), ("forward", 4096)}
    # a structure search not yet done is still pending when asked for
    todo, _ = plan_work(layers, [4], ["fp16"], TuneOptions(), database)
    assert len(todo) == 1 and todo[0].searches_structure and todo[0].todo == []
    # --force without the structure search re-tunes the launch records of the recorded structure,
    # even one that is not the default (and writes no structure record over it)
    key = StructureKey("fp16", 768, 3072, 4)
    database.structures[key.text()] = dict(database.structures[key.text()], block_k=32, block_n=128)
    todo, _ = plan_work(layers, [4], ["fp16"], dataclasses.replace(options, force=True), database)
    assert todo[0].primary == (32, 128) != space.default_structure(768, 4)
    assert todo[0].structure_recorded and len(todo[0].todo) == 2


def test_resumed_item_with_structure_search_probes_recorded_configs():
    layers = [Layer(768, 3072, (16,), ("x",))]
    first = tuner(FakeBench(), structure_search=False).tune_item(
        plan_work(layers, [4], ["fp16"], TuneOptions(structure_search=False), None)[0][0])
    database = TuningDatabase(gpu="H200", launch=first.updates.launch)
    todo, _ = plan_work(layers, [4], ["fp16"], TuneOptions(), database)
    bench = FakeBench()
    outcome = tuner(bench).tune_item(todo[0])
    assert [x.phase for x in outcome.measurements if x.structure == todo[0].primary] == ["recorded"]
    assert "fp16/K768/N3072/c4" in outcome.updates.structures
    assert not any(LaunchKey.parse(k).family[5:] == todo[0].primary for k in outcome.updates.launch)


# ---------------------------------------------------------------------------------------------
# the real gate, real kernels, CPU interpreter
# ---------------------------------------------------------------------------------------------


class InterpretedBench(measure.KernelBench):
    """The real bench on CPU tensors; timing is the only thing faked (no do_bench without CUDA)."""

    def time(self, case, config, confirm=False):
        return 1.0 + 0.01 * config.tile_m

    def dense_ms(self, case):
        return 2.0


def test_gate_catches_one_wrong_tile_that_frobenius_misses():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(2048, 1024, generator=generator, dtype=torch.float64)
    out = reference.to(torch.float16)
    assert gate.compare(out, reference, "fp16").passed
    wrong = out.clone()
    wrong[:8, :8] = torch.randn(8, 8, generator=generator).half()
    result = gate.compare(wrong, reference, "fp16")
    assert result.rel_err < gate.GATE_TOLERANCE["fp16"][0]  # Frobenius alone would pass it
    assert not result.passed and "largest error" in result.reason
    wrong = out.clone()
    wrong[3, 7] = float("nan")
    assert "NaN" in gate.compare(wrong, reference, "fp16").reason


@pytest.mark.interpret
@pytest.mark.parametrize("kind", ["forward", "forward_rotated", "grad_input", "grad_weight"])
def test_gate_on_interpreted_kernels_rejects_a_wrong_candidate(kind, monkeypatch):
    good = LaunchConfig(16, 16, 16, num_warps=4, num_stages=2)
    wrong = LaunchConfig(16, 32, 16, num_warps=4, num_stages=2)
    unwritten = LaunchConfig(32, 16, 32, num_warps=4, num_stages=2)
    real = measure.LAUNCHERS[kind]

    def faulty(case, config, out):
        result = real(case, config, out)
        if config == wrong:
            result[:16, :16] += 1.0  # a wrong tile
        if config == unwritten:
            result[-1:, :] = float("nan")  # a row the kernel "never wrote" (still poisoned)
        return result

    monkeypatch.setitem(measure.LAUNCHERS, kind, faulty)
    # keep the interpreter fast: three candidates instead of the full space
    monkeypatch.setattr(space, "launch_candidates",
                        lambda problem, limit, sm_count=132: space.CandidateSet(problem, [good, wrong, unwritten]))
    bench = InterpretedBench(torch.device("cpu"))
    it = WorkItem("fp16", 64, 32, 2, (8,), (kind,), (16, 16), [(16, 16)], [(kind, 8)])
    outcome = Tuner(bench, "H200", HOPPER, TuneOptions(kinds=(kind,), refine=False), ENV).tune_item(it)
    status = {x.config: x for x in outcome.measurements if x.phase == "screen"}
    assert status[good].status == "ok" and status[good].gate_rel_err < 1e-2
    assert status[wrong].status == "failed_gate" and "error" in status[wrong].error
    assert status[unwritten].status == "failed_gate" and "NaN" in status[unwritten].error
    assert outcome.results[((16, 16), kind, 8)].config == good
    (record,) = outcome.updates.launch.values()
    assert record["config"] == good.to_dict()


@pytest.mark.interpret
def test_forward_rotated_case_gates_against_the_weight_not_its_rotated_copy():
    bench = measure.KernelBench(torch.device("cpu"))
    structure = bench.structure(100, 40, 4, 16, 16)
    sketch_gemm = LaunchConfig(16, 64, 32, 4, 1, algorithm="sketch_gemm")
    case = bench.prepare("forward_rotated", 5, structure, "fp16")
    assert torch.equal(case.tensors["rotated_weight"], reference.rotate_weight(case.tensors["weight"], structure))
    assert bench.gate(case, sketch_gemm, "fp16")[0].passed
    case.tensors["rotated_weight"] = case.tensors["weight"].clone()  # not rotated: a wrong product
    assert not bench.gate(case, sketch_gemm, "fp16")[0].passed


@pytest.mark.interpret
def test_capture_records_launch_arguments_without_running():
    bench = measure.KernelBench(torch.device("cpu"))
    structure = bench.structure(64, 32, 2, 16, 16)
    case = measure.make_case("forward", 8, structure, torch.float16, torch.device("cpu"), empty=True)
    out = case.tensors["out"].fill_(7.0)
    with measure.capture_launches() as captured:
        measure.LAUNCHERS["forward"](case, LaunchConfig(16, 16, 16, 4, 2), out)
    assert torch.all(out == 7.0)  # nothing ran
    (task,) = captured
    assert task.kernel == "_ss1_forward_kernel" and ("TILE_M", 16) in task.kwargs
    assert ("tensor", "float16") in task.args
    key = task.dedupe_key(bench._constexprs[task.kernel])
    assert key == task.dedupe_key(bench._constexprs[task.kernel])
    # the kernels run normally again afterwards
    result = bench.gate(bench.prepare("forward", 8, structure, "fp16"), LaunchConfig(16, 16, 16, 4, 2), "fp16")[0]
    assert result.passed


_PREWARM_SCRIPT = r'''
import os, sys, time
os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from ss1bench.kernels import ss1
from ss1bench.kernels.config import LaunchConfig
from ss1bench.tuning import measure

class Hopper:  # no GPU here: compile for sm_90, never launch
    def get_current_device(self): return 0
    def get_current_stream(self, device=None): return 0
    def get_current_target(self): return GPUTarget("cuda", 90, 32)

os.environ["TRITON_INTERPRET"] = "1"  # launchers accept CPU tensors; kernels stay JITFunction (decorated already)
structure = measure.KernelBench(torch.device("cpu")).structure(768, 3072, 4, 64, 128)
case = measure.make_case("forward", 4096, structure, torch.float16, torch.device("cpu"), empty=True)
config = LaunchConfig(64, 64, 32, num_warps=4, num_stages=2)
with measure.capture_launches() as captured:
    measure.LAUNCHERS["forward"](case, config, case.tensors["out"])
(task,) = captured
driver.set_active(Hopper())
os.environ.pop("TRITON_INTERPRET")
measure._worker_compile(task)  # what a pool worker does: MockTensors, compile only
kernel = ss1._ss1_forward_kernel
compiled = len(kernel.device_caches[0][0])
timings = []
def compile_only(*args, grid, warmup, **kwargs):  # the real launch's arguments, compile-only
    start = time.perf_counter()
    type(kernel).run(kernel, *args, grid=grid, warmup=True, **kwargs)
    timings.append(time.perf_counter() - start)
kernel.run = compile_only
os.environ["TRITON_INTERPRET"] = "1"
measure.LAUNCHERS["forward"](case, config, case.tensors["out"])
print(compiled, len(kernel.device_caches[0][0]), f"{timings[0]:.3f}")
'''


def test_prewarm_compiles_the_kernel_the_real_launch_uses(tmp_path):
    """The worker's MockTensor compile has the real launch's cache key (no second compile)."""
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("triton's bundled ptxas is not available")
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path)}
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "-c", _PREWARM_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=300)
    if "set_active" in result.stderr:
        pytest.skip("this triton has no driver.set_active to fake a GPU target")
    assert result.returncode == 0, result.stderr[-3000:]
    before, after, seconds = result.stdout.split()
    assert before == after == "1"  # the real launch found the prewarmed kernel: same key
    assert float(seconds) < 0.5


def test_compile_pool_runs_urgent_tasks_first():
    from concurrent.futures import ThreadPoolExecutor

    started = []
    gate_open = __import__("threading").Event()

    def compile_stub(task):
        started.append(task)
        gate_open.wait(5)
        return 0.0

    with ThreadPoolExecutor(1) as executor:
        pool = measure._PriorityPool(executor, limit=1, function=compile_stub)
        later = [pool.submit(f"item5-{i}", priority=5) for i in range(3)]
        urgent = pool.submit("item1", priority=1)
        gate_open.set()
        for future in [*later, urgent]:
            assert future.result(5) == 0.0
    assert started == ["item5-0", "item1", "item5-1", "item5-2"]


def test_compile_pool_shutdown_does_not_wait_for_a_stuck_compile():
    import multiprocessing
    import time as time_module
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool = measure._PriorityPool(executor, limit=1, function=time_module.sleep)
    stuck = pool.submit(60, priority=0)
    queued = pool.submit(60, priority=1)
    deadline = time_module.monotonic() + 30
    while not executor._processes and time_module.monotonic() < deadline:
        time_module.sleep(0.05)
    workers = list(executor._processes.values())
    start = time_module.monotonic()
    pool.shutdown()
    assert time_module.monotonic() - start < 10
    # the executor's own thread may reap the worker first: allow it a moment to notice
    deadline = time_module.monotonic() + 5
    while any(worker.exitcode is None for worker in workers) and time_module.monotonic() < deadline:
        time_module.sleep(0.05)
    assert workers and all(worker.exitcode is not None for worker in workers)
    assert queued.cancelled()
    del stuck


def test_structure_record_is_not_replaced_by_an_unsearched_one():
    layers = [Layer(768, 3072, (16,), ("x",))]
    first = tuner(FakeBench()).tune_item(plan_work(layers, [4], ["fp16"], TuneOptions(), None)[0][0])
    assert first.updates.structures["fp16/K768/N3072/c4"]["searched"] is True
    database = TuningDatabase(gpu="H200", structures=first.updates.structures)  # launch records lost
    todo, _ = plan_work(layers, [4], ["fp16"], TuneOptions(), database)
    assert not todo[0].searches_structure and todo[0].structure_recorded
    again = tuner(FakeBench()).tune_item(todo[0])
    assert not again.updates.structures and again.updates.launch


# ---- issue 20: one launch at decode, work by expected gain, a budget that stops cleanly -------------------

SKETCH = LaunchConfig(16, 64, 128, 4, 1, algorithm="sketch_gemm")
FUSED = LaunchConfig(16, 128, 64, 4, 4)


def test_prefer_single_launch_only_for_the_decode_forward_within_the_margin():
    assert (launches("forward", SKETCH), launches("forward_rotated", SKETCH), launches("forward", FUSED)) == (3, 2, 1)
    close = [(SKETCH, 1.00), (FUSED, 1.04)]
    far = [(SKETCH, 1.00), (FUSED, 1.10)]
    assert prefer_single_launch(close, "forward", 64, 0.05) == (FUSED, 1.04)
    assert prefer_single_launch(far, "forward", 64, 0.05) == (SKETCH, 1.00)
    assert prefer_single_launch(close, "forward", 4096, 0.05) == (SKETCH, 1.00)  # prefill: GPU time only
    assert prefer_single_launch(close, "forward_rotated", 64, 0.05) == (SKETCH, 1.00)  # the training path's pass
    assert prefer_single_launch([], "forward", 64, 0.05) is None


class LaunchCountBench(FakeBench):
    """sketch_gemm 4% faster than the best fused config (as at 64 x 768 x 3072, c = 16)."""

    def speed(self, config):
        if config.algorithm == "sketch_gemm":
            return 0.96
        return 1.0 if config == FUSED else 1.5


def test_the_tuner_records_one_launch_at_decode_and_confirms_it():
    it = item(k=768, n=3072, c=16, buckets=(64, 4096))
    bench = LaunchCountBench()
    outcome = tuner(bench).tune_item(it)
    decode = outcome.results[(it.primary, "forward", 64)]
    prefill = outcome.results[(it.primary, "forward", 4096)]
    assert decode.config == FUSED and decode.ms == pytest.approx(1.0)
    assert prefill.config.algorithm == "sketch_gemm"  # graph time decides at prefill
    confirmed = {x.config for x in outcome.measurements if x.phase == "confirm" and x.m == 64}
    assert FUSED in confirmed
    refined = [x.config for x in outcome.measurements if x.phase == "refine" and x.m == 64]
    assert any(c.num_stages == 3 and (c.tile_m, c.tile_n, c.tile_k) == (16, 128, 64) for c in refined)
    assert outcome_with_margin_zero(it).results[(it.primary, "forward", 64)].config.algorithm == "sketch_gemm"


def outcome_with_margin_zero(it):
    return tuner(LaunchCountBench(), single_launch_margin=0.0).tune_item(it)


def test_order_by_gain_puts_many_slow_layers_first():
    small = item(k=768, n=768, c=4, buckets=(16, 4096))
    large = item(k=4096, n=14336, c=4, buckets=(16, 4096))
    many = dataclasses.replace(item(k=768, n=768, c=4, buckets=(16, 4096)), count=48)
    assert expected_gain_ms(large) > expected_gain_ms(small)
    assert expected_gain_ms(many) == pytest.approx(48 * expected_gain_ms(small))
    ordered = order_by_gain([small, large, many], HOPPER, 132, TuneOptions())
    assert ordered[0] is many and ordered[-1] is small
    done = dataclasses.replace(small, todo=[])  # nothing to tune: no gain
    assert order_by_gain([done, small], HOPPER, 132, TuneOptions())[0] is small


def test_a_budget_stops_between_items_and_leaves_a_usable_database(monkeypatch, tmp_path):
    import types

    from ss1bench.kernels import ss1
    from ss1bench.tuning import runner
    from ss1bench.tuning.gpu import Device

    clock = {"now": 1000.0}

    class ClockBench(FakeBench):
        """Every timing takes 0.1 s of the fake clock; nothing runs."""

        compile_worker_s = first_launch_s = 0.0
        slow_first_launches = 0
        pool_error = None

        def __init__(self, *args, **kwargs):
            super().__init__()

        def time(self, case, config, confirm=False):
            clock["now"] += 0.1
            return super().time(case, config, confirm)

        def close(self):
            pass

    monkeypatch.setattr(runner, "now", lambda: clock["now"])
    monkeypatch.setattr(measure, "KernelBench", ClockBench)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: types.SimpleNamespace(multi_processor_count=132))
    monkeypatch.setattr(ss1, "device_limits", lambda device: ("NVIDIA H200", HOPPER))
    options = TuneOptions(structure_search=False, refine=False)
    layers = [Layer(768, 3072, (16,), ("a",), count=12), Layer(768, 768, (16,), ("b",)),
              Layer(4096, 4096, (16,), ("c",), count=4)]
    todo, _ = plan_work(layers, [4], ["fp16"], options, None)
    todo = order_by_gain(todo, HOPPER, 132, options)
    db_path = tmp_path / "H200.json"
    request = runner.TuneRequest(layers, [4], ["fp16"], options, db_override=str(db_path), compile_workers=0)
    first_units = estimate_units(todo[0], options, HOPPER, 132)
    request.deadline = clock["now"] + first_units * 0.1 * 1.5  # room for the first item only
    report = runner.run_on_device(Device(0, "NVIDIA H200"), todo, request, lambda *args: None)
    assert report.items == 1 and len(report.skipped) == 2 and report.error is None
    assert report.skipped == [it.label for it in todo[1:]]
    written = tdb.read_database(db_path)  # valid, and holds exactly the first item's records
    assert {LaunchKey.parse(k).in_features for k in written.launch} == {todo[0].in_features}
