"""The eager autograd forward keeps its sketch of x for the weight gradient (ops.SAVE_SKETCH), in
the CPU interpreter (TRITON_INTERPRET=1).

Where the forward's algorithm makes ``xs = sketch(x)`` (``sketch_gemm``) and the weight gradient's
config is ``sketch_gemm`` too, autograd saves xs instead of x and the backward multiplies by it
without sketching x again. The gradients must stay those of the dense equivalent (and equal, bit
for bit, to the path that sketches x again); every other combination must keep x.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import TOLERANCE, assert_close, randn

from ss1bench import SSL, ops, reference
from ss1bench.kernels import ss1 as kernels
from ss1bench.kernels.config import LaunchConfig, invalidate_config_cache, launch_plans, override_launch_config
from ss1bench.structure import SS1Structure

pytestmark = pytest.mark.interpret

SKETCH_GEMM = LaunchConfig(tile_m=16, tile_n=16, tile_k=16, num_warps=1, num_stages=1, algorithm="sketch_gemm")
FUSED = LaunchConfig(tile_m=16, tile_n=16, tile_k=16, num_warps=1, num_stages=1)
# block_k 32: N-block rotations 0, 8 and 16, so a rotation and its inverse differ (8 of 32).
STRUCTURE = SS1Structure(200, 40, 4, seed=3, block_k=32, block_n=16)


@pytest.fixture(autouse=True)
def on_the_kernels(monkeypatch):
    """CPU tensors take the kernel path (as CUDA tensors do), with plans and sketch reuse on."""
    monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)
    monkeypatch.setattr(ops, "SAVE_SKETCH", True)
    monkeypatch.setattr(kernels, "FAST_PATH", True)
    invalidate_config_cache()
    yield
    invalidate_config_cache()


@contextlib.contextmanager
def configs(forward: LaunchConfig, grad_weight: LaunchConfig):
    with override_launch_config(forward, kinds=("forward",)), \
            override_launch_config(grad_weight, kinds=("grad_weight",)), \
            override_launch_config(FUSED, kinds=("grad_input",)):
        yield


def layer_and_inputs(m: int = 37, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    layer = SSL(200, 40, redn_factor=4, seed=3, block_k=32, block_n=16).to(dtype)
    assert layer.structure == STRUCTURE
    x = randn(m, 200, dtype=dtype, generator=generator)
    gy = randn(m, 40, dtype=dtype, generator=generator)
    return layer, x, gy


def saved(y: torch.Tensor) -> list[tuple[int, ...] | None]:
    """Shapes of what the SS1 autograd node behind ``y`` saved (through a reshape of its output)."""
    node = y.grad_fn
    while "SS1" not in type(node).__name__:
        node = node.next_functions[0][0]
    return [None if t is None else tuple(t.shape) for t in node.saved_tensors]


def check_gradients(tag: str, layer: SSL, x: torch.Tensor, gy: torch.Tensor, dtype=torch.float32) -> None:
    dense = layer.dense_weight().detach().double()
    assert_close(f"{tag} dx", x.grad, gy.double() @ dense, TOLERANCE[dtype])
    expected_dw = reference.ss1_grad_weight_reference(gy.double(), x.detach().double(), layer.structure)
    assert_close(f"{tag} dW", layer.weight.grad, expected_dw, TOLERANCE[dtype])
    assert_close(f"{tag} db", layer.bias.grad, gy.double().sum(0), TOLERANCE[dtype])


def test_the_sketch_is_saved_instead_of_x_and_the_backward_does_not_sketch_again(monkeypatch, nan_empty):
    layer, x, gy = layer_and_inputs()
    with configs(SKETCH_GEMM, SKETCH_GEMM):
        for step in range(3):  # the second and third forward replay their plan
            xg = x.clone().requires_grad_()
            layer.zero_grad()
            y = layer(xg)
            assert saved(y) == [(37, STRUCTURE.k_red), tuple(STRUCTURE.weight_shape)]
            assert torch.equal(y.grad_fn.saved_tensors[0], reference.sketch(x, layer.structure))
            if step == 2:
                monkeypatch.setattr(kernels, "sketch", lambda *a: pytest.fail("the backward sketched x again"))
                monkeypatch.setattr(kernels, "_launch", lambda *a: pytest.fail("a call took the slow path"))
            y.backward(gy)
            check_gradients(f"step {step}", layer, xg, gy)


def test_the_reused_sketch_gives_the_same_weight_gradient_bit_for_bit(monkeypatch):
    layer, x, gy = layer_and_inputs(dtype=torch.float16)
    grads = {}
    with configs(SKETCH_GEMM, SKETCH_GEMM):
        for reuse in (True, False):
            monkeypatch.setattr(ops, "SAVE_SKETCH", reuse)
            layer.zero_grad()
            xg = x.clone().requires_grad_()
            y = layer(xg)
            assert len(saved(y)[0]) == 2 and saved(y)[0][1] == (STRUCTURE.k_red if reuse else 200)
            y.backward(gy)
            grads[reuse] = layer.weight.grad.clone()
            check_gradients(f"reuse={reuse}", layer, xg, gy, torch.float16)
    assert torch.equal(grads[True], grads[False])


@pytest.mark.parametrize(("forward", "grad_weight", "why"), [
    (FUSED, SKETCH_GEMM, "the forward made no sketch"),
    (SKETCH_GEMM, FUSED, "the weight gradient's kernel gathers x itself"),
], ids=["fused forward", "fused grad_weight"])
def test_x_is_kept_where_the_sketch_would_not_serve(forward, grad_weight, why):
    layer, x, gy = layer_and_inputs()
    with configs(forward, grad_weight):
        for _ in range(2):
            xg = x.clone().requires_grad_()
            layer.zero_grad()
            y = layer(xg)
            assert saved(y)[0] == (37, 200), why
            y.backward(gy)
            check_gradients(why, layer, xg, gy)


def test_switched_off_x_is_kept(monkeypatch):
    monkeypatch.setattr(ops, "SAVE_SKETCH", False)
    layer, x, gy = layer_and_inputs()
    with configs(SKETCH_GEMM, SKETCH_GEMM):
        xg = x.clone().requires_grad_()
        y = layer(xg)
        assert saved(y)[0] == (37, 200)
        y.backward(gy)
        check_gradients("switched off", layer, xg, gy)


def test_a_frozen_weight_keeps_neither_x_nor_the_sketch():
    layer, x, gy = layer_and_inputs()
    layer.weight.requires_grad_(False)
    with configs(SKETCH_GEMM, SKETCH_GEMM):
        xg = x.clone().requires_grad_()
        y = layer(xg)
        assert saved(y) == [None, tuple(STRUCTURE.weight_shape)]
        y.backward(gy)
    assert layer.weight.grad is None
    assert_close("dx", xg.grad, gy.double() @ layer.dense_weight().double(), TOLERANCE[torch.float32])


@pytest.mark.parametrize("layout", ["leading dims", "column-major"])
def test_leading_dims_and_a_column_major_input_reuse_the_sketch(layout):
    layer, x, gy = layer_and_inputs(m=36)
    with configs(SKETCH_GEMM, SKETCH_GEMM):
        if layout == "leading dims":
            xg = x.view(4, 9, 200).clone().requires_grad_()
            y = layer(xg)
            assert saved(y)[0] == (36, STRUCTURE.k_red)
            y.backward(gy.view(4, 9, 40))
            grad = xg.grad.reshape(36, 200)
        else:  # last-dim stride 36: the forward copies it to row-major and sketches the copy
            xg = x.t().contiguous().t().requires_grad_()
            y = layer(xg)
            assert saved(y)[0] == (36, STRUCTURE.k_red)
            y.backward(gy)
            grad = xg.grad
    assert_close("dx", grad, gy.double() @ layer.dense_weight().double(), TOLERANCE[torch.float32])
    expected_dw = reference.ss1_grad_weight_reference(gy.double(), x.double(), layer.structure)
    assert_close("dW", layer.weight.grad, expected_dw, TOLERANCE[torch.float32])


def test_forward_returns_its_sketch_on_the_first_call_and_on_replays(nan_empty):
    x, weight = randn(19, 200), randn(*STRUCTURE.weight_shape) / 10
    with override_launch_config(SKETCH_GEMM, kinds=("forward",)):
        for call in range(2):
            y, xs = kernels.ss1_forward(x, weight, None, STRUCTURE, return_sketch=True)
            assert len(launch_plans) == 1, call
            assert torch.equal(xs, reference.sketch(x, STRUCTURE))
            assert torch.equal(y, kernels.ss1_forward(x, weight, None, STRUCTURE))
    with override_launch_config(FUSED, kinds=("forward",)):
        y, xs = kernels.ss1_forward(x, weight, None, STRUCTURE, return_sketch=True)
        assert xs is None
        assert_close("fused", y, reference.ss1_forward_reference(x.double(), weight.double(), None, STRUCTURE),
                     TOLERANCE[torch.float32])


def test_grad_weight_from_sketch_matches_the_reference_and_checks_its_inputs():
    x, gy = randn(37, 200), randn(37, 40)
    xs = reference.sketch(x, STRUCTURE)
    dw = kernels.ss1_grad_weight_from_sketch(gy, xs, STRUCTURE)
    assert_close("dW", dw, reference.ss1_grad_weight_reference(gy.double(), x.double(), STRUCTURE),
                 TOLERANCE[torch.float32])
    assert torch.count_nonzero(kernels.ss1_grad_weight_from_sketch(gy[:0], xs[:0], STRUCTURE)) == 0
    with pytest.raises(ValueError, match=rf"xs must have shape \(37, {STRUCTURE.k_red}\)"):
        kernels.ss1_grad_weight_from_sketch(gy, x, STRUCTURE)
    with pytest.raises(TypeError, match=r"xs has dtype torch\.float16"):
        kernels.ss1_grad_weight_from_sketch(gy, xs.half(), STRUCTURE)
    with pytest.raises(ValueError, match="grad_out has 39 columns but out_features=40"):
        kernels.ss1_grad_weight_from_sketch(gy[:, :39], xs, STRUCTURE)
    with pytest.raises(ValueError, match="must be 2-D"):
        kernels.ss1_grad_weight_from_sketch(gy, xs[None], STRUCTURE)
