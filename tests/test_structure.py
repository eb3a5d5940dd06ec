"""The SS1 structure (the definition in ss1bench/structure.py) checked against literal, independent constructions.

Every oracle here is written from the design text with plain Python ints (or, for the public
SSLinear hashing, from its block-by-block procedure), never from ``ss1bench.structure`` itself.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close, randn

from ss1bench.structure import (
    MAX_BLOCK_K,
    MAX_BLOCK_N,
    REDUCTION_FACTORS,
    SS1Structure,
    cached_structure,
    hash_numbers,
)

PRIME = 45007
VEC = 8


# ---- literal oracles (plain Python ints, straight from the definition in ss1bench/structure.py) ---------------------


def literal_hash(seed: int) -> tuple[int, int, int, int]:
    """``R0 = 45007``; ``R1, R2, R3`` = ``torch.randint(0, P, (3,))`` from a generator seeded with ``seed``."""
    r1, r2, r3 = torch.randint(0, PRIME, (3,), generator=torch.Generator().manual_seed(seed)).tolist()
    return PRIME, r1, r2, r3


def literal_shift(i: int, j: int, c: int, block_k: int, numbers: tuple[int, int, int, int]) -> int:
    """``s(i, j)`` in Python big ints (no reduction before the product: nothing can overflow)."""
    if c == 1:
        return 0
    r0, r1, r2, r3 = numbers
    it, r = i // c, i % c
    return ((r3 + r2 * j + r1 * (it + 1) + r0 * (r + 1)) * VEC) % block_k


def literal_dense_index(K: int, N: int, c: int, seed: int, block_k: int, block_n: int) -> list[list[int]]:
    """``index[n][k]``: ``W[n, i*BK + u] = Wc[n, it*BK + ((u - s(i, j)) mod BK)]``, entry by entry."""
    numbers = literal_hash(seed)
    index = []
    for n in range(N):
        j = n // block_n
        row = []
        for k in range(K):
            i, u = k // block_k, k % block_k
            it = i // c
            row.append(it * block_k + (u - literal_shift(i, j, c, block_k, numbers)) % block_k)
        index.append(row)
    return index


def public_sslinear_index(K: int, N: int, c: int, block_k: int, block_n: int,
                          numbers: tuple[int, int, int, int]) -> torch.Tensor:
    """Flat index into ``Wc: (N, K_red)`` storage of every dense entry, in the ``K x N`` view.

    Written after the public SSLinear procedure: for each dense K block ``i`` and N block ``j``,
    the dense block ``(i, j)`` takes rows ``locs`` of compressed block ``(it, j)`` of ``Wc.T``,
    ``locs = (offset + arange(BK)) % BK``, ``offset = BK - (hash * VEC) % BK``. Needs
    ``K % (c * BK) == 0`` (the public code's ``K_red = K / c``); with ``c == 1`` the public code
    uses the identity map.
    """
    assert K % (c * block_k) == 0
    k_red = K // c
    flat_t = torch.arange(N * k_red, dtype=torch.int64).reshape(N, k_red).T  # (K_red, N)
    if c == 1:
        return flat_t.clone()
    r0, r1, r2, r3 = numbers
    full = torch.full((K, N), -1, dtype=torch.int64)
    for i in range(K // block_k):
        for j in range(math.ceil(N / block_n)):
            it, r = i // c, i % c
            offset = block_k - ((r3 + r2 * j + r1 * (it + 1) + r0 * (r + 1)) * VEC) % block_k
            locs = (offset + torch.arange(block_k)) % block_k
            block = flat_t[it * block_k:(it + 1) * block_k, j * block_n:(j + 1) * block_n][locs]
            full[i * block_k:(i + 1) * block_k, j * block_n:(j + 1) * block_n] = block
    assert (full >= 0).all()
    return full


def case_id(K: int, N: int, c: int, block_k: int, block_n: int, seed: int | None = None) -> str:
    text = f"K{K}-N{N}-c{c}-bk{block_k}-bn{block_n}"
    return text if seed is None else f"{text}-seed{seed}"


# ---- dense map against the literal definition --------------------------------------------------

# K and N not multiples of any block, a single entry, and one large K with a wide block.
LITERAL_SHAPES = [
    (300, 70, 16, 32, 1024),
    (37, 5, 16, 16, 7),
    (130, 33, 32, 16, 0),
    (1, 1, 16, 16, 123456789),
    (1000, 21, 64, 64, 2**40 + 3),
    (200, 19, 128, 16, 99),
]
LITERAL_CASES = [
    pytest.param(K, N, c, bk, bn, seed, id=case_id(K, N, c, bk, bn, seed))
    for (K, N, bk, bn, seed) in LITERAL_SHAPES
    for c in REDUCTION_FACTORS
]


@pytest.mark.parametrize(("K", "N", "c", "block_k", "block_n", "seed"), LITERAL_CASES)
def test_dense_index_and_weight_match_literal_definition(K, N, c, block_k, block_n, seed, generator):
    structure = SS1Structure(K, N, c, seed, block_k, block_n)
    assert structure.hash == literal_hash(seed)
    expected_index = literal_dense_index(K, N, c, seed, block_k, block_n)
    index = structure.dense_index()
    assert index.dtype == torch.int64
    assert index.tolist() == expected_index

    # Distinct random values, so equal dense weights mean equal maps.
    weight = randn(*structure.weight_shape, dtype=torch.float64, generator=generator)
    rows = weight.tolist()
    expected = torch.tensor([[rows[n][expected_index[n][k]] for k in range(K)] for n in range(N)],
                            dtype=torch.float64)
    assert torch.equal(structure.dense_weight(weight), expected)


@pytest.mark.parametrize(("K", "N", "c", "block_k", "block_n", "seed"), LITERAL_CASES[:12])
def test_shift_decomposes_into_member_shift_and_block_rotation(K, N, c, block_k, block_n, seed):
    """What the kernels use: ``s(i, j) = (a(it, r) + d(j)) mod BK`` for every i, j."""
    structure = SS1Structure(K, N, c, seed, block_k, block_n)
    numbers = literal_hash(seed)
    members = structure.member_shifts()  # (G, c)
    rotations = structure.block_rotations()  # (ceil(N / BN),)
    assert members.shape == (structure.num_groups, c)
    assert rotations.shape == (math.ceil(N / block_n),)
    for i in range(structure.num_groups * c):
        for j in range(rotations.numel()):
            combined = (int(members[i // c, i % c]) + int(rotations[j])) % block_k
            assert combined == literal_shift(i, j, c, block_k, numbers), (i, j)


# ---- compatibility with the public SSLinear hashing --------------------------------------------

PUBLIC_CASES = [
    pytest.param(K, N, c, bk, bn, seed, id=case_id(K, N, c, bk, bn, seed))
    for (K, N, c, bk, bn, seed) in [
        (256, 70, 2, 64, 32, 1024),
        (512, 48, 4, 32, 16, 42),
        (1024, 100, 16, 16, 64, 7),
        (512, 33, 32, 16, 16, 1),
        (2048, 24, 8, 256, 16, 2**63 - 1),
        (384, 40, 1, 128, 16, 1024),
        (256, 16, 2, 16, 256, 3),
    ]
]


@pytest.mark.parametrize(("K", "N", "c", "block_k", "block_n", "seed"), PUBLIC_CASES)
def test_dense_map_matches_public_sslinear_hashing(K, N, c, block_k, block_n, seed):
    structure = SS1Structure(K, N, c, seed, block_k, block_n)
    assert structure.k_red == K // c  # the public code's K_red when K % (c*BK) == 0
    public = public_sslinear_index(K, N, c, block_k, block_n, structure.hash)  # (K, N)
    rows = torch.arange(N, dtype=torch.int64)[:, None]
    ours = rows * structure.k_red + structure.dense_index()  # (N, K)
    mismatched = (ours != public.T).sum().item()
    assert mismatched == 0, f"{mismatched} of {K * N} entries map differently from the public hashing"


# ---- hash numbers and shift arithmetic ---------------------------------------------------------

HUGE_SEEDS = [0, 1024, 2**31 - 1, 2**40 + 3, 2**63 - 1, 2**63 + 5, 2**64 - 1, -1, -(2**63)]


@pytest.mark.parametrize("seed", HUGE_SEEDS, ids=lambda s: f"seed{s}")
def test_hash_numbers_follow_the_definition(seed):
    numbers = hash_numbers(seed)
    assert numbers == literal_hash(seed)
    assert numbers[0] == PRIME
    assert all(isinstance(value, int) and 0 <= value < PRIME for value in numbers[1:])


def test_hash_numbers_depend_on_the_seed():
    assert len({hash_numbers(seed) for seed in range(20)}) == 20


BIG_INDICES = [0, 1, 31, 2**31 - 1, 2**31, 2**40 + 7, 2**53 + 1, 2**62 - 1, 2**63 - 2]


@pytest.mark.parametrize("seed", [0, 2**62 + 5, 2**63 - 1], ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("block_k", [16, 128, MAX_BLOCK_K], ids=lambda b: f"bk{b}")
@pytest.mark.parametrize("c", [2, 32], ids=lambda c: f"c{c}")
def test_shift_cannot_overflow(seed, block_k, c):
    """``shift`` on int64 tensors equals big-int arithmetic even where the raw hash exceeds 2**63."""
    structure = SS1Structure(block_k * c, 16, c, seed, block_k, 16)
    numbers = structure.hash
    i = torch.tensor(BIG_INDICES, dtype=torch.int64)[:, None]
    j = torch.tensor(BIG_INDICES, dtype=torch.int64)[None, :]
    actual = structure.shift(i, j)
    assert actual.dtype == torch.int64
    assert actual.shape == (len(BIG_INDICES), len(BIG_INDICES))
    expected = [[literal_shift(ii, jj, c, block_k, numbers) for jj in BIG_INDICES] for ii in BIG_INDICES]
    assert actual.tolist() == expected
    # Python-int arguments go through the same path.
    assert int(structure.shift(2**62 - 1, 2**62 - 1)) == literal_shift(2**62 - 1, 2**62 - 1, c, block_k, numbers)


def test_shift_is_zero_without_reduction():
    structure = SS1Structure(300, 70, 1, 1024, 16, 16)
    i = torch.arange(40)[:, None]
    j = torch.arange(10)[None, :]
    assert structure.shift(i, j).tolist() == [[0] * 10] * 40
    assert structure.kernel_hash() == (0, 0, 0, 0)


def test_shifts_are_multiples_of_vec_and_vary():
    structure = SS1Structure(4096, 1024, 8, 5, 128, 16)
    shifts = structure.shift(torch.arange(32)[:, None], torch.arange(64)[None, :])
    assert (shifts % VEC == 0).all()
    assert ((shifts >= 0) & (shifts < 128)).all()
    assert shifts.unique().numel() > 4  # a hash, not a constant


def test_building_structures_leaves_global_rng_untouched():
    before = torch.random.get_rng_state()
    SS1Structure(300, 70, 4, 1024, 16, 32)
    SS1Structure(1000, 21, 32, 2**63 - 1, 64, 64)
    cached_structure(37, 5, 2, 11, 16, 16)
    hash_numbers(99)
    assert torch.equal(torch.random.get_rng_state(), before)


# ---- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", REDUCTION_FACTORS, ids=lambda c: f"c{c}")
@pytest.mark.parametrize("block_k", [16, 32, 128, 1024], ids=lambda b: f"bk{b}")
def test_k_red_formula(c, block_k):
    for K in (1, 15, 16, 17, 300, 511, 512, 513, 4096, 5000):
        structure = SS1Structure(K, 3, c, 0, block_k, 16)
        groups = -(-K // (c * block_k))  # ceil with ints
        assert structure.num_groups == groups, K
        assert structure.k_red == groups * block_k, K
        assert structure.weight_shape == (3, groups * block_k), K
        assert structure.compression == pytest.approx(K / (groups * block_k))


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redn_factor", "error", "match"),
    [
        (3, ValueError, r"redn_factor must be a power of two in \[1, 2, 4, 8, 16, 32\], got 3"),
        (0, ValueError, r"redn_factor must be a power of two .* got 0"),
        (64, ValueError, r"redn_factor must be a power of two .* got 64"),
        (-2, ValueError, r"redn_factor must be a power of two .* got -2"),
        (True, TypeError, r"redn_factor must be an int, got bool"),
        (2.0, TypeError, r"redn_factor must be an int, got float"),
    ],
    ids=["three", "zero", "sixty-four", "negative", "bool", "float"],
)
def test_invalid_reduction_factor(redn_factor, error, match):
    with pytest.raises(error, match=match):
        SS1Structure(256, 64, redn_factor, 0, 16, 16)


@pytest.mark.parametrize(
    ("block_k", "block_n", "error", "match"),
    [
        (24, 16, ValueError, r"block_k must be a power of two between 16 and 16384, got 24"),
        (8, 16, ValueError, r"block_k must be a power of two between 16 and 16384, got 8"),
        (2 * MAX_BLOCK_K, 16, ValueError, r"block_k must be a power of two between 16 and 16384, got 32768"),
        (0, 16, ValueError, r"block_k must be a power of two .* got 0"),
        (16, 48, ValueError, r"block_n must be a power of two between 16 and \d+, got 48"),
        (16, 8, ValueError, r"block_n must be a power of two .* got 8"),
        (16, 2 * MAX_BLOCK_N, ValueError, rf"block_n must be a power of two .* got {2 * MAX_BLOCK_N}"),
        (16.0, 16, TypeError, r"block_k must be an int, got float"),
        (16, True, TypeError, r"block_n must be an int, got bool"),
    ],
    ids=["bk24", "bk8", "bk32768", "bk0", "bn48", "bn8", "bn-too-big", "bk-float", "bn-bool"],
)
def test_invalid_block_sizes(block_k, block_n, error, match):
    with pytest.raises(error, match=match):
        SS1Structure(256, 64, 2, 0, block_k, block_n)


def test_largest_blocks_are_accepted():
    structure = SS1Structure(MAX_BLOCK_K, 16, 2, 0, MAX_BLOCK_K, MAX_BLOCK_N)
    assert structure.k_red == MAX_BLOCK_K


@pytest.mark.parametrize(
    ("K", "N", "match"),
    [
        (0, 64, r"in_features must be positive, got 0"),
        (-5, 64, r"in_features must be positive, got -5"),
        (64, 0, r"out_features must be positive, got 0"),
        (64, -1, r"out_features must be positive, got -1"),
    ],
    ids=["K0", "K-5", "N0", "N-1"],
)
def test_non_positive_dims(K, N, match):
    with pytest.raises(ValueError, match=match):
        SS1Structure(K, N, 2, 0, 16, 16)


def test_non_int_dims_and_seed():
    with pytest.raises(TypeError, match=r"in_features must be an int, got float"):
        SS1Structure(64.0, 16, 2, 0, 16, 16)
    with pytest.raises(TypeError, match=r"seed must be an int, got str"):
        SS1Structure(64, 16, 2, "7", 16, 16)


def test_dense_weight_rejects_wrong_weight_shape(generator):
    structure = SS1Structure(300, 70, 4, 0, 16, 32)  # weight (70, 80)
    for shape in [(70, 79), (69, 80), (80, 70), (70, 300)]:
        with pytest.raises(ValueError, match=r"weight must have shape \(out_features, K_red\) = \(70, 80\)"):
            structure.dense_weight(randn(*shape, generator=generator))


def test_project_rejects_wrong_dense_shape(generator):
    structure = SS1Structure(300, 70, 4, 0, 16, 32)
    for shape in [(70, 80), (300, 70), (70, 301)]:
        with pytest.raises(ValueError, match=r"dense weight must have shape \(70, 300\), got"):
            structure.project(randn(*shape, generator=generator))


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
def test_out_of_range_seed_is_rejected_with_a_clear_message(seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63 - 1\]"):
        SS1Structure(64, 16, 2, seed, 16, 16)


# ---- projection ----------------------------------------------------------------------------------

PROJECT_CASES = [
    pytest.param(K, N, c, bk, bn, id=case_id(K, N, c, bk, bn))
    for (K, N, c, bk, bn) in [
        (256, 48, 2, 64, 16),
        (512, 33, 4, 32, 16),
        (512, 20, 32, 16, 16),
        (384, 17, 1, 128, 32),
    ]
]


@pytest.mark.parametrize(("K", "N", "c", "block_k", "block_n"), PROJECT_CASES)
def test_project_inverts_dense_weight_when_k_is_a_multiple(K, N, c, block_k, block_n, generator):
    structure = SS1Structure(K, N, c, 17, block_k, block_n)
    assert K % (c * block_k) == 0
    weight = randn(*structure.weight_shape, dtype=torch.float64, generator=generator)
    assert_close("project(dense_weight(Wc))", structure.project(structure.dense_weight(weight)), weight)


@pytest.mark.parametrize(
    ("K", "N", "c", "block_k", "block_n", "has_padding"),
    [
        # The last group holds only a partial block: its other columns are padding.
        pytest.param(40, 20, 2, 16, 16, True, id=case_id(40, 20, 2, 16, 16)),
        pytest.param(70, 9, 4, 16, 16, True, id=case_id(70, 9, 4, 16, 16)),
        pytest.param(50, 5, 1, 32, 16, True, id=case_id(50, 5, 1, 32, 16)),
        # The only group holds full blocks: every compressed entry is shared.
        pytest.param(100, 35, 8, 16, 32, False, id=case_id(100, 35, 8, 16, 32)),
    ],
)
def test_project_is_the_mean_of_shared_entries(K, N, c, block_k, block_n, has_padding, generator):
    structure = SS1Structure(K, N, c, 3, block_k, block_n)
    dense = randn(N, K, dtype=torch.float64, generator=generator)
    index = literal_dense_index(K, N, c, 3, block_k, block_n)
    values = dense.tolist()
    shared: dict[tuple[int, int], list[float]] = {}
    for n in range(N):
        for k in range(K):
            shared.setdefault((n, index[n][k]), []).append(values[n][k])
    expected = torch.zeros(structure.weight_shape, dtype=torch.float64)
    for (n, q), entries in shared.items():
        expected[n, q] = sum(entries) / len(entries)
    projected = structure.project(dense)
    assert projected.dtype == torch.float64
    assert_close("project", projected, expected)

    # Padding: entries no dense entry maps to are exactly zero.
    used = torch.zeros(structure.weight_shape, dtype=torch.bool)
    for n, q in shared:
        used[n, q] = True
    assert bool((~used).any()) == has_padding
    assert (projected[~used] == 0).all()
    assert (projected[used] != 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_project_keeps_dtype(dtype, generator):
    structure = SS1Structure(300, 70, 4, 0, 16, 32)
    dense = randn(70, 300, generator=generator).to(dtype)
    projected = structure.project(dense)
    assert projected.dtype == dtype
    expected = structure.project(dense.double())
    assert_close("project", projected, expected)


@pytest.mark.parametrize(
    ("K", "N", "c", "block_k", "block_n"),
    [
        pytest.param(300, 70, 4, 16, 32, id=case_id(300, 70, 4, 16, 32)),
        pytest.param(256, 48, 2, 64, 16, id=case_id(256, 48, 2, 64, 16)),
    ],
)
def test_project_is_the_least_squares_minimizer(K, N, c, block_k, block_n, generator):
    structure = SS1Structure(K, N, c, 5, block_k, block_n)
    dense = randn(N, K, dtype=torch.float64, generator=generator)
    best = structure.project(dense).requires_grad_(True)

    def error(weight):
        return (structure.dense_weight(weight) - dense).pow(2).sum()

    # Stationary: the gradient of the squared error vanishes at the projection.
    (grad,) = torch.autograd.grad(error(best), best)
    assert grad.abs().max().item() < 1e-10 * dense.abs().max().item() * K

    # And every perturbation makes it worse (the problem is convex).
    best_error = error(best).item()
    assert best_error > 0
    for _ in range(5):
        direction = randn(*structure.weight_shape, dtype=torch.float64, generator=generator)
        for step in (1e-3, 1e-1):
            assert error(best.detach() + step * direction).item() > best_error


def test_dtype_names_are_defined_once():
    """The CSV schema spells out the dtype names (it imports no torch): they must be dtypes.TORCH_DTYPES'."""
    from ss1bench.bench.schema import DTYPES
    from ss1bench.dtypes import DTYPE_NAMES, TORCH_DTYPES, dtype_name

    assert tuple(TORCH_DTYPES) == DTYPES
    assert all(dtype_name(dtype) == name for dtype, name in DTYPE_NAMES.items())
    with pytest.raises(TypeError, match="float64"):
        dtype_name(torch.float64)
