"""Low-rank and Monarch peers: forward equals the dense matrix built from their factors, and their
weight counts equal SS1's within one SS1 block."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, dtype_id, randn

from ss1bench.bench.peers import LowRankLinear, MonarchLinear, monarch_blocks
from ss1bench.structure import SS1Structure, default_block_k
from ss1bench.tuning.shapes import SHAPE_SETS

# Odd shapes first (K, N not multiples of 64, one row), then the benchmark's.
SHAPES = [(1, 300, 64, 4), (7, 96, 160, 2), (33, 768, 2304, 8), (5, 3072, 768, 16)]
DTYPES = [torch.float32, torch.float64]


def _structure(k: int, n: int, c: int, block_n: int = 128) -> SS1Structure:
    return SS1Structure(k, n, c, 0, default_block_k(k, c), block_n)


def _ids(case) -> str:
    m, k, n, c = case
    return f"M{m}-K{k}-N{n}-c{c}"


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", SHAPES, ids=_ids)
@pytest.mark.parametrize("peer", [LowRankLinear, MonarchLinear], ids=["lowrank", "monarch"])
def test_forward_matches_dense_factors(peer, case, dtype, generator):
    m, k, n, c = case
    layer = peer.matching(_structure(k, n, c), dtype=dtype)
    layer.reset_parameters(generator)
    x = randn(2, m, k, dtype=dtype, generator=generator)  # a leading batch dim too
    expected = x.double() @ layer.dense_weight().double().T + layer.bias.double()
    assert_close(f"{peer.__name__} y", layer(x), expected)


@pytest.mark.parametrize("case", SHAPES, ids=_ids)
def test_monarch_backward_matches_dense(case, generator):
    m, k, n, c = case
    layer = MonarchLinear.matching(_structure(k, n, c), dtype=torch.float64)
    layer.reset_parameters(generator)
    x = randn(m, k, dtype=torch.float64, generator=generator).requires_grad_()
    dy = randn(m, n, dtype=torch.float64, generator=generator)
    layer(x).backward(dy)
    assert_close("Monarch dx", x.grad, dy @ layer.dense_weight().detach())


def test_monarch_permutation_mixes_every_block():
    """Every output block depends on every input block (the butterfly's point)."""
    layer = MonarchLinear(64, 32, num_blocks=4, width=8, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.w1.fill_(1.0)
        layer.w2.fill_(1.0)
    dense = layer.dense_weight()
    for j in range(4):
        for i in range(4):
            assert dense[j * 8:(j + 1) * 8, i * 16:(i + 1) * 16].abs().sum() > 0, (j, i)


def _benchmark_layers():
    layers = {(k, n) for table in SHAPE_SETS.values() for _, k, n in table}
    return [*sorted(layers), (300, 64), (96, 160)]


@pytest.mark.parametrize("block_n", [64, 256])
@pytest.mark.parametrize("c", [2, 4, 8, 16])
def test_parameter_counts_match_ss1_within_one_block(c, block_n):
    for k, n in _benchmark_layers():
        structure = _structure(k, n, c, block_n)
        ss1 = n * structure.k_red
        one_block = n * structure.block_k  # weights of one compressed K block across all N
        for peer in (LowRankLinear, MonarchLinear):
            layer = peer.matching(structure, device="meta")
            assert abs(layer.weight_params - ss1) <= min(one_block, (k + n) // 2), (peer.__name__, k, n, c)
            assert layer.weight_params == sum(p.numel() for name, p in layer.named_parameters() if name != "bias")


def test_monarch_blocks_divide_and_mix():
    for k, n in _benchmark_layers():
        for c in (2, 4, 8, 16):
            layer = MonarchLinear.matching(_structure(k, n, c), device="meta")
            b = layer.num_blocks
            assert k % b == 0 and n % b == 0 and b <= layer.width
    # Square layers get the Monarch paper's shape: hidden width = d, 2c blocks.
    assert monarch_blocks(4096, 4096, 512) == 8


def test_bad_peer_sizes_raise():
    with pytest.raises(ValueError, match="must divide"):
        MonarchLinear(100, 64, num_blocks=8, width=4)
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(64, 64, rank=0)
