"""Launchers of the SS1 Triton kernels (``kernels/jit.py``): check inputs, pick the launch config
(``kernels/config.py``), launch (``kernels/launch.py``).

- ``ss1_forward``: the forward, by the config's algorithm (fused, sketch_gemm, resident, gemv);
  its eager calls keep and replay launch plans (``kernels/plans.py``);
- ``ss1_grad_input``, ``ss1_grad_weight``: the backward kernels, by config (the tuner measures them);
- the memory-bound passes around a cuBLAS product (``sketch``, ``sketch_and_rotate``,
  ``unsketch``, ``rotate_weight``): the ``sketch_gemm`` algorithm, the layer's training path and
  the ``torch.compile`` ops (``kernels/traced.py``), which pass their own ``launch``.

Shapes: x (M, K), weight (N, K_red), bias (N,), y and dy (M, N).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Hashable

import torch
import triton

from ss1bench.dtypes import dtype_name
from ss1bench.structure import VEC, SS1Structure

from . import plans
from .config import (
    DECODE_MAX_M,
    FORWARD_KINDS,
    RESIDENT_MAX_K_RED,
    LaunchConfig,
    Problem,
    cdiv,
    heuristic_config,
    launch_config_cache,
    launch_plans,
    override_answer,
    resident_chunks,
    resident_width,
    resolve_launch_config,
    shrink_config,
)
from .jit import (
    _split_k_sum_kernel,
    _ss1_forward_kernel,
    _ss1_gemv_forward_kernel,
    _ss1_grad_input_kernel,
    _ss1_grad_weight_kernel,
    _ss1_resident_forward_kernel,
    _ss1_rotate_kernel,
    _ss1_sketch_kernel,
    _ss1_sketch_rotate_bias_kernel,
    _ss1_sketch_rotate_kernel,
    _ss1_unsketch_kernel,
    _ss1_unsketch_unrotate_kernel,
)
from .launch import interpreting, record
from .launch import launch as launch_kernel

logger = logging.getLogger(__name__)

@functools.lru_cache(maxsize=16)
def _device_limits(device_index: int) -> tuple[str, int]:
    """(name, opt-in shared memory per block) of a CUDA device, read once."""
    props = torch.cuda.get_device_properties(device_index)
    limit = getattr(props, "shared_memory_per_block_optin", 0)
    if not limit:
        limit = triton.runtime.driver.active.utils.get_device_properties(device_index)["max_shared_mem"]
    return props.name, int(limit)


def device_limits(device: torch.device) -> tuple[str, int]:
    """(device name, shared-memory limit in bytes) used to pick and check launch configs."""
    if device.type == "cuda":
        return _device_limits(device.index if device.index is not None else torch.cuda.current_device())
    from .config import FALLBACK_SHARED_MEMORY

    return "", FALLBACK_SHARED_MEMORY


def _check_tensor(name: str, tensor: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype,
                  device: torch.device) -> None:
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device} but the other inputs are on {device}")
    if tensor.dtype != dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but the other inputs are {dtype}")
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")


def _check_grad_out(grad_out: torch.Tensor, structure: SS1Structure) -> tuple[int, int]:
    """``(M, N)`` of a 2-D output gradient of a supported dtype, on a usable device, with the
    layer's N columns."""
    m, n = grad_out.shape
    dtype_name(grad_out.dtype)
    _check_device(grad_out.device)
    if n != structure.out_features:
        raise ValueError(f"grad_out has {n} columns but out_features={structure.out_features}")
    return m, n


def _check_device(device: torch.device) -> None:
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"the SS1 Triton kernels need CUDA tensors (got {device}); use the reference op on CPU "
            "or set TRITON_INTERPRET=1 to run them in Triton's interpreter"
        )


def row_major(tensor: torch.Tensor) -> torch.Tensor:
    """Unit stride along the last dim (the kernels' vector loads need it); copies only if not."""
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


def _check_x(x: torch.Tensor, structure: SS1Structure) -> None:
    """``x: (M, K)`` of a supported dtype on a CUDA device (or in the interpreter), with the layer's K
    columns: the forward's and the passes' checks of x."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (M, K), got shape {tuple(x.shape)}")
    dtype_name(x.dtype)
    _check_device(x.device)
    if x.shape[1] != structure.in_features:
        raise ValueError(f"x has {x.shape[1]} features but the layer expects in_features={structure.in_features}")


def check_pass_inputs(x: torch.Tensor, weight: torch.Tensor, structure: SS1Structure,
                      out_dtype: torch.dtype | None = None) -> None:
    """The checks of :func:`sketch_and_rotate`'s callers: ``x: (M, K)`` and ``weight: (N, K_red)``
    on one CUDA device (or in the interpreter), of one supported dtype; with ``out_dtype`` (the
    outputs' dtype, autocast's) each may have its own supported dtype."""
    _check_x(x, structure)
    if out_dtype is not None:
        dtype_name(out_dtype)
        dtype_name(weight.dtype)
    _check_tensor("weight", weight, structure.weight_shape, x.dtype if out_dtype is None else weight.dtype, x.device)


def _copied_below(*tensors: torch.Tensor | None) -> bool:
    """Whether a launcher's checks copy any of ``tensors`` (None skipped) to a unit last stride
    (:func:`_row_major`, the forward's contiguous bias). A plan passes the caller's tensors as they
    are, so a call that copies one keeps no plan."""
    return any(tensor is not None and tensor.stride(-1) != 1 for tensor in tensors)


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _structure_args(structure: SS1Structure) -> dict:
    r0, r1, r2, r3 = structure.kernel_hash()
    return dict(R0M=r0, R1M=r1, R2M=r2, R3M=r3, C=structure.redn_factor, BK=structure.block_k,
                BN=structure.block_n, VEC=VEC)


def _check_config(kind: str, config: LaunchConfig, structure: SS1Structure) -> None:
    """Errors for configs that name a variant the kernel ``kind`` does not have."""
    forward = kind in FORWARD_KINDS
    if config.split_k > 1 and (not forward or config.algorithm != "fused"):
        raise ValueError(f"split_k={config.split_k} applies to the fused forward kernel only, not to "
                         f"{kind} ({config.algorithm})")
    if config.algorithm in ("resident", "gemv") and not forward:
        raise ValueError(f"algorithm {config.algorithm!r} applies to the forward kernel only, not to {kind}")
    if config.algorithm == "resident" and resident_width(structure.k_red) > RESIDENT_MAX_K_RED:
        raise ValueError(f"algorithm 'resident' holds a whole sketch row on chip: K_red={structure.k_red} "
                         f"is over its limit of {RESIDENT_MAX_K_RED}")


#: Entries of the launchers' config cache before it starts over (one per kind, M, layer shape).
LAUNCH_CACHE_SIZE = 4096


def _resolved_config(key: tuple, structure: SS1Structure) -> LaunchConfig:
    """The launch config for ``key = (kind, m, structure.key, dtype, device)``, resolved once and
    cached (:data:`launch_config_cache`)."""
    cfg = launch_config_cache.get(key)
    if cfg is None:
        kind, m, _, dtype, device = key
        name, limit = device_limits(device)
        problem = Problem(kind, m, structure.in_features, structure.out_features, structure.redn_factor,
                          structure.block_k, structure.block_n, dtype_name(dtype), name)
        cfg = resolve_launch_config(problem, limit)
        _check_config(kind, cfg, structure)
        _remember(key, cfg)
    return cfg


def _remember(key: tuple, cfg: LaunchConfig) -> None:
    if len(launch_config_cache) >= LAUNCH_CACHE_SIZE:  # many distinct M: start over
        launch_config_cache.clear()
    launch_config_cache[key] = cfg


#: Rows assumed when a pass's launch config is chosen for a traced size with no value to go by.
PASS_CONFIG_FALLBACK_M = 4096


def sketch_pass_config(kind: str, m: int, structure: SS1Structure, dtype: torch.dtype,
                       device: torch.device) -> LaunchConfig:
    """The tile of the memory-bound sketch or unsketch pass for ``m`` rows, where the product
    around it is cuBLAS's (the traced ops, the eager training path): the resolved config of
    ``kind`` (``"forward_rotated"`` for the sketch, ``"grad_input"`` for the unsketch) when it is
    ``sketch_gemm``, whose tile is that pass's; else the tile at the smallest prefill M from an
    override that answers (the bench's forced heuristic), else from the heuristic."""
    key = ("pass", kind, m, structure.key, dtype, device)
    cfg = launch_config_cache.get(key)
    if cfg is None:
        cfg = _resolved_config((kind, m, structure.key, dtype, device), structure)
        if cfg.algorithm != "sketch_gemm":
            problem = Problem(kind, max(m, DECODE_MAX_M + 1), structure.in_features, structure.out_features,
                              structure.redn_factor, structure.block_k, structure.block_n, dtype_name(dtype))
            cfg = override_answer(problem) or heuristic_config(problem)
        _remember(key, cfg)
    return cfg


def _launch(kind: str, m: int, structure: SS1Structure, dtype: torch.dtype, device: torch.device,
            config: LaunchConfig | None, launch) -> None:
    """Run ``launch(cfg)`` with ``config`` if given (errors propagate: the caller pinned it),
    else with the resolved config; if that runs out of GPU resources (a model of shared memory
    is an estimate), retry with a smaller heuristic config so the default path always launches.
    """
    if config is not None:
        _check_config(kind, config, structure)
        launch(config)
        return
    key = (kind, m, structure.key, dtype, device)
    cfg = _resolved_config(key, structure)
    while True:
        try:
            launch(cfg)
            return
        except triton.runtime.errors.OutOfResources:
            smaller = shrink_config(cfg)
            if smaller == cfg:
                raise
            logger.warning("%s launch config %s ran out of GPU resources; retrying with %s", kind, cfg, smaller)
            cfg = launch_config_cache[key] = smaller


def _check_out(out: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor,
               name: str = "out") -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    _check_tensor(name, out, shape, like.dtype, like.device)
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return out


#: Elements per program of the split-K epilogue (an element-wise pass over M x N).
SPLIT_K_SUM_BLOCK = 1024

#: Tile of the weight-rotation kernel (a permutation copy of N x K_red; memory-bound).
ROTATE_TILE_N, ROTATE_TILE_K = 32, 128


def _sketch_grid(m: int, k_red: int, cfg: LaunchConfig) -> tuple[int]:
    """One program per (row block, K_red chunk), row-major in a 1-D grid."""
    return (cdiv(m, cfg.tile_m) * cdiv(k_red, cfg.tile_k),)


def sketch(x: torch.Tensor, structure: SS1Structure, cfg: LaunchConfig, launch=launch_kernel) -> torch.Tensor:
    """``xs: (M, K_red)`` for ``x: (M, K)`` (row-major last dim).

    ``launch(kernel, grid, *args, **kwargs)`` starts the kernel: the direct path for eager calls,
    ``wrap_triton`` inside the ``torch.compile`` ops (``kernels/traced.py``); the same for the
    other pass launchers below."""
    m = x.shape[0]
    xs = torch.empty((m, structure.k_red), dtype=x.dtype, device=x.device)
    launch(
        _ss1_sketch_kernel, _sketch_grid(m, structure.k_red, cfg),
        x, xs, m, structure.in_features, structure.k_red, x.stride(0), xs.stride(0),
        **_structure_args(structure), TILE_M=cfg.tile_m, TILE_K=cfg.tile_k, num_warps=cfg.num_warps,
    )
    return xs


def sketch_and_rotate(x: torch.Tensor, weight: torch.Tensor, structure: SS1Structure,
                      cfg: LaunchConfig, launch=launch_kernel,
                      out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sketch(x), rotate(weight))`` in one launch (the forward's two memory-bound passes),
    written in ``out_dtype`` (None: each input's own): the kernel sums in float32 and rounds once
    on its store, so an ``out_dtype`` output is the cast of the input-dtype one, without the cast's
    launch and its extra read and write."""
    m, (n, k_red) = x.shape[0], structure.weight_shape
    xs = torch.empty((m, k_red), dtype=out_dtype or x.dtype, device=x.device)
    wr = torch.empty((n, k_red), dtype=out_dtype or weight.dtype, device=weight.device)
    _launch_paired(_ss1_sketch_rotate_kernel, x, xs, weight, wr, m, structure, cfg, launch)
    return xs, wr


def sketch_rotate_cast_bias(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, structure: SS1Structure,
                            cfg: LaunchConfig, out_dtype: torch.dtype,
                            launch=launch_kernel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sketch_and_rotate` into ``out_dtype`` that also returns ``bias`` (N,) cast to it, in
    the same launch: the training forward under autocast (eager and traced), where the cast of the
    bias would be a launch of its own per layer."""
    m, (n, k_red) = x.shape[0], structure.weight_shape
    xs = torch.empty((m, k_red), dtype=out_dtype, device=x.device)
    wr = torch.empty((n, k_red), dtype=out_dtype, device=weight.device)
    bias_out = torch.empty((n,), dtype=out_dtype, device=bias.device)
    _launch_paired(_ss1_sketch_rotate_bias_kernel, x, xs, weight, wr, m, structure, cfg, launch,
                   extra=(bias.contiguous(), bias_out))
    return xs, wr, bias_out


def _launch_paired(kernel, first_in: torch.Tensor, first_out: torch.Tensor, second_in: torch.Tensor,
                   second_out: torch.Tensor, m: int, structure: SS1Structure, cfg: LaunchConfig, launch,
                   extra: tuple[torch.Tensor, ...] = ()) -> None:
    """One launch of a paired-pass kernel: the (un)sketch pass over M rows in ``cfg``'s tiles,
    then the (un)rotation of the (N, K_red) weight in fixed tiles, as one 1-D grid. ``extra``:
    tensors the kernel takes after the four (the bias and its cast)."""
    n, k_red = structure.weight_shape
    programs = math.prod(_sketch_grid(m, k_red, cfg)) + cdiv(n, ROTATE_TILE_N) * cdiv(k_red, ROTATE_TILE_K)
    launch(
        kernel, (programs,),
        first_in, first_out, second_in, second_out, *extra, m, n, structure.in_features, k_red, first_in.stride(0),
        first_out.stride(0), second_in.stride(0), second_out.stride(0), **_structure_args(structure),
        TILE_M=cfg.tile_m, TILE_K=cfg.tile_k, ROT_N=ROTATE_TILE_N, ROT_K=ROTATE_TILE_K, num_warps=cfg.num_warps,
    )


def unsketch(dxs: torch.Tensor, structure: SS1Structure, cfg: LaunchConfig, out: torch.Tensor,
             launch=launch_kernel) -> None:
    """``out: (M, K) = unsketch(dxs: (M, K_red))``."""
    m = dxs.shape[0]
    launch(
        _ss1_unsketch_kernel, _sketch_grid(m, structure.k_red, cfg),
        dxs, out, m, structure.in_features, structure.k_red, dxs.stride(0), out.stride(0),
        **_structure_args(structure), TILE_M=cfg.tile_m, TILE_K=cfg.tile_k, num_warps=cfg.num_warps,
    )


def rotate_weight(weight: torch.Tensor, structure: SS1Structure, inverse: bool = False,
                  out: torch.Tensor | None = None, launch=launch_kernel) -> torch.Tensor:
    """``Wr = rotate(weight)`` or, with ``inverse``, ``dWc = unrotate(weight)``; both (N, K_red)."""
    n, k_red = structure.weight_shape
    out = torch.empty((n, k_red), dtype=weight.dtype, device=weight.device) if out is None else out
    grid = (cdiv(n, ROTATE_TILE_N), cdiv(k_red, ROTATE_TILE_K))
    launch(
        _ss1_rotate_kernel, grid,
        weight, out, n, k_red, weight.stride(0), out.stride(0), **_structure_args(structure),
        TILE_N=ROTATE_TILE_N, TILE_K=ROTATE_TILE_K, INVERSE=inverse, num_warps=4,
    )
    return out


def _planned_pass(kind: Hashable, structure: SS1Structure, inputs: tuple, run, output_shapes: tuple,
                  interleaved: bool = False, out_dtypes: tuple | None = None):
    """``run(*inputs)`` (a pass launcher with its checks) on the first eager call per plan key,
    its launch recorded as a plan; later calls with the same key replay it (``kernels/plans.py``).
    Inputs the launcher would copy to a unit last stride keep no plan (a replay passes them as
    they are). ``out_dtypes``: each output's dtype, None for its input's."""
    key = plans.plan_key(kind, structure, *inputs)
    plan = launch_plans.get(key)
    if plan is not None:
        return plan(*inputs)
    if _copied_below(*inputs):
        return run(*inputs)
    with record() as launches:
        output = run(*inputs)
    plans.keep_plan(key, plans.pass_plan(launches, output_shapes, interleaved, out_dtypes))
    return output


def sketch_rotate_pass(x: torch.Tensor, weight: torch.Tensor, structure: SS1Structure, m_hint: int,
                       launch=launch_kernel, out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sketch(x), rotate(weight))`` checked, in ``out_dtype`` (None: the inputs'), the tile from
    :func:`sketch_pass_config` for ``m_hint`` rows, one launch: the forward pass of the training
    path and the traced op."""
    check_pass_inputs(x, weight, structure, out_dtype)
    cfg = sketch_pass_config("forward_rotated", m_hint, structure, out_dtype or x.dtype, x.device)
    return sketch_and_rotate(row_major(x), row_major(weight), structure, cfg, launch=launch, out_dtype=out_dtype)


def sketch_rotate_bias_pass(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, structure: SS1Structure,
                            m_hint: int, out_dtype: torch.dtype,
                            launch=launch_kernel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sketch_rotate_pass` into ``out_dtype`` that also casts ``bias`` (N,) to it, checked:
    the training forward under autocast and the traced op."""
    check_pass_inputs(x, weight, structure, out_dtype)
    dtype_name(bias.dtype)
    _check_tensor("bias", bias, (structure.out_features,), bias.dtype, x.device)
    cfg = sketch_pass_config("forward_rotated", m_hint, structure, out_dtype, x.device)
    return sketch_rotate_cast_bias(row_major(x), row_major(weight), bias, structure, cfg, out_dtype, launch=launch)


def sketch_pass(x: torch.Tensor, structure: SS1Structure, m_hint: int, launch=launch_kernel) -> torch.Tensor:
    """``sketch(x)`` checked, the tile from :func:`sketch_pass_config` for ``m_hint`` rows: the
    traced inference op whose weight rotation Inductor's freezing folds away."""
    _check_x(x, structure)
    cfg = sketch_pass_config("forward_rotated", m_hint, structure, x.dtype, x.device)
    return sketch(row_major(x), structure, cfg, launch=launch)


def sketch_and_rotate_planned(x: torch.Tensor, weight: torch.Tensor, structure: SS1Structure,
                              out_dtype: torch.dtype | None = None):
    """:func:`sketch_rotate_pass` for the eager training path; planned per input key and
    ``out_dtype``."""
    shapes = ((x.shape[0], structure.k_red), structure.weight_shape)
    return _planned_pass(("sketch_rotate", out_dtype), structure, (x, weight),
                         lambda x, weight: sketch_rotate_pass(x, weight, structure, x.shape[0], out_dtype=out_dtype),
                         shapes, interleaved=True, out_dtypes=(out_dtype, out_dtype))


def sketch_rotate_bias_planned(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, structure: SS1Structure,
                               out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sketch_rotate_bias_pass` for the eager training path under autocast (the bias cast in
    the same launch); planned per input key and ``out_dtype``."""
    shapes = ((x.shape[0], structure.k_red), structure.weight_shape, (structure.out_features,))
    return _planned_pass(("sketch_rotate_bias", out_dtype), structure, (x, weight, bias),
                         lambda x, weight, bias: sketch_rotate_bias_pass(x, weight, bias, structure, x.shape[0],
                                                                         out_dtype),
                         shapes, interleaved=True, out_dtypes=(out_dtype,) * 3)


def unsketch_pass(grad_sketch: torch.Tensor, structure: SS1Structure, m_hint: int,
                  launch=launch_kernel, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``unsketch(grad_sketch: (M, K_red)) -> (M, K)`` into a new tensor of ``out_dtype`` (None:
    ``grad_sketch``'s; a copy per element, so the cast is exact), the tile from
    :func:`sketch_pass_config` for ``m_hint`` rows (``grad_sketch`` row-major)."""
    cfg = sketch_pass_config("grad_input", m_hint, structure, grad_sketch.dtype, grad_sketch.device)
    out = torch.empty((grad_sketch.shape[0], structure.in_features), dtype=out_dtype or grad_sketch.dtype,
                      device=grad_sketch.device)
    unsketch(grad_sketch, structure, cfg, out, launch=launch)
    return out


def unsketch_planned(grad_sketch: torch.Tensor, structure: SS1Structure,
                     out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`unsketch_pass` for the eager training path; planned."""
    return _planned_pass(("unsketch", out_dtype), structure, (grad_sketch,),
                         lambda g: unsketch_pass(row_major(g), structure, g.shape[0], out_dtype=out_dtype),
                         ((grad_sketch.shape[0], structure.in_features),), out_dtypes=(out_dtype,))


def unrotate_planned(grad_rotated: torch.Tensor, structure: SS1Structure,
                     out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``unrotate(grad_rotated: (N, K_red))`` for the eager training path, in ``out_dtype`` (None:
    ``grad_rotated``'s); planned."""
    def run(g: torch.Tensor) -> torch.Tensor:
        out = None if out_dtype is None else torch.empty(structure.weight_shape, dtype=out_dtype, device=g.device)
        return rotate_weight(row_major(g), structure, inverse=True, out=out)

    return _planned_pass(("unrotate", out_dtype), structure, (grad_rotated,), run, (structure.weight_shape,),
                         out_dtypes=(out_dtype,))


def unsketch_and_unrotate(grad_sketch: torch.Tensor, grad_rotated: torch.Tensor, structure: SS1Structure,
                          cfg: LaunchConfig, x_dtype: torch.dtype | None = None,
                          weight_dtype: torch.dtype | None = None,
                          launch=launch_kernel) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unsketch(grad_sketch), unrotate(grad_rotated))`` in one launch (the backward's two
    memory-bound passes), into new tensors of ``x_dtype`` and ``weight_dtype`` (None: each
    input's own; copies per element, so the casts are exact). ``cfg``: the unsketch tile."""
    m = grad_sketch.shape[0]
    dx = torch.empty((m, structure.in_features), dtype=x_dtype or grad_sketch.dtype, device=grad_sketch.device)
    dw = torch.empty(structure.weight_shape, dtype=weight_dtype or grad_rotated.dtype, device=grad_rotated.device)
    _launch_paired(_ss1_unsketch_unrotate_kernel, grad_sketch, dx, grad_rotated, dw, m, structure, cfg, launch)
    return dx, dw


def unsketch_unrotate_pass(grad_sketch: torch.Tensor, grad_rotated: torch.Tensor, structure: SS1Structure,
                           m_hint: int, launch=launch_kernel, x_dtype: torch.dtype | None = None,
                           weight_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unsketch_and_unrotate` with the unsketch tile of :func:`sketch_pass_config` for
    ``m_hint`` rows, both gradients made row-major: the eager training path's backward pass and
    the traced op."""
    grad_sketch = row_major(grad_sketch)
    cfg = sketch_pass_config("grad_input", m_hint, structure, grad_sketch.dtype, grad_sketch.device)
    return unsketch_and_unrotate(grad_sketch, row_major(grad_rotated), structure, cfg, x_dtype, weight_dtype,
                                 launch=launch)


def unsketch_unrotate_planned(grad_sketch: torch.Tensor, grad_rotated: torch.Tensor, structure: SS1Structure,
                              x_dtype: torch.dtype | None = None,
                              weight_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unsketch_unrotate_pass` for the eager training path; planned per input key and output
    dtypes."""
    def run(g_sketch: torch.Tensor, g_rotated: torch.Tensor):
        return unsketch_unrotate_pass(g_sketch, g_rotated, structure, g_sketch.shape[0], x_dtype=x_dtype,
                                      weight_dtype=weight_dtype)

    shapes = ((grad_sketch.shape[0], structure.in_features), structure.weight_shape)
    return _planned_pass(("unsketch_unrotate", x_dtype, weight_dtype), structure, (grad_sketch, grad_rotated),
                         run, shapes, interleaved=True, out_dtypes=(x_dtype, weight_dtype))


def _resident_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
                      structure: SS1Structure, cfg: LaunchConfig) -> None:
    """The ``resident`` forward: grid (N chunks, row blocks), chunks from :func:`resident_chunks`."""
    m, n = y.shape
    width = resident_width(structure.k_red)
    chunks, per_program = resident_chunks(m, n, cfg.tile_m, cfg.tile_n)
    launch_kernel(
        _ss1_resident_forward_kernel, (chunks, cdiv(m, cfg.tile_m)),
        x, weight, bias if bias is not None else y, y,
        m, n, structure.in_features, structure.k_red, per_program,
        x.stride(0), weight.stride(0), y.stride(0),
        **_structure_args(structure),
        HAS_BIAS=bias is not None,
        TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, KR=width, DOT_PRECISION=_dot_precision(x.dtype),
        **cfg.compiler_options(),
    )


def ss1_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                structure: SS1Structure, config: LaunchConfig | None = None,
                out: torch.Tensor | None = None, rotated_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``y: (M, N) = x @ dense_weight(weight).T + bias`` for ``x: (M, K)``, ``weight: (N, K_red)``.

    ``rotated_weight``, when given, must be ``rotate_weight(weight, structure)`` (the caller's
    cache of it; not checked, only its shape, dtype and device): ``sketch_gemm`` then multiplies
    by it instead of rotating the weight on every call, and the launch config is the
    ``"forward_rotated"`` kind's. The other algorithms read ``weight`` as always.

    Without ``config`` and ``out``, the first call per input key keeps a launch plan and later
    calls with the same key replay it (``kernels/plans.py``).
    """
    plan_key = None
    if config is None and out is None:
        plan_key = plans.forward_plan_key(x, weight, bias, structure, rotated_weight)
        plan = launch_plans.get(plan_key)
        if plan is not None:
            return plan(x, weight, bias, rotated_weight)
        plan_key = plan_key if x.dim() == 2 else None
    _check_x(x, structure)
    m, k = x.shape
    n, k_red = structure.weight_shape
    if plan_key is not None and _copied_below(x, weight, bias):
        plan_key = None
    _check_tensor("weight", weight, structure.weight_shape, x.dtype, x.device)
    if rotated_weight is not None:
        _check_tensor("rotated_weight", rotated_weight, structure.weight_shape, x.dtype, x.device)
    if bias is not None:
        _check_tensor("bias", bias, (n,), x.dtype, x.device)
        bias = bias.contiguous()
    y = _check_out(out, (m, n), x)
    if m == 0:
        return y
    x, weight = row_major(x), row_major(weight)

    recorded: list = []

    def run(cfg: LaunchConfig) -> None:
        if cfg.algorithm == "resident":
            _resident_forward(x, weight, bias, y, structure, cfg)
            return
        if cfg.algorithm == "gemv":
            launch_kernel(
                _ss1_gemv_forward_kernel, (cdiv(n, cfg.tile_n), cdiv(m, cfg.tile_m)),
                x, weight, bias if bias is not None else y, y, m, n, k, k_red,
                x.stride(0), weight.stride(0), y.stride(0), **_structure_args(structure),
                HAS_BIAS=bias is not None, ROWS=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k,
                BLOCK_GATHER=cfg.block_gather and structure.redn_factor > 1, **cfg.compiler_options(),
            )
            return
        if cfg.algorithm == "sketch_gemm":
            if rotated_weight is None:
                xs, wr = sketch_and_rotate(x, weight, structure, cfg)
            else:
                xs, wr = sketch(x, structure, cfg), rotated_weight
            if bias is None:
                torch.mm(xs, wr.t(), out=y)
            else:
                torch.addmm(bias, xs, wr.t(), out=y)
            return
        split = cfg.split_k
        partial = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else y
        grid = (cdiv(m, cfg.tile_m) * cdiv(n, cfg.tile_n), split)
        launch_kernel(
            _ss1_forward_kernel, grid,
            x, weight, bias if bias is not None else y, y, partial,
            m, n, k, k_red,
            x.stride(0), weight.stride(0), y.stride(0),
            **_structure_args(structure),
            HAS_BIAS=bias is not None,
            TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k, GROUP_M=cfg.group_m,
            SPLIT_K=split, DOT_PRECISION=_dot_precision(x.dtype),
            **cfg.compiler_options(),
        )
        if split > 1:  # the partials' sum in a fixed order, then bias and the cast: one launch
            launch_kernel(
                _split_k_sum_kernel, (cdiv(m * n, SPLIT_K_SUM_BLOCK),),
                partial, bias if bias is not None else y, y, m, n, y.stride(0),
                SPLIT=split, HAS_BIAS=bias is not None, BLOCK=SPLIT_K_SUM_BLOCK, num_warps=4,
            )

    kind = "forward" if rotated_weight is None else "forward_rotated"
    _launch(kind, m, structure, x.dtype, x.device, config, plans.recording(run, plan_key, recorded))
    if recorded:
        plans.keep_plan(plan_key, plans.forward_plan(*recorded, m, n, k_red))
    return y


def ss1_grad_input(grad_out: torch.Tensor, weight: torch.Tensor, structure: SS1Structure,
                   config: LaunchConfig | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``dx: (M, K)`` from ``grad_out: (M, N)`` and ``weight: (N, K_red)``."""
    if grad_out.dim() != 2:
        raise ValueError(f"grad_out must be 2-D (M, N), got shape {tuple(grad_out.shape)}")
    m, n = _check_grad_out(grad_out, structure)
    k, k_red = structure.in_features, structure.k_red
    _check_tensor("weight", weight, structure.weight_shape, grad_out.dtype, grad_out.device)
    dx = _check_out(out, (m, k), grad_out)
    if m == 0:
        return dx
    grad_out, weight = row_major(grad_out), row_major(weight)

    def launch(cfg: LaunchConfig) -> None:
        if cfg.algorithm == "sketch_gemm":
            unsketch(torch.mm(grad_out, rotate_weight(weight, structure)), structure, cfg, dx)
            return
        grid = (cdiv(m, cfg.tile_m) * cdiv(k_red, cfg.tile_k),)
        launch_kernel(
            _ss1_grad_input_kernel, grid,
            grad_out, weight, dx,
            m, n, k, k_red,
            grad_out.stride(0), weight.stride(0), dx.stride(0),
            **_structure_args(structure),
            TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k, GROUP_M=cfg.group_m,
            DOT_PRECISION=_dot_precision(grad_out.dtype),
            **cfg.compiler_options(),
        )

    _launch("grad_input", m, structure, grad_out.dtype, grad_out.device, config, launch)
    return dx


def ss1_grad_weight(grad_out: torch.Tensor, x: torch.Tensor, structure: SS1Structure,
                    config: LaunchConfig | None = None, deterministic: bool | None = None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """``dW: (N, K_red)`` from ``grad_out: (M, N)`` and ``x: (M, K)``, accumulated in fp32.

    With ``split_m > 1`` the M reduction is split over programs. Deterministic mode (the default
    when ``torch.are_deterministic_algorithms_enabled()``) writes one fp32 partial per split and
    sums them in a fixed order; otherwise the partials meet through fp32 atomics. Never fp16
    atomics.
    """
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    if grad_out.dim() != 2 or x.dim() != 2:
        raise ValueError(
            f"grad_out and x must be 2-D, got {tuple(grad_out.shape)} and {tuple(x.shape)}"
        )
    m, n = _check_grad_out(grad_out, structure)
    k, k_red = structure.in_features, structure.k_red
    _check_tensor("x", x, (m, k), grad_out.dtype, grad_out.device)
    dw = _check_out(out, structure.weight_shape, grad_out)
    if m == 0:
        return dw.zero_()
    grad_out, x = row_major(grad_out), row_major(x)
    result: dict[str, torch.Tensor] = {}

    def launch(cfg: LaunchConfig) -> None:
        if cfg.algorithm == "sketch_gemm":
            _weight_grad_of_sketch(grad_out, sketch(x, structure, cfg), structure, dw)
            result["target"] = dw
            return
        rows_per_split = cdiv(cdiv(m, cfg.split_m), cfg.tile_m) * cfg.tile_m
        splits = cdiv(m, rows_per_split)
        atomic = splits > 1 and not deterministic
        if splits == 1:
            target = dw
        elif atomic:
            target = torch.zeros((n, k_red), dtype=torch.float32, device=x.device)
        else:
            target = torch.empty((splits, n, k_red), dtype=torch.float32, device=x.device)
        grid = (cdiv(n, cfg.tile_n) * cdiv(k_red, cfg.tile_k), splits)
        launch_kernel(
            _ss1_grad_weight_kernel, grid,
            grad_out, x, target,
            m, n, k, k_red, rows_per_split,
            grad_out.stride(0), x.stride(0), target.stride(0) if target.dim() == 3 else 0, target.stride(-2),
            **_structure_args(structure),
            TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k, GROUP_M=cfg.group_m,
            ATOMIC=atomic, DOT_PRECISION=_dot_precision(grad_out.dtype),
            **cfg.compiler_options(),
        )
        result["target"] = target

    _launch("grad_weight", m, structure, grad_out.dtype, grad_out.device, config, launch)
    target = result["target"]
    if target is not dw:
        dw.copy_(target if target.dim() == 2 else target.sum(dim=0))
    return dw


def _weight_grad_of_sketch(grad_out: torch.Tensor, xs: torch.Tensor, structure: SS1Structure,
                           dw: torch.Tensor) -> torch.Tensor:
    """``dw = unrotate(grad_out.T @ xs)``: cuBLAS accumulates the M reduction in fp32; the unrotate
    is an exact permutation."""
    return rotate_weight(torch.mm(grad_out.t(), xs), structure, inverse=True, out=dw)
