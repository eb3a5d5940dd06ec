"""Device side of tuning: inputs and references, the gate, timing, and parallel compilation.

:class:`KernelBench` is what the tuner (:mod:`.tuner`) drives; everything here except timing also
runs on CPU tensors under ``TRITON_INTERPRET=1`` (the tests gate candidates that way).

Parallel compilation. Triton compiles a kernel at its first launch, on the launching thread, and
in the main process that would stall the timing loop (1-3 s per config). Worker *processes* compile
instead and the main process times whatever is ready:

1. the launcher runs in the main process with its kernels' ``run`` temporarily replaced by a
   recorder (:func:`capture_launches`): the exact arguments a launch would pass are captured, with
   no compile and no launch (``sketch_gemm``'s cuBLAS product does run, on uninitialized buffers);
2. a worker process replays them through ``JITFunction.warmup`` (tensors become dtypes, which
   Triton wraps in ``MockTensor``): the kernel is compiled into Triton's on-disk cache, nothing
   runs on the GPU;
3. the main process's first real launch finds the binary in the disk cache (a load, not a
   compile). :attr:`KernelBench.first_launch_s` adds up what first launches cost, so a run shows
   whether the prewarm hit.

Why processes, not threads: a compile thread in the timing process competes for its GIL, and a
launch delayed inside ``do_bench``'s timed region inflates the measurement; worker processes
leave the timing process alone. The run's summary says how much compiling was left to the timing
process ("first launches in the timing process"); with ``--compile-workers 0`` everything compiles
there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import inspect
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

from ss1bench import reference
from ss1bench.dtypes import TORCH_DTYPES, dtype_name
from ss1bench.kernels.config import FORWARD_KINDS, LaunchConfig
from ss1bench.structure import SS1Structure, cached_structure
from ss1bench.timing import graph_bench_ms

from .gate import GateResult, compare

#: do_bench settings. Screening ranks ~20-40 candidates per bucket, so it is short; the top few
#: are re-timed longer. Medians of do_bench with the L2 flushed before every call (its default),
#: of CUDA-graph replays (:func:`ss1bench.timing.graph_bench_ms`: the kernel's time, not the
#: launcher's host time, which would swamp decode kernels of 5-15 us).
SCREEN_WARMUP_MS, SCREEN_REP_MS = 1, 5
CONFIRM_WARMUP_MS, CONFIRM_REP_MS = 3, 25


# ---------------------------------------------------------------------------------------------
# inputs and launches
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """Inputs, output buffer and reference for one (kind, M, structure, dtype) on one device.

    Random inputs (never zeros) from a private generator; the float64 reference is computed on
    first use and kept as float64.
    """

    kind: str
    m: int
    structure: SS1Structure
    dtype: torch.dtype
    device: torch.device
    tensors: dict
    _reference: torch.Tensor | None = None

    @property
    def out_shape(self) -> tuple[int, ...]:
        s = self.structure
        if self.kind in FORWARD_KINDS:
            return (self.m, s.out_features)
        return {"grad_input": (self.m, s.in_features), "grad_weight": s.weight_shape}[self.kind]

    def reference(self) -> torch.Tensor:
        if self._reference is None:
            t = {name: (v.double() if v is not None else None) for name, v in self.tensors.items()}
            s = self.structure
            if self.kind in FORWARD_KINDS:  # from the weight itself, not its rotated copy
                ref = reference.ss1_forward_reference(t["x"], t["weight"], t["bias"], s)
            elif self.kind == "grad_input":
                ref = reference.ss1_grad_input_reference(t["grad_out"], t["weight"], s)
            else:
                ref = reference.ss1_grad_weight_reference(t["grad_out"], t["x"], s)
            self._reference = ref
        return self._reference

    def release(self) -> None:
        self.tensors.clear()
        self._reference = None


def make_case(kind: str, m: int, structure: SS1Structure, dtype: torch.dtype, device: torch.device,
              seed: int = 0, empty: bool = False) -> Case:
    """Inputs for ``kind``: x (M, K) ~ N(0, 1), weight (N, K_red) ~ U(+-1/sqrt(K)) like the layer,
    bias ~ U(+-1/sqrt(K)), grad_out (M, N) ~ N(0, 1), and an output buffer. ``empty``: shapes only
    (for capturing launch arguments)."""
    k, n = structure.in_features, structure.out_features
    shapes = {"x": (m, k), "weight": structure.weight_shape, "bias": (n,), "grad_out": (m, n)}
    needed = (("x", "weight", "bias") if kind in FORWARD_KINDS
              else {"grad_input": ("grad_out", "weight"), "grad_weight": ("grad_out", "x")}[kind])
    tensors: dict = {}
    generator = None if empty else torch.Generator(device=device).manual_seed(seed)
    bound = 1.0 / math.sqrt(k)
    for name in needed:
        if empty:
            tensors[name] = torch.empty(shapes[name], dtype=dtype, device=device)
        elif name in ("x", "grad_out"):
            tensors[name] = torch.randn(shapes[name], generator=generator, device=device, dtype=torch.float32).to(dtype)
        else:
            uniform = torch.rand(shapes[name], generator=generator, device=device, dtype=torch.float32)
            tensors[name] = ((uniform * 2 - 1) * bound).to(dtype)
    if kind == "forward_rotated":  # what the layer's rotated-weight cache holds
        tensors["rotated_weight"] = (torch.empty_like(tensors["weight"]) if empty
                                     else reference.rotate_weight(tensors["weight"], structure).contiguous())
    case = Case(kind, m, structure, dtype, device, tensors)
    tensors["out"] = torch.empty(case.out_shape, dtype=dtype, device=device)
    return case


def _launch_forward(case: Case, config: LaunchConfig, out: torch.Tensor) -> torch.Tensor:
    from ss1bench.kernels.ss1 import ss1_forward

    t = case.tensors
    return ss1_forward(t["x"], t["weight"], t["bias"], case.structure, config=config, out=out)


def _launch_forward_rotated(case: Case, config: LaunchConfig, out: torch.Tensor) -> torch.Tensor:
    from ss1bench.kernels.ss1 import ss1_forward

    t = case.tensors
    return ss1_forward(t["x"], t["weight"], t["bias"], case.structure, config=config, out=out,
                       rotated_weight=t["rotated_weight"])


def _launch_grad_input(case: Case, config: LaunchConfig, out: torch.Tensor) -> torch.Tensor:
    from ss1bench.kernels.ss1 import ss1_grad_input

    t = case.tensors
    return ss1_grad_input(t["grad_out"], t["weight"], case.structure, config=config, out=out)


def _launch_grad_weight(case: Case, config: LaunchConfig, out: torch.Tensor) -> torch.Tensor:
    from ss1bench.kernels.ss1 import ss1_grad_weight

    t = case.tensors
    # Atomics for split_m > 1: the default outside deterministic mode, so what layers will run.
    return ss1_grad_weight(t["grad_out"], t["x"], case.structure, config=config, deterministic=False, out=out)


#: kind -> launcher(case, config, out). Tests replace entries to inject wrong kernels.
LAUNCHERS = {"forward": _launch_forward, "forward_rotated": _launch_forward_rotated,
             "grad_input": _launch_grad_input, "grad_weight": _launch_grad_weight}


def dense_function(case: Case, seed: int = 1):
    """The cuBLAS baseline for ``case`` (the ``dense`` yardstick of ``ss1bench/bench/schema.py``): a
    dense layer of the same K, N."""
    s, device, dtype = case.structure, case.device, case.dtype
    generator = torch.Generator(device=device).manual_seed(seed)
    dense_w = (torch.rand((s.out_features, s.in_features), generator=generator, device=device) - 0.5).to(dtype)
    t = case.tensors
    if case.kind in FORWARD_KINDS:
        x, bias = t["x"], t["bias"]
        return lambda: torch.nn.functional.linear(x, dense_w, bias)
    if case.kind == "grad_input":
        grad_out = t["grad_out"]
        return lambda: torch.matmul(grad_out, dense_w)
    grad_out, x = t["grad_out"], t["x"]
    return lambda: torch.matmul(grad_out.t(), x)


def run_gate(case: Case, config: LaunchConfig) -> GateResult:
    """Poison the output with NaN, launch ``config``, compare with the float64 reference.

    Launch errors propagate (the caller records them as failures).
    """
    out = case.tensors["out"]
    out.fill_(float("nan"))
    result = LAUNCHERS[case.kind](case, config, out)
    if result.data_ptr() != out.data_ptr():
        out = result
    return compare(out, case.reference(), dtype_name(case.dtype))


def bench_ms(fn, warmup_ms: float, rep_ms: float) -> float:
    """Median milliseconds of ``fn`` replayed from a CUDA graph (L2 flushed before every replay);
    eager ``do_bench`` when ``fn`` cannot be captured."""
    return graph_bench_ms(fn, warmup_ms, rep_ms)[0]


# ---------------------------------------------------------------------------------------------
# capture and parallel compilation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileTask:
    """One kernel compile, picklable: kernel name, positional and keyword launch arguments with
    tensors replaced by ``("tensor", dtype name)``."""

    kernel: str
    args: tuple
    kwargs: tuple  # (name, value) pairs, in the launcher's order

    def dedupe_key(self, constexpr_names: frozenset[str]) -> tuple:
        """What Triton's cache key depends on: constexpr values exactly, runtime ints only through
        their specialization (== 1, divisible by 16, needs 64 bits)."""

        def spec(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or name in constexpr_names:
                return value
            return ("int", value == 1, value % 16 == 0, abs(value) >= 2**31)

        return (self.kernel, tuple(spec(None, v) for v in self.args),
                tuple(sorted((k, spec(k, v)) for k, v in self.kwargs)))


def _describe_arg(value):
    if isinstance(value, torch.Tensor):
        if value.data_ptr() % 16:
            raise ValueError("unaligned tensor: a MockTensor would specialize differently")
        return ("tensor", str(value.dtype).removeprefix("torch."))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"cannot replay a launch argument of type {type(value).__name__}")


def kernel_names() -> tuple[str, ...]:
    """The ``@triton.jit`` kernels (``*_kernel``) of ``ss1bench.kernels.jit`` (JIT or interpreted)."""
    from triton.runtime.jit import KernelInterface

    from ss1bench.kernels import jit

    return tuple(sorted(name for name, value in vars(jit).items()
                        if name.endswith("_kernel") and isinstance(value, KernelInterface)))


def constexpr_names(kernel) -> frozenset[str]:
    """Names of a kernel's ``tl.constexpr`` parameters."""
    params = getattr(kernel, "params", None)
    if params is not None:
        return frozenset(p.name for p in params if p.is_constexpr)
    signature = inspect.signature(kernel.fn)  # the interpreter's wrapper keeps the Python function
    return frozenset(name for name, p in signature.parameters.items() if "constexpr" in str(p.annotation))


@contextlib.contextmanager
def capture_launches() -> Iterator[list]:
    """Within the block, SS1 kernel launches (through ``kernels/launch.py``, as every launcher
    makes them) are recorded as :class:`CompileTask` (or an error string when an argument cannot
    be replayed) instead of compiled and run. Per thread."""
    from ss1bench.kernels import launch

    captured: list = []

    def handler(kernel, grid, args, kwargs) -> None:
        try:
            # keyword order kept: Triton's in-memory cache key is the str() of the options dict
            captured.append(CompileTask(kernel.fn.__name__, tuple(_describe_arg(a) for a in args),
                                        tuple((k, _describe_arg(v)) for k, v in kwargs.items())))
        except ValueError as exc:
            captured.append(str(exc))

    with launch.capture(handler):
        yield captured


def _worker_init(device_index: int) -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    torch.cuda.set_device(device_index)
    import ss1bench.kernels.ss1  # noqa: F401 - import once, before the first task


def _worker_compile(task: CompileTask) -> float:
    """Compile ``task`` into Triton's cache (worker process); returns seconds taken."""
    from ss1bench.kernels import jit

    start = time.perf_counter()
    kernel = getattr(jit, task.kernel)

    def replay(value):
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "tensor":
            return getattr(torch, value[1])  # warmup() wraps dtypes in MockTensor
        return value

    kernel.warmup(*(replay(a) for a in task.args), grid=(1,), **{k: replay(v) for k, v in task.kwargs})
    return time.perf_counter() - start


def default_compile_workers(devices: int = 1) -> int:
    """CPU cores minus one for each timing process (and one spare), split over the devices."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(0, (cores - 2 * devices) // max(devices, 1))


# ---------------------------------------------------------------------------------------------
# the bench the tuner drives
# ---------------------------------------------------------------------------------------------


class MeasurementError(Exception):
    """A candidate that could not run (compile, launch or inputs); the message says which.

    ``fatal``: the CUDA context is gone (an illegal address or other sticky error): nothing more
    can run in this process, so the tuner stops (what was written so far stays; re-run resumes).
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in f"{type(exc).__name__}: {exc}".strip().splitlines() if line.strip()]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text[:300]


_STICKY_CUDA_ERRORS = ("illegal memory access", "illegal address", "unspecified launch failure",
                       "misaligned address", "device-side assert", "an illegal instruction")


def _is_fatal(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _STICKY_CUDA_ERRORS)


class _PriorityPool:
    """A process pool fed from a priority queue: at most ``workers + 2`` tasks are inside the
    executor at a time, so a task submitted later with a lower priority overtakes queued ones."""

    def __init__(self, executor, limit: int, function=None) -> None:
        self._executor = executor
        self._limit = limit
        self._function = function or _worker_compile
        self._heap: list = []
        self._count = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self.broken: str | None = None

    @classmethod
    def for_device(cls, workers: int, device_index: int) -> _PriorityPool:
        """Spawned compile workers bound to ``cuda:device_index``."""
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=(device_index,))
        return cls(executor, workers + 2)

    def submit(self, task: CompileTask, priority: int) -> Future:
        future: Future = Future()
        with self._lock:
            heapq.heappush(self._heap, (priority, self._count, task, future))
            self._count += 1
        self._pump()
        return future

    def _pump(self) -> None:
        while True:
            with self._lock:
                if not self._heap or self._in_flight >= self._limit:
                    return
                _priority, _count, task, future = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                inner = self._executor.submit(self._function, task)
            except Exception as exc:  # a broken pool: the timing process compiles at first launch
                self.broken = f"{type(exc).__name__}: {exc}"
                future.set_exception(exc)
                with self._lock:
                    self._in_flight -= 1
                continue
            inner.add_done_callback(functools.partial(self._finished, future))

    def _finished(self, future: Future, inner: Future) -> None:
        with self._lock:
            self._in_flight -= 1
        if not future.done():  # a shut-down pool cancels both sides
            if inner.cancelled():
                future.cancel()
            elif inner.exception() is not None:
                future.set_exception(inner.exception())
            else:
                future.set_result(inner.result())
        self._pump()

    def shutdown(self) -> None:
        """Cancel what is queued and stop the workers now (a compile in flight is abandoned: its
        result would only warm the disk cache). Workers are terminated rather than joined so that
        a tuning process never waits at exit on a compiler that hangs."""
        with self._lock:
            pending, self._heap = self._heap, []
        for *_rest, future in pending:
            future.cancel()
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


class KernelBench:
    """Cases, gate, timing and compile pool for one device.

    Args:
        device: where to run (``cuda:i``; a CPU device only with ``TRITON_INTERPRET=1`` and no timing).
        compile_workers: worker processes for compiling (0: compile at first launch, in this process).
        seed: input seed.
    """

    def __init__(self, device: torch.device, compile_workers: int = 0, seed: int = 0) -> None:
        self.device = device
        self.seed = seed
        self.first_launch_s = 0.0
        self.slow_first_launches = 0
        self.compile_worker_s = 0.0
        self.compile_failures_in_workers = 0
        self._futures: dict[tuple, list[Future]] = {}
        self._submitted: dict[tuple, Future] = {}
        self._launched: set[tuple] = set()
        self._pool: _PriorityPool | None = None
        self.pool_error: str | None = None
        if compile_workers > 0 and device.type == "cuda":
            try:
                self._pool = _PriorityPool.for_device(compile_workers, device.index or 0)
            except Exception as exc:  # no pool: compile at first launch instead
                self.pool_error = f"{type(exc).__name__}: {exc}"
        from ss1bench.kernels import jit

        self._constexprs = {name: constexpr_names(getattr(jit, name)) for name in kernel_names()}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # ---- cases ------------------------------------------------------------------------------
    def structure(self, in_features: int, out_features: int, redn_factor: int, block_k: int,
                  block_n: int) -> SS1Structure:
        return cached_structure(in_features, out_features, redn_factor, 1024, block_k, block_n)

    def prepare(self, kind: str, m: int, structure: SS1Structure, dtype: str) -> Case:
        return make_case(kind, m, structure, TORCH_DTYPES[dtype], self.device, seed=self.seed)

    # ---- compilation ------------------------------------------------------------------------
    @staticmethod
    def _config_key(kind: str, m: int, structure: SS1Structure, dtype: str, config: LaunchConfig) -> tuple:
        return (kind, m, structure, dtype, config)

    def precompile(self, kind: str, m: int, structure: SS1Structure, dtype: str,
                   configs: list[LaunchConfig], priority: int = 0) -> None:
        """Queue compiles of ``configs`` (no-op without a pool); lower ``priority`` compiles first,
        ties in submission order. Never raises."""
        if self._pool is None:
            return
        todo = [c for c in configs if self._config_key(kind, m, structure, dtype, c) not in self._futures]
        if not todo:
            return
        try:
            case = make_case(kind, m, structure, TORCH_DTYPES[dtype], self.device, empty=True)
        except torch.cuda.OutOfMemoryError:
            return
        try:
            for config in todo:
                with capture_launches() as captured:
                    try:
                        LAUNCHERS[kind](case, config, case.tensors["out"])
                    except Exception:  # the real launch reports it as a failed candidate
                        continue
                futures = []
                for task in captured:
                    if not isinstance(task, CompileTask):
                        continue
                    key = task.dedupe_key(self._constexprs[task.kernel])
                    future = self._submitted.get(key)
                    if future is None:
                        future = self._pool.submit(task, priority)
                        self._submitted[key] = future
                    futures.append(future)
                self._futures[self._config_key(kind, m, structure, dtype, config)] = futures
        finally:
            case.release()
            del case

    def as_ready(self, kind: str, m: int, structure: SS1Structure, dtype: str,
                 configs: list[LaunchConfig]) -> Iterator[LaunchConfig]:
        """Yield ``configs`` as their compiles finish (all at once, in order, without a pool)."""
        pending = {}
        for config in configs:
            futures = self._futures.get(self._config_key(kind, m, structure, dtype, config), [])
            if all(f.done() for f in futures):
                yield config
            else:
                pending[config] = futures
        while pending:
            ready = [c for c, fs in pending.items() if all(f.done() for f in fs)]
            if not ready:
                waiting = {f for fs in pending.values() for f in fs if not f.done()}
                wait(waiting, return_when=FIRST_COMPLETED)
                continue
            for config in ready:
                del pending[config]
                yield config

    def _account_compile(self, kind: str, m: int, structure: SS1Structure, dtype: str,
                         config: LaunchConfig) -> None:
        for future in self._futures.get(self._config_key(kind, m, structure, dtype, config), []):
            if future.done():
                try:
                    self.compile_worker_s += future.result()
                except Exception:  # the real launch decides; only counted for the summary
                    self.compile_failures_in_workers += 1

    # ---- measurements -----------------------------------------------------------------------
    def gate(self, case: Case, config: LaunchConfig, dtype: str) -> tuple[GateResult, float]:
        """(gate result, seconds the launch took). Raises MeasurementError if it cannot run."""
        key = self._config_key(case.kind, case.m, case.structure, dtype, config)
        start = time.perf_counter()
        try:
            result = run_gate(case, config)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as exc:  # compile, launch and runtime errors of any kind: a failed candidate
            raise MeasurementError(_one_line(exc), fatal=_is_fatal(exc)) from None
        elapsed = time.perf_counter() - start
        if key not in self._launched:
            self._launched.add(key)
            self._account_compile(case.kind, case.m, case.structure, dtype, config)
            self.first_launch_s += elapsed
            if elapsed > 0.5:
                self.slow_first_launches += 1
        return result, elapsed

    def time(self, case: Case, config: LaunchConfig, confirm: bool = False) -> float:
        """Median ms of ``config`` on ``case`` (screening or, with ``confirm``, longer runs)."""
        out = case.tensors["out"]
        launcher = LAUNCHERS[case.kind]
        fn = lambda: launcher(case, config, out)
        warmup, rep = (CONFIRM_WARMUP_MS, CONFIRM_REP_MS) if confirm else (SCREEN_WARMUP_MS, SCREEN_REP_MS)
        try:
            return bench_ms(fn, warmup, rep)
        except Exception as exc:
            raise MeasurementError(_one_line(exc), fatal=_is_fatal(exc)) from None

    def dense_ms(self, case: Case) -> float:
        try:
            return bench_ms(dense_function(case), CONFIRM_WARMUP_MS, CONFIRM_REP_MS)
        except Exception as exc:
            raise MeasurementError(_one_line(exc), fatal=_is_fatal(exc)) from None


def config_fields(config: LaunchConfig | None) -> dict:
    names = [f.name for f in dataclasses.fields(LaunchConfig)]
    return {name: (getattr(config, name) if config is not None else "") for name in names}
