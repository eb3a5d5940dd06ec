"""The search space: launch-config candidates per kernel and M regime, and structure candidates.

Every candidate is a :class:`~ss1bench.kernels.config.LaunchConfig`; none changes the function (the
kernels are correct for any tile). All four algorithms are in the space: ``fused`` (one Triton GEMM
gathering the sketch on load: tiles, warps, stages, group size, split_m for grad_weight, split_k
for the decode forward),
``sketch_gemm`` (a Triton sketch kernel plus cuBLAS: the sketch tile and warps) and, for the
forward, ``resident`` at prefill sizes with K_red <= :data:`RESIDENT_TUNE_MAX_K_RED` (N tile,
warps) and ``gemv`` up to :data:`GEMV_MAX_M` rows (rows per program, N tile, K tile). Candidates are
pruned before anything is compiled:

- shared memory: :func:`~ss1bench.kernels.config.shared_memory_bytes` (which counts the c member
  loads of the sketched operand per pipeline stage) against the device's opt-in limit;
- registers: fp32 tiles live across the K loop, per thread (see :data:`MAX_ACC_PER_THREAD`);
- size: tiles larger than the (power-of-two rounded) problem only add masked work, so the grid's
  tiles are clamped to the problem first (duplicates dropped).

Structures ``(block_k, block_n)`` are a different axis: they change the function and the model,
so the tuner only picks among those the original project explored (``block_k <= 128``,
``block_n <= 256``) that keep the compressed weight as small as the default does.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

from ss1bench.kernels.config import (
    DECODE_MAX_M,
    FORWARD_KINDS,
    KINDS,
    LaunchConfig,
    Problem,
    cdiv,
    decode_split_k,
    heuristic_config,
    next_power_of_two,
    resident_width,
    shared_memory_bytes,
)
from ss1bench.structure import DEFAULT_BLOCK_N, default_block_k, reduced_width

#: Largest fp32 accumulator tile per thread. 128 x 256 over 8 warps (128 per thread) is the
#: largest tile of Triton's Hopper matmul configs; 255 registers per thread is the hardware cap,
#: so a bigger accumulator spills before its operands are even counted.
MAX_ACC_PER_THREAD = 128
#: Largest accumulator + fp32 sketch tile per thread: the forward and grad_weight kernels sum the
#: c member loads into an fp32 (TILE_M x TILE_K) tile next to the accumulator. 192 leaves ~60
#: registers for addresses, masks and the hash; 128 x 128 x 64 over 4 warps (128 + 64) is the
#: largest tile that passes.
MAX_LIVE_FP32_PER_THREAD = 192
#: The tuner offers ``resident`` up to this sketch width: at 256 and 512 it lost to sketch + cuBLAS
#: on every gpt2/llama prefill shape probed on the H200 (1.0-4x slower), at 64-128 it won by 5-20%.
RESIDENT_TUNE_MAX_K_RED = 256  # at most the kernel's own limit, kernels.config.RESIDENT_MAX_K_RED
#: Register cap of the decode refinement: the hardware's limit, so the cap never binds and only
#: lifts ptxas's own register target (compiled for sm_90, the c = 16 gemv then issues its 16
#: member loads together at 122 registers, against two or three at a time at 56 without it).
DECODE_MAXNREG = 255
#: The tuner offers ``gemv`` up to this many rows (every row block re-reads the weight tile).
GEMV_MAX_M = 64
#: ... with at most this many rows per program (the fp32 product is ROWS x TILE_N x TILE_K) and at
#: most this many row blocks (each re-reads the whole weight from L2).
GEMV_MAX_ROWS = 8
GEMV_MAX_ROW_BLOCKS = 16
#: ... and several rows per program only up to this K_red: in the H200 decode tune (fp16/bf16,
#: gpt2/llama, M = 16/64) the multi-row gemv came within 5% of the best candidate on 7 of 176
#: items, all at K_red <= 64 (c = 16 on GPT-2 widths); elsewhere its 3-D product ran 2.6-6.7x
#: slower than the best (median), and timing it was over half of the decode forward tune.
GEMV_ROWS_MAX_K_RED = 64
#: Streaming multiprocessors assumed when the device is not at hand (H100/H200 SXM: 132).
DEFAULT_SM_COUNT = 132

#: Structural block sizes the tuner may choose from: the range the original project explored
#: (block_n <= 256, block_k <= 128; the structure is defined in ``ss1bench/structure.py``). block_k
#: 16 leaves only two distinct shifts per block, so it is offered only when nothing larger keeps
#: the compressed weight as small.
STRUCTURE_BLOCK_K = (128, 64, 32, 16)
STRUCTURE_BLOCK_N = (64, 128, 256)
#: At most this many block_k values (the largest with the least padding) enter the search.
MAX_STRUCTURE_BLOCK_K = 2


def is_decode(m: int) -> bool:
    return m <= DECODE_MAX_M


# ---------------------------------------------------------------------------------------------
# structures
# ---------------------------------------------------------------------------------------------


def default_structure(in_features: int, redn_factor: int) -> tuple[int, int]:
    """The structure a layer gets without the database (``ss1bench.structure`` defaults)."""
    return default_block_k(in_features, redn_factor), DEFAULT_BLOCK_N


def structure_candidates(in_features: int, out_features: int, redn_factor: int) -> list[tuple[int, int]]:
    """``(block_k, block_n)`` pairs to compare, the default first.

    block_k: the largest :data:`MAX_STRUCTURE_BLOCK_K` values of :data:`STRUCTURE_BLOCK_K` whose
    ``K_red`` equals the smallest possible (a structure that pads more would store more weights:
    a different model size, not a speed choice). block_n: :data:`STRUCTURE_BLOCK_N` up to N
    rounded up to a power of two.
    """
    default = default_structure(in_features, redn_factor)
    sizes = {bk: reduced_width(in_features, redn_factor, bk) for bk in STRUCTURE_BLOCK_K}
    smallest = min(sizes.values())
    block_ks = [bk for bk in STRUCTURE_BLOCK_K if sizes[bk] == smallest][:MAX_STRUCTURE_BLOCK_K]
    block_ns = [bn for bn in STRUCTURE_BLOCK_N if bn <= max(16, next_power_of_two(out_features))]
    pairs = [default] + [(bk, bn) for bk in block_ks for bn in block_ns]
    return list(dict.fromkeys(pairs))


# ---------------------------------------------------------------------------------------------
# launch configs
# ---------------------------------------------------------------------------------------------


@dataclass
class CandidateSet:
    """Configs to try for one problem, and what was pruned with the reason."""

    problem: Problem
    kept: list[LaunchConfig] = field(default_factory=list)
    rejected: list[tuple[LaunchConfig, str]] = field(default_factory=list)


def _decode_row_tiles(m: int) -> tuple[int, ...]:
    """Row tiles for decode: 16 (tl.dot's floor) and M rounded up when that is larger."""
    return tuple(dict.fromkeys((16, min(max(16, next_power_of_two(m)), DECODE_MAX_M))))


def _grid(kind: str, m: int, redn_factor: int) -> list[LaunchConfig]:
    """The raw (unpruned) grid for ``kind`` at ``m`` rows and reduction factor c.

    Kept small on purpose (the issue's budget: the gpt2 set, four factors, in minutes): one
    pipeline depth per regime here, the neighbouring depths and group sizes come from
    :func:`refinements` around the screening winner only. The values are those that won or came
    within a few percent on the H200 (tuning logs under ``reports/H200/raw``).
    """
    configs: list[LaunchConfig] = []
    if kind in FORWARD_KINDS:
        if is_decode(m):
            # Weight-read bound: many narrow N tiles keep SMs busy; deep K tiles keep bytes in flight.
            # Each config also comes split over K_red when its grid is small (_with_k_splits).
            for tm, tn, tk in itertools.product(_decode_row_tiles(m), (32, 64, 128), (64, 128, 256)):
                configs.append(LaunchConfig(tm, tn, tk, 4, 4, group_m=8))
        else:
            # The fused kernel lost to sketch + cuBLAS on all but one gpt2/llama prefill item on
            # the H200 (1.2-4.8x slower, reports/H200/raw/tune_*.csv.gz), so only the tiles that
            # were its best there stay: wide N tiles, c member tiles per stage (high c: short rows).
            row_tiles = (64, 128) if redn_factor <= 4 else (32, 64)
            for tm, w in itertools.product(row_tiles, (4, 8)):
                configs.append(LaunchConfig(tm, 256, 32, w, 3, group_m=8))
            configs.append(LaunchConfig(128, 128, 64, 8, 3, group_m=8))
    elif kind == "grad_input":
        # Output tile M x K_red (tile_k wide), reduction over N (tile_n deep).
        if is_decode(m):
            for tm, tk, tn, w in itertools.product(_decode_row_tiles(m), (32, 64, 128), (64, 128, 256), (2, 4)):
                configs.append(LaunchConfig(tm, tn, tk, w, 4, group_m=8))
        else:
            for tm, tk, tn, w in itertools.product((64, 128), (64, 128, 256), (32, 64), (4, 8)):
                configs.append(LaunchConfig(tm, tn, tk, w, 3, group_m=8))
    elif kind == "grad_weight":
        # Output tile N x K_red, reduction over M (tile_m deep, split over split_m programs).
        if is_decode(m):
            for tm, tn, tk, w in itertools.product(_decode_row_tiles(m), (64, 128), (64, 128), (4, 8)):
                configs.append(LaunchConfig(tm, tn, tk, w, num_stages=2, group_m=8))
        else:
            row_tiles = (32, 64) if redn_factor <= 4 else (16, 32)
            for tm, tn, tk, w in itertools.product(row_tiles, (64, 128, 256), (64, 128), (4, 8)):
                configs.append(LaunchConfig(tm, tn, tk, w, 3, group_m=8))
    else:
        raise ValueError(f"unknown kernel kind {kind!r}; expected one of {KINDS}")
    # sketch_gemm: a memory-bound sketch (or unsketch) kernel plus a cuBLAS product; only the
    # sketch tile and its warps apply, the other fields stay at fixed values so equal launches
    # compare equal. At decode sizes the plain forward also rotates the whole weight per call
    # (three weight passes where the fused kernel makes one), so one canonical candidate stands
    # for it there; with the rotated weight held by the caller it is one sketch launch plus the
    # product at K/c, and its tile is worth a sweep: the decode sketch is a few rows of K_red, so
    # narrow tiles spread it over more programs (tile_k 16 saved ~2 us, 15%, against 128 at
    # c = 16 on Llama shapes on the H200; the decode re-tune in docs/perf-notes.md).
    if kind == "forward_rotated" and is_decode(m):
        configs += [sketch_gemm_config(tm, tk, 4)
                    for tm, tk in itertools.product((16, 64), (16, 32, 64, 128, 256))]
    elif is_decode(m):
        configs.append(sketch_gemm_config(16, 128, 4))
    else:
        for tm, tk in itertools.product((16, 32, 64), (64, 128, 256)):
            configs.append(sketch_gemm_config(tm, tk, 4))
        configs += [sketch_gemm_config(64, tk, 8) for tk in (128, 256)]
    return configs


def _resident_grid(problem: Problem) -> list[LaunchConfig]:
    """``resident`` forward candidates (none when K_red is too wide to hold on chip). Its
    reduction is the whole K_red in one step, so ``tile_k`` is fixed at that width."""
    width = resident_width(problem.k_red)
    if problem.kind not in FORWARD_KINDS or is_decode(problem.m) or width > RESIDENT_TUNE_MAX_K_RED:
        return []
    return [LaunchConfig(64, tn, width, w, 2, group_m=1, algorithm="resident")
            for tn, w in itertools.product((64, 128, 256), (4, 8))]


def _gemv_grid(problem: Problem) -> list[LaunchConfig]:
    """``gemv`` forward candidates for decode sizes up to :data:`GEMV_MAX_M` rows: one row per
    program, or a few (the weight tile read once per row block); for c > 1 also with the members
    gathered as one block (``block_gather``), at two and four warps (fewer threads along N)."""
    if problem.kind not in FORWARD_KINDS or problem.m > GEMV_MAX_M:
        return []
    most = GEMV_MAX_ROWS if problem.k_red <= GEMV_ROWS_MAX_K_RED else 1
    rows = [r for r in (1, 2, 4, 8) if r <= min(problem.m, most) and cdiv(problem.m, r) <= GEMV_MAX_ROW_BLOCKS]
    grid = [LaunchConfig(r, tn, tk, w, 3, group_m=1, algorithm="gemv")
            for r, tn, tk in itertools.product(rows, (16, 32, 64), (128, 256))
            for w in ((4,) if r == 1 else (4, 8))]
    if problem.redn_factor > 1:
        grid += [LaunchConfig(r, tn, tk, w, 3, group_m=1, algorithm="gemv", block_gather=True)
                 for r, tn, tk, w in itertools.product(rows, (32, 64, 128), (128, 256), (2, 4))]
    return grid


def sketch_gemm_config(tile_m: int, tile_k: int, num_warps: int) -> LaunchConfig:
    """The canonical ``sketch_gemm`` config for a sketch tile (the heuristic's form)."""
    return LaunchConfig(tile_m=tile_m, tile_n=64, tile_k=tile_k, num_warps=num_warps, num_stages=1,
                        algorithm="sketch_gemm")


def _with_splits(config: LaunchConfig, problem: Problem, sm_count: int) -> list[LaunchConfig]:
    """grad_weight: the config unsplit, and split over M just enough to fill the GPU once."""
    if config.algorithm != "fused":
        return [config]
    tiles = cdiv(problem.out_features, config.tile_n) * cdiv(problem.k_red, config.tile_k)
    split = 1
    while tiles * split < sm_count and problem.m // (split * 2) >= 4 * config.tile_m and split < 64:
        split *= 2
    return [config] if split == 1 else [config, dataclasses.replace(config, split_m=split)]


def _with_k_splits(config: LaunchConfig, problem: Problem, sm_count: int) -> list[LaunchConfig]:
    """Decode forward: the config unsplit, and its K_red split that fills the GPU once
    (:func:`~ss1bench.kernels.config.decode_split_k`), if any."""
    if config.algorithm != "fused":
        return [config]
    split = decode_split_k(problem, config.tile_m, config.tile_n, config.tile_k, sm_count)
    return [config] if split == 1 else [config, dataclasses.replace(config, split_k=split)]


def live_fp32_per_thread(config: LaunchConfig, kind: str, redn_factor: int = 1) -> tuple[float, float]:
    """(accumulator, accumulator + fp32 sketch) elements per thread for ``kind`` (a block-gathered
    gemv also holds its (rows, c, tile_k) block of member loads)."""
    threads = 32 * config.num_warps
    if config.algorithm == "sketch_gemm":  # the sketch kernel: one fp32 (tile_m x tile_k) tile
        return 0.0, config.tile_m * config.tile_k / threads
    if config.algorithm == "gemv":  # one fp32 (rows x tile_n x tile_k) product, a rows x tile_n accumulator
        rows = config.tile_m
        block = rows * redn_factor * config.tile_k if config.block_gather else 0
        return (rows * config.tile_n / threads,
                (rows * (config.tile_n * (config.tile_k + 1) + config.tile_k) + block) / threads)
    if kind in FORWARD_KINDS:  # (resident: tile_k is the whole sketch row, summed in fp32 too)
        acc, sketch = config.tile_m * config.tile_n, config.tile_m * config.tile_k
    elif kind == "grad_input":
        acc, sketch = config.tile_m * config.tile_k, 0
    else:
        acc, sketch = config.tile_n * config.tile_k, config.tile_m * config.tile_k
    return acc / threads, (acc + sketch) / threads


def rejection_reason(config: LaunchConfig, problem: Problem, shared_memory_limit: int) -> str | None:
    """Why ``config`` cannot or should not run ``problem`` (None: keep it)."""
    acc, live = live_fp32_per_thread(config, problem.kind, problem.redn_factor)
    if acc > MAX_ACC_PER_THREAD:
        return f"registers: {acc:.0f} fp32 accumulator elements per thread > {MAX_ACC_PER_THREAD}"
    if live > MAX_LIVE_FP32_PER_THREAD:
        return f"registers: {live:.0f} live fp32 elements per thread > {MAX_LIVE_FP32_PER_THREAD}"
    smem = shared_memory_bytes(config, problem)
    if smem > shared_memory_limit:
        return f"shared memory: {smem} B > {shared_memory_limit} B"
    m_cap = max(16, next_power_of_two(problem.m))
    n_cap = max(16, next_power_of_two(problem.out_features))
    k_cap = max(16, next_power_of_two(problem.k_red))
    if config.tile_m > m_cap:
        return f"size: tile_m {config.tile_m} > {m_cap} (M={problem.m})"
    if config.tile_n > n_cap and config.algorithm != "sketch_gemm":
        return f"size: tile_n {config.tile_n} > {n_cap} (N={problem.out_features})"
    if config.tile_k > k_cap:
        return f"size: tile_k {config.tile_k} > {k_cap} (K_red={problem.k_red})"
    return None


def clamp_to_problem(config: LaunchConfig, problem: Problem) -> LaunchConfig:
    """Tiles no larger than the problem rounded up to a power of two (so a small problem still
    gets a spread of candidates instead of losing every large-tile one)."""
    caps = {"tile_m": max(16, next_power_of_two(problem.m)), "tile_k": max(16, next_power_of_two(problem.k_red))}
    if config.algorithm != "sketch_gemm":
        caps["tile_n"] = max(16, next_power_of_two(problem.out_features))
    changes = {name: cap for name, cap in caps.items() if getattr(config, name) > cap}
    return dataclasses.replace(config, **changes) if changes else config


def launch_candidates(problem: Problem, shared_memory_limit: int, sm_count: int = DEFAULT_SM_COUNT) -> CandidateSet:
    """Pruned launch configs for ``problem``; the heuristic config (what runs untuned) comes first,
    so a tuned winner is never slower than the default as measured."""
    result = CandidateSet(problem)
    grid = _grid(problem.kind, problem.m, problem.redn_factor) + _resident_grid(problem) + _gemv_grid(problem)
    if problem.kind == "grad_weight" and not is_decode(problem.m):
        grid = [split for config in grid for split in _with_splits(config, problem, sm_count)]
    if problem.kind in FORWARD_KINDS and is_decode(problem.m):
        grid = [split for config in grid for split in _with_k_splits(clamp_to_problem(config, problem), problem,
                                                                      sm_count)]
    baseline = heuristic_config(problem, shared_memory_limit, sm_count)
    seen: set[LaunchConfig] = set()
    for config in [baseline, *(clamp_to_problem(c, problem) for c in grid)]:
        if config in seen:
            continue
        seen.add(config)
        reason = rejection_reason(config, problem, shared_memory_limit)
        # The heuristic stays even when larger than the problem: it is the baseline to beat.
        if reason is None or (config is baseline and reason.startswith("size")):
            result.kept.append(config)
        else:
            result.rejected.append((config, reason))
    return result


def offers_register_cap(problem: Problem) -> bool:
    """A decode forward with c > 1 (the sketch's member loads to issue): :func:`refinements` tries
    its winner with :data:`DECODE_MAXNREG`."""
    return problem.kind in FORWARD_KINDS and is_decode(problem.m) and problem.redn_factor > 1


def refinements(config: LaunchConfig, problem: Problem, shared_memory_limit: int,
                tried: set[LaunchConfig]) -> list[LaunchConfig]:
    """Neighbours of a screening winner not in the grid: other group sizes (prefill: L2 reuse of
    the tile order), one pipeline stage more or less, and for a decode forward the register cap
    lifted (:data:`DECODE_MAXNREG`: ptxas then issues the sketch's member loads together). Pruned
    like the grid."""
    if config.algorithm == "sketch_gemm":
        return []  # the sketch kernel has no reduction loop and no tile order to refine
    variants: list[LaunchConfig] = []
    if not is_decode(problem.m) and config.algorithm == "fused":
        variants += [dataclasses.replace(config, group_m=g) for g in (1, 4, 16)]
    variants += [dataclasses.replace(config, num_stages=s) for s in (config.num_stages - 1, config.num_stages + 1)
                 if 1 <= s <= 6]
    if offers_register_cap(problem) and not config.maxnreg:
        variants.append(dataclasses.replace(config, maxnreg=DECODE_MAXNREG))
    kept = []
    for variant in variants:
        if variant not in tried and rejection_reason(variant, problem, shared_memory_limit) is None:
            kept.append(variant)
    return list(dict.fromkeys(kept))


def describe(config: LaunchConfig) -> str:
    """Compact text of :meth:`LaunchConfig.fields`: ``128x128x64 w8 s3 g8`` (the fused kernel),
    ``sketch+gemm 32x128 w4``, ``gemv 64x64 block w2 s3``, ``resident 64x128 w4 s2``."""
    label = {"fused": "", "sketch_gemm": "sketch+gemm"}.get(config.algorithm, config.algorithm)
    return " ".join([*([label] if label else []), *config.fields()])
