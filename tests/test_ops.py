"""The public op ``ss1bench.ss1_linear``, on CPU.

On CPU the op runs the pure-torch reference, so these tests check the wrapping: shapes and
strides, input validation and autograd (``test_compile.py``: torch.compile and training).
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, dtype_id, randn

from ss1bench.ops import ss1_linear
from ss1bench.reference import rotate_weight, ss1_forward_reference
from ss1bench.structure import SS1Structure

K, N = 100, 40


@pytest.fixture
def structure() -> SS1Structure:
    return SS1Structure(K, N, 4, 7, 16, 16)  # weight (40, 32)


@pytest.fixture
def tensors(structure, generator):
    x = randn(6, K, generator=generator)
    weight = randn(*structure.weight_shape, generator=generator)
    bias = randn(N, generator=generator)
    return x, weight, bias


def op_args(structure):
    return (structure.in_features, structure.redn_factor, structure.seed, structure.block_k, structure.block_n)


# ---- shapes and strides --------------------------------------------------------------------------


@pytest.mark.parametrize("leading", [(), (7,), (2, 3), (2, 1, 3)], ids=["rank1", "rank2", "rank3", "rank4"])
def test_leading_dims_are_flattened(leading, structure, tensors, generator):
    _, weight, bias = tensors
    x = randn(*leading, K, dtype=torch.float64, generator=generator)
    weight, bias = weight.double(), bias.double()
    y = ss1_linear(x, weight, bias, structure)
    assert y.shape == (*leading, N)
    expected = ss1_forward_reference(x.reshape(-1, K), weight, bias, structure).reshape(*leading, N)
    assert_close("y", y, expected)


def test_empty_batch(structure, tensors):
    _, weight, bias = tensors
    assert ss1_linear(torch.empty(0, K), weight, bias, structure).shape == (0, N)
    assert ss1_linear(torch.empty(2, 0, K), weight, bias, structure).shape == (2, 0, N)


@pytest.mark.parametrize("layout", ["transposed", "strided-slice", "permuted-3d"])
def test_non_contiguous_input(layout, structure, tensors, generator):
    _, weight, bias = tensors
    if layout == "transposed":
        x = randn(K, 9, generator=generator).t()
    elif layout == "strided-slice":
        x = randn(9, 3 * K, generator=generator)[:, 1::3]
    else:
        x = randn(K, 4, 3, generator=generator).permute(2, 1, 0)
    assert not x.is_contiguous()
    y = ss1_linear(x, weight, bias, structure)
    expected = ss1_linear(x.contiguous(), weight, bias, structure)
    assert torch.equal(y, expected)
    assert_close("y", y, ss1_forward_reference(x.reshape(-1, K).double(), weight.double(), bias.double(),
                                               structure).reshape(*x.shape[:-1], N))


def test_non_contiguous_weight_and_bias(structure, tensors):
    x, weight, bias = tensors
    weight_t = weight.t().contiguous().t()  # same values, column-major storage
    bias_strided = torch.stack([bias, bias], dim=1)[:, 0]
    assert not weight_t.is_contiguous() and not bias_strided.is_contiguous()
    assert torch.equal(ss1_linear(x, weight_t, bias_strided, structure), ss1_linear(x, weight, bias, structure))

    grads = []
    for w in (weight_t, weight):
        w = w.detach().requires_grad_()
        (grad,) = torch.autograd.grad(ss1_linear(x, w, bias, structure).sum(), [w])
        grads.append(grad)
    assert_close("grad_w", grads[0], grads[1])


def test_without_bias(structure, tensors):
    x, weight, _ = tensors
    y = ss1_linear(x, weight, None, structure)
    assert_close("y", y, x.double() @ structure.dense_weight(weight.double()).T)


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "match"),
    [
        ("x", r"weight has dtype torch\.float32 but the other inputs are torch\.float64"),
        ("weight", r"weight has dtype torch\.float64 but the other inputs are torch\.float32"),
        ("bias", r"bias has dtype torch\.float64 but the other inputs are torch\.float32"),
    ],
)
def test_dtype_mismatch_is_a_type_error(which, match, structure, tensors):
    x, weight, bias = tensors
    args = {"x": x, "weight": weight, "bias": bias}
    args[which] = args[which].double()
    with pytest.raises(TypeError, match=match):
        ss1_linear(args["x"], args["weight"], args["bias"], structure)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool], ids=str)
def test_integer_tensors_are_rejected(dtype, structure, tensors):
    x, weight, bias = tensors
    with pytest.raises(TypeError, match=rf"x has unsupported dtype {dtype}"):
        ss1_linear(x.to(dtype), weight, bias, structure)
    with pytest.raises(TypeError, match=rf"weight has unsupported dtype {dtype}"):
        ss1_linear(x, weight.to(dtype), bias, structure)
    with pytest.raises(TypeError, match=rf"x has unsupported dtype {dtype}"):
        ss1_linear(x.to(dtype), weight.to(dtype), bias.to(dtype), structure)


def test_wrong_input_width_is_a_value_error(structure, tensors):
    x, weight, bias = tensors
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 100\) for in_features=100, got \(6, 99\)"):
        ss1_linear(x[:, :99], weight, bias, structure)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 100\).*got \(\)"):
        ss1_linear(torch.tensor(1.0), weight, bias, structure)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got ndarray"):
        ss1_linear(x.numpy(), weight, bias, structure)


@pytest.mark.parametrize("shape", [(39,), (41,), (1, 40), (40, 1)], ids=lambda s: "x".join(map(str, s)))
def test_wrong_bias_shape_is_a_value_error(shape, structure, tensors, generator):
    x, weight, _ = tensors
    with pytest.raises(ValueError, match=r"bias must have shape \(40,\), got"):
        ss1_linear(x, weight, randn(*shape, generator=generator), structure)


def test_wrong_weight_shape_is_a_value_error(structure, tensors):
    x, weight, bias = tensors
    with pytest.raises(ValueError, match=r"weight must have shape \(out_features, K_red\) = \(40, 32\)"):
        ss1_linear(x, weight[:, :31], bias, structure)


# ---- autograd -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_backward_matches_reference(with_bias, dtype, structure, generator):
    x = randn(2, 3, K, dtype=dtype, generator=generator)
    weight = randn(*structure.weight_shape, dtype=dtype, generator=generator)
    bias = randn(N, dtype=dtype, generator=generator) if with_bias else None
    grad_out = randn(2, 3, N, dtype=dtype, generator=generator)

    def run(fn):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias) if t is not None]
        y = fn(*leaves) if with_bias else fn(*leaves, None)
        return y, torch.autograd.grad(y, leaves, grad_out)

    y, grads = run(lambda xx, w, b: ss1_linear(xx, w, b, structure))
    y_ref, grads_ref = run(
        lambda xx, w, b: ss1_forward_reference(xx.reshape(-1, K), w, b, structure).reshape(2, 3, N))
    assert_close("y", y, y_ref)
    assert len(grads) == len(grads_ref) == (3 if with_bias else 2)
    for name, actual, expected in zip(("grad_x", "grad_w", "grad_b"), grads, grads_ref, strict=False):
        assert actual.dtype == dtype
        assert_close(name, actual, expected)


def test_backward_only_for_inputs_that_need_it(structure, tensors):
    x, weight, bias = tensors
    weight = weight.clone().requires_grad_()
    ss1_linear(x, weight, bias, structure).sum().backward()
    assert weight.grad is not None
    x = x.clone().requires_grad_()
    (grad_x,) = torch.autograd.grad(ss1_linear(x, weight.detach(), None, structure).sum(), [x])
    assert grad_x.shape == x.shape


def test_no_grad_and_grad_paths_agree(structure, tensors):
    x, weight, bias = tensors
    with torch.no_grad():
        y_inference = ss1_linear(x, weight.requires_grad_(), bias, structure)
    assert not y_inference.requires_grad
    y_training = ss1_linear(x, weight, bias, structure)
    assert y_training.requires_grad
    assert torch.equal(y_inference, y_training.detach())


@pytest.mark.parametrize("with_bias", [True, False], ids=["M6-K100-N40-c4-bias", "M6-K100-N40-c4-nobias"])
def test_the_rotated_weight_is_used_without_grad_and_the_bias_still_added(with_bias, structure, tensors, generator):
    """Without autograd the op multiplies by the caller's rotated weight (trusted: a different one
    changes the result) and adds the bias; a call that records autograd rotates ``weight`` itself."""
    x, weight, bias = tensors
    bias = bias if with_bias else None
    other = randn(*structure.weight_shape, generator=generator)
    rotated_other = rotate_weight(other, structure)
    b64 = None if bias is None else bias.double()
    with torch.no_grad():
        y = ss1_linear(x, weight, bias, structure, rotated_weight=rotated_other)
    assert_close("y (the given rotated weight)", y, x.double() @ structure.dense_weight(other.double()).T
                 + (0 if b64 is None else b64))
    y_grad = ss1_linear(x, weight.requires_grad_(), bias, structure, rotated_weight=rotated_other)
    assert_close("y (autograd: weight rotated in the call)", y_grad,
                 ss1_forward_reference(x.double(), weight.double(), b64, structure))


def test_gradcheck(generator):
    structure = SS1Structure(20, 18, 2, 3, 16, 16)  # two N blocks, K past the last full block
    x = randn(2, 20, dtype=torch.float64, generator=generator).requires_grad_()
    weight = randn(*structure.weight_shape, dtype=torch.float64, generator=generator).requires_grad_()
    bias = randn(18, dtype=torch.float64, generator=generator).requires_grad_()
    fn = lambda a, w, b=None: ss1_linear(a, w, b, structure)
    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    assert torch.autograd.gradcheck(fn, (x, weight))
