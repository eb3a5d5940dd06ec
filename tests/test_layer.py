"""``ss1bench.SSL``: construction, init, conversion from nn.Linear, state dict, autocast (CPU)."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import math
import warnings

import pytest
import torch
from conftest import assert_close, randn
from torch import nn

from ss1bench import SSL, set_structure_advisor
from ss1bench import layer as layer_module
from ss1bench.reference import ss1_forward_reference
from ss1bench.structure import DEFAULT_BLOCK_N, REDUCTION_FACTORS, SS1Structure, default_block_k


@pytest.fixture
def advisor_calls():
    """Installs a recording advisor that recommends (64, 32); always puts the previous one back."""
    calls = []

    def advisor(in_features, out_features, redn_factor, dtype, device):
        calls.append((in_features, out_features, redn_factor, dtype, device))
        return (64, 32)

    previous = set_structure_advisor(advisor)
    try:
        yield calls
    finally:
        set_structure_advisor(previous)
    assert layer_module._structure_advisor is previous


# ---- construction --------------------------------------------------------------------------------


def test_constructor_signature_matches_the_public_api():
    parameters = inspect.signature(SSL.__init__).parameters
    defaults = {name: p.default for name, p in parameters.items() if name != "self"}
    assert list(defaults) == ["in_features", "out_features", "bias", "redn_factor", "seed", "device", "dtype",
                              "block_k", "block_n"]
    assert defaults["bias"] is True
    assert defaults["redn_factor"] == 2
    assert defaults["seed"] == 1024
    for name in ("device", "dtype", "block_k", "block_n"):
        assert defaults[name] is None, name


def test_defaults():
    layer = SSL(300, 70)
    assert (layer.in_features, layer.out_features) == (300, 70)
    assert (layer.redn_factor, layer.seed) == (2, 1024)
    assert layer.block_k == default_block_k(300, 2)
    assert layer.block_n == DEFAULT_BLOCK_N == 128
    assert layer.structure == SS1Structure(300, 70, 2, 1024, layer.block_k, 128)
    assert layer.bias is not None and layer.bias.shape == (70,)
    assert layer.weight.dtype == torch.get_default_dtype()
    assert layer.weight.device.type == "cpu"
    assert layer.weight.requires_grad and layer.bias.requires_grad


@pytest.mark.parametrize(
    ("K", "c", "expected"),
    [(300, 2, 32), (4096, 4, 128), (100, 4, 32), (1000, 8, 128), (513, 1, 16)],
    ids=lambda v: str(v),
)
def test_default_block_k_wastes_least_then_prefers_larger(K, c, expected):
    assert default_block_k(K, c) == expected
    k_reds = {bk: math.ceil(K / (c * bk)) * bk for bk in (16, 32, 64, 128)}
    assert k_reds[expected] == min(k_reds.values())
    assert all(bk <= expected for bk, k_red in k_reds.items() if k_red == k_reds[expected])


@pytest.mark.parametrize("c", REDUCTION_FACTORS, ids=lambda c: f"c{c}")
def test_explicit_arguments(c):
    layer = SSL(300, 70, bias=False, redn_factor=c, seed=7, dtype=torch.float64, block_k=32, block_n=16)
    assert layer.structure == SS1Structure(300, 70, c, 7, 32, 16)
    assert layer.weight.shape == (70, math.ceil(300 / (c * 32)) * 32)
    assert layer.weight.dtype == torch.float64
    assert layer.bias is None
    assert layer.compression == pytest.approx(300 / layer.weight.shape[1])


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"redn_factor must be a power of two"):
        SSL(300, 70, redn_factor=3)
    with pytest.raises(ValueError, match=r"block_k must be a power of two between 16 and"):
        SSL(300, 70, block_k=24)
    with pytest.raises(ValueError, match=r"block_n must be a power of two between 16 and"):
        SSL(300, 70, block_n=8)
    with pytest.raises(ValueError, match=r"in_features must be positive"):
        SSL(0, 70)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"redn_factor": 0}, ValueError, r"redn_factor must be a power of two in \[1, 2, 4, 8, 16, 32\], got 0"),
    ({"redn_factor": "4"}, TypeError, r"redn_factor must be an int, got str \('4'\)"),
    ({"redn_factor": 4.0}, TypeError, r"redn_factor must be an int, got float"),
    ({"redn_factor": None}, TypeError, r"redn_factor must be an int, got NoneType"),
    ({"block_k": "64"}, TypeError, r"block_k must be an int, got str"),
    ({"seed": "1"}, TypeError, r"seed must be an int, got str"),
], ids=["c0", "c-str", "c-float", "c-none", "block_k-str", "seed-str"])
def test_bad_arguments_are_named_before_any_arithmetic(kwargs, error, message):
    """redn_factor=0 used to raise ZeroDivisionError and "4" a TypeError from inside the defaults."""
    with pytest.raises(error, match=message):
        SSL(300, 70, **kwargs)


@pytest.mark.parametrize(("in_features", "out_features", "error"), [
    ("300", 70, r"in_features must be an int, got str"), (300, 70.0, r"out_features must be an int, got float")])
def test_bad_feature_counts_are_named(in_features, out_features, error):
    with pytest.raises(TypeError, match=error):
        SSL(in_features, out_features)


@pytest.mark.parametrize(("args", "message"), [
    ((64, 64, 2, 1024), r"SSL\(64, 64, redn_factor=2, block_k=1024\): the compressed weight \(64 x 1024\) would be "
                        r"larger than the dense one \(64 x 64\), compression 0\.06x; pass a smaller block_k "
                        r"\(at most 32\) or leave block_k out"),
    ((100, 70, 4, 128), r"compression 0\.78x; pass a smaller block_k \(at most 64\)"),
    ((8, 8, 2, None), r"in_features=8 is too small for redn_factor=2"),
    ((64, 64, 1, 1024), r"block_k=1024 is wider than in_features=64 needs, .* is 16\.00x the dense one .*at most 64"),
], ids=["c2-bk1024", "K100-c4-bk128", "K8-c2-default", "c1-bk1024"])
def test_a_weight_larger_than_dense_is_refused(args, message):
    in_features, out_features, c, block_k = args
    with pytest.raises(ValueError, match=message):
        SSL(in_features, out_features, redn_factor=c, block_k=block_k)


def test_compression_of_one_warns_and_padding_without_compression_is_allowed():
    with pytest.warns(UserWarning, match=r"compression is 1\.00x .* saves no weights"):
        layer = SSL(64, 64, redn_factor=2, block_k=64)
    assert layer.compression == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        padded = SSL(300, 70, redn_factor=1, block_k=32)  # c=1: no compression asked, K padded to 320
        assert padded.compression < 1
        assert SSL(300, 70, redn_factor=4).compression > 1
        assert SSL(8, 8, redn_factor=1).weight.shape == (8, 16)


def test_extra_repr():
    layer = SSL(300, 70, redn_factor=4, seed=7, block_k=16, block_n=32)
    text = repr(layer)
    for part in ("in_features=300", "out_features=70", "bias=True", "redn_factor=4", "seed=7", "block_k=16",
                 "block_n=32", "compression=3.75x"):
        assert part in text, (part, text)
    assert "bias=False" in repr(SSL(300, 70, bias=False))


def test_meta_device_construction():
    before = torch.random.get_rng_state()
    layer = SSL(4096, 1024, redn_factor=8, seed=3, device="meta")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert layer.weight.is_meta and layer.bias.is_meta
    assert layer.weight.shape == layer.structure.weight_shape == (1024, 4096 // 8)
    assert layer.bias.shape == (1024,)
    # Materialize, then initialize: the usual path for big models.
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    bound = 1 / math.sqrt(4096)
    assert layer.weight.abs().max().item() <= bound
    assert layer.weight.std().item() > 0.5 * bound


def test_building_a_layer_draws_only_its_init_from_the_global_rng():
    """The hash uses a private generator: the global RNG advances by the init draws alone."""
    with torch.random.fork_rng(devices=[]):
        start = torch.random.get_rng_state()
        layer = SSL(300, 70, redn_factor=4, seed=11, block_k=16, block_n=32)
        after = torch.random.get_rng_state()
        torch.random.set_rng_state(start)  # replay from the same state, then restored by fork_rng
        bound = 1 / math.sqrt(300)
        weight = torch.empty(layer.structure.weight_shape).uniform_(-bound, bound)
        bias = torch.empty(70).uniform_(-bound, bound)
        assert torch.equal(torch.random.get_rng_state(), after)
    assert torch.equal(layer.weight.detach(), weight)
    assert torch.equal(layer.bias.detach(), bias)


# ---- init distribution -------------------------------------------------------------------------


def test_init_matches_nn_linear_distribution():
    """Dense entries ~ U(-1/sqrt(K), 1/sqrt(K)): variance 1/(3K); bias the same law.

    Bounds are many standard errors wide (1M weight samples: the sample variance has a relative
    standard error near 0.1%; 4096 bias samples: near 1.4%), so they hold for any RNG state.
    """
    K, N = 1024, 4096
    layer = SSL(K, N, redn_factor=4, block_k=64, block_n=128)
    assert K % (4 * 64) == 0  # every compressed entry is used: dense marginal == compressed law
    bound = 1 / math.sqrt(K)
    weight = layer.weight.detach().double()
    dense = layer.dense_weight().detach().double()
    for name, values in (("weight", weight), ("dense", dense)):
        assert values.abs().max().item() <= bound, name
        assert values.abs().max().item() > 0.999 * bound, name
        assert values.var().item() == pytest.approx(1 / (3 * K), rel=0.02), name
        assert abs(values.mean().item()) < 0.01 * bound, name
    fractions = torch.histc(weight, bins=10, min=-bound, max=bound) / weight.numel()
    assert ((fractions > 0.095) & (fractions < 0.105)).all(), fractions

    bias = layer.bias.detach().double()
    assert bias.abs().max().item() <= bound
    assert bias.abs().max().item() > 0.99 * bound
    assert bias.var().item() == pytest.approx(1 / (3 * K), rel=0.12)


def test_dense_weight_is_the_structure_map(generator):
    layer = SSL(300, 70, redn_factor=4, seed=5, block_k=16, block_n=32)
    dense = layer.dense_weight()
    assert dense.shape == (70, 300)
    assert torch.equal(dense, layer.structure.dense_weight(layer.weight))
    dense.sum().backward()  # differentiable: each compressed entry counts its dense copies
    counts = torch.zeros(layer.structure.weight_shape).scatter_add_(
        1, layer.structure.dense_index(), torch.ones(70, 300))
    assert torch.equal(layer.weight.grad, counts)

    x = randn(4, 300, generator=generator)
    assert_close("forward", layer(x), x.double() @ dense.detach().double().T + layer.bias.detach().double())


# ---- from_linear -------------------------------------------------------------------------------


def test_from_linear_without_reduction_is_exact(generator):
    linear = nn.Linear(300, 70)
    layer = SSL.from_linear(linear, 1, seed=5)
    assert layer.redn_factor == 1 and layer.seed == 5
    assert torch.equal(layer.dense_weight(), linear.weight)
    x = randn(8, 300, generator=generator)
    assert_close("y", layer(x), linear(x), rtol=1e-6)


def test_from_linear_error_grows_with_reduction():
    """For an i.i.d. weight the relative projection error is sqrt(1 - 1/c)."""
    linear = nn.Linear(512, 256)
    weight = linear.weight.detach().double()
    errors = []
    for c in REDUCTION_FACTORS:
        layer = SSL.from_linear(linear, c, seed=3, block_k=16, block_n=16)
        assert layer.redn_factor == c
        error = ((layer.dense_weight().detach().double() - weight).norm() / weight.norm()).item()
        assert error == pytest.approx(math.sqrt(1 - 1 / c), abs=0.02), c
        errors.append(error)
    assert errors[0] < 1e-7
    assert all(a < b for a, b in itertools.pairwise(errors)), errors


def test_from_linear_copies_bias_dtype_and_seed():
    linear = nn.Linear(300, 70, dtype=torch.float64)
    layer = SSL.from_linear(linear, 4, seed=77, block_n=16)
    assert layer.seed == 77 and layer.block_n == 16
    assert layer.weight.dtype == torch.float64
    assert torch.equal(layer.bias, linear.bias)
    assert layer.bias.data_ptr() != linear.bias.data_ptr()  # a copy, not a shared tensor
    assert torch.equal(layer.weight, layer.structure.project(linear.weight.detach()))

    assert SSL.from_linear(nn.Linear(300, 70, bias=False), 4).bias is None


@pytest.mark.parametrize("module", [nn.Conv1d(3, 3, 1), nn.Identity(), "linear"], ids=["conv", "identity", "str"])
def test_from_linear_rejects_other_modules(module):
    with pytest.raises(TypeError, match=r"from_linear expects an nn\.Linear, got"):
        SSL.from_linear(module, 2)


# ---- structure advisor -----------------------------------------------------------------------------


def test_structure_advisor_is_consulted_when_blocks_are_omitted(advisor_calls):
    layer = SSL(300, 70, redn_factor=4)
    assert (layer.block_k, layer.block_n) == (64, 32)
    assert advisor_calls == [(300, 70, 4, torch.get_default_dtype(), torch.device("cpu"))]

    layer = SSL(300, 70, redn_factor=4, dtype=torch.float64, device="meta", block_k=16)
    assert (layer.block_k, layer.block_n) == (16, 32)  # explicit block_k wins, block_n advised
    assert advisor_calls[-1] == (300, 70, 4, torch.float64, torch.device("meta"))

    layer = SSL(300, 70, redn_factor=4, block_n=128)
    assert (layer.block_k, layer.block_n) == (64, 128)

    count = len(advisor_calls)
    layer = SSL(300, 70, redn_factor=4, block_k=32, block_n=16)
    assert (layer.block_k, layer.block_n) == (32, 16)
    assert len(advisor_calls) == count  # nothing to ask


def test_structure_advisor_without_opinion_falls_back_to_defaults():
    previous = set_structure_advisor(lambda *args: None)
    try:
        layer = SSL(300, 70, redn_factor=4)
    finally:
        set_structure_advisor(previous)
    assert (layer.block_k, layer.block_n) == (default_block_k(300, 4), DEFAULT_BLOCK_N)


@pytest.mark.parametrize(("advice", "expected"), [((1024, 32), (None, 32)), ((24, 32), (None, 32)),
                                                 ((32, 24), (None, DEFAULT_BLOCK_N))],
                         ids=["larger-than-dense", "block_k-not-a-power-of-two", "block_n-not-a-power-of-two"])
def test_advice_that_would_refuse_the_layer_gives_way_to_the_defaults(caplog, advice, expected):
    """A recommendation (a hand-edited tuning database) never makes SSL(...) fail."""
    previous = set_structure_advisor(lambda *args: advice)
    try:
        with caplog.at_level(logging.WARNING, logger="ss1bench.layer"):
            layer = SSL(64, 64, redn_factor=2)
    finally:
        set_structure_advisor(previous)
    assert (layer.block_k, layer.block_n) == (default_block_k(64, 2), expected[1])
    assert "ignoring the advised block_k" in caplog.text


# ---- state dict --------------------------------------------------------------------------------


def test_state_dict_carries_the_structure():
    layer = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    state = layer.state_dict()
    assert set(state) == {"weight", "bias", "redn_factor", "seed", "block_k", "block_n", "in_features",
                          "out_features"}
    for key, value in (("redn_factor", 4), ("seed", 9), ("block_k", 32), ("block_n", 16), ("in_features", 300),
                       ("out_features", 70)):
        assert state[key].dtype == torch.int64 and state[key].shape == ()
        assert int(state[key]) == value


def test_state_dict_round_trip_adopts_checkpoint_blocks(caplog, generator):
    source = nn.Sequential(nn.Identity(), SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16))
    target = nn.Sequential(nn.Identity(), SSL(300, 70, redn_factor=4, seed=9, block_k=16, block_n=64))
    state = source.state_dict()
    with caplog.at_level(logging.INFO, logger="ss1bench.layer"):
        target.load_state_dict(state)
    records = [r for r in caplog.records if r.name == "ss1bench.layer"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING  # default logging shows it
    message = records[0].getMessage()
    assert "block_k=32, block_n=16" in message and "(was 16, 64)" in message and message.startswith("1:")
    assert len(state) == 8  # the caller's dict is left whole

    loaded = target[1]
    assert (loaded.block_k, loaded.block_n) == (32, 16)
    assert loaded.weight.shape == (70, 96)
    x = randn(5, 300, generator=generator)
    assert torch.equal(target(x), source(x))
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key

    # Loading again with matching blocks logs nothing.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ss1bench.layer"):
        target.load_state_dict(state)
    assert not [r for r in caplog.records if r.name == "ss1bench.layer"]


def test_optimizer_built_before_adopting_checkpoint_blocks_still_trains_the_layer(generator):
    source = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    target = SSL(300, 70, redn_factor=4, seed=9, block_k=16, block_n=64)
    weight = target.weight
    optimizer = torch.optim.SGD(target.parameters(), lr=0.1)
    target.load_state_dict(source.state_dict())
    assert target.weight is weight and weight.shape == source.weight.shape != (70, 80)
    before = weight.detach().clone()
    target(randn(5, 300, generator=generator)).square().sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), before)  # the optimizer updated the loaded weight


def test_state_dict_loads_into_a_meta_layer(generator):
    source = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    target = SSL(300, 70, redn_factor=4, seed=9, device="meta")
    target.load_state_dict(source.state_dict(), assign=True)
    assert (target.block_k, target.block_n) == (32, 16)
    assert not target.weight.is_meta
    x = randn(5, 300, generator=generator)
    assert torch.equal(target(x), source(x))


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("redn_factor", {"redn_factor": 2, "seed": 9}), ("seed", {"redn_factor": 4, "seed": 10})],
)
def test_state_dict_with_other_function_is_refused(field, kwargs):
    state = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16).state_dict()
    target = SSL(300, 70, **kwargs)
    with pytest.raises(RuntimeError, match=rf"SSL: checkpoint has {field}=\d+ but this layer has {field}=\d+"):
        target.load_state_dict(state)
    # Inside a model the message names the submodule.
    model = nn.Sequential(nn.Identity(), SSL(300, 70, **kwargs))
    with pytest.raises(RuntimeError, match=rf"\t1: checkpoint has {field}="):
        model.load_state_dict({f"1.{key}": value for key, value in state.items()})


def test_state_dict_without_structure_keys_is_missing_keys():
    state = SSL(300, 70, redn_factor=4, seed=9).state_dict()
    del state["seed"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "seed"'):
        SSL(300, 70, redn_factor=4, seed=9).load_state_dict(state)
    result = SSL(300, 70, redn_factor=4, seed=9).load_state_dict(state, strict=False)
    assert result.missing_keys == ["seed"]


def _snapshot(layer: SSL) -> tuple:
    return (layer.structure, layer.weight.detach().clone(), layer.bias.detach().clone(), layer.weight.data_ptr())


def _assert_unchanged(layer: SSL, snapshot: tuple, generator) -> None:
    structure, weight, bias, pointer = snapshot
    assert layer.structure == structure and (layer.block_k, layer.block_n) == (structure.block_k, structure.block_n)
    assert torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
    assert layer.weight.data_ptr() == pointer
    x = randn(3, layer.in_features, generator=generator)
    expected = ss1_forward_reference(x, weight, bias, structure)
    assert torch.equal(layer(x), expected)


def _without(state: dict, *names: str) -> dict:
    return {key: value for key, value in state.items() if key not in names}


@pytest.mark.parametrize("case", ["out_features", "old checkpoint, bias shape", "weight not a tensor",
                                  "strict=False without weight", "strict without weight"])
def test_a_failed_load_changes_nothing(case, generator):
    """The checkpoint's block sizes differ from the layer's: a refused load must not adopt them."""
    target = SSL(300, 70, redn_factor=4, seed=9, block_k=16, block_n=64)
    before = _snapshot(target)
    source = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    state, strict = source.state_dict(), True
    if case == "out_features":
        state = SSL(300, 80, redn_factor=4, seed=9, block_k=32, block_n=16).state_dict()
        match = r"checkpoint has out_features=80 but this layer has out_features=70"
    elif case == "old checkpoint, bias shape":
        state = _without(SSL(300, 80, redn_factor=4, seed=9, block_k=32, block_n=16).state_dict(),
                         "in_features", "out_features")
        match = r"size mismatch for weight: the checkpoint has shape \(80, 96\)"
    elif case == "weight not a tensor":
        state["weight"] = [[0.0]]
        match = r"weight in the checkpoint is a list, not a tensor"
    else:
        state, strict = _without(state, "weight"), case == "strict without weight"
        match = (r"checkpoint changes the block sizes to block_k=32, block_n=16 \(this layer has 16, 64\) but holds "
                 r"no weight: .* shape \(70, 96\)")
    with pytest.raises(RuntimeError, match=match):
        target.load_state_dict(state, strict=strict)
    _assert_unchanged(target, before, generator)


def test_new_block_n_without_weight_is_refused_though_the_shape_fits(generator):
    """The weight's shape does not change with block_n, its meaning does: no weight, no new structure."""
    target = SSL(300, 70, redn_factor=4, seed=9, block_k=16, block_n=64)
    before = _snapshot(target)
    state = _without(SSL(300, 70, redn_factor=4, seed=9, block_k=16, block_n=16).state_dict(), "weight")
    with pytest.raises(RuntimeError, match=r"block_n=16 \(this layer has 16, 64\) but holds no weight"):
        target.load_state_dict(state, strict=False)
    _assert_unchanged(target, before, generator)


def test_in_features_is_checked_on_load(generator):
    """700 and 768 inputs give the same compressed width at c=4, block_k=32: the weights fit, the layer does not."""
    source = SSL(768, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    target = SSL(700, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    assert source.weight.shape == target.weight.shape
    before = _snapshot(target)
    with pytest.raises(RuntimeError, match=r"SSL: checkpoint has in_features=768 but this layer has in_features=700"):
        target.load_state_dict(source.state_dict())
    _assert_unchanged(target, before, generator)


def test_a_checkpoint_without_the_shape_still_loads(generator):
    """Checkpoints saved before in_features/out_features were saved: no missing keys, blocks adopted."""
    source = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    state = _without(source.state_dict(), "in_features", "out_features")
    target = SSL(300, 70, redn_factor=4, seed=9, block_k=16, block_n=64)
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert (target.block_k, target.block_n) == (32, 16)
    x = randn(3, 300, generator=generator)
    assert torch.equal(target(x), source(x))


def test_strict_false_without_weight_and_the_same_blocks_keeps_the_weight():
    source = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    target = SSL(300, 70, redn_factor=4, seed=9, block_k=32, block_n=16)
    weight = target.weight.detach().clone()
    result = target.load_state_dict(_without(source.state_dict(), "weight"), strict=False)
    assert result.missing_keys == ["weight"]
    assert torch.equal(target.weight, weight) and torch.equal(target.bias, source.bias)


@pytest.mark.parametrize("seed", [0, 2**63 - 1])
def test_state_dict_round_trips_extreme_seeds(seed):
    layer = SSL(64, 16, seed=seed)
    assert int(layer.state_dict()["seed"]) == seed
    fresh = SSL(64, 16, seed=seed)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.weight, layer.weight)


def test_seed_that_cannot_be_saved_is_rejected():
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63 - 1\]"):
        SSL(64, 16, seed=2**63 + 5)


# ---- autocast ----------------------------------------------------------------------------------


def test_cpu_autocast_bfloat16(generator):
    layer = SSL(300, 70, redn_factor=4, seed=1, block_k=16, block_n=32)
    x = randn(2, 3, 300, generator=generator).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    expected = ss1_forward_reference(x.detach().reshape(6, 300).double(), layer.weight.detach().double(),
                                     layer.bias.detach().double(), layer.structure).reshape(2, 3, 70)
    assert_close("y", y, expected)
    y.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_cpu_autocast_leaves_float64_alone(generator):
    layer = SSL(300, 70, redn_factor=4, dtype=torch.float64)
    linear = nn.Linear(300, 70, dtype=torch.float64)
    x = randn(3, 300, dtype=torch.float64, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x).dtype == torch.float64
        assert layer(x).dtype == torch.float64


@pytest.mark.parametrize("shape", [(5, 300), (2, 3, 300)], ids=["2d", "3d"])
@pytest.mark.parametrize("autocast", [False, True], ids=["plain", "autocast"])
def test_meta_inputs_give_meta_outputs(shape, autocast):
    """Shape inference on the meta device (no autocast state there: asking used to raise)."""
    layer = SSL(300, 70, redn_factor=4, device="meta")
    x = torch.empty(shape, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
        y = layer(x)
    assert y.is_meta and y.shape == (*shape[:-1], 70)


def test_structure_advisor_sees_the_default_device(advisor_calls):
    """No device argument: the advisor is asked about torch's default device, not always the CPU."""
    with torch.device("meta"):
        layer = SSL(300, 70, redn_factor=4)
    assert layer.weight.device.type == "meta"
    assert advisor_calls[-1][4] == torch.device("meta")
