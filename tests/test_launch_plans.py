"""Launch plans (kernels/plans.py): the launches of an eager inference forward recorded on the
first call per key and replayed afterwards, in the CPU interpreter (TRITON_INTERPRET=1).

Each algorithm's replay must give the reference's result for new inputs (intermediates and the
output poisoned with NaN), a changed key must never reuse a plan, and the checks must still run
for inputs no plan was kept for. On the GPU, replays run the recorded binaries directly
(tests/test_gpu.py).
"""

from __future__ import annotations

import pytest
import torch
from conftest import TOLERANCE, assert_close, randn, rounded_once_references

from ss1bench import SSL, ops, reference
from ss1bench.kernels import plans
from ss1bench.kernels import ss1 as kernels
from ss1bench.kernels.config import LaunchConfig, invalidate_config_cache, launch_plans, override_launch_config
from ss1bench.structure import SS1Structure

pytestmark = pytest.mark.interpret

STRUCTURE = SS1Structure(200, 40, 4, seed=3, block_k=16, block_n=16)

CONFIGS = {
    "gemv": LaunchConfig(tile_m=1, tile_n=16, tile_k=16, num_warps=1, num_stages=1, algorithm="gemv"),
    "fused": LaunchConfig(tile_m=16, tile_n=16, tile_k=16, num_warps=1, num_stages=1),
    "fused split-K": LaunchConfig(tile_m=16, tile_n=16, tile_k=16, num_warps=1, num_stages=1, split_k=2),
    "resident": LaunchConfig(tile_m=16, tile_n=16, tile_k=16, num_warps=1, num_stages=1, algorithm="resident"),
    "sketch_gemm": LaunchConfig(tile_m=16, tile_n=16, tile_k=16, num_warps=1, num_stages=1,
                                algorithm="sketch_gemm"),
}


@pytest.fixture(autouse=True)
def fresh_plans():
    invalidate_config_cache()
    yield
    invalidate_config_cache()


def inputs(m: int, dtype=torch.float32, bias: bool = True, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = randn(m, STRUCTURE.in_features, dtype=dtype, generator=generator)
    weight = randn(*STRUCTURE.weight_shape, dtype=dtype, generator=generator) / 10
    b = randn(STRUCTURE.out_features, dtype=dtype, generator=generator) if bias else None
    return x, weight, b


def expected(x, weight, bias, structure=STRUCTURE):
    return reference.ss1_forward_reference(x.double(), weight.double(),
                                           None if bias is None else bias.double(), structure)


def no_slow_path(monkeypatch):
    """Any call that is not a replay fails from here on."""
    def fail(*args, **kwargs):
        raise AssertionError("the slow path ran")

    monkeypatch.setattr(kernels, "_launch", fail)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("algorithm", sorted(CONFIGS))
def test_a_replayed_plan_gives_the_reference_result(algorithm, bias, monkeypatch, nan_empty):
    m = 1 if algorithm == "gemv" else 19
    with override_launch_config(CONFIGS[algorithm], kinds=("forward",)):
        x, weight, b = inputs(m, bias=bias)
        kernels.ss1_forward(x, weight, b, STRUCTURE)  # records
        assert len(launch_plans) == 1
        no_slow_path(monkeypatch)
        for seed in (1, 2):  # new values, same key: replays
            x2, weight2, b2 = inputs(m, bias=bias, seed=seed)
            y = kernels.ss1_forward(x2, weight2, b2, STRUCTURE)
            assert_close(f"{algorithm} replay {seed}", y, expected(x2, weight2, b2), TOLERANCE[torch.float32])
        assert len(launch_plans) == 1


@pytest.mark.parametrize("bias", [True, False], ids=["M19-K200-N40-c4-fp16-bias", "M19-K200-N40-c4-fp16-nobias"])
def test_a_replayed_split_k_plan_keeps_fp32_partials(bias, monkeypatch, nan_empty):
    """The replay allocates its own split-K partials: fp16 in, each output still rounds once
    (within 1 ulp of the float64 product of the rounded sketch and the weight). fp16 partials
    would pass the 1e-2 tolerance (issue 22)."""
    with override_launch_config(CONFIGS["fused split-K"], kinds=("forward",)):
        x, weight, b = inputs(19, dtype=torch.float16, bias=bias)
        kernels.ss1_forward(x, weight, b, STRUCTURE)  # records
        no_slow_path(monkeypatch)
        x2, weight2, b2 = inputs(19, dtype=torch.float16, bias=bias, seed=1)
        y = kernels.ss1_forward(x2, weight2, b2, STRUCTURE)
    exact, slack = rounded_once_references(x2, weight2, b2, STRUCTURE)["y"]
    assert_close("split-K fp16 replay", y, exact, ulp=1.0, slack=slack)


def test_a_replay_with_the_rotated_weight_multiplies_by_it(monkeypatch, nan_empty):
    with override_launch_config(CONFIGS["sketch_gemm"], kinds=("forward_rotated",)):
        x, weight, b = inputs(7)
        kernels.ss1_forward(x, weight, b, STRUCTURE, rotated_weight=kernels.rotate_weight(weight, STRUCTURE))
        no_slow_path(monkeypatch)
        x2, weight2, b2 = inputs(7, seed=1)
        y = kernels.ss1_forward(x2, weight2, b2, STRUCTURE, rotated_weight=kernels.rotate_weight(weight2, STRUCTURE))
    assert_close("cached replay", y, expected(x2, weight2, b2), TOLERANCE[torch.float32])


def changed_inputs(change: str, x, weight, b):
    if change == "M":
        return x[:5], weight, b
    if change == "dtype":
        return x.half(), weight.half(), b.half()
    if change == "misaligned x":
        flat = torch.cat([torch.zeros(1), x.flatten()])
        return flat[1:].view(x.shape), weight, b
    if change == "row stride":
        wide = torch.zeros(x.shape[0], x.shape[1] + 3)
        wide[:, :x.shape[1]] = x
        return wide[:, :x.shape[1]], weight, b
    if change == "no bias":
        return x, weight, None
    raise ValueError(change)


@pytest.mark.parametrize("change", ["M", "dtype", "misaligned x", "row stride", "no bias"])
def test_a_changed_key_records_its_own_plan(change):
    with override_launch_config(CONFIGS["fused"], kinds=("forward",)):
        x, weight, b = inputs(19)
        kernels.ss1_forward(x, weight, b, STRUCTURE)
        x2, weight2, b2 = changed_inputs(change, x, weight, b)
        y = kernels.ss1_forward(x2, weight2, b2, STRUCTURE)
        assert len(launch_plans) == 2
        tolerance = TOLERANCE[x2.dtype]
        assert_close(change, y, expected(x2, weight2, b2), tolerance)
        y = kernels.ss1_forward(x2, weight2, b2, STRUCTURE)  # and replays it
        assert_close(f"{change}, replayed", y, expected(x2, weight2, b2), tolerance)


def test_inputs_a_plan_would_pass_as_they_are_only_are_planned():
    """A transposed x or a strided bias is copied by the checks: such calls keep no plan.

    (Counted inside the override: leaving it changes the configs, which drops every plan.)"""
    with override_launch_config(CONFIGS["fused"], kinds=("forward",)):
        x, weight, b = inputs(19)
        kernels.ss1_forward(x.t().contiguous().t(), weight, b, STRUCTURE)
        assert len(launch_plans) == 0, "transposed x"
        kernels.ss1_forward(x, weight, torch.stack([b, b], 1)[:, 0], STRUCTURE)
        assert len(launch_plans) == 0, "strided bias"
        kernels.ss1_forward(x, weight, b, STRUCTURE)
        assert len(launch_plans) == 1, "row-major inputs"


def test_pinned_configs_and_given_outputs_neither_record_nor_replay(monkeypatch):
    x, weight, b = inputs(19)
    kernels.ss1_forward(x, weight, b, STRUCTURE, config=CONFIGS["fused"])
    kernels.ss1_forward(x, weight, b, STRUCTURE, out=torch.empty(19, STRUCTURE.out_features))
    assert len(launch_plans) == 0
    kernels.ss1_forward(x, weight, b, STRUCTURE)
    assert len(launch_plans) == 1
    calls = []
    real_launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda *args: calls.append(args) or real_launch(*args))
    out = torch.full((19, STRUCTURE.out_features), float("nan"))
    y = kernels.ss1_forward(x, weight, b, STRUCTURE, out=out)
    assert y is out and len(calls) == 1  # the caller's buffer, written by the normal path
    assert_close("out=", out, expected(x, weight, b), TOLERANCE[torch.float32])


def test_a_config_change_forgets_the_plans():
    x, weight, b = inputs(19)
    with override_launch_config(CONFIGS["fused"], kinds=("forward",)):
        kernels.ss1_forward(x, weight, b, STRUCTURE)
        assert len(launch_plans) == 1
    assert len(launch_plans) == 0  # the hook's removal: its configs no longer hold
    with override_launch_config(CONFIGS["sketch_gemm"], kinds=("forward",)):
        kernels.ss1_forward(x, weight, b, STRUCTURE)
        (plan,) = launch_plans.values()
        y = plan(x, weight, b, None)
    assert_close("after the change", y, expected(x, weight, b), TOLERANCE[torch.float32])


def test_bad_inputs_still_get_their_errors_after_a_plan_exists():
    x, weight, b = inputs(19)
    kernels.ss1_forward(x, weight, b, STRUCTURE)
    with pytest.raises(TypeError, match=r"weight has dtype torch\.float16"):
        kernels.ss1_forward(x, weight.half(), b, STRUCTURE)
    with pytest.raises(ValueError, match="bias must have shape"):
        kernels.ss1_forward(x, weight, b[:-1], STRUCTURE)
    with pytest.raises(ValueError, match="in_features=200"):
        kernels.ss1_forward(x[:, :-1], weight, b, STRUCTURE)
    assert len(launch_plans) == 1


def test_the_layer_replays_without_grad_and_trains_through_autograd(monkeypatch):
    """SSL calls on the eager no-grad path take the plan before ops.ss1_linear's checks; a call
    that needs gradients goes through autograd (its forward may replay) and still gets them."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # the GPU-only entry
    monkeypatch.setattr(plans, "current_device", lambda: 0)
    monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)
    layer = SSL(200, 40, redn_factor=4, seed=3, block_k=16, block_n=16)
    x = randn(19, 200, generator=torch.Generator().manual_seed(7))
    dense = layer.dense_weight().detach().double()
    with torch.no_grad():
        layer(x)
        calls = []
        real_forward = ops._forward_impl
        monkeypatch.setattr(ops, "_forward_impl", lambda *args: calls.append(args) or real_forward(*args))
        y = layer(x)
        y3 = layer(x.view(1, 19, 200))  # a leading batch dim: flattened, the same key
    assert calls == []  # both replayed before ss1_linear's checks
    assert_close("no grad", y, x.double() @ dense.T + layer.bias.double(), TOLERANCE[torch.float32])
    assert y3.shape == (1, 19, 40) and torch.equal(y3[0], y)
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()
    assert xg.grad is not None and layer.weight.grad is not None
    assert_close("dx", xg.grad, torch.ones(19, 40, dtype=torch.float64) @ dense, TOLERANCE[torch.float32])
