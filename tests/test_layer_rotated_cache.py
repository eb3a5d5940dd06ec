"""``SSL.cache_rotated_weight``: the inference cache of the rotated weight (CPU reference path).

On CPU the reference forward multiplies by the cached rotated weight when the layer passes one,
so a stale cache shows up as a wrong output here, exactly as it would on the GPU's sketch_gemm.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import assert_close, randn
from torch import nn

from ss1bench import SSL, cache_rotated_weights
from ss1bench import layer as layer_module


def _dense_output(layer: SSL, x: torch.Tensor) -> torch.Tensor:
    y = x.double() @ layer.dense_weight().double().T
    return y + layer.bias.double() if layer.bias is not None else y


@pytest.fixture
def rotations(monkeypatch):
    """Counts the layer's calls of rotate_weight (each one builds the cache)."""
    calls = []
    real = layer_module.rotate_weight

    def counting(weight, structure):
        calls.append(weight.shape)
        return real(weight, structure)

    monkeypatch.setattr(layer_module, "rotate_weight", counting)
    return calls


@pytest.fixture
def layer():
    """A layer set up for inference (no parameter needs a gradient): the cache's use."""
    torch.manual_seed(0)
    return SSL(300, 70, redn_factor=4, seed=3, block_k=16, block_n=32).requires_grad_(False)


def test_off_by_default_and_on_gives_the_same_output(layer, rotations, generator):
    x = randn(5, 300, generator=generator)
    assert not layer.caches_rotated_weight
    expected = layer(x)
    assert rotations == []
    assert layer.cache_rotated_weight() is layer and layer.caches_rotated_weight
    for _ in range(3):
        assert torch.equal(layer(x), expected)
    assert len(rotations) == 1  # built once, reused


def test_weight_changed_through_torch_ops_rebuilds_the_copy(layer, rotations, generator):
    x = randn(4, 300, generator=generator)
    layer.cache_rotated_weight()
    layer(x)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # an optimizer step does the same: the version counter moves
    assert_close("after mul_", layer(x), _dense_output(layer, x))
    layer.load_state_dict({k: v * 0.5 if k == "weight" else v for k, v in layer.state_dict().items()})
    assert_close("after load_state_dict", layer(x), _dense_output(layer, x))
    assert len(rotations) == 3


def test_data_edits_are_not_tracked_until_refresh(layer, generator):
    x = randn(3, 300, generator=generator)
    layer.cache_rotated_weight()
    before = layer(x)
    layer.weight.data.mul_(3.0)  # torch does not bump the version counter through .data
    assert torch.equal(layer(x), before)  # documented: stale until refreshed
    layer.refresh_rotated_weight()
    assert_close("after refresh", layer(x), _dense_output(layer, x))


def test_new_storage_or_dtype_rebuilds_the_copy(layer, generator):
    x = randn(3, 300, generator=generator)
    layer.cache_rotated_weight()
    layer(x)
    layer.weight.data = layer.weight.data * 2  # new storage
    assert_close("after .data =", layer(x), _dense_output(layer, x))
    layer.double()
    assert layer._rotated is None  # dropped by .to()/.double(), not kept on the old dtype
    y = layer(x.double())
    assert y.dtype == torch.float64
    assert_close("after .double()", y, _dense_output(layer, x))


def test_gradients_are_unchanged_by_the_cache(generator):
    x = randn(6, 300, generator=generator)
    dy = randn(6, 70, generator=generator)
    grads = []
    for cached in (False, True):
        torch.manual_seed(1)
        layer = SSL(300, 70, redn_factor=4, seed=3, block_k=16, block_n=32).cache_rotated_weight(cached)
        xi = x.clone().requires_grad_()
        layer(xi).backward(dy)
        grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
    for name, off, on in zip(("x", "weight", "bias"), *grads, strict=True):
        assert torch.equal(off, on), name


def test_turning_it_off_frees_the_copy_and_the_state_dict_never_holds_it(layer, generator):
    layer.cache_rotated_weight()
    layer(randn(2, 300, generator=generator))
    assert layer._rotated is not None
    assert set(layer.state_dict()) == {"weight", "bias", "redn_factor", "seed", "block_k", "block_n", "in_features",
                                       "out_features"}
    layer.cache_rotated_weight(False)
    assert layer._rotated is None and not layer.caches_rotated_weight


def test_model_wide_switch_counts_layers(generator):
    model = nn.Sequential(SSL(64, 32, redn_factor=2), nn.ReLU(), nn.Linear(32, 32), SSL(32, 16, redn_factor=4))
    assert cache_rotated_weights(model) == 2
    assert all(m.caches_rotated_weight for m in model if isinstance(m, SSL))
    x = randn(3, 64, generator=generator)
    cached = model(x)
    assert cache_rotated_weights(model, enabled=False) == 2
    assert torch.equal(model(x), cached)
    assert not any(m.caches_rotated_weight for m in model if isinstance(m, SSL))


def test_a_pickled_layer_from_before_the_cache_still_runs(layer, generator):
    for name in ("_rotated_cache_on", "_rotated", "_rotated_key"):
        del layer.__dict__[name]  # what a module pickled by an older version lacks
    restored = pickle.loads(pickle.dumps(layer))
    x = randn(2, 300, generator=generator)
    assert not restored.caches_rotated_weight
    assert_close("restored", restored(x), _dense_output(restored, x))


def test_a_copy_built_under_inference_mode_serves_grad_mode_too(layer, generator):
    x = randn(3, 300, generator=generator)
    layer.cache_rotated_weight()
    with torch.inference_mode():
        first = layer(x)
    assert not layer._rotated.is_inference()  # built outside inference mode: usable everywhere
    xi = x.clone().requires_grad_()
    y = layer(xi)
    y.sum().backward()
    assert torch.equal(y.detach(), first) and xi.grad is not None


def test_public_rotate_weight_is_the_reference_permutation_and_checks_the_shape(layer):
    from ss1bench import ops, reference

    rotated = ops.rotate_weight(layer.weight, layer.structure)
    assert not rotated.requires_grad
    assert torch.equal(rotated, reference.rotate_weight(layer.weight.detach(), layer.structure))
    assert torch.equal(torch.sort(rotated, dim=1).values, torch.sort(layer.weight.detach(), dim=1).values)
    with pytest.raises(ValueError, match=r"weight must have shape \(out_features, K_red\)"):
        ops.rotate_weight(layer.weight[:, 1:], layer.structure)
