"""The eager training path is one autograd node per SS1 call (``ops._SketchLinear``).

Interpreter tests: the Triton passes run on CPU tensors (``TRITON_INTERPRET=1``) through the ops'
CUDA path, with every ``torch.empty`` NaN-filled. The GPU tests in ``tests/test_gpu.py`` run the
same path on the device.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TOLERANCE, assert_close, randn

from ss1bench import SSL, ops, reference
from ss1bench.structure import SS1Structure

STRUCTURE = SS1Structure(200, 40, 4, seed=7, block_k=16, block_n=16)


def _leaves(m: int, seed: int, x_grad: bool = True, weight_grad: bool = True, bias_grad: bool = True):
    generator = torch.Generator().manual_seed(seed)
    x = randn(m, STRUCTURE.in_features, generator=generator).requires_grad_(x_grad)
    weight = (randn(*STRUCTURE.weight_shape, generator=generator) / 4).requires_grad_(weight_grad)
    bias = randn(STRUCTURE.out_features, generator=generator).requires_grad_(bias_grad)
    dy = randn(m, STRUCTURE.out_features, generator=generator)
    return x, weight, bias, dy


def _graph_nodes(grad_fn) -> list[str]:
    """Names of every autograd node reachable from ``grad_fn``."""
    names, stack = [], [grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.interpret
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "autocast-fp16"])
def test_an_eager_call_records_one_node(kernels_on_cpu, nan_empty, autocast):
    """x, weight and bias feed one SS1 node directly: no separate product, transpose or bias-cast
    node (each costs the autograd engine host time per step), also under autocast."""
    layer = SSL(200, 40, redn_factor=4, seed=7, block_k=16, block_n=16)
    x, _, _, dy = _leaves(9, seed=1)
    with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        y = layer(x)
    assert sorted(_graph_nodes(y.grad_fn)) == ["AccumulateGrad"] * 3 + ["_SketchLinearBackward"]
    y.backward(dy.to(y.dtype))
    assert (x.grad.dtype, layer.weight.grad.dtype, layer.bias.grad.dtype) == (torch.float32,) * 3


@pytest.mark.interpret
@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, False)],
                         ids=["weight-and-bias", "x-only", "x-and-weight"])
def test_the_node_saves_only_what_its_gradients_need(kernels_on_cpu, nan_empty, needs):
    """The sketch (M x K_red) is kept only for the weight gradient and the rotated weight only for
    the input gradient; gradients of inputs that need none are None, the rest match float64."""
    x_grad, weight_grad, bias_grad = needs
    x, weight, bias, dy = _leaves(11, seed=2, x_grad=x_grad, weight_grad=weight_grad, bias_grad=bias_grad)
    saved = []

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        y = ops.ss1_linear(x, weight, bias, STRUCTURE)
    expected = ([(11, STRUCTURE.k_red)] if weight_grad else []) + ([STRUCTURE.weight_shape] if x_grad else [])
    assert saved == expected
    y.backward(dy)
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    reference.ss1_forward_reference(*leaves, STRUCTURE).backward(dy.double())
    for name, leaf, wanted, expected_leaf in zip(("x", "weight", "bias"), (x, weight, bias), needs, leaves,
                                                 strict=True):
        if wanted:
            assert_close(f"{name}.grad", leaf.grad, expected_leaf.grad)
        else:
            assert leaf.grad is None, name


@pytest.mark.interpret
def test_the_bias_gradient_under_autocast_is_summed_in_float32(kernels_on_cpu, nan_empty):
    """Float32 bias, fp16 compute: the bias gradient is the float32 sum of the fp16 output
    gradient (an fp16 sum, rounded to fp16 and cast back, is off by up to half an fp16 ulp of the
    sum)."""
    x, weight, bias, dy = _leaves(300, seed=3)
    y = ops.ss1_linear(x, weight, bias, STRUCTURE, dtype=torch.float16)
    dy16 = (dy * 3).half()
    y.backward(dy16)
    assert bias.grad.dtype == torch.float32
    expected = dy16.double().sum(0)
    assert (bias.grad.double() - expected).abs().max() < 1e-4 * expected.abs().max()


@pytest.mark.interpret
def test_a_call_in_an_autocast_region_without_a_dtype_backpropagates(kernels_on_cpu, nan_empty):
    """``ss1_linear`` called directly under autocast with float32 inputs and no ``dtype``: the
    product inside the node is autocast's (fp16 output) and the backward takes the fp16 output
    gradient for the float32 sketch and rotated weight."""
    x, weight, bias, dy = _leaves(13, seed=4)
    with torch.autocast("cpu", dtype=torch.float16):
        y = ops.ss1_linear(x, weight, bias, STRUCTURE)
    assert y.dtype == torch.float16
    y.backward(dy.half())
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    expected_y = F.linear(reference.sketch(leaves[0], STRUCTURE).half(),
                          reference.rotate_weight(leaves[1], STRUCTURE).half(), leaves[2].half())
    expected_y.backward(dy.half())
    assert_close("y", y, expected_y.double(), TOLERANCE[torch.float16])
    for name, leaf, expected in zip(("x", "weight", "bias"), (x, weight, bias), leaves, strict=True):
        assert leaf.grad.dtype == torch.float32
        assert_close(f"{name}.grad", leaf.grad, expected.grad.double(), TOLERANCE[torch.float16])


@pytest.mark.interpret
def test_a_second_derivative_is_refused(kernels_on_cpu, nan_empty):
    """The backward's passes are not differentiable: differentiating a gradient again raises
    instead of silently dropping the sketch's terms."""
    x, weight, bias, _ = _leaves(5, seed=5)
    (grad_w,) = torch.autograd.grad(ops.ss1_linear(x, weight, bias, STRUCTURE).square().sum(), weight,
                                    create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_w.sum().backward()


@pytest.mark.interpret
@pytest.mark.parametrize("case", [(19, 200, 40, 4, 16, 16), (5, 77, 33, 2, 16, 32), (1, 300, 70, 8, 32, 16)],
                         ids=lambda case: "M{}-K{}-N{}-c{}-bk{}-bn{}".format(*case))
@pytest.mark.parametrize("out_dtypes", [(None, None), (torch.float32, torch.float32), (None, torch.float32)],
                         ids=["as-input", "both-fp32", "weight-fp32"])
def test_unsketch_and_unrotate_in_one_launch(kernels_on_cpu, nan_empty, case, out_dtypes):
    """The backward's combined pass (fp16 gradients in; each output in its own dtype) is exactly
    the two separate permutations: every element a copy, so casts are exact; recorded on the
    first call, replayed on the second."""
    from ss1bench.kernels import ss1 as kernels

    m, k, n, c, bk, bn = case
    structure = SS1Structure(k, n, c, 5, bk, bn)
    generator = torch.Generator().manual_seed(m + k)
    for call in range(2):
        grad_sketch = randn(m, structure.k_red, dtype=torch.float16, generator=generator)
        grad_rotated = randn(*structure.weight_shape, dtype=torch.float16, generator=generator)
        dx, dw = kernels.unsketch_unrotate_planned(grad_sketch, grad_rotated, structure, *out_dtypes)
        x_dtype, weight_dtype = (dtype or torch.float16 for dtype in out_dtypes)
        assert (dx.dtype, dw.dtype) == (x_dtype, weight_dtype), f"call {call}"
        assert torch.equal(dx, reference.unsketch(grad_sketch.double(), structure).to(x_dtype)), f"call {call}"
        assert torch.equal(dw, reference.unrotate_weight(grad_rotated.double(), structure).to(weight_dtype)), \
            f"call {call}"
