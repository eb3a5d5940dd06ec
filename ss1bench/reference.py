"""Pure-torch SS1 op: the CPU path and the oracle every kernel test compares against.

Same signatures as the Triton launchers (``kernels/ss1.py``): 2-D inputs, a ``SS1Structure``.
Everything is vectorized (gathers and one matrix product); nothing loops over blocks.

Shapes: ``x: (M, K)``, ``weight: (N, K_red)``, ``bias: (N,)``, ``y: (M, N)``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from .structure import SS1Structure

_INDEX_CACHE_SIZE = 256


def _tracing() -> bool:
    """A trace is running: Dynamo, or a dispatch mode such as AOTAutograd's fake and functional
    tensors when it traces a backward (``torch.compiler.is_compiling()`` is False there)."""
    return torch.compiler.is_compiling() or is_in_torch_dispatch_mode()


def _cached(build):
    """``build(structure, device)`` cached per (structure, device) in eager calls. In a trace the
    index is built in the graph instead (from aranges and constants: Inductor folds it into the
    gathers' index math): a cached real tensor has no place in a graph of fake tensors, and a
    tensor built during a trace must never be cached for eager calls."""
    cached = functools.lru_cache(maxsize=_INDEX_CACHE_SIZE)(build)

    @functools.wraps(build)
    def index(structure: SS1Structure, device: torch.device) -> torch.Tensor:
        if _tracing():
            return build(structure, device)
        return cached(structure, device)

    index.cache_clear = cached.cache_clear
    return index


@_cached
def _sketch_index(structure: SS1Structure, device: torch.device) -> torch.Tensor:
    return structure.sketch_index(device)


@_cached
def _unsketch_source(structure: SS1Structure, device: torch.device) -> torch.Tensor:
    """Sketch column each dense column reads: ``(K,)``."""
    index = _sketch_index(structure, device)  # (K_red, c): dense col of (kk, r)
    source = torch.empty(_padded_columns(structure), dtype=torch.int64, device=device)
    kk = torch.arange(structure.k_red, device=device)[:, None].expand_as(index)
    source[index.reshape(-1)] = kk.reshape(-1)
    return source[: structure.in_features].clone()


@_cached
def _rotation_columns(structure: SS1Structure, device: torch.device) -> torch.Tensor:
    """``(N, 1, BK)``: :meth:`SS1Structure.rotation_columns`, shaped to broadcast over groups."""
    return structure.rotation_columns(device)[:, None, :]


@_cached
def _inverse_rotation_columns(structure: SS1Structure, device: torch.device) -> torch.Tensor:
    """``(N, 1, BK)``: the inverse rotation's columns (``rotation_columns(inverse=True)``)."""
    return structure.rotation_columns(device, inverse=True)[:, None, :]


def _grouped_gather(weight: torch.Tensor, structure: SS1Structure, columns: torch.Tensor) -> torch.Tensor:
    """``weight: (N, K_red)`` with each row's groups permuted by ``columns: (N, 1, BK)``."""
    shape = (structure.out_features, structure.num_groups, structure.block_k)
    return weight.reshape(shape).gather(2, columns.expand(shape)).view(structure.weight_shape)


def _padded_columns(structure: SS1Structure) -> int:
    return structure.num_groups * structure.redn_factor * structure.block_k


def sketch(x: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    """``xs: (M, K_red)``, ``xs[:, it*BK + t] = sum_r x[:, (it*c + r)*BK + (t + a(it, r)) mod BK]``.

    Columns past K count as zero. Differentiable.
    """
    pad = _padded_columns(structure) - structure.in_features
    x_padded = F.pad(x, (0, pad))
    index = _sketch_index(structure, x.device)  # (K_red, c)
    gathered = x_padded[:, index]  # (M, K_red, c)
    return gathered.sum(dim=-1)


def unsketch(grad_sketch: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    """Adjoint of :func:`sketch`: ``(M, K_red) -> (M, K)``.

    Every dense column reads exactly one sketch column, so this is a gather, not a scatter.
    """
    return grad_sketch[:, _unsketch_source(structure, grad_sketch.device)]


def rotate_weight(weight: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    """``Wr: (N, K_red)``, row ``n`` of each group rotated by ``d(n // BN)`` (differentiable)."""
    return _grouped_gather(weight, structure, _rotation_columns(structure, weight.device))


def unrotate_weight(grad_rotated: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    """Adjoint (and inverse) of :func:`rotate_weight`: a permutation inside each row, as a gather."""
    return _grouped_gather(grad_rotated, structure, _inverse_rotation_columns(structure, grad_rotated.device))


def ss1_forward_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, structure: SS1Structure,
    rotated_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y = x @ dense_weight(weight).T + bias`` computed in the sketch form. Differentiable.

    ``rotated_weight`` (``rotate_weight(weight, structure)`` held by the caller) replaces the
    rotation when given; the result is then differentiable in ``x`` and ``bias`` only.
    """
    rotated = rotate_weight(weight, structure) if rotated_weight is None else rotated_weight
    return F.linear(sketch(x, structure), rotated, bias)


def ss1_grad_input_reference(
    grad_out: torch.Tensor, weight: torch.Tensor, structure: SS1Structure
) -> torch.Tensor:
    """``dx: (M, K)`` from ``grad_out: (M, N)``."""
    return unsketch(grad_out @ rotate_weight(weight, structure), structure)


def ss1_grad_weight_reference(
    grad_out: torch.Tensor, x: torch.Tensor, structure: SS1Structure
) -> torch.Tensor:
    """``dWc: (N, K_red)`` from ``grad_out: (M, N)`` and ``x: (M, K)``."""
    return unrotate_weight(grad_out.t() @ sketch(x, structure), structure)
