"""Launch configurations for the SS1 kernels: data, one heuristic, one override hook.

A launch config never changes the function a layer computes (the structure does); the kernels
are correct for every config this module accepts. Three kernels, three ``kind`` values:

- ``"forward"``:     y  = sketch(x) @ Wr.T + b   tiles: M x N, reduction over K_red
- ``"grad_input"``:  dx = unsketch(dy @ Wr)       tiles: M x K_red, reduction over N
- ``"grad_weight"``: dW = unrotate(dy.T @ xs)     tiles: N x K_red, reduction over M (split_m ways)
- ``"forward_rotated"``: the forward when the caller holds the rotated weight ``Wr`` already (the
  ``SSL`` layer's rotated-weight cache, for inference): same kernels and configs as ``"forward"``,
  but ``sketch_gemm`` skips its per-call weight rotation, so it is tuned (and recorded) apart

One resolver (:func:`resolve_launch_config`): the newest override that answers (the tests' and the
tuner's, :func:`override_launch_config`), else the tuning database (activated on the first
resolution; its answers must fit the device's shared memory), else :func:`heuristic_config` (the
learned rule of :mod:`.heuristic`, else :func:`fallback_config`). The launchers cache the result
under one key in :data:`launch_config_cache`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .heuristic import Example

KINDS = ("forward", "grad_input", "grad_weight", "forward_rotated")
#: The kinds that run the forward kernels (same configs, same candidates).
FORWARD_KINDS = ("forward", "forward_rotated")


def cdiv(a: int, b: int) -> int:
    """Host-side ceiling division (``triton.cdiv`` is a JIT function: microseconds per call)."""
    return -(-a // b)

#: ``fused``: one Triton GEMM kernel that gathers the sketch on load (one launch; best when the
#: weight read dominates, i.e. decode). ``sketch_gemm``: a memory-bound Triton sketch/unsketch
#: kernel plus a cuBLAS product on the row-rotated weight (the product runs at library speed;
#: best for large M). ``resident`` (forward only, K_red <= RESIDENT_MAX_K_RED): a Triton kernel
#: whose programs gather the sketch of a row block once, whole K_red wide, and keep it on chip
#: while they sweep the N tiles (x read once, no sketch round trip through memory: best for
#: large M at high c). All compute the same function.
#: ``gemv`` (forward only, decode): one program per (N tile, block of ``tile_m`` rows, 1-8), the
#: product on CUDA cores in fp32 (no 16-row tl.dot minimum, so M = 1 does not pay for 16 rows).
ALGORITHMS = ("fused", "sketch_gemm", "resident", "gemv")

#: Widest sketch row (K_red rounded up to a power of two) the ``resident`` kernel holds on chip.
RESIDENT_MAX_K_RED = 512
#: Programs the ``resident`` forward aims for when it splits N among programs (two per SM on an
#: H100/H200), see :func:`resident_chunks`.
RESIDENT_TARGET_PROGRAMS = 256

#: Shared memory assumed when the device cannot be asked (CPU interpreter, unknown GPU).
#: 99 KiB is the opt-in limit of the smallest current NVIDIA parts (sm_86/sm_89); the H100/H200
#: give 227 KiB. Heuristic configs always fit this, so they launch everywhere.
FALLBACK_SHARED_MEMORY = 99 * 1024

#: Smallest register cap a config may ask for: the setting is there to lift ptxas's own register
#: target (so it can keep more loads in flight), not to squeeze a kernel into fewer registers.
MIN_MAXNREG = 64

#: Decode-size M: at or below it the forward heuristic uses the smallest M tile (16, the
#: smallest tl.dot accepts) and wide N tiles, since the weight read dominates.
DECODE_MAX_M = 64


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and compiler settings for one kernel launch.

    ``tile_m``, ``tile_n``, ``tile_k`` are the kernel's tile along M, N and K_red (powers of two,
    >= 16; independent of the structural block sizes). ``group_m`` is the grouped-ordering width
    for L2 reuse; ``split_m`` splits the M reduction of ``grad_weight`` over that many programs;
    ``split_k`` splits the K_red reduction of the fused ``forward`` over that many programs (fp32
    partial sums, added in a fixed order: deterministic), for decode shapes whose output has too
    few tiles to occupy the GPU. With ``algorithm="sketch_gemm"`` only ``tile_m``, ``tile_k`` and
    ``num_warps`` apply (the sketch kernel's tile); the product is cuBLAS's. With
    ``algorithm="resident"`` (forward only) the reduction is the whole K_red in one step, so
    ``tile_k`` does not apply (canonical value: :func:`resident_width`); ``num_stages`` pipelines
    the weight tiles of the N sweep. With ``algorithm="gemv"`` (forward only) ``tile_m`` is the
    number of rows per program (a power of two, 1 allowed: no tensor-core 16-row minimum).

    ``maxnreg`` (0: unset) is the registers-per-thread cap handed to ptxas (Triton's ``maxnreg``
    option) for the Triton kernel of every algorithm but ``sketch_gemm``. With it set, ptxas issues the
    sketch's c member loads of a decode kernel back to back instead of two or three at a time
    (more registers, which a decode grid of a few dozen programs does not miss); the tuner tries
    it on decode winners.

    ``block_gather`` (``gemv`` only) gathers the c members of a K tile as one (rows, c, tile_k)
    block and sums it across threads, so each x element is loaded and added once per program.
    Without it each member is one load, added by every thread that holds the element for its part
    of the N tile, which repeats the sketch's sum tile_n / (threads along N) times: at high c on a
    narrow sketch (GPT-2 widths at c = 16) those adds are most of a decode kernel's instructions.
    At c = 8 the separate loads measured faster; the tuner offers both.
    """

    tile_m: int = 64
    tile_n: int = 64
    tile_k: int = 32
    num_warps: int = 4
    num_stages: int = 2
    group_m: int = 8
    split_m: int = 1
    algorithm: str = "fused"
    split_k: int = 1
    maxnreg: int = 0
    block_gather: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"LaunchConfig.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        for name in ("tile_m", "tile_n", "tile_k"):
            value = getattr(self, name)
            smallest = 1 if name == "tile_m" and self.algorithm == "gemv" else 16
            if not isinstance(value, int) or value < smallest or value & (value - 1):
                raise ValueError(f"LaunchConfig.{name} must be a power of two >= {smallest}"
                                 f"{' for gemv' if smallest == 1 else ''}, got {value!r}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"LaunchConfig.num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps!r}")
        for name in ("num_stages", "group_m", "split_m", "split_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LaunchConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.maxnreg, int) or not (self.maxnreg == 0 or MIN_MAXNREG <= self.maxnreg <= 255):
            raise ValueError(f"LaunchConfig.maxnreg must be 0 (unset) or {MIN_MAXNREG}..255, got {self.maxnreg!r}")
        if self.maxnreg and self.algorithm == "sketch_gemm":
            raise ValueError("LaunchConfig.maxnreg does not apply to sketch_gemm (its sketch kernel has no "
                             "product; the product is cuBLAS's)")
        if not isinstance(self.block_gather, bool):
            raise ValueError(f"LaunchConfig.block_gather must be a bool, got {self.block_gather!r}")
        if self.block_gather and self.algorithm != "gemv":
            raise ValueError(f"LaunchConfig.block_gather applies to the gemv forward only, not to {self.algorithm}")

    def compiler_options(self) -> dict[str, int]:
        """The Triton compile options of a launch with this config."""
        options = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        if self.maxnreg:
            options["maxnreg"] = self.maxnreg
        return options

    def fields(self) -> list[str]:
        """The settings this config's algorithm uses, as short text in a fixed order:
        ``["128x128x64", "w8", "s3", "g8"]`` (then ``split4``, ``splitk2`` when split, ``r255`` with a
        register cap); ``sketch_gemm``: ``["32x128", "w4"]`` (M x K tile); ``gemv``:
        ``["64x64", "rows4", "block", "w2", "s3"]`` (N x K tile, rows per program when more than
        one, ``block`` with block_gather); ``resident``: ``["64x128", "w4", "s2"]`` (M x N tile).
        The tuner's text (:func:`ss1bench.tuning.space.describe`) and the bench's detail column join
        them."""
        if self.algorithm == "sketch_gemm":
            return [f"{self.tile_m}x{self.tile_k}", f"w{self.num_warps}"]
        pipeline = [f"w{self.num_warps}", f"s{self.num_stages}"]
        cap = [f"r{self.maxnreg}"] if self.maxnreg else []
        if self.algorithm == "gemv":
            return [f"{self.tile_n}x{self.tile_k}", *([f"rows{self.tile_m}"] if self.tile_m > 1 else []),
                    *(["block"] if self.block_gather else []), *pipeline, *cap]
        if self.algorithm == "resident":
            return [f"{self.tile_m}x{self.tile_n}", *pipeline, *cap]
        return [f"{self.tile_m}x{self.tile_n}x{self.tile_k}", *pipeline, f"g{self.group_m}",
                *([f"split{self.split_m}"] if self.split_m > 1 else []),
                *([f"splitk{self.split_k}"] if self.split_k > 1 else []), *cap]

    def to_dict(self) -> dict[str, int | bool | str]:
        """The fields, ``maxnreg`` and ``block_gather`` only when set (so a record without them
        reads the same in a version that does not know the fields)."""
        data = dataclasses.asdict(self)
        for name in ("maxnreg", "block_gather"):
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LaunchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LaunchConfig fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Problem:
    """What a launch is for: the key every config hook receives.

    ``m`` is the flattened batch size; ``dtype`` a short name (``fp32``, ``fp16``, ``bf16``);
    ``device_name`` the CUDA device name (empty on CPU).
    """

    kind: str
    m: int
    in_features: int
    out_features: int
    redn_factor: int
    block_k: int
    block_n: int
    dtype: str
    device_name: str = ""

    @property
    def k_red(self) -> int:
        from ss1bench.structure import reduced_width

        return reduced_width(self.in_features, self.redn_factor, self.block_k)


ConfigHook = Callable[[Problem], "LaunchConfig | None"]

#: Overrides, newest last: the tests' and the tuner's (:func:`override_launch_config`).
_overrides: list[ConfigHook] = []
_hooks_lock = threading.Lock()
#: The tuning database's answer, ``(problem, shared_memory_limit) -> LaunchConfig | None``, or None
#: for none. ``DATABASE_DEFAULT`` until the first resolution, which imports
#: ``ss1bench.tuning.lookup`` then (the database is activated on first use, not when ``ss1bench``
#: is imported); :func:`set_database` replaces it.
DATABASE_DEFAULT = "ss1bench.tuning.lookup"
_database: Callable | str | None = DATABASE_DEFAULT
#: The one cache of resolved configs, under the launchers' plain-tuple key ``(kind, M, structure,
#: dtype, device)`` (building a Problem and hashing it costs microseconds per launch; the launch
#: path is host-bound at decode sizes). Cleared whenever an override or the database changes.
launch_config_cache: dict[tuple, LaunchConfig] = {}
#: Launch plans (``kernels/plans.py``): recorded launches per input key; they hold resolved configs,
#: so they are cleared with them.
launch_plans: dict[tuple, object] = {}


def invalidate_config_cache() -> None:
    """Forget resolved configs and plans (after an override or the database's answers change)."""
    launch_config_cache.clear()
    launch_plans.clear()


def register_config_hook(hook: ConfigHook) -> Callable[[], None]:
    """Add an override ``hook(problem) -> LaunchConfig | None`` (newest first; its answer is
    launched as it is); returns a function that removes it."""
    with _hooks_lock:
        _overrides.append(hook)
        invalidate_config_cache()

    def remove() -> None:
        with _hooks_lock:
            if hook in _overrides:
                _overrides.remove(hook)
            invalidate_config_cache()

    return remove


def set_database(source: Callable | str | None) -> Callable | str | None:
    """Where launch configs come from after the overrides: ``source(problem, shared_memory_limit)``,
    None for no database (the heuristic answers), or :data:`DATABASE_DEFAULT`. Returns the one
    it replaces."""
    global _database
    with _hooks_lock:
        previous, _database = _database, source
        invalidate_config_cache()
    return previous


def database_answer(problem: Problem, shared_memory_limit: int) -> LaunchConfig | None:
    """The tuning database's config for ``problem`` if it fits ``shared_memory_limit`` (its records
    may come from a GPU with more shared memory), else None. Imports the default database on the
    first call."""
    global _database
    if _database == DATABASE_DEFAULT:
        _database = importlib.import_module(DATABASE_DEFAULT).DATABASE.launch_config
    if _database is None:
        return None
    config = _database(problem, shared_memory_limit)
    if config is not None and not fits(config, problem, shared_memory_limit):
        return None
    return config


def config_sources(device) -> str:
    """Everything :func:`resolve_launch_config` answers from for ``device`` besides the problem and
    this package's code, as text: the override hooks (by identity: a hook's answers cannot be
    read off it), the database source and, for the default database, its
    :meth:`~ss1bench.tuning.lookup.DatabaseLookup.fingerprint` for ``device``. A trace keys
    torch.compile's caches on it (``kernels/traced.py``)."""
    with _hooks_lock:
        hooks, database = list(_overrides), _database
    default = importlib.import_module(DATABASE_DEFAULT).DATABASE
    if database == DATABASE_DEFAULT or database == default.launch_config:
        source = f"database {default.fingerprint(device)}"
    else:
        source = "no database" if database is None else f"database {database!r}"
    return f"hooks {[repr(hook) for hook in hooks]}; {source}"


@contextlib.contextmanager
def override_launch_config(
    config: LaunchConfig | ConfigHook, kinds: tuple[str, ...] = KINDS
) -> Iterator[None]:
    """Within the block, launches of ``kinds`` use ``config`` (a LaunchConfig or a hook)."""
    if isinstance(config, LaunchConfig):
        fixed = config

        def hook(problem: Problem) -> LaunchConfig | None:
            return fixed if problem.kind in kinds else None
    else:
        user_hook = config

        def hook(problem: Problem) -> LaunchConfig | None:
            return user_hook(problem) if problem.kind in kinds else None

    remove = register_config_hook(hook)
    try:
        yield
    finally:
        remove()


def element_size(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


def shared_memory_bytes(config: LaunchConfig, problem: Problem) -> int:
    """Upper estimate of the shared memory a launch asks for.

    Triton pipelines every load in the reduction loop ``num_stages - 1`` iterations ahead, and
    the c member loads of the sketched operand are c separate loads: so the sketched operand
    costs c tiles per stage (measured on an H200: at c = 8 most large configs asked for
    256-608 KiB and failed). One extra stage of slack covers the epilogue and layout conversions.
    """
    size = element_size(problem.dtype)
    if config.algorithm == "sketch_gemm":
        return 0  # the sketch kernels have no reduction loop: nothing is pipelined
    if config.algorithm == "gemv":  # weight tiles and the c member loads of the rows, pipelined over K_red
        c = problem.redn_factor
        loads = size * (config.tile_n + c * config.tile_m) * config.tile_k * max(config.num_stages, 1)
        # block_gather: the sum over c across warps and the sketch's change of layout go through
        # shared memory (fp32, one rows x tile_k tile per warp)
        return loads + (4 * config.tile_m * config.tile_k * config.num_warps if config.block_gather else 0)
    if config.algorithm == "resident":
        # the resident sketch tile (a tl.dot operand) and one weight tile per stage of the N loop
        width = resident_width(problem.k_red)
        stages = max(config.num_stages, 1)
        return size * width * (config.tile_m + config.tile_n * stages) + 4 * config.tile_m * config.tile_n // 2
    c = problem.redn_factor
    tm, tn, tk = config.tile_m, config.tile_n, config.tile_k
    if problem.kind in FORWARD_KINDS:
        per_stage = c * tm * tk + tn * tk
        out_tile = tm * tn
    elif problem.kind == "grad_input":
        per_stage = tm * tn + tn * tk
        out_tile = tm * tk
    else:  # grad_weight
        per_stage = tm * tn + c * tm * tk
        out_tile = tn * tk
    stages = max(config.num_stages, 1)
    return size * (per_stage * stages) + 4 * out_tile // 2


def fits(config: LaunchConfig, problem: Problem, shared_memory_limit: int) -> bool:
    return shared_memory_bytes(config, problem) <= shared_memory_limit


def shrink_config(config: LaunchConfig) -> LaunchConfig:
    """One step smaller in shared memory: fewer stages, then a smaller tile_k, then the larger
    of tile_m and tile_n. Returns ``config`` itself at the floor (16 x 16 x 16, one stage).
    """
    if config.num_stages > 2:
        return dataclasses.replace(config, num_stages=config.num_stages - 1)
    if config.tile_k > 16:
        return dataclasses.replace(config, tile_k=config.tile_k // 2)
    if config.num_stages > 1:
        return dataclasses.replace(config, num_stages=1)
    if max(config.tile_m, config.tile_n) > 16:
        if config.tile_m >= config.tile_n:
            return dataclasses.replace(config, tile_m=config.tile_m // 2)
        return dataclasses.replace(config, tile_n=config.tile_n // 2)
    return config


def _largest_fitting(config: LaunchConfig, problem: Problem, limit: int) -> LaunchConfig:
    """Shrink (:func:`shrink_config`) until the config fits ``limit``."""
    while not fits(config, problem, limit):
        smaller = shrink_config(config)
        if smaller == config:
            break  # 16 x 16 x 16, one stage: a few KiB, fits any GPU
        config = smaller
    return config


def next_power_of_two(value: int) -> int:
    """The smallest power of two >= ``value`` (1 for values <= 1)."""
    return 1 << max(value - 1, 0).bit_length()


def resident_width(k_red: int) -> int:
    """Width of the ``resident`` kernel's sketch tile: K_red rounded up to a power of two (>= 16)."""
    return max(16, next_power_of_two(k_red))


def resident_chunks(m: int, n: int, tile_m: int, tile_n: int,
                    programs: int = RESIDENT_TARGET_PROGRAMS) -> tuple[int, int]:
    """``(chunks, tiles per chunk)``: the ``resident`` forward splits the N tiles of each row block
    into chunks, one program each, so that the grid has about ``programs`` programs. Each chunk
    gathers its row block's sketch again (x from L2, the chunks of a row block run side by side),
    so the split goes no further than needed to fill the GPU."""
    row_blocks = cdiv(m, tile_m)
    n_tiles = cdiv(n, tile_n)
    per_program = cdiv(n_tiles, max(1, min(n_tiles, cdiv(programs, row_blocks))))
    return cdiv(n_tiles, per_program), per_program


#: Streaming multiprocessors the decode split-K heuristic aims to cover (H100/H200 SXM: 132).
TARGET_PROGRAMS = 128


def decode_split_k(problem: Problem, tile_m: int, tile_n: int, tile_k: int, programs: int = TARGET_PROGRAMS) -> int:
    """Power-of-two K_red split that brings a forward grid of output tiles up to ``programs``
    programs, keeping at least two ``tile_k`` steps per program (1: no split).

    A decode forward reads the compressed weight once; with N / tile_n output tiles (e.g. 24 for
    N = 768) most SMs would idle while it streams in.
    """
    tiles = cdiv(problem.m, tile_m) * cdiv(problem.out_features, tile_n)
    steps = cdiv(problem.k_red, tile_k)
    split = 1
    while tiles * split * 2 <= programs and steps // (split * 2) >= 2:
        split *= 2
    return split


def fallback_config(problem: Problem, shared_memory_limit: int = FALLBACK_SHARED_MEMORY) -> LaunchConfig:
    """The fixed rule :func:`heuristic_config` falls back to where the learned rule has no examples
    (fp32, a kind without records): always launches (fits ``shared_memory_limit``).

    Tiles follow the classic Triton matmul choices (128 x 128 x 32-64 for large problems, a
    16-row tile for decode) and shrink with c so the c in-flight member tiles still fit.
    """
    m = problem.m
    if problem.kind not in KINDS:
        raise ValueError(f"unknown kernel kind {problem.kind!r}; expected one of {KINDS}")
    if m > DECODE_MAX_M:
        # Measured on an H200 (fp16, GPT-2/Llama shapes, first kernels): the fused GEMM reached
        # 0.15-0.41 of ideal at prefill sizes; sketch + cuBLAS is predicted at ~0.6-0.9.
        return LaunchConfig(tile_m=32, tile_n=64, tile_k=128, num_warps=4, num_stages=1,
                            algorithm="sketch_gemm")
    if problem.kind in FORWARD_KINDS:
        if m == 1:
            # One row: the CUDA-core GEMV reached 0.74-1.16 of ideal on the H200 where the 16-row
            # tl.dot kernel reached 0.52-0.86 (gpt2/llama shapes, c = 4..16, fp16 and bf16).
            return LaunchConfig(tile_m=1, tile_n=16, tile_k=min(256, max(16, next_power_of_two(problem.k_red))),
                                num_warps=4, num_stages=3, group_m=1, algorithm="gemv")
        if m <= DECODE_MAX_M:
            tile_m = max(16, min(next_power_of_two(m), 64))
            config = LaunchConfig(tile_m=tile_m, tile_n=64, tile_k=128, num_warps=4, num_stages=3,
                                  split_k=decode_split_k(problem, tile_m, 64, 128))
        else:
            config = LaunchConfig(tile_m=128, tile_n=128, tile_k=64, num_warps=8, num_stages=3)
    elif problem.kind == "grad_input":
        tile_m = 128 if m > DECODE_MAX_M else max(16, min(next_power_of_two(m), 64))
        config = LaunchConfig(tile_m=tile_m, tile_n=64, tile_k=128, num_warps=8, num_stages=3)
    elif problem.kind == "grad_weight":
        tiles = cdiv(problem.out_features, 128) * cdiv(problem.k_red, 128)
        # Enough programs to cover the GPU (~132 SMs on Hopper) when N x K_red is small.
        split_m = 1
        while tiles * split_m < 128 and m // (split_m * 2) >= 512:
            split_m *= 2
        config = LaunchConfig(tile_m=64, tile_n=128, tile_k=128, num_warps=8, num_stages=3, split_m=split_m)
    else:
        raise ValueError(f"unknown kernel kind {problem.kind!r}; expected one of {KINDS}")
    return _largest_fitting(config, problem, shared_memory_limit)


def heuristic_config(problem: Problem, shared_memory_limit: int = FALLBACK_SHARED_MEMORY,
                     sm_count: int | None = None, examples: Iterable[Example] | None = None) -> LaunchConfig:
    """Default config (no tuning record): always launches (fits ``shared_memory_limit``).

    The learned rule of :mod:`.heuristic` (the config of the nearest tuned layer of the reference
    GPU, or of ``examples`` when given, adapted to this problem and ``sm_count`` SMs, pruned by
    ``shared_memory_limit``); where it has no examples (fp32, a kind without records),
    :func:`fallback_config`. ``sm_count`` None: the device named by ``problem.device_name`` when
    visible, else the reference GPU's.
    """
    if problem.kind not in KINDS:
        raise ValueError(f"unknown kernel kind {problem.kind!r}; expected one of {KINDS}")
    from .heuristic import learned_config  # the learned rule imports this module

    learned = learned_config(problem, shared_memory_limit, sm_count, examples)
    return learned if learned is not None else fallback_config(problem, shared_memory_limit)


def override_answer(problem: Problem) -> LaunchConfig | None:
    """The config of the newest override that answers for ``problem``, else None."""
    with _hooks_lock:
        overrides = list(reversed(_overrides))
    for hook in overrides:
        config = hook(problem)
        if config is not None:
            return config
    return None


def resolve_launch_config(problem: Problem, shared_memory_limit: int = FALLBACK_SHARED_MEMORY) -> LaunchConfig:
    """Config for ``problem``: the newest override that answers (:func:`override_answer`), else
    the tuning database's answer (:func:`database_answer`), else :func:`heuristic_config`. Not
    cached here: the launchers cache the result (:data:`launch_config_cache`)."""
    config = override_answer(problem)
    if config is None:
        config = database_answer(problem, shared_memory_limit)
    return config if config is not None else heuristic_config(problem, shared_memory_limit)
