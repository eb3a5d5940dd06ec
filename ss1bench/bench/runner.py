"""The benchmark runner: SS1 against dense and structured peers, side by side, one CSV.

Providers are data (``schema.PROVIDERS``, each with the modes it has rows in: ``ss1_cached`` only in
``fwd``); each measured provider has a builder here that returns an ``nn.Module`` plus its
settings, and :func:`~ss1bench.bench.measure.time_module` times them all the same way:
``triton.testing.do_bench`` (L2 flushed before every call) median and 20th/80th percentiles, on
random inputs (never zeros). In ``fwd`` mode the module runs under ``torch.no_grad()``; in
``fwd+bwd`` mode one call is forward plus ``backward(dy)`` with gradients for x, the weights and
the bias (reset to None before each call). Yardsticks (``schema.YARDSTICKS``; ``schema.PROVIDERS``
defines each): dense = cuBLAS ``F.linear``; ideal = max(cuBLAS at K/c, memory floor at the copy
bandwidth measured once per run). Every case times them; the other providers are the run's choice
(``ss1bench bench --providers``; all by default).

Run order: dtype, mode, shape (the dense layer is timed once per shape), then c. A shape two
sets share (BERT's and GPT-2's layers coincide) is timed once and its rows are written under each
set. The CSV and its JSON sidecar (:mod:`~ss1bench.bench.results`) are rewritten after every shape,
so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ss1bench.dtypes import TORCH_DTYPES
from ss1bench.layer import SSL, choose_structure
from ss1bench.structure import SS1Structure
from ss1bench.tuning.gpu import normalize_gpu_name

from .measure import (
    DEFAULT_REP_MS,
    DEFAULT_WARMUP_MS,
    Built,
    Timing,
    free_after_oom,
    measure_copy_bandwidth,
    memory_floor_bytes,
    one_line_error,
    time_module,
)
from .peers import LowRankLinear, MonarchLinear
from .results import ResultWriter, RunInfo, use_tuning_database
from .schema import MODES, SS1_PROVIDERS, providers_in
from .shapes import Shape

if TYPE_CHECKING:
    from ss1bench.kernels.config import LaunchConfig, Problem

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


def measured_provider_names(mode: str, providers: Collection[str] | None = None) -> list[str]:
    """The providers timed in each case of ``mode`` (``ss1_cached`` only in ``fwd``): the measured
    yardsticks and the optional ``providers`` (None: all of them)."""
    return [p.name for p in providers_in(mode, providers) if p.measured]


def timings_in(cases: list[Case], providers: Collection[str] | None = None) -> int:
    """do_bench calls a run of the optional ``providers`` (None: all) makes: the dense layer once
    per shape, the others once per case.

    A shape that two sets share is timed once.
    """
    shapes = {(c.dtype, c.mode, c.shape.m, c.shape.k, c.shape.n) for c in cases}
    unique_cases = {(c.dtype, c.mode, c.shape.m, c.shape.k, c.shape.n, c.redn_factor) for c in cases}
    per_case = {mode: len(measured_provider_names(mode, providers)) - 1 for mode in MODES}
    return len(shapes) + sum(per_case[mode] for _, mode, *_ in unique_cases)


# ---- providers --------------------------------------------------------------------------------


def _fill_(module: nn.Module, generator: torch.Generator) -> None:
    """Refill every parameter from ``generator``: U(-1/sqrt(fan), 1/sqrt(fan)), never zeros."""
    with torch.no_grad():
        for param in module.parameters():
            fan = param.shape[-1] if param.dim() > 1 else param.numel()
            values = torch.rand(param.shape, generator=generator, device=param.device, dtype=torch.float32)
            param.copy_(values.mul_(2.0).sub_(1.0).div_(math.sqrt(fan)))


def _format_config(config) -> str:
    """``fused:128x128x64/w8/s3/g8``, ``sketch_gemm:32x128/w4`` or ``gemv:64x64/rows4/block/w2/s3``:
    the algorithm, then :meth:`LaunchConfig.fields`."""
    return f"{config.algorithm}:{'/'.join(config.fields())}"


def _launch_detail(structure: SS1Structure, m: int, case: Case, device: torch.device,
                   launch_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                   rotated: bool = False) -> str:
    """The launch configs this SS1 provider's timed call uses, resolved by the launchers' own
    functions inside the provider's ``launch_context`` (so an override it forces shows).

    ``fwd`` (no autograd): the forward kernel, kind ``forward`` (``forward_rotated`` when the layer
    caches its rotated weight: ``rotated``). ``fwd+bwd`` (autograd; a rotated-weight cache is not
    used): the training path launches no forward or gradient GEMM kernel of its own (the products are
    cuBLAS's) but the sketch-and-rotate pass and the unsketch pass, whose tiles
    ``ss1.sketch_pass_config`` picks.
    """
    from ss1bench.kernels.config import Problem, resolve_launch_config
    from ss1bench.kernels.ss1 import device_limits, sketch_pass_config

    name, limit = device_limits(device)
    with launch_context():
        if case.mode == "fwd+bwd":
            dtype = TORCH_DTYPES[case.dtype]
            passes = {"sketch_rotate": sketch_pass_config("forward_rotated", m, structure, dtype, device),
                      "unsketch": sketch_pass_config("grad_input", m, structure, dtype, device)}
            return " ".join(f"{step}={_format_config(config)}" for step, config in passes.items())
        kind = "forward_rotated" if rotated else "forward"
        problem = Problem(kind, m, structure.in_features, structure.out_features, structure.redn_factor,
                          structure.block_k, structure.block_n, case.dtype, name)
        return f"{kind}={_format_config(resolve_launch_config(problem, limit))}"


def untuned_config(problem: Problem, shared_memory_limit: int) -> LaunchConfig:
    """The launch config a layer shape the tuning database does not hold gets, for ``problem``: the
    learned heuristic (``kernels/heuristic.py``) without the examples of ``problem``'s own layer
    shape (K, N) (every kind, dtype, c and M bucket of it, the leave-one-shape-out rule of
    ``scripts/heuristic_eval.py``), else the fixed rule. The heuristic itself would answer a
    shipped shape from that shape's own tuned records: close to timing ``ss1_tuned`` again."""
    from ss1bench.kernels.config import heuristic_config
    from ss1bench.kernels.heuristic import examples_without_shape

    return heuristic_config(problem, shared_memory_limit,
                            examples=examples_without_shape(problem.in_features, problem.out_features))


def _forced_heuristic(device: torch.device) -> contextlib.AbstractContextManager:
    """Every launch on ``device`` forced to :func:`untuned_config` (``ss1_heuristic``'s setting)."""
    from ss1bench.kernels.config import override_launch_config
    from ss1bench.kernels.ss1 import device_limits

    limit = device_limits(device)[1]
    return override_launch_config(lambda problem: untuned_config(problem, limit))


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
        cached = name == "ss1_cached"
        launch_context = (lambda: _forced_heuristic(device)) if name == "ss1_heuristic" else contextlib.nullcontext
        layer = SSL(k, n, bias=True, redn_factor=c, seed=structure.seed, device=device, dtype=dtype,
                    block_k=structure.block_k, block_n=structure.block_n)
        if cached:  # filled by time_module's first (eager) call
            layer.cache_rotated_weight()
        return Built(layer, k, layer.weight.numel(), 2 * m * n * structure.k_red,
                     _launch_detail(structure, m, case, device, launch_context, rotated=cached),
                     structure.block_k, structure.block_n, launch_context)
    if name == "lowrank":
        lowrank = LowRankLinear.matching(structure, bias=True, device=device, dtype=dtype)
        return Built(lowrank, k, lowrank.weight_params, lowrank.flops(m), f"rank={lowrank.rank}")
    if name == "monarch":
        monarch = MonarchLinear.matching(structure, bias=True, device=device, dtype=dtype)
        return Built(monarch, k, monarch.weight_params, monarch.flops(m),
                     f"blocks={monarch.num_blocks} width={monarch.width} hidden={monarch.hidden}")
    raise ValueError(f"no builder for provider {name!r}")


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
        free_after_oom(error)
        return built, Timing(status=one_line_error(error))


def _shape_rows(shape_cases: list[Case], gpu: str, bandwidth: float, inputs: _Inputs, device: torch.device,
                dtype: torch.dtype, warmup_ms: int, rep_ms: int, on_case: Callable[[Case], None],
                cuda_graph: bool = False, providers: Collection[str] | None = None) -> list[dict]:
    """Rows of every case of one (dtype, mode, shape): the dense layer once, then each c; the
    yardsticks and the optional ``providers`` (None: all of them)."""
    rows = []
    first = shape_cases[0]
    dense = _time_provider("dense", first, case_structure(first, device, dtype), inputs, device, dtype,
                           warmup_ms, rep_ms, cuda_graph)
    dense_ms = dense[1].median_ms
    for case in shape_cases:
        structure = case_structure(case, device, dtype)
        results = {"dense": dense}
        for name in measured_provider_names(case.mode, providers):
            if name != "dense":
                results[name] = _time_provider(name, case, structure, inputs, device, dtype, warmup_ms, rep_ms,
                                                cuda_graph)
        s = case.shape
        floor_ms = memory_floor_bytes(s.m, s.k, s.n, structure.k_red, dtype.itemsize, case.mode) / bandwidth * 1e3
        reduced_ms = results["dense_reduced"][1].median_ms
        ideal_ms = max(reduced_ms, floor_ms) if not math.isnan(reduced_ms) else math.nan
        results["memory_floor"] = (None, Timing(median_ms=floor_ms))
        for provider in providers_in(case.mode, providers):
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
        echo: Callable[[str], None] = print, cuda_graph: bool = False,
        providers: Collection[str] | None = None):
    """Time every case: the yardsticks and the optional ``providers`` (``schema.OPTIONAL_PROVIDERS``;
    None: all of them); write ``out_dir/stem.csv`` and ``stem.json``. Returns (csv path, DataFrame)."""

    device = device or torch.device("cuda", torch.cuda.current_device())
    device_name = torch.cuda.get_device_name(device)
    gpu = normalize_gpu_name(device_name)
    database = use_tuning_database(gpu)
    echo(f"{device_name} ({gpu}); tuning database: {database}")
    bandwidth = measure_copy_bandwidth(device)
    torch.cuda.empty_cache()  # give the probe's 2 GiB back
    echo(f"copy bandwidth: {bandwidth / 1e12:.2f} TB/s (read + write); {len(cases)} cases, "
         f"{timings_in(cases, providers)} timings")
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
                                 lambda case: progress.step(case.describe()), cuda_graph, providers)
        rows.extend(timed[key])
        del inputs
        torch.cuda.empty_cache()
        results.flush(complete=False)
    return results.csv_path, results.flush(complete=True)
