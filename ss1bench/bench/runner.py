"""The benchmark runner: SS1 against dense and structured peers, side by side, one CSV.

Providers are data (``schema.PROVIDERS``, each with the modes it has rows in: ``ss1_cached`` only in
``fwd``); each measured provider has a builder here that returns an ``nn.Module`` plus its
settings, and one function times them all the same way:
``triton.testing.do_bench`` (L2 flushed before every call) median and 20th/80th percentiles, on
random inputs (never zeros). In ``fwd`` mode the module runs under ``torch.no_grad()``; in
``fwd+bwd`` mode one call is forward plus ``backward(dy)`` with gradients for x, the weights and
the bias (reset to None before each call). Yardsticks (DESIGN.md section 4): dense = cuBLAS
``F.linear``; ideal = max(cuBLAS at K/c, memory floor at the copy bandwidth measured once per run).

Run order: dtype, mode, shape (the dense layer is timed once per shape), then c. A shape two
sets share (BERT's and GPT-2's layers coincide) is timed once and its rows are written under each
set. The CSV and its JSON sidecar are rewritten after every shape, so an interrupted run keeps
what it measured.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ss1bench.dtypes import TORCH_DTYPES
from ss1bench.layer import SSL, choose_structure
from ss1bench.provenance import command_line
from ss1bench.structure import SS1Structure
from ss1bench.timing import do_bench, graphed
from ss1bench.tuning.gpu import normalize_gpu_name

from .peers import LowRankLinear, MonarchLinear
from .schema import (
    CASE_KEY,
    FLOP_COUNTS,
    MEMORY_FLOOR,
    MODES,
    PROVIDERS,
    QUANTILES,
    RESULT_COLUMNS,
    SS1_PROVIDERS,
    mode_slug,
    providers_in,
)
from .shapes import Shape

#: Copy-bandwidth probe: 1 GiB read + 1 GiB written, far beyond any L2 (50-60 MiB on H100/H200),
#: so it measures HBM. BASELINES.md's H200 figure (4.23 TB/s) was measured this way.
COPY_BYTES = 1 << 30

#: do_bench defaults (ms of warm-up and of timed repetitions); ``--warmup-ms``/``--rep-ms`` change them.
DEFAULT_WARMUP_MS = 25
DEFAULT_REP_MS = 100

#: A timing whose p80 exceeds this multiple of its p20 is taken again, up to RETIMES more runs,
#: and the run with the tightest p80/p20 kept. Graph replays and L2-flushed calls spread by a few
#: percent; a bimodal spread is interference from outside the call (another process on the GPU
#: or its host), and it lands in the median (seen in a committed run: p20 8.7 us, median 42 us).
SPREAD_LIMIT = 1.5
RETIMES = 2

#: Hash seed of the SS1 layers timed (SSL's default; the seed does not change the work done).
LAYER_SEED = 1024

#: Seed of the private generator that fills inputs and weights (the global RNG is untouched).
INPUT_SEED = 0


# ---- work items -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One benchmark case: a shape at one reduction factor, dtype and mode."""

    shape: Shape
    redn_factor: int
    dtype: str
    mode: str

    def describe(self) -> str:
        s = self.shape
        return (f"{self.dtype} {self.mode:<7} {s.shape_set:<6} M={s.m:<6} K={s.k:<6} N={s.n:<6} "
                f"c={self.redn_factor:<2} ({s.layer})")


def plan(shapes: list[Shape], redn_factors: list[int], dtypes: list[str], modes: list[str]) -> list[Case]:
    """Every case, in run order (dtype, mode, shape, c)."""
    return [Case(shape, c, dtype, mode) for dtype in dtypes for mode in modes for shape in shapes
            for c in redn_factors]


def measured_provider_names(mode: str) -> list[str]:
    """The providers timed in each case of ``mode`` (``ss1_cached`` only in ``fwd``)."""
    return [p.name for p in providers_in(mode) if p.measured]


def timings_in(cases: list[Case]) -> int:
    """do_bench calls a run makes: the dense layer once per shape, the others once per case.

    A shape that two sets share is timed once.
    """
    shapes = {(c.dtype, c.mode, c.shape.m, c.shape.k, c.shape.n) for c in cases}
    unique_cases = {(c.dtype, c.mode, c.shape.m, c.shape.k, c.shape.n, c.redn_factor) for c in cases}
    per_case = {mode: len(measured_provider_names(mode)) - 1 for mode in MODES}
    return len(shapes) + sum(per_case[mode] for _, mode, *_ in unique_cases)


# ---- providers --------------------------------------------------------------------------------


@dataclass
class Built:
    """A provider ready to time: its module, input width and what the CSV says about it."""

    module: nn.Module
    in_features: int
    weight_params: int
    forward_flops: int
    detail: str = ""
    block_k: int | None = None
    block_n: int | None = None
    launch_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def _fill_(module: nn.Module, generator: torch.Generator) -> None:
    """Refill every parameter from ``generator``: U(-1/sqrt(fan), 1/sqrt(fan)), never zeros."""
    with torch.no_grad():
        for param in module.parameters():
            fan = param.shape[-1] if param.dim() > 1 else param.numel()
            values = torch.rand(param.shape, generator=generator, device=param.device, dtype=torch.float32)
            param.copy_(values.mul_(2.0).sub_(1.0).div_(math.sqrt(fan)))


def _format_config(config) -> str:
    """``fused:128x128x64/w8/s3/g8`` or ``sketch_gemm:32x128/w4`` (the fields each algorithm uses)."""
    algorithm = getattr(config, "algorithm", "fused")
    if algorithm == "sketch_gemm":
        return f"sketch_gemm:{config.tile_m}x{config.tile_k}/w{config.num_warps}"
    if algorithm == "gemv":
        return f"gemv:{config.tile_n}x{config.tile_k}/w{config.num_warps}/s{config.num_stages}"
    if algorithm == "resident":
        return f"resident:{config.tile_m}x{config.tile_n}/w{config.num_warps}/s{config.num_stages}"
    text = f"{algorithm}:{config.tile_m}x{config.tile_n}x{config.tile_k}/w{config.num_warps}/s{config.num_stages}"
    text += f"/g{config.group_m}"
    text += f"/split{config.split_m}" if config.split_m > 1 else ""
    return text + (f"/splitk{config.split_k}" if config.split_k > 1 else "")


def _launch_detail(structure: SS1Structure, m: int, case: Case, device: torch.device, heuristic: bool,
                   rotated: bool = False) -> str:
    """The launch configs this SS1 provider will use, per kernel (resolved the way the op does);
    ``rotated``: the layer caches its rotated weight, so its forward is kind ``forward_rotated``."""
    from ss1bench.kernels.config import Problem, heuristic_config, resolve_launch_config
    from ss1bench.kernels.ss1 import device_limits

    name, limit = device_limits(device)
    forward = "forward_rotated" if rotated else "forward"
    kinds = (forward,) if case.mode == "fwd" else (forward, "grad_input", "grad_weight")
    parts = []
    for kind in kinds:
        problem = Problem(kind, m, structure.in_features, structure.out_features, structure.redn_factor,
                          structure.block_k, structure.block_n, case.dtype, name)
        config = heuristic_config(problem, limit) if heuristic else resolve_launch_config(problem, limit)
        parts.append(f"{kind}={_format_config(config)}")
    return " ".join(parts)


def _forced_heuristic(device: torch.device) -> contextlib.AbstractContextManager:
    from ss1bench.kernels.config import heuristic_config, override_launch_config
    from ss1bench.kernels.ss1 import device_limits

    limit = device_limits(device)[1]
    return override_launch_config(lambda problem: heuristic_config(problem, limit))


def build_provider(name: str, case: Case, structure: SS1Structure, device: torch.device,
                   dtype: torch.dtype) -> Built:
    """The module timed for provider ``name`` on ``case``; ``structure`` is the case's SS1 layer's."""
    m, k, n, c = case.shape.m, case.shape.k, case.shape.n, case.redn_factor
    if name == "dense":
        module = nn.Linear(k, n, bias=True, device=device, dtype=dtype)
        return Built(module, k, n * k, 2 * m * n * k, "cuBLAS F.linear")
    if name == "dense_reduced":
        k_ideal = math.ceil(k / c)
        module = nn.Linear(k_ideal, n, bias=True, device=device, dtype=dtype)
        return Built(module, k_ideal, n * k_ideal, 2 * m * n * k_ideal, f"cuBLAS F.linear, K/c={k_ideal}")
    if name in SS1_PROVIDERS:
        heuristic, cached = name == "ss1_heuristic", name == "ss1_cached"
        layer = SSL(k, n, bias=True, redn_factor=c, seed=structure.seed, device=device, dtype=dtype,
                    block_k=structure.block_k, block_n=structure.block_n)
        if cached:  # filled by time_module's first (eager) call
            layer.cache_rotated_weight()
        return Built(layer, k, layer.weight.numel(), 2 * m * n * structure.k_red,
                     _launch_detail(structure, m, case, device, heuristic, rotated=cached),
                     structure.block_k, structure.block_n,
                     (lambda: _forced_heuristic(device)) if heuristic else contextlib.nullcontext)
    if name == "lowrank":
        lowrank = LowRankLinear.matching(structure, bias=True, device=device, dtype=dtype)
        return Built(lowrank, k, lowrank.weight_params, lowrank.flops(m), f"rank={lowrank.rank}")
    if name == "monarch":
        monarch = MonarchLinear.matching(structure, bias=True, device=device, dtype=dtype)
        return Built(monarch, k, monarch.weight_params, monarch.flops(m),
                     f"blocks={monarch.num_blocks} width={monarch.width} hidden={monarch.hidden}")
    raise ValueError(f"no builder for provider {name!r}")


# ---- measurement ------------------------------------------------------------------------------


@dataclass
class Timing:
    median_ms: float = math.nan
    p20_ms: float = math.nan
    p80_ms: float = math.nan
    peak_mem_mib: float = math.nan
    status: str = "ok"


def measure_copy_bandwidth(device: torch.device, nbytes: int = COPY_BYTES, warmup_ms: int = DEFAULT_WARMUP_MS,
                           rep_ms: int = DEFAULT_REP_MS) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written, do_bench median)."""
    source = torch.full((nbytes // 2,), 1.5, dtype=torch.float16, device=device)
    target = torch.empty_like(source)
    ms = do_bench(lambda: target.copy_(source), warmup_ms, rep_ms)
    return 2 * nbytes / (ms * 1e-3)


def memory_floor_bytes(m: int, k: int, n: int, k_red: int, element_size: int, mode: str) -> int:
    """Bytes SS1 must move at least (see ``schema.MEMORY_FLOOR``)."""
    elements = m * k + n * k_red + n + m * n
    if mode == "fwd+bwd":
        elements += (m * n + m * k + n * k_red) + (m * k + n * k_red + n)
    return elements * element_size


def one_line_error(error: BaseException) -> str:
    """``"TypeName: first line of the message"``, at most 200 characters: a failed timing's status."""
    message = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {message[0] if message else ''}".strip()
    return text[:200]


def tightest(measure: Callable[[], list[float]], spread_limit: float = SPREAD_LIMIT,
             retimes: int = RETIMES) -> list[float]:
    """``measure()``'s (median, p20, p80), re-measured while p80 > ``spread_limit`` x p20, at most
    ``retimes`` more times; the run with the smallest p80/p20 is returned."""
    best = measure()
    for _ in range(retimes):
        if not best[2] > spread_limit * best[1]:
            break
        again = measure()
        if again[2] * best[1] < best[2] * again[1]:
            best = again
    return best


def _with_fresh_gradients(call: Callable[[], None], tensors: list[torch.Tensor] | None) -> Callable[[], None]:
    """``call`` that first drops the ``.grad`` of ``tensors`` (None: ``call`` itself).

    A captured backward then writes its gradients into new buffers of the graph's pool, as a
    training step with ``zero_grad(set_to_none=True)`` does. Without it, the capture would
    accumulate into the gradients that the warm-up run before it left: one more read-modify-write
    of every gradient per replay (x's: 3 x M x K elements), for every provider alike, which is
    not part of the layer's work (it added 0.09 ms to both dense and SS1 at 16384 x 4096 x 1024).
    """
    if not tensors:
        return call

    def fresh() -> None:
        for tensor in tensors:
            tensor.grad = None
        call()

    return fresh


def time_module(built: Built, x: torch.Tensor, dy: torch.Tensor | None, warmup_ms: int, rep_ms: int,
                cuda_graph: bool = False) -> Timing:
    """do_bench quantiles and peak memory of one provider call (``dy`` given: forward + backward).

    With ``cuda_graph`` the call (forward, or forward and backward) is captured once in a CUDA
    graph and its replays are timed: host-side launch overhead (Python, dispatch, Triton's
    launcher, autograd) drops out for every provider alike, which is how decode steps are served
    and how graph-captured training steps run. The gradients then live in the graph's memory pool
    and are overwritten by every replay (the captured call drops them first: nothing accumulates).
    """
    module = built.module
    backward = dy is not None
    params = list(module.parameters())
    for param in params:
        param.requires_grad_(backward)
    x.requires_grad_(backward)
    if backward:
        def call() -> None:
            module(x).backward(dy)
        grads = [x, *params]
    else:
        def call() -> None:
            module(x)
        grads = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(built.launch_context())
        if not backward:
            stack.enter_context(torch.no_grad())
        # Eager, before any CUDA-graph capture: compiles (Triton), warms cuBLAS and fills an SSL
        # layer's rotated-weight cache (ss1_cached; a capture does not fill it) before peak memory is read.
        call()
        for tensor in grads or ():
            tensor.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        for tensor in grads or ():
            tensor.grad = None
        if cuda_graph:
            call, grads = graphed(_with_fresh_gradients(call, grads)), None
        median, p20, p80 = tightest(lambda: do_bench(call, warmup_ms, rep_ms, quantiles=QUANTILES,
                                                     grad_to_none=grads))
    for tensor in [x, *params]:
        tensor.grad = None
    return Timing(median, p20, p80, peak)


# ---- rows -------------------------------------------------------------------------------------


def _row(case: Case, gpu: str, provider: str, structure: SS1Structure, built: Built | None, timing: Timing,
         dense_ms: float, ideal_ms: float) -> dict:
    s = case.shape
    scale = 3 if case.mode == "fwd+bwd" else 1
    dense_flops = scale * 2 * s.m * s.n * s.k
    flops = scale * built.forward_flops if built is not None else math.nan
    ms = timing.median_ms

    def ratio(numerator: float, denominator: float) -> float:
        return numerator / denominator if denominator > 0 and not math.isnan(denominator) else math.nan

    return {
        "gpu": gpu, "dtype": case.dtype, "mode": case.mode, "shape_set": s.shape_set, "layer": s.layer,
        "M": s.m, "K": s.k, "N": s.n, "redn_factor": case.redn_factor, "provider": provider,
        "status": timing.status,
        "block_k": built.block_k if built is not None else None,
        "block_n": built.block_n if built is not None else None,
        "k_red": structure.k_red,
        "detail": built.detail if built is not None else "",
        "weight_params": built.weight_params if built is not None else None,
        "flops": flops, "dense_flops": dense_flops,
        "median_ms": ms, "p20_ms": timing.p20_ms, "p80_ms": timing.p80_ms,
        "tflops": ratio(flops, ms) * 1e-9, "dense_equiv_tflops": ratio(dense_flops, ms) * 1e-9,
        "dense_ms": dense_ms, "ideal_ms": ideal_ms,
        "speedup_vs_dense": ratio(dense_ms, ms), "fraction_of_ideal": ratio(ideal_ms, ms),
        "peak_mem_mib": timing.peak_mem_mib,
    }


# ---- metadata ---------------------------------------------------------------------------------


def _git_commit() -> str | None:
    """HEAD of the checkout (``-dirty`` with uncommitted changes); ``SS1BENCH_GIT_COMMIT`` wins
    (a copy of the tree on a remote machine may carry a stale ``.git``)."""
    override = os.environ.get("SS1BENCH_GIT_COMMIT")
    if override:
        return override
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def _digest(path: Path) -> str:
    """First 12 hex digits of the file's sha256 (which database a result was measured with)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def write_results(rows: list[dict], metadata: dict, csv_path: Path, json_path: Path,
                  columns: Sequence[str] = RESULT_COLUMNS):
    """Write the results CSV (``columns``: :data:`RESULT_COLUMNS`, and ``e2e``'s own after them;
    integer columns that SS1-less rows leave empty as nullable ints) and its JSON sidecar; return
    the DataFrame. Shared with ``e2e``."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns)).astype(
        {"block_k": "Int64", "block_n": "Int64", "k_red": "Int64", "weight_params": "Int64"})
    frame.to_csv(csv_path, index=False)
    json_path.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    return frame


def use_tuning_database(gpu: str) -> str:
    """Make sure SSL layers read the tuning database (idempotent); describe the files for ``gpu``.

    Lookup order is the layer's: the user file (``SS1BENCH_DB`` or the user data dir), then the
    shipped ``tuning_db/<GPU>.json``. The description goes into the run's metadata.
    """
    from ss1bench.tuning.db import shipped_db_path, user_db_path
    from ss1bench.tuning.lookup import install_database_hooks

    install_database_hooks()
    files = [f"user {path} (sha256 {_digest(path)})" for path in [user_db_path(gpu)] if path.is_file()]
    shipped = shipped_db_path(gpu)
    if shipped.is_file():  # named inside the package: the same on every machine
        files.append(f"shipped ss1bench/tuning_db/{shipped.name} (sha256 {_digest(shipped)})")
    return "; ".join(files) or f"no database file for {gpu} (SS1 launches fall back to the heuristic)"


@dataclass
class RunInfo:
    """What the JSON sidecar records about a run."""

    gpu: str
    device_name: str
    database: str
    copy_bandwidth_gbs: float
    args: dict
    started: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"))

    def metadata(self, cases_total: int, cases_done: int, wall_s: float, complete: bool) -> dict:
        import triton

        return {
            "gpu": self.gpu, "device_name": self.device_name,
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "date": self.started, "git_commit": _git_commit(),
            "database": self.database, "copy_bandwidth_gbs": self.copy_bandwidth_gbs,
            "timing": "triton.testing.do_bench median (p20/p80 spread), L2 flushed before each call; "
                      f"a run with p80 > {SPREAD_LIMIT} x p20 re-timed up to {RETIMES} times, the tightest kept"
                      + ("; every call replayed from a CUDA graph" if self.args.get("cuda_graph") else ""),
            "flop_counts": FLOP_COUNTS, "memory_floor": MEMORY_FLOOR,
            "providers": {p.name: p.description for p in PROVIDERS
                          if any(p.runs_in(mode) for mode in self.args.get("modes", MODES))},
            "args": self.args, "cases_total": cases_total, "cases_done": cases_done,
            "wall_s": round(wall_s, 1), "complete": complete, "command": command_line(),
        }


class ResultWriter:
    """A run's results: its rows so far, its progress line, and its CSV + JSON sidecar, rewritten
    by every :meth:`flush` (an interrupted run keeps what it measured). Shared with ``e2e``, whose
    ``adjust_metadata`` edits the sidecar's entries in place and whose rows have more ``columns``."""

    def __init__(self, info: RunInfo, out_dir: Path, stem: str, total: int,
                 adjust_metadata: Callable[[dict], None] | None = None,
                 columns: Sequence[str] = RESULT_COLUMNS) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
        self.info, self.rows, self.progress = info, [], Progress(total)
        self.start = time.monotonic()
        self._adjust_metadata = adjust_metadata
        self.columns = tuple(columns)

    def flush(self, complete: bool):
        """Rewrite the CSV and its sidecar; return the DataFrame."""
        metadata = self.info.metadata(self.progress.total, self.progress.done, time.monotonic() - self.start,
                                      complete)
        if self._adjust_metadata is not None:
            self._adjust_metadata(metadata)
        return write_results(self.rows, metadata, self.csv_path, self.json_path, self.columns)


def output_stem(set_names: list[str], dtypes: list[str], modes: list[str]) -> str:
    """File name stem of a run's CSV and sidecar, e.g. ``bench_gpt2_fp16_fwd``."""
    return "bench_" + "_".join(["-".join(set_names) or "custom", "-".join(dtypes),
                                "-".join(mode_slug(m) for m in modes)])


# ---- progress ---------------------------------------------------------------------------------


class Progress:
    """One line with count, percent and ETA on stderr: redrawn on a terminal, else every 15 s."""

    def __init__(self, total: int, stream=None, interval_s: float = 15.0) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.interval_s = interval_s
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        now = time.monotonic()
        if not self.tty and now - self.last < self.interval_s and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / self.done * (self.total - self.done)
        line = (f"[{self.done:>{len(str(self.total))}}/{self.total}] {100 * self.done / self.total:3.0f}% "
                f"elapsed {_duration(elapsed)} eta {_duration(eta)}  {label}")
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# ---- the run ----------------------------------------------------------------------------------


def case_structure(case: Case, device: torch.device, dtype: torch.dtype) -> SS1Structure:
    """The structure ``SSL(K, N, redn_factor=c)`` gets on this device: tuning database, else defaults."""
    return choose_structure(case.shape.k, case.shape.n, case.redn_factor, LAYER_SEED, None, None, dtype, device)


class _Inputs:
    """Random inputs of one shape, made once per width and shared by every provider."""

    def __init__(self, m: int, n: int, backward: bool, generator: torch.Generator, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.m, self.generator, self.device, self.dtype = m, generator, device, dtype
        self.by_width: dict[int, torch.Tensor] = {}
        self.dy = self._random((m, n)) if backward else None

    def _random(self, shape: tuple[int, int]) -> torch.Tensor:
        values = torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32)
        return values.to(self.dtype)

    def x(self, width: int) -> torch.Tensor:
        if width not in self.by_width:
            self.by_width[width] = self._random((self.m, width))
        return self.by_width[width]


def _time_provider(name: str, case: Case, structure: SS1Structure, inputs: _Inputs, device: torch.device,
                   dtype: torch.dtype, warmup_ms: int, rep_ms: int,
                   cuda_graph: bool = False) -> tuple[Built | None, Timing]:
    """Build, fill from the run's generator and time one provider; a failure becomes a status."""
    built = None
    try:
        built = build_provider(name, case, structure, device, dtype)
        _fill_(built.module, inputs.generator)
        return built, time_module(built, inputs.x(built.in_features), inputs.dy, warmup_ms, rep_ms, cuda_graph)
    except Exception as error:  # a failed provider is a CSV row, not a crashed run
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        return built, Timing(status=one_line_error(error))


def _shape_rows(shape_cases: list[Case], gpu: str, bandwidth: float, inputs: _Inputs, device: torch.device,
                dtype: torch.dtype, warmup_ms: int, rep_ms: int, on_case: Callable[[Case], None],
                cuda_graph: bool = False) -> list[dict]:
    """Rows of every case of one (dtype, mode, shape): the dense layer once, then each c."""
    rows = []
    first = shape_cases[0]
    dense = _time_provider("dense", first, case_structure(first, device, dtype), inputs, device, dtype,
                           warmup_ms, rep_ms, cuda_graph)
    dense_ms = dense[1].median_ms
    for case in shape_cases:
        structure = case_structure(case, device, dtype)
        results = {"dense": dense}
        for name in measured_provider_names(case.mode):
            if name != "dense":
                results[name] = _time_provider(name, case, structure, inputs, device, dtype, warmup_ms, rep_ms,
                                                cuda_graph)
        s = case.shape
        floor_ms = memory_floor_bytes(s.m, s.k, s.n, structure.k_red, dtype.itemsize, case.mode) / bandwidth * 1e3
        reduced_ms = results["dense_reduced"][1].median_ms
        ideal_ms = max(reduced_ms, floor_ms) if not math.isnan(reduced_ms) else math.nan
        results["memory_floor"] = (None, Timing(median_ms=floor_ms))
        for provider in providers_in(case.mode):
            built, timing = results[provider.name]
            row = _row(case, gpu, provider.name, structure, built, timing, dense_ms, ideal_ms)
            if provider.name == "memory_floor":  # a bound, not a layer: no FLOPs, no spread
                row.update(weight_params=s.n * structure.k_red, tflops=math.nan, dense_equiv_tflops=math.nan,
                           detail=f"{bandwidth / 1e12:.2f} TB/s copy bandwidth (read + write)")
            rows.append(row)
        on_case(case)
    return rows


def run(cases: list[Case], out_dir: Path, stem: str, args: dict, warmup_ms: int = DEFAULT_WARMUP_MS,
        rep_ms: int = DEFAULT_REP_MS, device: torch.device | None = None,
        echo: Callable[[str], None] = print, cuda_graph: bool = False):
    """Time every case; write ``out_dir/stem.csv`` and ``stem.json``. Returns (csv path, DataFrame)."""

    device = device or torch.device("cuda", torch.cuda.current_device())
    device_name = torch.cuda.get_device_name(device)
    gpu = normalize_gpu_name(device_name)
    database = use_tuning_database(gpu)
    echo(f"{device_name} ({gpu}); tuning database: {database}")
    bandwidth = measure_copy_bandwidth(device)
    torch.cuda.empty_cache()  # give the probe's 2 GiB back
    echo(f"copy bandwidth: {bandwidth / 1e12:.2f} TB/s (read + write); {len(cases)} cases, "
         f"{timings_in(cases)} timings")
    results = ResultWriter(RunInfo(gpu, device_name, database, round(bandwidth / 1e9, 1), args), out_dir, stem,
                           len(cases))
    rows, progress = results.rows, results.progress
    generator = torch.Generator(device=device).manual_seed(INPUT_SEED)

    groups: dict[tuple[str, str, Shape], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.dtype, case.mode, case.shape), []).append(case)
    timed: dict[tuple, list[dict]] = {}  # (dtype, mode, M, K, N, c...) -> rows, for shapes sets share
    for (dtype_name, mode, shape), shape_cases in groups.items():
        key = (dtype_name, mode, shape.m, shape.k, shape.n, tuple(c.redn_factor for c in shape_cases))
        if key in timed:
            rows.extend({**row, "shape_set": shape.shape_set, "layer": shape.layer} for row in timed[key])
            for case in shape_cases:
                progress.step(case.describe() + " (timed above, same shape)")
            continue
        dtype = TORCH_DTYPES[dtype_name]
        inputs = _Inputs(shape.m, shape.n, mode == "fwd+bwd", generator, device, dtype)
        timed[key] = _shape_rows(shape_cases, gpu, bandwidth, inputs, device, dtype, warmup_ms, rep_ms,
                                 lambda case: progress.step(case.describe()), cuda_graph)
        rows.extend(timed[key])
        del inputs
        torch.cuda.empty_cache()
        results.flush(complete=False)
    return results.csv_path, results.flush(complete=True)


def summary_table(frame) -> str:
    """One line per case: SS1 (tuning database) against dense and the ideal, with the heuristic's and
    the peers' speedups, and the rotated-weight cache's where the run has it (a shape two sets share
    is listed once)."""
    import pandas as pd

    speedups = {(row["provider"], *(row[k] for k in CASE_KEY)): row["speedup_vs_dense"]
                for row in frame.to_dict("records")}
    lines = []
    cached = (frame["provider"] == "ss1_cached").any()
    ss1 = frame[frame["provider"] == "ss1_tuned"]
    ss1 = ss1.drop_duplicates(subset=["dtype", "mode", "M", "K", "N", "redn_factor"])
    for row in ss1.to_dict("records"):
        key = tuple(row[k] for k in CASE_KEY)
        lines.append({
            "dtype": row["dtype"], "mode": row["mode"], "M": row["M"], "K": row["K"], "N": row["N"],
            "c": row["redn_factor"], "dense ms": row["dense_ms"], "ideal ms": row["ideal_ms"],
            "SS1 ms": row["median_ms"], "speedup": row["speedup_vs_dense"], "of ideal": row["fraction_of_ideal"],
            **({"cached x": speedups.get(("ss1_cached", *key))} if cached else {}),
            "heuristic x": speedups.get(("ss1_heuristic", *key)), "low-rank x": speedups.get(("lowrank", *key)),
            "Monarch x": speedups.get(("monarch", *key)),
        })
    if not lines:
        return "(no results)"
    return pd.DataFrame(lines).to_string(index=False, float_format=lambda v: f"{v:.4g}")
