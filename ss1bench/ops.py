"""The SS1 linear op: ``ss1_linear(x, weight, bias, structure)``, the one entry point.

Every call computes ``y = sketch(x) @ rotate(weight).T + bias`` (see :mod:`ss1bench.structure`).
Which code does it depends on what the call needs:

- **inference, eager** (no autograd history recorded): :func:`ss1bench.kernels.ss1.ss1_forward`,
  the launch config's algorithm (fused, resident, gemv or sketch + cuBLAS) from the tuning
  database for this M; it may multiply by the caller's cached rotated weight;
- **training, eager, and every ``torch.compile`` trace**: ``F.linear(xs, wr, bias)`` with
  ``(xs, wr) = (sketch(x), rotate(weight))`` made in one memory-bound launch. Eagerly the whole
  call is one autograd node (:class:`_SketchLinear`: aten's products and bias sum around the
  sketch launches); traced, the ``ss1bench::sketch_rotate`` triton op (``kernels/traced.py``)
  and ``F.linear``, which Inductor schedules and fuses as it does ``nn.Linear``'s. The backward
  adds the two permutation passes to the product's gradients.

CPU tensors run the pure-torch reference (:mod:`ss1bench.reference`) on every path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import reference
from .structure import SS1Structure

_REFERENCE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _use_kernels(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cuda"


def _check_reference_inputs(structure: SS1Structure, same_dtype: bool = True, **tensors: torch.Tensor | None) -> None:
    first = next(t for t in tensors.values() if t is not None)
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if tensor.dtype not in _REFERENCE_DTYPES:
            raise TypeError(f"{name} has unsupported dtype {tensor.dtype}")
        if same_dtype and tensor.dtype != first.dtype:
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
        from .kernels import ss1, traced  # noqa: F401  (traced registers torch.ops.ss1bench)

        _KERNELS = ss1
    return _KERNELS


_KERNELS = None


def _register_traced_ops():
    """Registers ``torch.ops.ss1bench`` (``kernels/traced.py``) from inside a ``torch.compile``
    trace and returns that module. A plain import, which Dynamo runs at trace time without a guard:
    reading ``_KERNELS``, which the first call sets, would fail that guard on the next call and
    compile the whole model a second time."""
    from .kernels import traced

    return traced


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


# ---- the sketch form: F.linear(sketch(x), rotate(weight), bias) -------------------------------


class _SketchLinear(torch.autograd.Function):
    """Eager ``F.linear(sketch(x), rotate(weight), bias)`` as one autograd node.

    Forward: ``(xs, wr)`` in one sketch-and-rotate launch (under autocast also the bias's cast),
    then aten's product. Backward: aten's two products and the bias sum, then unsketch and
    unrotate in one launch (or the one of them a gradient needs). The passes replay launch plans
    after the first call per input key (a ``torch.library`` op would cost tens of microseconds
    more per eager call). One node rather than the three or four that a sketch node followed by
    ``F.linear`` records (the passes', addmm's, the transpose's, and under autocast the bias
    cast's): the autograd engine's cost per node was most of an eager step's host time
    (``docs/perf-notes.md``, v18). It saves what the product's own node would: ``xs`` for the
    weight gradient, ``wr`` for the input gradient. The bias gradient is summed in the bias's
    dtype (float32 under autocast). ``torch.compile`` traces the ``ss1bench`` triton ops and
    ``F.linear`` instead (``kernels/traced.py``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, structure, dtype, out_dtype):
        ctx.input_dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        if _casts_bias(bias, dtype):  # autocast: the bias cast too
            xs, rotated, bias = _kernels().sketch_rotate_bias_planned(x, weight, bias, structure, dtype)
        else:
            xs, rotated = _kernels().sketch_and_rotate_planned(x, weight, structure, out_dtype)
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(xs if needs_weight else None, rotated if needs_x else None)
        ctx.structure = structure
        ctx.product_dtype = xs.dtype
        ctx.set_materialize_grads(False)
        return F.linear(xs, rotated, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        if grad_y is None:
            return None, None, None, None, None, None
        kernels, structure = _kernels(), ctx.structure
        xs, rotated = ctx.saved_tensors
        if grad_y.dtype != ctx.product_dtype:  # an autocast region the caller gave no dtype for
            grad_y = grad_y.to(ctx.product_dtype)
        x_dtype, weight_dtype, bias_dtype = ctx.input_dtypes
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        grad_sketch = grad_y.mm(rotated) if needs_x else None
        grad_rotated = grad_y.t().mm(xs) if needs_weight else None
        if needs_x and needs_weight:  # both passes in one launch
            grad_x, grad_w = kernels.unsketch_unrotate_planned(grad_sketch, grad_rotated, structure,
                                                               _cast_to(x_dtype, grad_sketch),
                                                               _cast_to(weight_dtype, grad_rotated))
        elif needs_x:
            grad_x = kernels.unsketch_planned(grad_sketch, structure, _cast_to(x_dtype, grad_sketch))
        elif needs_weight:
            grad_w = kernels.unrotate_planned(grad_rotated, structure, _cast_to(weight_dtype, grad_rotated))
        if needs_bias:
            grad_b = grad_y.sum(0, dtype=bias_dtype)
        return grad_x, grad_w, grad_b, None, None, None


def _casts_bias(bias: torch.Tensor | None, dtype: torch.dtype | None) -> bool:
    """The sketch pass also writes the bias in ``dtype`` (autocast's), in its one launch."""
    return bias is not None and dtype is not None and bias.dtype != dtype


def _cast_to(dtype: torch.dtype, tensor: torch.Tensor) -> torch.dtype | None:
    """A pass's ``out_dtype``: ``dtype``, or None where ``tensor`` already has it."""
    return None if tensor.dtype == dtype else dtype


def _sketch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   structure: SS1Structure, dtype: torch.dtype | None, compiling: bool) -> torch.Tensor:
    """``F.linear(sketch(x), rotate(weight), bias)`` for ``x: (M, K)``: the path of every call that
    records autograd history and of every ``torch.compile`` trace. The product and its gradients
    are aten's (cuBLAS, or Inductor's choice when compiled); autograd keeps ``xs`` (M x K_red, c
    times smaller than x) and ``wr`` for them. With ``dtype`` (autocast's) the eager sketch pass
    writes ``xs`` and ``wr`` in it, in place of the casts of x and the weight autocast would make,
    and the backward passes return each gradient in its input's dtype. A ``torch.compile`` trace
    casts x first: Inductor fuses that cast into the kernel that makes x (the layer norm before a
    projection; a compiled GPT-2 training step with x's cast folded into the sketch pass instead
    ran 1.4x slower, ``docs/perf-notes.md`` v14), and the traced op casts the weight and the bias
    (``kernels/traced.py``). A trace of inference (no grad) for Inductor with parameter freezing
    sketches x alone and rotates the weight with an op that freezing folds into a constant.
    ``compiling`` is the caller's ``torch.compiler.is_compiling()``, read once per call."""
    out_dtype = None if dtype is None or dtype == x.dtype == weight.dtype else dtype
    if _use_kernels(x) and not compiling:
        return _SketchLinear.apply(x, weight, bias, structure, dtype, out_dtype)
    if _use_kernels(x):
        return _traced_sketch_linear(x, weight, bias, structure, dtype, out_dtype)
    if bias is not None and dtype is not None:
        bias = bias.to(dtype)
    _check_reference_inputs(structure, same_dtype=out_dtype is None, x=x, weight=weight)
    xs, rotated = reference.sketch(x, structure), reference.rotate_weight(weight, structure)
    if out_dtype is not None:
        xs, rotated = xs.to(out_dtype), rotated.to(out_dtype)
    return F.linear(xs, rotated, bias)


def _traced_sketch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          structure: SS1Structure, dtype: torch.dtype | None,
                          out_dtype: torch.dtype | None) -> torch.Tensor:
    """:func:`_sketch_linear` in a ``torch.compile`` trace: the ``ss1bench`` triton ops and
    ``F.linear``. x is cast here (Inductor fuses that cast into the kernel that makes x); the
    weight and the bias are cast by the op, in its one launch."""
    if out_dtype is not None:
        x = x.to(out_dtype)
    traced = _register_traced_ops()
    key = traced.trace_key(x.device)
    if not torch.is_grad_enabled() and traced.inductor_freezes():
        # frozen inference: the rotation and the parameters' casts fold into constants at compile
        # time, only x is sketched
        xs = torch.ops.ss1bench.sketch(x, *structure.key, key)
        rotated = torch.ops.ss1bench.rotate_weight(weight if out_dtype is None else weight.to(out_dtype),
                                                   *structure.key)
        if bias is not None and dtype is not None:
            bias = bias.to(dtype)
    elif _casts_bias(bias, dtype):
        xs, rotated, bias = torch.ops.ss1bench.sketch_rotate_bias(x, weight, bias, *structure.key, dtype, key)
    else:  # no cast of the bias is due
        xs, rotated = torch.ops.ss1bench.sketch_rotate(x, weight, *structure.key, out_dtype, key)
    return F.linear(xs, rotated, bias)


# ---- public entry point ---------------------------------------------------------------------


def records_autograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The call must record autograd history (grad mode on and an input that requires grad)."""
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))


def ss1_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               structure: SS1Structure, rotated_weight: torch.Tensor | None = None, *,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """SS1 linear map: ``y = x @ structure.dense_weight(weight).T + bias``.

    Args:
        x: ``(..., K)``, any number of leading dims, any strides.
        weight: compressed weight ``(N, K_red)``.
        bias: ``(N,)`` or None.
        structure: the layer's :class:`SS1Structure`.
        rotated_weight: optional :func:`rotate_weight` of ``weight`` held by the caller (the
            ``SSL`` layer's rotated-weight cache): the forward multiplies by it instead of rotating
            the weight on every call (on CUDA, ``sketch_gemm`` launches; on CPU, the reference).
            It is trusted to match ``weight`` (only its shape is checked). Calls that record
            autograd history and ``torch.compile`` traces ignore it: they rotate the weight in
            the sketch's launch.
        dtype: compute dtype, as autocast gives ``nn.Linear`` (the ``SSL`` layer passes
            autocast's): the result is that of ``x``, ``weight`` and ``bias`` cast to it. Eager
            calls that record autograd history make no casts of x and the weight: the sketch pass
            reads them as they are and writes its two outputs in ``dtype``, and the backward
            returns each gradient in its input's dtype. ``torch.compile`` traces and inference
            calls cast the inputs (``rotated_weight`` must then have ``dtype``). None: the inputs
            share one dtype.

    Returns:
        ``(..., N)`` in ``dtype``, else ``x``'s dtype. Differentiable in ``x``, ``weight`` and ``bias``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype in _REFERENCE_DTYPES):
        raise TypeError(f"dtype must be a floating torch.dtype ({', '.join(map(str, _REFERENCE_DTYPES))}), "
                        f"got {dtype!r}")
    compiling = torch.compiler.is_compiling()
    needs_grad = None  # worked out once for the plan lookup and the autograd choice below
    if not compiling:
        try:
            needs_grad = records_autograd(x, weight, bias)
            if dtype is not None and not needs_grad:  # inference: the casts autocast would make
                x, weight = x.to(dtype), weight.to(dtype)
                bias = bias.to(dtype) if bias is not None else None
                dtype = None
            if not needs_grad and x.is_cuda and x.dim() >= 2:
                # the eager inference path's host cost: inputs whose key an earlier call checked
                x2d = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
                y = _kernels().plans.forward_with_plan(x2d, weight, bias, structure, rotated_weight)
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
    if compiling or (needs_grad if needs_grad is not None else records_autograd(x2d, weight, bias)):
        y = _sketch_linear(x2d, weight, bias, structure, dtype, compiling)
    else:
        y = _forward_impl(x2d, weight, bias, structure, rotated_weight)
    return y if flat else y.reshape(*leading, structure.out_features)
