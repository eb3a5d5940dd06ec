"""The SS1 passes as ``torch.library.triton_op``s: what a ``torch.compile``d SSL call runs.

Under ``torch.compile`` an SS1 linear layer is ``F.linear(xs, wr, bias)`` with
``(xs, wr) = ss1bench::sketch_rotate(x, weight)``: the product is an ordinary aten matmul that
Inductor schedules, hands to cuBLAS or its own templates and fuses bias and epilogues into, and
the memory-bound passes are Triton kernels that Inductor sees and launches from its generated
code (no Python runs per call). The backward is traced too: the matmul's gradients come from
aten (with the forward's ``xs`` and ``wr`` saved, so the weight gradient never sketches x
again), then ``unsketch_unrotate``, both inverse passes in one launch.

Under autocast the layer casts x before the op (Inductor fuses that cast into the kernel that
makes x, the layer norm before a projection) but not the float32 weight and bias: the op reads
them and writes the rotated weight and the bias in autocast's dtype, and the backward writes
their gradients back in float32. In a compiled training step that is, per SSL layer, two launches
in the forward (the weight's and the bias's casts) and one in the backward (a separate unrotation
and cast) fewer than with the casts and passes apart, and one launch per layer fewer than
``nn.Linear``'s compiled step: the compiled steps of small models spend more host time per launch
than GPU time (``docs/perf-notes.md``, v23).

The op bodies run once, at trace time, on fake tensors: the structure and the launch config
(the tuning database's ``forward_rotated`` sketch tile for the traced M, see
:func:`~ss1bench.kernels.ss1.sketch_pass_config`) are decided there and baked into the graph.

torch.compile's persistent caches (AOTAutograd's, Inductor's FX graph cache) key a graph on its ops
and their arguments: neither the Python of a custom op's backward nor the Triton kernels and
configs its body picks are part of that key. So every call of a forward op (``sketch_rotate``,
``sketch_rotate_bias``, ``sketch``) carries :func:`trace_key` as its last argument, a digest of
what a trace depends on beyond its inputs (this package's source and shipped databases, the
tuning database serving the device, any config override). After an upgrade or a ``ss1bench
tune`` the key changes and the cached graphs miss, instead of replaying the old kernels or tiles.

Ops (shapes: x (M, K), weight (N, K_red)); the structure travels as plain ints
``(in_features, out_features, redn_factor, seed, block_k, block_n)``:

- ``sketch_rotate(x, weight, ..., out_dtype=None, trace_key=0) -> (xs: (M, K_red), wr: (N, K_red))``,
  one launch, and ``sketch_rotate_bias(x, weight, bias, ..., out_dtype, trace_key=0) -> (xs, wr, b)``,
  which also casts the bias (N,) to ``out_dtype`` in that launch;
- ``sketch(x, ..., trace_key=0) -> xs: (M, K_red)`` and ``rotate_weight(weight, ...) -> wr``, for
  inference graphs whose parameters Inductor freezes (see :func:`inductor_freezes`): freezing runs
  the rotation once at compile time and keeps its result as a constant, so a call only sketches x
  and multiplies by the rotated weight;
- ``unsketch(dxs: (M, K_red), ...) -> dx: (M, K)``, and ``unsketch_unrotate(dxs, dwr, ..., weight_dtype)
  -> (dx, dw: (N, K_red))``, one launch.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
from torch.library import triton_op, wrap_triton

import ss1bench
from ss1bench import ops, reference
from ss1bench.structure import SS1Structure, cached_structure

from . import config, ss1


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
    try:  # torch >= 2.13 names it optimization_hint; 2.11 size_hint (its hint_int is deprecated)
        from torch.fx.experimental.symbolic_shapes import optimization_hint as hint
    except ImportError:
        from torch.fx.experimental.symbolic_shapes import size_hint as hint

    return hint(size, fallback=ss1.PASS_CONFIG_FALLBACK_M)


@functools.cache
def _code_digest() -> str:
    """sha256 of this package's Python source and shipped databases (file names relative to their
    folder, and contents), read once per process."""
    from ss1bench.tuning.db import shipped_dir

    # an installed package holds tuning_db/ inside its folder, an editable one beside it: each file
    # is named once, relative to the first folder (sorted) that holds it
    files: dict[Path, tuple[str, Path]] = {}
    for folder in sorted({Path(ss1bench.__file__).parent, Path(str(shipped_dir()))}):
        for path in folder.rglob("*"):
            if path.suffix in (".py", ".json"):
                files.setdefault(path.resolve(), (path.relative_to(folder).as_posix(), path))
    hasher = hashlib.sha256()
    for name, path in sorted(files.values()):
        hasher.update(f"{name}\0".encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


@torch.compiler.assume_constant_result
def trace_key(device: torch.device) -> int:
    """A 60-bit digest of what a trace on ``device`` depends on besides its inputs: this package's
    code (:func:`_code_digest`) and the launch configs' sources for the device
    (:func:`~ss1bench.kernels.config.config_sources`). Dynamo calls it once per trace and bakes the
    result into the graph as a constant (no guard), so torch.compile's cache keys change with it."""
    text = f"{_code_digest()}; {config.config_sources(device)}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


@triton_op("ss1bench::sketch_rotate", mutates_args=())
def sketch_rotate(x: torch.Tensor, weight: torch.Tensor, in_features: int, out_features: int, redn_factor: int,
                  seed: int, block_k: int, block_n: int, out_dtype: torch.dtype | None = None,
                  trace_key: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Both outputs in ``out_dtype`` (None: the inputs' one dtype). ``trace_key`` is not read: it
    is there to be part of the graph (see the module's notes)."""
    structure = _structure(in_features, out_features, redn_factor, seed, block_k, block_n)
    return ss1.sketch_rotate_pass(x, weight, structure, _size_hint(x.shape[0]), launch=_launch, out_dtype=out_dtype)


@triton_op("ss1bench::sketch_rotate_bias", mutates_args=())
def sketch_rotate_bias(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, in_features: int,
                       out_features: int, redn_factor: int, seed: int, block_k: int, block_n: int,
                       out_dtype: torch.dtype, trace_key: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sketch_rotate`` into ``out_dtype`` that also returns the bias cast to it, in the same
    launch (autocast's dtype, float32 parameters)."""
    structure = _structure(in_features, out_features, redn_factor, seed, block_k, block_n)
    return ss1.sketch_rotate_bias_pass(x, weight, bias, structure, _size_hint(x.shape[0]), out_dtype, launch=_launch)


@triton_op("ss1bench::sketch", mutates_args=())
def sketch(x: torch.Tensor, in_features: int, out_features: int, redn_factor: int, seed: int, block_k: int,
           block_n: int, trace_key: int = 0) -> torch.Tensor:
    """Inference only (no autograd formula): ``trace_key`` as for ``sketch_rotate``."""
    structure = _structure(in_features, out_features, redn_factor, seed, block_k, block_n)
    return ss1.sketch_pass(x, structure, _size_hint(x.shape[0]), launch=_launch)


@torch.library.custom_op("ss1bench::rotate_weight", mutates_args=())
def rotate_weight(weight: torch.Tensor, in_features: int, out_features: int, redn_factor: int, seed: int,
                  block_k: int, block_n: int) -> torch.Tensor:
    """The weight rotation as an op Inductor does not look into (not a ``triton_op``). Freezing's
    constant folding runs such an op on the frozen weight once, at compile time; it does not fold
    a Triton kernel node, nor the reference's gather, whose index a trace builds from aranges."""
    return ops.rotate_weight(weight, _structure(in_features, out_features, redn_factor, seed, block_k, block_n))


@rotate_weight.register_fake
def _rotate_weight_fake(weight, in_features, out_features, redn_factor, seed, block_k, block_n):
    return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)


@torch.compiler.assume_constant_result
def inductor_freezes() -> bool:
    """Whether Inductor will freeze the traced graph's parameters (``torch._inductor.config.freezing``,
    read once per trace, a constant of the graph). An inference trace then sketches x alone and
    rotates the weight with :func:`rotate_weight`, which freezing folds into a constant."""
    from torch._inductor import config as inductor_config

    return bool(inductor_config.freezing)


@triton_op("ss1bench::unsketch", mutates_args=())
def unsketch(grad_sketch: torch.Tensor, in_features: int, out_features: int, redn_factor: int, seed: int,
             block_k: int, block_n: int) -> torch.Tensor:
    structure = _structure(in_features, out_features, redn_factor, seed, block_k, block_n)
    return ss1.unsketch_pass(ss1.row_major(grad_sketch), structure, _size_hint(grad_sketch.shape[0]), launch=_launch)


@triton_op("ss1bench::unsketch_unrotate", mutates_args=())
def unsketch_unrotate(grad_sketch: torch.Tensor, grad_rotated: torch.Tensor, in_features: int, out_features: int,
                      redn_factor: int, seed: int, block_k: int, block_n: int,
                      weight_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unsketch(grad_sketch), unrotate(grad_rotated))`` in one launch, the weight gradient
    written in ``weight_dtype`` (the weight's: float32 under autocast)."""
    structure = _structure(in_features, out_features, redn_factor, seed, block_k, block_n)
    return ss1.unsketch_unrotate_pass(grad_sketch, grad_rotated, structure, _size_hint(grad_sketch.shape[0]),
                                      launch=_launch, weight_dtype=weight_dtype)


def _setup_context(ctx, inputs, output) -> None:
    """For both forward ops: their tensors first (x, weight[, bias]), the structure's six ints next."""
    tensors = 3 if len(output) == 3 else 2
    ctx.structure_args = tuple(inputs[tensors:tensors + 6])
    ctx.weight_dtype = inputs[1].dtype
    ctx.bias_dtype = inputs[2].dtype if tensors == 3 else None
    ctx.non_tensor_inputs = len(inputs) - tensors


def _input_grads(ctx, grad_sketch, grad_rotated) -> tuple:
    """x's and the weight's gradients, each in its input's dtype: x's is the sketch's (x is cast
    before the op, the weight by it), the weight's may be wider (float32 parameters under autocast)."""
    args = ctx.structure_args
    need_x = grad_sketch is not None and ctx.needs_input_grad[0]
    need_w = grad_rotated is not None and ctx.needs_input_grad[1]
    if need_x and need_w:  # the training step: one launch for both, as in the eager path
        return unsketch_unrotate(grad_sketch, grad_rotated, *args, ctx.weight_dtype)
    grad_x = unsketch(grad_sketch, *args) if need_x else None
    # aten's gather, not a kernel of ours: Inductor computes its index in place and fuses it with
    # the cast back to the weight's dtype
    grad_w = reference.unrotate_weight(grad_rotated, _structure(*args)).to(ctx.weight_dtype) if need_w else None
    return grad_x, grad_w


def _sketch_rotate_backward(ctx, grad_sketch, grad_rotated):
    return _input_grads(ctx, grad_sketch, grad_rotated) + (None,) * ctx.non_tensor_inputs


def _sketch_rotate_bias_backward(ctx, grad_sketch, grad_rotated, grad_bias):
    """The cast bias's gradient goes back to the bias's dtype: Inductor fuses that cast with the
    sum over rows that makes it."""
    grad_b = grad_bias.to(ctx.bias_dtype) if grad_bias is not None and ctx.needs_input_grad[2] else None
    return _input_grads(ctx, grad_sketch, grad_rotated) + (grad_b,) + (None,) * ctx.non_tensor_inputs


sketch_rotate.register_autograd(_sketch_rotate_backward, setup_context=_setup_context)
sketch_rotate_bias.register_autograd(_sketch_rotate_bias_backward, setup_context=_setup_context)

