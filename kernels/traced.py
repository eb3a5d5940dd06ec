"""The SS1 passes as ``torch.library.triton_op``s: what a ``torch.compile``d SSL call runs.

Under ``torch.compile`` an SS1 linear layer is ``F.linear(xs, wr, bias)`` with
``(xs, wr) = ss1bench::sketch_rotate(x, weight)``: the product is an ordinary aten matmul that
Inductor schedules, hands to cuBLAS or its own templates and fuses bias and epilogues into, and
the memory-bound passes are Triton kernels that Inductor sees and launches from its generated
code (no Python runs per call). The backward is traced too: the matmul's gradients come from
aten (with the forward's ``xs`` and ``wr`` saved, so the weight gradient never sketches x
again), then ``unsketch`` (a kernel of ours) and the inverse rotation (an aten gather whose index
Inductor computes in place, fused with the weight gradient's cast under autocast).

The op bodies run once, at trace time, on fake tensors: the structure and the launch config
(the tuning database's ``forward_rotated`` sketch tile for the traced M, see
:func:`~ss1bench.kernels.ss1.sketch_pass_config`) are decided there and baked into the graph.

Ops (shapes: x (M, K), weight (N, K_red)); the structure travels as plain ints
``(in_features, out_features, redn_factor, seed, block_k, block_n)``:

- ``sketch_rotate(x, weight, ...) -> (xs: (M, K_red), wr: (N, K_red))``, one launch;
- ``unsketch(dxs: (M, K_red), ...) -> dx: (M, K)``.
"""

from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from ss1bench import reference
from ss1bench.structure import SS1Structure, cached_structure

from . import ss1


def _launch(kernel, grid, *args, **kwargs) -> None:
    """The pass launchers' ``launch``: the kernel as a graph node Inductor launches itself."""
    wrap_triton(kernel)[grid](*args, **kwargs)


def _structure(in_features: int, out_features: int, redn_factor: int, seed: int, block_k: int,
               block_n: int) -> SS1Structure:
    return cached_structure(in_features, out_features, redn_factor, seed, block_k, block_n)


def _size_hint(size) -> int:
    """A traced size as an int for choosing a launch config, without adding a guard (a dynamic
    M is looked up at the size it was first traced with)."""
    if isinstance(size, int):
        return size
    from torch.fx.experimental.symbolic_shapes import hint_int

    return hint_int(size, fallback=ss1.PASS_CONFIG_FALLBACK_M)


@triton_op("ss1bench::sketch_rotate", mutates_args=())
def sketch_rotate(x: torch.Tensor, weight: torch.Tensor, in_features: int, out_features: int, redn_factor: int,
                  seed: int, block_k: int, block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    structure = _structure(in_features, out_features, redn_factor, seed, block_k, block_n)
    return ss1.sketch_rotate_pass(x, weight, structure, _size_hint(x.shape[0]), launch=_launch)


@triton_op("ss1bench::unsketch", mutates_args=())
def unsketch(grad_sketch: torch.Tensor, in_features: int, out_features: int, redn_factor: int, seed: int,
             block_k: int, block_n: int) -> torch.Tensor:
    structure = _structure(in_features, out_features, redn_factor, seed, block_k, block_n)
    return ss1.unsketch_pass(ss1.row_major(grad_sketch), structure, _size_hint(grad_sketch.shape[0]), launch=_launch)


def _setup_context(ctx, inputs, output) -> None:
    ctx.structure_args = tuple(inputs[2:])


def _sketch_rotate_backward(ctx, grad_sketch, grad_rotated):
    args = ctx.structure_args
    grad_x = grad_w = None
    if grad_sketch is not None and ctx.needs_input_grad[0]:
        grad_x = unsketch(grad_sketch, *args)
    if grad_rotated is not None and ctx.needs_input_grad[1]:
        # aten's gather, not a kernel of ours: Inductor computes its index in place and fuses it
        # with what follows (under autocast, the weight gradient's cast back to float32)
        grad_w = reference.unrotate_weight(grad_rotated, _structure(*args))
    return (grad_x, grad_w) + (None,) * len(args)


sketch_rotate.register_autograd(_sketch_rotate_backward, setup_context=_setup_context)

