"""The learned heuristic: a launch config for a layer no tuning record covers, from the nearest
tuned layer of the reference GPU.

The rule, whole:

1. **Examples.** Every launch record of the reference database (``tuning_db/H200.json``, the tuned
   gpt2 + llama + bert shapes, read once on first use) is an example: its kind, dtype, M bucket,
   K, N, c, K_red, and its config taken back to the *grid point* the tuner started from (the
   pipeline depth and group size of :data:`GRID_STAGES`; the tuner refines those around its
   screening winner only, so a refined value was never measured on other shapes, while the grid
   point was measured on every shape).
2. **Candidates.** Examples of the problem's kind (``forward_rotated`` without examples of its
   own takes ``forward``'s), of its dtype (fp16 and bf16 stand in for each other; fp32 has no
   examples), at the example M bucket nearest the problem's M in log2 *within its regime*
   (decode M <= 64, prefill above: a decode config at a prefill M is no guide).
3. **Nearest.** Ranked by ``(|log2 c - log2 c'|, distance, K_red', N')`` with the shape distance
   ``|log2 N - log2 N'| + 0.5 |log2 K_red - log2 K_red'|`` (:func:`shape_distance`): the same c
   first, then the layer whose output width is closest (N sets the number of output tiles, the
   first thing a decode config is chosen for), K_red weighing half (it sets the reduction depth,
   which the configs follow less closely). The K_red weight was chosen on the leave-one-shape-out
   evaluation of ``scripts/heuristic_eval.py`` over the H200 records: 0.5 against 1 and 2 gave
   decode forward 0.99 against 0.98 at M = 16 and 64, 15 rows under 0.70 against 21, and every
   other regime within 0.005.
4. **Adapted** to the problem (:func:`adapt`): tiles no larger than the problem rounded up to a
   power of two, GEMV rows per program and the K_red split (decode forward) or M split
   (grad_weight) worked out again for this M and the device's **SM count**, the ``resident``
   width for this K_red, and, for fewer rows than the example had, a ``sketch_gemm`` sketch tile
   narrowed until its grid covers half the SMs (a memory-bound pass on a few SMs is the slowest
   thing a small M can meet).
5. **Pruned** by the device's **shared memory** (:func:`~.config.fits`): the first candidate in
   rank order whose adapted config fits is the answer. None when nothing fits or nothing is
   covered (fp32, a kind without examples): :func:`~.config.heuristic_config` then falls back to
   its fixed rule.

The same nearest-shape rule answers, in ``ss1bench.tuning.lookup``, for layer shapes a GPU's own
database does not have (with that database's records as the examples). Left without a layer shape's
own records (:func:`examples_without_shape`), it gives what a shape the database does not hold gets:
the config the ``ss1_heuristic`` bench provider forces and ``scripts/heuristic_eval.py`` scores.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import (
    DECODE_MAX_M,
    FORWARD_KINDS,
    KINDS,
    RESIDENT_MAX_K_RED,
    LaunchConfig,
    Problem,
    cdiv,
    decode_split_k,
    fits,
    next_power_of_two,
    resident_width,
)

#: The GPU whose shipped records the heuristic learns from (``tuning_db/<REFERENCE_GPU>.json``).
REFERENCE_GPU = "H200"
#: Streaming multiprocessors of the reference GPU (H200 SXM), assumed when the device is unknown.
DEFAULT_SM_COUNT = 132
#: Weight of the K_red octaves in :func:`shape_distance` (N octaves weigh 1).
K_RED_WEIGHT = 0.5
#: The tuner's grid depth per kernel and regime (``ss1bench/tuning/space.py``: ``_grid``); its
#: refinements move ``num_stages`` by one and, for the prefill fused kernel, ``group_m``.
GRID_STAGES = {
    ("forward", True): 4, ("forward", False): 3,
    ("grad_input", True): 4, ("grad_input", False): 3,
    ("grad_weight", True): 2, ("grad_weight", False): 3,
}
#: ... and the fixed depth of the other algorithms' candidates.
GEMV_STAGES, RESIDENT_STAGES, GRID_GROUP_M = 3, 2, 8
#: GEMV rows per program (space.py: ``GEMV_MAX_ROWS`` up to ``GEMV_ROWS_MAX_K_RED``, else one row,
#: at most ``GEMV_MAX_ROW_BLOCKS`` row blocks).
GEMV_MAX_ROWS, GEMV_ROWS_MAX_K_RED, GEMV_MAX_ROW_BLOCKS = 8, 64, 16
#: Fraction of the SMs a ``sketch_gemm`` sketch grid should cover at least (see :func:`adapt`).
SKETCH_MIN_GRID_FRACTION = 0.5
#: fp16 and bf16 share examples (their configs agree on most tuned items); fp32 has none.
_DTYPE_STAND_IN = {"fp16": ("fp16", "bf16"), "bf16": ("bf16", "fp16")}
#: Kinds that take another kind's examples when they have none of their own.
FALLBACK_KINDS = {"forward_rotated": "forward"}

_LAUNCH_KEY = re.compile(r"(" + "|".join(KINDS) + r")/(fp32|fp16|bf16)/K(\d+)/N(\d+)/c(\d+)/bk(\d+)/bn(\d+)/M(\d+)")


@dataclass(frozen=True)
class Example:
    """One tuned launch: where it was measured and its config (as a grid point)."""

    kind: str
    dtype: str
    m: int
    in_features: int
    out_features: int
    redn_factor: int
    k_red: int
    config: LaunchConfig
    key: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.in_features, self.out_features


def is_decode(m: int) -> bool:
    return m <= DECODE_MAX_M


def grid_point(config: LaunchConfig, kind: str, m: int) -> LaunchConfig:
    """``config`` with the pipeline depth, group size and register cap the tuner's grid gives it
    (undoing the tuner's refinements, see :data:`GRID_STAGES`)."""
    if config.maxnreg:
        config = dataclasses.replace(config, maxnreg=0)
    if config.algorithm == "fused":
        base = "forward" if kind in FORWARD_KINDS else kind
        return dataclasses.replace(config, num_stages=GRID_STAGES[(base, is_decode(m))], group_m=GRID_GROUP_M)
    if config.algorithm == "gemv":
        return dataclasses.replace(config, num_stages=GEMV_STAGES)
    if config.algorithm == "resident":
        return dataclasses.replace(config, num_stages=RESIDENT_STAGES)
    return config


def examples_from_records(launch: Mapping[str, Mapping], grid: bool = True) -> tuple[Example, ...]:
    """Examples from a database's ``launch`` section (key text -> record); bad keys are skipped.
    ``grid``: configs taken back to their grid point (:func:`grid_point`), else as recorded."""
    examples = []
    for text, record in sorted(launch.items()):
        match = _LAUNCH_KEY.fullmatch(text)
        if not match:
            continue
        kind, dtype, k, n, c, bk, _bn, m = match.groups()
        k, n, c, bk, m = int(k), int(n), int(c), int(bk), int(m)
        try:
            config = LaunchConfig.from_dict(record["config"])
        except (KeyError, TypeError, ValueError):
            continue
        k_red = cdiv(k, c * bk) * bk
        examples.append(Example(kind, dtype, m, k, n, c, k_red, grid_point(config, kind, m) if grid else config,
                                text))
    return tuple(examples)


@functools.lru_cache(maxsize=1)
def reference_examples() -> tuple[Example, ...]:
    """Examples of the shipped reference database (empty when the file is missing or unusable)."""
    from importlib import resources

    try:
        text = (resources.files("ss1bench.tuning_db") / f"{REFERENCE_GPU}.json").read_text(encoding="utf-8")
        return examples_from_records(json.loads(text).get("launch", {}))
    except (OSError, ValueError, AttributeError, ModuleNotFoundError):
        return ()


def leave_shape_out(examples: Iterable[Example], in_features: int, out_features: int) -> tuple[Example, ...]:
    """``examples`` without those of the layer shape ``(in_features, out_features)`` (all its kinds,
    dtypes, c and M buckets): what the heuristic learns for a shape it holds no records of."""
    return tuple(e for e in examples if e.shape != (in_features, out_features))


@functools.lru_cache(maxsize=64)
def examples_without_shape(in_features: int, out_features: int) -> tuple[Example, ...]:
    """The reference examples less the layer shape's own (:func:`leave_shape_out`): the heuristic as
    a shape the shipped database does not hold gets it (the ``ss1_heuristic`` bench provider, the
    leave-one-shape-out evaluation of ``scripts/heuristic_eval.py``)."""
    return leave_shape_out(reference_examples(), in_features, out_features)


def shape_distance(k_red: int, n: int, other_k_red: int, other_n: int) -> float:
    """``|log2 N - log2 N'| + K_RED_WEIGHT * |log2 K_red - log2 K_red'|``."""
    return (abs(math.log2(n) - math.log2(other_n))
            + K_RED_WEIGHT * abs(math.log2(k_red) - math.log2(other_k_red)))


def nearest_bucket(m: int, buckets: Iterable[int]) -> int | None:
    """The bucket of ``m``'s regime nearest in log2 (ties to the smaller); None if the regime has none."""
    same = sorted(b for b in set(buckets) if is_decode(b) == is_decode(m))
    if not same:
        return None
    target = math.log2(max(m, 1))
    return min(same, key=lambda b: (abs(math.log2(b) - target), b))


def ranked(problem: Problem, examples: Iterable[Example], dtypes: tuple[str, ...] | None = None) -> list[Example]:
    """Examples for ``problem`` in the order of the rule (steps 2 and 3 of the module doc)."""
    examples = list(examples)
    dtypes = dtypes if dtypes is not None else _DTYPE_STAND_IN.get(problem.dtype, ())
    kinds = [problem.kind] + ([FALLBACK_KINDS[problem.kind]] if problem.kind in FALLBACK_KINDS else [])
    for kind in kinds:
        for dtype in dtypes:
            pool = [e for e in examples if e.kind == kind and e.dtype == dtype]
            bucket = nearest_bucket(problem.m, {e.m for e in pool})
            if bucket is None:
                continue
            pool = [e for e in pool if e.m == bucket]
            c = max(problem.redn_factor, 1)
            return sorted(pool, key=lambda e: (abs(math.log2(e.redn_factor) - math.log2(c)),
                                               shape_distance(problem.k_red, problem.out_features, e.k_red,
                                                              e.out_features),
                                               e.k_red, e.out_features, e.key))
    return []


def _gemv_rows(config: LaunchConfig, problem: Problem) -> int:
    most = GEMV_MAX_ROWS if problem.k_red <= GEMV_ROWS_MAX_K_RED else 1
    rows = 1
    for candidate in (1, 2, 4, 8):
        if candidate <= min(config.tile_m, problem.m, most) and cdiv(problem.m, candidate) <= GEMV_MAX_ROW_BLOCKS:
            rows = candidate
    return rows


def grad_weight_split(problem: Problem, tile_m: int, tile_n: int, tile_k: int, sm_count: int) -> int:
    """The M split of a prefill ``grad_weight`` launch that fills the GPU once (space.py's rule)."""
    tiles = cdiv(problem.out_features, tile_n) * cdiv(problem.k_red, tile_k)
    split = 1
    while tiles * split < sm_count and problem.m // (split * 2) >= 4 * tile_m and split < 64:
        split *= 2
    return split


def adapt(config: LaunchConfig, problem: Problem, sm_count: int = DEFAULT_SM_COUNT,
          measured_m: int | None = None) -> LaunchConfig | None:
    """``config`` (measured on another shape, at ``measured_m`` rows) made for ``problem`` on a GPU
    of ``sm_count`` SMs; None when its algorithm cannot run ``problem`` (``resident`` past its width)."""
    caps = {"tile_m": max(16, next_power_of_two(problem.m)), "tile_k": max(16, next_power_of_two(problem.k_red))}
    if config.algorithm != "sketch_gemm":
        caps["tile_n"] = max(16, next_power_of_two(problem.out_features))
    if config.algorithm == "gemv":
        rows = _gemv_rows(config, problem)
        # the one-row grid point has four warps (the block-gathered one two or four)
        warps = 4 if rows == 1 and not config.block_gather else config.num_warps
        config = dataclasses.replace(config, tile_m=rows, num_warps=warps)
        del caps["tile_m"]
    changes = {name: cap for name, cap in caps.items() if getattr(config, name) > cap}
    if changes:
        config = dataclasses.replace(config, **changes)
    if config.algorithm == "resident":
        width = resident_width(problem.k_red)
        if width > RESIDENT_MAX_K_RED:
            return None
        config = dataclasses.replace(config, tile_k=width)
    if config.algorithm == "sketch_gemm" and measured_m is not None and problem.m < measured_m:
        # A sketch tile chosen for more rows: enough programs for a memory-bound pass (narrower
        # K_red chunks first, then fewer rows), e.g. the training path's decode-sized sketch.
        tile_m, tile_k = config.tile_m, config.tile_k
        while cdiv(problem.m, tile_m) * cdiv(problem.k_red, tile_k) < SKETCH_MIN_GRID_FRACTION * sm_count:
            if tile_k > 16:
                tile_k //= 2
            elif tile_m > 16:
                tile_m //= 2
            else:
                break
        config = dataclasses.replace(config, tile_m=tile_m, tile_k=tile_k)
    if config.algorithm == "fused" and config.split_k > 1:
        config = dataclasses.replace(config, split_k=decode_split_k(problem, config.tile_m, config.tile_n,
                                                                      config.tile_k, sm_count))
    if config.algorithm == "fused" and config.split_m > 1:
        config = dataclasses.replace(config, split_m=grad_weight_split(problem, config.tile_m, config.tile_n,
                                                                         config.tile_k, sm_count))
    return config


def nearest_config(problem: Problem, examples: Iterable[Example], shared_memory_limit: int,
                   sm_count: int = DEFAULT_SM_COUNT) -> tuple[LaunchConfig, Example] | None:
    """The adapted config of the first ranked example that fits ``shared_memory_limit``, with the
    example; None when there is none."""
    for example in ranked(problem, examples):
        config = adapt(example.config, problem, sm_count, example.m)
        if config is not None and fits(config, problem, shared_memory_limit):
            return config, example
    return None


@functools.lru_cache(maxsize=64)
def device_sm_count(device_name: str) -> int:
    """SMs of the visible CUDA device called ``device_name``; :data:`DEFAULT_SM_COUNT` when there is
    none (CPU problems, a name no visible device has)."""
    if not device_name:
        return DEFAULT_SM_COUNT
    try:
        import torch

        if not torch.cuda.is_available():
            return DEFAULT_SM_COUNT
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            if properties.name == device_name:
                return int(properties.multi_processor_count)
    except Exception:  # a launch never fails because of this guess
        pass
    return DEFAULT_SM_COUNT


def learned_config(problem: Problem, shared_memory_limit: int, sm_count: int | None = None,
                   examples: Iterable[Example] | None = None) -> LaunchConfig | None:
    """The heuristic's config for ``problem`` (see the module doc), or None (not covered)."""
    if sm_count is None:
        sm_count = device_sm_count(problem.device_name)
    found = nearest_config(problem, reference_examples() if examples is None else examples, shared_memory_limit,
                           sm_count)
    return None if found is None else found[0]
