"""Autocast: an SS1 call computes in autocast's dtype like ``nn.Linear``, and on the training path
the casts are folded into the sketch passes (``ss1_linear(..., dtype=...)``).

The sketch-and-rotate pass reads float32 ``x`` and weight and writes the sketch and the rotated
weight in the compute dtype (the kernel sums in float32 and rounds once on its store, as the cast
would); the unsketch and unrotate passes write each gradient in its input's dtype. So no cast
kernel runs on x, the weight or their gradients. Interpreter tests run the kernels on CPU tensors
(``TRITON_INTERPRET=1``) through the ops' CUDA path; the GPU tests in ``tests/test_gpu.py`` run
them on the device, eagerly and compiled.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TOLERANCE, assert_close, randn
from torch.utils._python_dispatch import TorchDispatchMode

from ss1bench import SSL, ops, reference
from ss1bench.structure import SS1Structure

STRUCTURE = SS1Structure(200, 40, 4, seed=3, block_k=16, block_n=16)


class _Casts(TorchDispatchMode):
    """Records the shape of every aten cast (``_to_copy``) run under it."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default:
            self.shapes.append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))


def _inputs(m: int, seed: int = 0, x_dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = randn(m, STRUCTURE.in_features, generator=generator).to(x_dtype).requires_grad_()
    weight = (randn(*STRUCTURE.weight_shape, generator=generator) / 4).requires_grad_()
    bias = randn(STRUCTURE.out_features, generator=generator).requires_grad_()
    dy = randn(m, STRUCTURE.out_features, generator=generator)
    return x, weight, bias, dy


def _folded_reference(x, weight, bias, dtype, dy):
    """Output and gradients of the folded call through the reference: the sketch summed in the
    inputs' precision and then cast to ``dtype`` (one rounding; casting x first, as autocast did
    before the casts were folded, rounds x and then the sum), the rotated weight cast."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    xs = reference.sketch(leaves[0], STRUCTURE).to(dtype)
    y = F.linear(xs, reference.rotate_weight(leaves[1], STRUCTURE).to(dtype), leaves[2].to(dtype))
    y.backward(dy.to(dtype))
    return y, [t.grad for t in leaves]


@pytest.mark.interpret
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16], ids=["x-fp32", "x-fp16"])
def test_training_path_writes_the_compute_dtype_and_gradients_in_the_inputs(kernels_on_cpu, nan_empty, x_dtype,
                                                                           monkeypatch):
    """fp16 compute from float32 weights (and float32 or fp16 x): y is fp16 and matches the folded
    reference, each gradient comes back in its input's dtype, and no cast touches x, the
    weight, the bias, the sketch, the rotated weight or their gradients (the bias is cast in the
    sketch-and-rotate launch). Repeated calls replay the passes' plans, which keep the dtypes."""
    from ss1bench.kernels import ss1 as kernels
    from ss1bench.kernels.config import launch_plans

    for step in range(2):
        if step == 1:
            def fail(*args, **kwargs):
                raise AssertionError("a pass took the checked path")

            monkeypatch.setattr(kernels, "check_pass_inputs", fail)
            monkeypatch.setattr(kernels, "sketch_pass_config", fail)
        x, weight, bias, dy = _inputs(19, seed=step, x_dtype=x_dtype)
        with _Casts() as casts:
            y = ops.ss1_linear(x, weight, bias, STRUCTURE, dtype=torch.float16)
            y.backward(dy.half())
        assert y.dtype == torch.float16
        assert (x.grad.dtype, weight.grad.dtype, bias.grad.dtype) == (x_dtype, torch.float32, torch.float32)
        big = {tuple(x.shape), tuple(weight.shape), tuple(bias.shape), (x.shape[0], STRUCTURE.k_red)}
        assert not big & set(casts.shapes), f"step {step}: casts of {sorted(big & set(casts.shapes))}"
        y_ref, grads = _folded_reference(x, weight, bias, torch.float16, dy)
        assert_close(f"y step {step}", y, y_ref.double(), TOLERANCE[torch.float16])
        for name, actual, expected in zip(("x", "weight", "bias"), (x.grad, weight.grad, bias.grad), grads,
                                          strict=True):
            assert_close(f"{name}.grad step {step}", actual, expected.double(), TOLERANCE[torch.float16])
    assert {key[0][0] for key in launch_plans} == {"sketch_rotate_bias", "unsketch_unrotate"}


@pytest.mark.interpret
def test_the_folded_sketch_is_the_cast_of_the_float32_sketch(kernels_on_cpu, nan_empty):
    """The sketch-and-rotate pass with an fp16 output rounds the float32 sums once: within half an
    fp16 ulp of the float64 sketch (plus the float32 sum's own error), like a cast would be."""
    from ss1bench.kernels import ss1 as kernels

    x, weight, _, _ = _inputs(23)
    xs, wr = kernels.sketch_and_rotate_planned(x.detach(), weight.detach(), STRUCTURE, torch.float16)
    assert (xs.dtype, wr.dtype) == (torch.float16, torch.float16)
    assert_close("xs", xs, reference.sketch(x.detach().double(), STRUCTURE), ulp=0.5, slack=1e-6)
    assert torch.equal(wr, reference.rotate_weight(weight.detach(), STRUCTURE).half())  # a permutation


@pytest.mark.interpret
def test_the_layer_under_autocast_folds_its_casts(kernels_on_cpu, nan_empty):
    """``SSL`` under ``torch.autocast`` (float32 parameters) takes the folded path: fp16 output,
    float32 gradients, the folded reference's values."""
    layer = SSL(200, 40, redn_factor=4, seed=3, block_k=16, block_n=16)
    x, _, _, dy = _inputs(17)
    with torch.autocast("cpu", dtype=torch.float16), _Casts() as casts:
        y = layer(x)
    y.backward(dy.half())
    assert y.dtype == torch.float16 and layer.weight.grad.dtype == torch.float32
    assert not {tuple(x.shape), tuple(layer.weight.shape), tuple(layer.bias.shape)} & set(casts.shapes), casts.shapes
    y_ref, grads = _folded_reference(x, layer.weight, layer.bias, torch.float16, dy)
    assert_close("y", y, y_ref.double(), TOLERANCE[torch.float16])
    assert_close("weight.grad", layer.weight.grad, grads[1].double(), TOLERANCE[torch.float16])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_reference_path_under_autocast_is_the_folded_reference(dtype):
    """On CPU tensors (the reference) the layer under autocast gives autocast's dtype and exactly the
    folded reference's result; gradients are float32."""
    layer = SSL(200, 40, redn_factor=4, seed=3, block_k=16, block_n=16)
    x, _, _, dy = _inputs(9)
    with torch.autocast("cpu", dtype=dtype):
        y = layer(x)
    y.backward(dy.to(dtype))
    assert y.dtype == dtype and x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    y_ref, grads = _folded_reference(x, layer.weight, layer.bias, dtype, dy)
    assert torch.equal(y, y_ref)
    assert torch.equal(layer.weight.grad, grads[1]) and torch.equal(x.grad, grads[0])


def test_inference_with_a_compute_dtype_casts_the_inputs():
    """Without autograd, ``dtype`` casts x, the weight and the bias and runs the forward in it."""
    x, weight, bias, _ = _inputs(5)
    with torch.no_grad():
        y = ops.ss1_linear(x, weight, bias, STRUCTURE, dtype=torch.bfloat16)
        expected = ops.ss1_linear(x.bfloat16(), weight.bfloat16(), bias.bfloat16(), STRUCTURE)
    assert y.dtype == torch.bfloat16 and torch.equal(y, expected)


@pytest.mark.parametrize("dtype", [torch.int8, "float16", torch.complex64])
def test_a_bad_compute_dtype_is_one_clear_error(dtype):
    x, weight, bias, _ = _inputs(3)
    with pytest.raises(TypeError, match=r"dtype must be a floating torch\.dtype"):
        ops.ss1_linear(x, weight, bias, STRUCTURE, dtype=dtype)


def test_mixed_input_dtypes_without_a_compute_dtype_are_still_refused():
    x, weight, bias, _ = _inputs(3)
    with pytest.raises(TypeError, match="dtype"):
        ops.ss1_linear(x.half(), weight, bias, STRUCTURE)
