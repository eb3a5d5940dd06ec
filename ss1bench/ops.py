"""The SS1 linear op: ``torch.library`` custom ops with autograd and fake kernels.

``ss1_linear(x, weight, bias, structure)`` is the one entry point. CUDA tensors run the Triton
kernels (``ss1bench.kernels.ss1``), everything else runs the pure-torch reference. The ops are
opaque to ``torch.compile`` (fake kernels give output shapes) and capture into CUDA graphs (no
host syncs, allocations through the caching allocator).

Structure travels as plain ints ``(in_features, redn_factor, seed, block_k, block_n)``;
``out_features`` is the weight's first dimension.
"""

from __future__ import annotations

import os

import torch

from . import reference
from .structure import SS1Structure, cached_structure

_REFERENCE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _structure(weight: torch.Tensor, in_features: int, redn_factor: int, seed: int, block_k: int,
               block_n: int) -> SS1Structure:
    return cached_structure(in_features, weight.shape[0], redn_factor, seed, block_k, block_n)


def _use_kernels(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cuda"


def _check_reference_inputs(structure: SS1Structure, **tensors: torch.Tensor | None) -> None:
    first = next(t for t in tensors.values() if t is not None)
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if tensor.dtype not in _REFERENCE_DTYPES:
            raise TypeError(f"{name} has unsupported dtype {tensor.dtype}")
        if tensor.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but the other inputs are {first.dtype}")
        if tensor.device != first.device:
            raise ValueError(f"{name} is on {tensor.device} but the other inputs are on {first.device}")
    for name in ("weight", "rotated_weight"):
        if tensors.get(name) is not None:
            structure.check_weight(tensors[name], name)


# ---- forward --------------------------------------------------------------------------------


def _kernels():
    """``ss1bench.kernels.ss1``, imported on first use (Triton loads only when a GPU path runs)."""
    global _KERNELS
    if _KERNELS is None:
        from .kernels import ss1

        _KERNELS = ss1
    return _KERNELS


_KERNELS = None


def _forward_impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  structure: SS1Structure, rotated_weight: torch.Tensor | None = None) -> torch.Tensor:
    if _use_kernels(x):
        return _kernels().ss1_forward(x, weight, bias, structure, rotated_weight=rotated_weight)
    _check_reference_inputs(structure, x=x, weight=weight, bias=bias, rotated_weight=rotated_weight)
    return reference.ss1_forward_reference(x, weight, bias, structure, rotated_weight)


def rotate_weight(weight: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    """``Wr: (N, K_red)``: each row of ``weight`` rotated inside its groups by its N block's shift
    (the operand the sketch form multiplies by; see :mod:`ss1bench.structure`). A new tensor, no
    autograd history: the Triton kernel on CUDA, the reference elsewhere."""
    structure.check_weight(weight)
    with torch.no_grad():
        if _use_kernels(weight):
            return _kernels().rotate_weight(weight.contiguous(), structure)
        return reference.rotate_weight(weight.contiguous(), structure)


def _grad_input_impl(grad_out: torch.Tensor, weight: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    if _use_kernels(grad_out):
        return _kernels().ss1_grad_input(grad_out, weight, structure)
    return reference.ss1_grad_input_reference(grad_out, weight, structure)


def _grad_weight_impl(grad_out: torch.Tensor, x: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    if _use_kernels(grad_out):
        return _kernels().ss1_grad_weight(grad_out, x, structure)
    return reference.ss1_grad_weight_reference(grad_out, x, structure)


@torch.library.custom_op("ss1bench::ss1_linear", mutates_args=())
def _ss1_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   in_features: int, redn_factor: int, seed: int, block_k: int,
                   block_n: int) -> torch.Tensor:
    return _forward_impl(x, weight, bias, _structure(weight, in_features, redn_factor, seed, block_k, block_n))


@_ss1_linear_op.register_fake
def _(x, weight, bias, in_features, redn_factor, seed, block_k, block_n):
    return x.new_empty((x.shape[0], weight.shape[0]))


# ---- backward ops ---------------------------------------------------------------------------


@torch.library.custom_op("ss1bench::ss1_grad_input", mutates_args=())
def _ss1_grad_input_op(grad_out: torch.Tensor, weight: torch.Tensor, in_features: int,
                       redn_factor: int, seed: int, block_k: int, block_n: int) -> torch.Tensor:
    return _grad_input_impl(grad_out, weight, _structure(weight, in_features, redn_factor, seed, block_k, block_n))


@_ss1_grad_input_op.register_fake
def _(grad_out, weight, in_features, redn_factor, seed, block_k, block_n):
    return grad_out.new_empty((grad_out.shape[0], in_features))


@torch.library.custom_op("ss1bench::ss1_grad_weight", mutates_args=())
def _ss1_grad_weight_op(grad_out: torch.Tensor, x: torch.Tensor, weight_rows: int, in_features: int,
                        redn_factor: int, seed: int, block_k: int, block_n: int) -> torch.Tensor:
    structure = cached_structure(in_features, weight_rows, redn_factor, seed, block_k, block_n)
    return _grad_weight_impl(grad_out, x, structure)


@_ss1_grad_weight_op.register_fake
def _(grad_out, x, weight_rows, in_features, redn_factor, seed, block_k, block_n):
    # Plain arithmetic: building an SS1Structure here would draw hash numbers under fake mode.
    k_red = -(-in_features // (redn_factor * block_k)) * block_k
    return grad_out.new_empty((weight_rows, k_red))


# ---- autograd -------------------------------------------------------------------------------


def _save_inputs(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Keep only what the requested gradients need (x, or the eager forward's sketch of it, for dW;
    weight for dx)."""
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x if ctx.needs_input_grad[1] else None,
                          weight if ctx.needs_input_grad[0] else None)


#: Rows from which an fp16/bf16 bias gradient on CUDA is one cuBLAS product with a ones vector
#: instead of ``grad_out.sum(0)``: torch's column reduction read dy at ~0.85 TB/s on an H200 (30 us
#: of a 132 us SS1 step at 16384 x 3072 x 768, c = 16). Both accumulate in fp32. Under
#: ``torch.use_deterministic_algorithms(True)`` the sum stays (torch asks for a cuBLAS workspace
#: setting before it runs a cuBLAS product there).
BIAS_GRAD_PRODUCT_ROWS = 1024


def _bias_grad(grad_out: torch.Tensor) -> torch.Tensor:
    """``grad_out.sum(0)`` (``(N,)``, grad_out's dtype)."""
    rows = grad_out.shape[0]
    if (grad_out.is_cuda and rows >= BIAS_GRAD_PRODUCT_ROWS and grad_out.dtype in (torch.float16, torch.bfloat16)
            and not torch.are_deterministic_algorithms_enabled()):
        return torch.mv(grad_out.t(), torch.ones(rows, dtype=grad_out.dtype, device=grad_out.device))
    return grad_out.sum(dim=0)


def _gradients(ctx, grad_out: torch.Tensor, grad_input, grad_weight) -> tuple:
    """``(dx, dW, db)``; ``grad_input(grad_out, weight)`` and ``grad_weight(grad_out, x)`` pick
    the path (custom ops when traced, direct launchers in eager mode)."""
    x, weight = ctx.saved_tensors
    grad_x = grad_input(grad_out, weight) if ctx.needs_input_grad[0] else None
    grad_w = grad_weight(grad_out, x) if ctx.needs_input_grad[1] else None
    grad_b = _bias_grad(grad_out) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b


def _setup_context(ctx, inputs, output):
    x, weight, bias, *structure_args = inputs
    ctx.structure_args = tuple(structure_args)
    _save_inputs(ctx, x, weight, bias)


def _backward(ctx, grad_out):
    args = ctx.structure_args
    grads = _gradients(ctx, grad_out,
                       lambda g, weight: _ss1_grad_input_op(g, weight, *args),
                       lambda g, x: _ss1_grad_weight_op(g, x, g.shape[1], *args))
    return (*grads, None, None, None, None, None)


torch.library.register_autograd("ss1bench::ss1_linear", _backward, setup_context=_setup_context)


#: Whether the eager autograd forward keeps the sketch of x it made (``sketch_gemm``) for the
#: weight gradient instead of x, where that gradient's config is ``sketch_gemm`` too: the backward
#: then skips its own pass over x, and the saved activation is c times smaller than x.
#: ``SS1BENCH_SAVE_SKETCH=0``: always keep x (read at import).
SAVE_SKETCH = os.environ.get("SS1BENCH_SAVE_SKETCH", "1") not in ("", "0")


def _sketch_serves_grad_weight(ctx, x: torch.Tensor, structure: SS1Structure) -> bool:
    """Whether the forward should hand back its sketch of x for the weight gradient (see
    :data:`SAVE_SKETCH`): the weight needs a gradient and its config on the kernels is ``sketch_gemm``."""
    return (SAVE_SKETCH and ctx.needs_input_grad[1] and _use_kernels(x)
            and _kernels().grad_weight_takes_sketch(x.shape[0], structure, x.dtype, x.device))


class _EagerSS1Linear(torch.autograd.Function):
    """Eager-mode twin of the custom op: same kernels, same backward, without the
    ``torch.library`` dispatch, which cost ~80 us per call on an H200 host (more than the
    kernels of a decode-sized layer). ``torch.compile`` traces the custom op instead.

    Unlike the custom op it may save the forward's sketch of x rather than x (:data:`SAVE_SKETCH`).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, structure, rotated_weight):
        ctx.structure = structure
        xs = None  # the sketch of x, where the forward made one that the weight gradient can use
        if _sketch_serves_grad_weight(ctx, x, structure):
            y, xs = _kernels().ss1_forward(x, weight, bias, structure, rotated_weight=rotated_weight,
                                           return_sketch=True)
        else:
            y = _forward_impl(x, weight, bias, structure, rotated_weight)
        ctx.saved_sketch = xs is not None
        _save_inputs(ctx, x if xs is None else xs, weight, bias)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        structure = ctx.structure
        if ctx.saved_sketch:
            def grad_weight(g, xs):
                return _kernels().ss1_grad_weight_from_sketch(g, xs, structure)
        else:
            def grad_weight(g, x):
                return _grad_weight_impl(g, x, structure)
        grads = _gradients(ctx, grad_out, lambda g, weight: _grad_input_impl(g, weight, structure), grad_weight)
        return (*grads, None, None)


# ---- public entry point ---------------------------------------------------------------------


def _needs_grad(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The call must record autograd history (grad mode on and an input that requires grad)."""
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))


def ss1_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               structure: SS1Structure, rotated_weight: torch.Tensor | None = None) -> torch.Tensor:
    """SS1 linear map: ``y = x @ structure.dense_weight(weight).T + bias``.

    Args:
        x: ``(..., K)``, any number of leading dims, any strides.
        weight: compressed weight ``(N, K_red)``.
        bias: ``(N,)`` or None.
        structure: the layer's :class:`SS1Structure`.
        rotated_weight: optional :func:`rotate_weight` of ``weight`` held by the caller (the
            ``SSL`` layer's rotated-weight cache): the forward multiplies by it instead of rotating
            the weight on every call (on CUDA, ``sketch_gemm`` launches; on CPU, the reference).
            It is trusted to match ``weight`` (only its shape is checked; no gradient flows
            through it); ``torch.compile`` traces ignore it.

    Returns:
        ``(..., N)`` in ``x``'s dtype. Differentiable in ``x``, ``weight`` and ``bias``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    compiling = torch.compiler.is_compiling()
    needs_grad = None  # worked out once for the plan lookup and the autograd choice below
    if not compiling:
        try:
            needs_grad = _needs_grad(x, weight, bias)
            if not needs_grad and x.is_cuda and x.dim() >= 2:
                # the eager inference path's host cost: inputs whose key an earlier call checked
                x2d = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
                y = _kernels().forward_with_plan(x2d, weight, bias, structure, rotated_weight)
                if y is not None:
                    return y if x.dim() == 2 else y.view(*x.shape[:-1], y.shape[-1])
        except AttributeError:  # not tensors: the checks below say what is wrong
            pass
    if x.dim() == 0 or x.shape[-1] != structure.in_features:
        raise ValueError(
            f"x must have shape (..., {structure.in_features}) for in_features={structure.in_features}, "
            f"got {tuple(x.shape)}"
        )
    structure.check_weight(weight)
    if rotated_weight is not None:
        structure.check_weight(rotated_weight, "rotated_weight")
    if bias is not None and tuple(bias.shape) != (structure.out_features,):
        raise ValueError(f"bias must have shape ({structure.out_features},), got {tuple(bias.shape)}")
    flat = x.dim() == 2
    leading = x.shape[:-1]
    x2d = x if flat else x.reshape(-1, structure.in_features)
    if compiling:
        y = _ss1_linear_op(x2d, weight, bias, structure.in_features, structure.redn_factor, structure.seed,
                           structure.block_k, structure.block_n)
    elif needs_grad if needs_grad is not None else _needs_grad(x2d, weight, bias):
        y = _EagerSS1Linear.apply(x2d, weight, bias, structure, rotated_weight)
    else:
        y = _forward_impl(x2d, weight, bias, structure, rotated_weight)
    return y if flat else y.reshape(*leading, structure.out_features)
