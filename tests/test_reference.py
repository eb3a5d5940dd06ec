"""The pure-torch reference op (the oracle of every kernel test) against the dense definition.

``y = x @ dense_weight(Wc).T + b``, with ``dense_weight`` checked entry by entry against
the definition (ss1bench/structure.py) in test_structure.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, dtype_id, randn

from ss1bench.reference import (
    _inverse_rotation_columns,
    _rotation_columns,
    _sketch_index,
    _unsketch_source,
    rotate_weight,
    sketch,
    ss1_forward_reference,
    ss1_grad_input_reference,
    ss1_grad_weight_reference,
    unrotate_weight,
    unsketch,
)
from ss1bench.structure import REDUCTION_FACTORS, SS1Structure

# (M, K, N, block_k, block_n): M = 1, K and N not multiples of any block, a single-row N.
SHAPES = [
    (1, 300, 70, 16, 32),
    (5, 37, 129, 32, 16),
    (17, 1000, 33, 64, 16),
    (3, 256, 1, 16, 16),
]


def shape_id(M, K, N, c, block_k, block_n, extra=""):
    return f"M{M}-K{K}-N{N}-c{c}-bk{block_k}-bn{block_n}{extra}"


def cases(shapes=SHAPES, factors=REDUCTION_FACTORS):
    return [
        pytest.param(M, K, N, c, bk, bn, id=shape_id(M, K, N, c, bk, bn))
        for (M, K, N, bk, bn) in shapes
        for c in factors
    ]


def make_inputs(M, K, N, c, block_k, block_n, dtype, generator, seed=1024):
    structure = SS1Structure(K, N, c, seed, block_k, block_n)
    x = randn(M, K, dtype=dtype, generator=generator)
    weight = randn(*structure.weight_shape, dtype=dtype, generator=generator)
    bias = randn(N, dtype=dtype, generator=generator)
    return structure, x, weight, bias


def dense_forward(x, weight, bias, structure):
    """The definition, in float64: ``x @ W.T + b``."""
    dense = structure.dense_weight(weight.double())
    y = x.double() @ dense.T
    return y if bias is None else y + bias.double()


def dense_grad_weight(grad_out, x, structure):
    """``dWc``: the dense gradient ``dy.T @ x`` summed over the entries sharing each compressed entry."""
    dense_grad = grad_out.double().T @ x.double()  # (N, K)
    grad = torch.zeros(structure.weight_shape, dtype=torch.float64)
    return grad.scatter_add_(1, structure.dense_index(), dense_grad)


# ---- forward -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("M", "K", "N", "c", "block_k", "block_n"), cases())
def test_forward_matches_dense(M, K, N, c, block_k, block_n, with_bias, dtype, generator):
    structure, x, weight, bias = make_inputs(M, K, N, c, block_k, block_n, dtype, generator)
    bias = bias if with_bias else None
    y = ss1_forward_reference(x, weight, bias, structure)
    assert y.dtype == dtype
    assert y.shape == (M, N)
    assert_close("y", y, dense_forward(x, weight, bias, structure))


@pytest.mark.parametrize(("M", "K", "N", "c", "block_k", "block_n"), cases(SHAPES[:2], (2, 8)))
def test_forward_follows_the_sketch_form(M, K, N, c, block_k, block_n, generator):
    """The sketch form of ss1bench/structure.py, one N block at a time, with the structure's ``s(i, j)``."""
    structure, x, weight, bias = make_inputs(M, K, N, c, block_k, block_n, torch.float64, generator)
    x_padded = torch.nn.functional.pad(x, (0, structure.num_groups * c * block_k - K))
    expected = torch.empty(M, N, dtype=torch.float64)
    t = torch.arange(block_k)
    for j in range(-(-N // block_n)):
        columns = []
        for it in range(structure.num_groups):
            total = torch.zeros(M, block_k, dtype=torch.float64)
            for r in range(c):
                i = it * c + r
                shift = int(structure.shift(i, j))
                total += x_padded[:, i * block_k + (t + shift) % block_k]
            columns.append(total)
        sketch_j = torch.cat(columns, dim=1)  # (M, K_red)
        rows = slice(j * block_n, min((j + 1) * block_n, N))
        expected[:, rows] = sketch_j @ weight[rows].T + bias[rows]
    assert_close("y", ss1_forward_reference(x, weight, bias, structure), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("M", "K", "N", "c", "block_k", "block_n"), cases(SHAPES, (1, 4, 32)))
def test_forward_with_the_rotated_weight_matches_dense(M, K, N, c, block_k, block_n, with_bias, dtype, generator):
    """The caller's rotated weight replaces the rotation; the bias is still added."""
    structure, x, weight, bias = make_inputs(M, K, N, c, block_k, block_n, dtype, generator)
    bias = bias if with_bias else None
    y = ss1_forward_reference(x, weight, bias, structure, rotated_weight=rotate_weight(weight, structure))
    assert y.dtype == dtype and y.shape == (M, N)
    assert_close("y", y, dense_forward(x, weight, bias, structure))


def test_the_rotated_weight_is_used_and_gradients_reach_x_and_bias_only(generator):
    """The rotated weight is trusted, not recomputed from ``weight``; the result is differentiable in
    x and bias (the weight's gradient flows through the caller's rotation instead)."""
    structure, x, weight, bias = make_inputs(5, 300, 70, 4, 16, 32, torch.float64, generator)
    other = randn(*structure.weight_shape, dtype=torch.float64, generator=generator)
    grad_out = randn(5, 70, dtype=torch.float64, generator=generator)
    leaves = [x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    y = ss1_forward_reference(*leaves, structure, rotated_weight=rotate_weight(other, structure))
    assert_close("y", y, dense_forward(x, other, bias, structure))
    grad_x, grad_w, grad_b = torch.autograd.grad(y, leaves, grad_out, allow_unused=True)
    assert grad_w is None
    assert_close("grad_x", grad_x, grad_out @ structure.dense_weight(other))
    assert_close("grad_b", grad_b, grad_out.sum(0))


# ---- backward ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize(("M", "K", "N", "c", "block_k", "block_n"), cases())
def test_explicit_backward_matches_autograd_and_dense(M, K, N, c, block_k, block_n, dtype, generator):
    structure, x, weight, bias = make_inputs(M, K, N, c, block_k, block_n, dtype, generator)
    grad_out = randn(M, N, dtype=dtype, generator=generator)

    grad_x = ss1_grad_input_reference(grad_out, weight, structure)
    grad_w = ss1_grad_weight_reference(grad_out, x, structure)
    assert grad_x.dtype == dtype and grad_w.dtype == dtype

    # Against the dense formulas: dx = dy @ W_dense; dWc = scatter-sum of dy.T @ x.
    assert_close("grad_x vs dense", grad_x, grad_out.double() @ structure.dense_weight(weight.double()))
    assert_close("grad_w vs dense", grad_w, dense_grad_weight(grad_out, x, structure))

    # Against autograd through the forward reference.
    leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()]
    y = ss1_forward_reference(*leaves, structure)
    auto_x, auto_w, auto_b = torch.autograd.grad(y, leaves, grad_out)
    assert_close("grad_x vs autograd", grad_x, auto_x)
    assert_close("grad_w vs autograd", grad_w, auto_w)
    assert_close("grad_b vs autograd", grad_out.sum(0), auto_b)


def test_grad_weight_is_zero_on_padding(generator):
    """Compressed entries no dense entry reads get no gradient (K=40, c=2: last group half empty)."""
    structure, x, _, _ = make_inputs(4, 40, 20, 2, 16, 16, torch.float64, generator)
    grad_w = ss1_grad_weight_reference(randn(4, 20, dtype=torch.float64, generator=generator), x, structure)
    used = torch.zeros(structure.weight_shape, dtype=torch.bool).scatter_(
        1, structure.dense_index(), torch.ones(20, 40, dtype=torch.bool))
    assert (~used).any()
    assert (grad_w[~used] == 0).all()
    assert (grad_w[used] != 0).all()


@pytest.mark.parametrize(
    ("M", "K", "N", "c", "block_k", "block_n"),
    [
        pytest.param(3, 40, 7, 2, 16, 16, id=shape_id(3, 40, 7, 2, 16, 16)),
        pytest.param(2, 70, 19, 4, 16, 16, id=shape_id(2, 70, 19, 4, 16, 16)),
        pytest.param(1, 33, 5, 1, 16, 16, id=shape_id(1, 33, 5, 1, 16, 16)),
    ],
)
def test_gradcheck(M, K, N, c, block_k, block_n, generator):
    structure, x, weight, bias = make_inputs(M, K, N, c, block_k, block_n, torch.float64, generator)
    inputs = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: ss1_forward_reference(*t, structure), inputs)


# ---- half precision on CPU ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
@pytest.mark.parametrize(("M", "K", "N", "c", "block_k", "block_n"), cases([SHAPES[0], SHAPES[2]]))
def test_half_precision_matches_float64(M, K, N, c, block_k, block_n, dtype, generator):
    structure, x, weight, bias = make_inputs(M, K, N, c, block_k, block_n, dtype, generator)
    grad_out = randn(M, N, dtype=dtype, generator=generator)
    x64, w64, b64, g64 = (t.double() for t in (x, weight, bias, grad_out))

    y = ss1_forward_reference(x, weight, bias, structure)
    assert y.dtype == dtype
    assert_close("y", y, ss1_forward_reference(x64, w64, b64, structure))
    grad_x = ss1_grad_input_reference(grad_out, weight, structure)
    assert_close("grad_x", grad_x, ss1_grad_input_reference(g64, w64, structure))
    grad_w = ss1_grad_weight_reference(grad_out, x, structure)
    assert_close("grad_w", grad_w, ss1_grad_weight_reference(g64, x64, structure))


# ---- adjoints ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("M", "K", "N", "c", "block_k", "block_n"), cases(SHAPES[:3]))
def test_unsketch_and_unrotate_are_adjoints(M, K, N, c, block_k, block_n, generator):
    structure, x, weight, _ = make_inputs(M, K, N, c, block_k, block_n, torch.float64, generator)
    g = randn(M, structure.k_red, dtype=torch.float64, generator=generator)
    left = (sketch(x, structure) * g).sum().item()
    right = (x * unsketch(g, structure)).sum().item()
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)
    assert unsketch(g, structure).shape == (M, K)

    h = randn(*structure.weight_shape, dtype=torch.float64, generator=generator)
    left = (rotate_weight(weight, structure) * h).sum().item()
    right = (weight * unrotate_weight(h, structure)).sum().item()
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)


def test_sketch_sums_exactly_c_columns(generator):
    """Every sketch column adds one input column per member (zero past K): totals are preserved."""
    structure, x, _, _ = make_inputs(6, 300, 70, 4, 16, 32, torch.float64, generator)
    xs = sketch(x, structure)
    assert xs.shape == (6, structure.k_red)
    assert_close("row sums", xs.sum(dim=1), x.sum(dim=1))


@pytest.mark.parametrize("eager_first", [False, True], ids=["trace-first", "eager-first"])
def test_index_caches_never_cross_a_trace(eager_first, generator):
    """The gathers' index tensors are cached for eager calls only. A trace under fake and
    functional tensors (AOTAutograd tracing a compiled backward: ``is_compiling()`` is False
    there) builds its own, never caches it for eager calls and never picks up a cached real one
    (either way the second call used to fail)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    structure = SS1Structure(300, 200, 4, 11, 32, 64)
    for build in (_sketch_index, _unsketch_source, _rotation_columns, _inverse_rotation_columns):
        build.cache_clear()
    x = randn(7, 300, generator=generator)
    grad_rotated = randn(200, structure.k_red, generator=generator)

    def passes(x, grad_rotated):
        return unsketch(sketch(x, structure), structure), unrotate_weight(grad_rotated, structure)

    def traced():
        graph = make_fx(passes, tracing_mode="fake", pre_dispatch=False)(x, grad_rotated)
        return graph(x, grad_rotated)

    calls = (lambda: passes(x, grad_rotated), traced) if eager_first else (traced, lambda: passes(x, grad_rotated))
    first, second = calls[0](), calls[1]()
    for a, b in zip(first, second, strict=True):
        assert type(a) is torch.Tensor and type(b) is torch.Tensor
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(rotate_weight(second[1], structure), grad_rotated, rtol=0, atol=0)
