"""The SS1 structure: the one definition every part of ss1bench agrees on.

A layer with ``K = in_features``, ``N = out_features`` and reduction factor ``c`` stores a
compressed weight ``Wc`` of shape ``(N, K_red)``, ``K_red = ceil(K / (c * BK)) * BK``. Dense K
block ``i`` (``BK`` wide) belongs to group ``it = i // c`` as member ``r = i % c``; N block
``j = n // BN``. Its shift is

    s(i, j) = ((R3 + R2*j + R1*(it+1) + R0*(r+1)) * VEC) mod BK      (0 when c == 1)

and the equivalent dense weight is ``W[n, i*BK + u] = Wc[n, it*BK + ((u - s(i, j)) mod BK)]``.

Because ``s`` is linear in ``j`` it splits exactly (mod BK) into a member shift that does not
depend on ``j`` and a rotation that depends on ``j`` alone::

    s(i, j) = (a(it, r) + d(j)) mod BK,   a(it, r) = s(i, 0),   d(j) = (R2 * VEC * j) mod BK.

So every N block's sketch is the same sketch ``xs = sum_r rotate(x_block(it, r), a(it, r))``
rotated by ``d(j)``, which is the same as rotating the rows of ``Wc`` in block ``j`` by ``d(j)``.
The reference and the kernels compute the sketch once and read the weight rotated; tests check
them against the index-by-index definition above.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

#: R0 of the hash (a prime; the other three numbers are drawn from the seed).
HASH_PRIME = 45007
#: Shifts are multiples of VEC elements, so rotated loads stay 16-byte vectors in fp16.
VEC = 8
#: Reduction factors the kernels support.
REDUCTION_FACTORS = (1, 2, 4, 8, 16, 32)
#: Smallest structural block (two VEC chunks).
MIN_BLOCK = 16
#: Largest structural block_k: keeps every hash product below 2**31 (terms are reduced mod BK,
#: so the largest intermediate is 3 * BK**2).
MAX_BLOCK_K = 16384
#: Largest seed: the seed is saved in state dicts as an int64 tensor.
MAX_SEED = 2**63 - 1
#: Largest structural block_n (block_n never enters hash arithmetic beyond j = n // BN).
MAX_BLOCK_N = 1 << 20


def _is_power_of_two(value: int) -> bool:
    return value > 0 and (value & (value - 1)) == 0


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    return value


def validate_reduction_factor(redn_factor: object) -> int:
    """Return ``redn_factor`` if it is a power of two in 1..32, else raise ValueError."""
    value = _check_int("redn_factor", redn_factor)
    if value not in REDUCTION_FACTORS:
        raise ValueError(
            f"redn_factor must be a power of two in {list(REDUCTION_FACTORS)}, got {value}"
        )
    return value


def validate_block(name: str, value: object, maximum: int) -> int:
    """Return a structural block size if it is a power of two in [16, maximum], else raise."""
    value = _check_int(name, value)
    if not _is_power_of_two(value) or not MIN_BLOCK <= value <= maximum:
        raise ValueError(f"{name} must be a power of two between {MIN_BLOCK} and {maximum}, got {value}")
    return value


@functools.lru_cache(maxsize=4096)
def hash_numbers(seed: int) -> tuple[int, int, int, int]:
    """``(R0, R1, R2, R3)`` for ``seed``: ``R0 = 45007``, the rest drawn with a private generator.

    The global torch RNG is never touched. Drawn once per seed: a structure is rebuilt from its
    ints inside traced ops (``kernels/traced.py``), where tensors are fake and cannot be read.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    # device="cpu": under `with torch.device("cuda")` (or meta) the draw must still use the CPU
    # generator, and the numbers must not depend on where the layer lives.
    r1, r2, r3 = torch.randint(0, HASH_PRIME, (3,), generator=generator, device="cpu").tolist()
    return HASH_PRIME, int(r1), int(r2), int(r3)


def reduced_width(in_features: int, redn_factor: int, block_k: int) -> int:
    """``K_red = ceil(K / (c * BK)) * BK``: the columns of the compressed weight."""
    return -(-in_features // (redn_factor * block_k)) * block_k


def default_block_k(in_features: int, redn_factor: int) -> int:
    """Documented default ``block_k`` when neither the caller nor the tuning DB gives one.

    The power of two in {128, 64, 32, 16} that wastes the fewest compressed columns
    (smallest ``K_red``), the largest on ties: the compressed weight stays as small as the
    structure allows, and larger blocks give longer contiguous loads.
    """
    best = None
    for block_k in (128, 64, 32, 16):
        k_red = reduced_width(in_features, redn_factor, block_k)
        if best is None or k_red < best[0]:
            best = (k_red, block_k)
    assert best is not None
    return best[1]


#: Documented default ``block_n``: 128 rows share one rotation of the sketch (N / 128 distinct
#: rotations per layer). Inside the range the original project explored (<= 256), and a multiple
#: of every kernel tile the heuristics pick, so those tiles see one rotation each.
DEFAULT_BLOCK_N = 128


@dataclass(frozen=True)
class SS1Structure:
    """The function an SS1 layer computes (everything but the weights).

    Args:
        in_features: K, size of each input row.
        out_features: N, size of each output row.
        redn_factor: c, a power of two in 1..32.
        seed: seeds the hash numbers (R1, R2, R3); an int in [0, 2**63 - 1].
        block_k: BK, structural block along K (power of two, 16..16384).
        block_n: BN, structural block along N (power of two, >= 16).
    """

    in_features: int
    out_features: int
    redn_factor: int
    seed: int
    block_k: int
    block_n: int
    hash: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)
    # derived once (read on every launch): (num_groups, k_red), kernel_hash(), the identifying ints
    _sizes: tuple[int, int] = field(init=False, repr=False, compare=False)
    _kernel_hash: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)
    key: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("in_features", "out_features"):
            value = _check_int(name, getattr(self, name))
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        validate_reduction_factor(self.redn_factor)
        seed = _check_int("seed", self.seed)
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an int in [0, 2**63 - 1] (it is saved as int64), got {seed}")
        validate_block("block_k", self.block_k, MAX_BLOCK_K)
        validate_block("block_n", self.block_n, MAX_BLOCK_N)
        object.__setattr__(self, "hash", hash_numbers(self.seed))
        k_red = reduced_width(self.in_features, self.redn_factor, self.block_k)
        object.__setattr__(self, "_sizes", (k_red // self.block_k, k_red))
        kernel_hash = (0, 0, 0, 0) if self.redn_factor == 1 else tuple(v % self.block_k for v in self.hash)
        object.__setattr__(self, "_kernel_hash", kernel_hash)
        object.__setattr__(self, "key", (self.in_features, self.out_features, self.redn_factor, self.seed,
                                         self.block_k, self.block_n))

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def num_groups(self) -> int:
        """Number of compressed K blocks (groups of c dense blocks)."""
        return self._sizes[0]

    @property
    def k_red(self) -> int:
        """Columns of the compressed weight."""
        return self._sizes[1]

    @property
    def weight_shape(self) -> tuple[int, int]:
        return (self.out_features, self._sizes[1])

    @property
    def compression(self) -> float:
        """Dense parameters over compressed parameters (weights only)."""
        return (self.in_features * self.out_features) / (self.out_features * self.k_red)

    # ---- hash -----------------------------------------------------------------------------------
    def kernel_hash(self) -> tuple[int, int, int, int]:
        """``(R0, R1, R2, R3)`` each reduced mod ``block_k``: what the kernels take.

        All zero when ``c == 1`` (no shifts).
        """
        return self._kernel_hash

    def shift(self, i: torch.Tensor | int, j: torch.Tensor | int) -> torch.Tensor:
        """``s(i, j)`` for dense K block ``i`` and N block ``j`` (broadcasting int64 tensors).

        Each term is reduced mod ``block_k`` before it is multiplied, so nothing overflows.
        """
        i = torch.as_tensor(i, dtype=torch.int64)
        j = torch.as_tensor(j, dtype=torch.int64)
        if self.redn_factor == 1:
            return torch.zeros(torch.broadcast_shapes(i.shape, j.shape), dtype=torch.int64)
        bk, c = self.block_k, self.redn_factor
        r0, r1, r2, r3 = self.kernel_hash()
        it, r = i // c, i % c
        total = r3 + r2 * (j % bk) + r1 * ((it + 1) % bk) + r0 * ((r + 1) % bk)
        return ((total % bk) * VEC) % bk

    def member_shifts(self) -> torch.Tensor:
        """``a(it, r) = s(it*c + r, 0)``: int64 tensor of shape ``(num_groups, c)``."""
        i = torch.arange(self.num_groups * self.redn_factor, dtype=torch.int64)
        return self.shift(i, 0).view(self.num_groups, self.redn_factor)

    def block_rotations(self) -> torch.Tensor:
        """``d(j) = (R2 * VEC * j) mod BK`` for every N block: int64 tensor ``(ceil(N / BN),)``."""
        j = torch.arange(math.ceil(self.out_features / self.block_n), dtype=torch.int64)
        if self.redn_factor == 1:
            return torch.zeros_like(j)
        bk = self.block_k
        r2 = self.kernel_hash()[2]
        return ((r2 * (j % bk)) % bk * VEC) % bk

    # ---- index maps -----------------------------------------------------------------------------
    def sketch_index(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Dense column summed into each sketch column, per member: ``(K_red, c)`` int64.

        ``xs[:, it*BK + t] = sum_r x[:, index[it*BK + t, r]]`` (columns ``>= K`` read as zero).
        """
        bk, c = self.block_k, self.redn_factor
        t = torch.arange(bk, dtype=torch.int64)
        a = self.member_shifts()  # (G, c)
        it = torch.arange(self.num_groups, dtype=torch.int64)
        r = torch.arange(c, dtype=torch.int64)
        base = (it[:, None] * c + r[None, :]) * bk  # (G, c)
        u = (t[None, :, None] + a[:, None, :]) % bk  # (G, BK, c)
        index = base[:, None, :] + u
        return index.reshape(self.k_red, c).to(device)

    def rotation_columns(self, device: torch.device | str | None = None, inverse: bool = False) -> torch.Tensor:
        """Column of ``Wc`` (inside its group) read at each rotated position: ``(N, BK)`` int64.

        ``Wr[n, it*BK + t] = Wc[n, it*BK + cols[n, t]]``, ``cols[n, t] = (t - d(n // BN)) mod BK``;
        then ``y = sketch(x) @ Wr.T``. With ``inverse``, ``(t + d(n // BN)) mod BK``: the columns of
        ``Wr`` that give ``Wc`` back. Built from aranges and the hash constants only (elementwise),
        so a traced graph computes it inside the gather that uses it.
        """
        bk = self.block_k
        t = torch.arange(bk, dtype=torch.int64, device=device)
        if self.redn_factor == 1:
            return t.expand(self.out_features, bk)
        j = torch.arange(self.out_features, dtype=torch.int64, device=device) // self.block_n
        d = ((self.kernel_hash()[2] * (j % bk)) % bk * VEC) % bk  # d(j), as block_rotations()
        d = -d if not inverse else d
        return (t[None, :] + d[:, None]) % bk

    def dense_index(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Column of ``Wc`` that each dense weight entry reads: ``(N, K)`` int64.

        ``W[n, k] = Wc[n, dense_index[n, k]]``.
        """
        bk, c = self.block_k, self.redn_factor
        k = torch.arange(self.in_features, dtype=torch.int64)
        n = torch.arange(self.out_features, dtype=torch.int64)
        i, u = k // bk, k % bk
        s = self.shift(i[None, :], (n // self.block_n)[:, None])  # (N, K)
        return (((i // c) * bk)[None, :] + (u[None, :] - s) % bk).to(device)

    # ---- weights --------------------------------------------------------------------------------
    def check_weight(self, weight: torch.Tensor, name: str = "weight") -> None:
        if tuple(weight.shape) != self.weight_shape:
            raise ValueError(
                f"{name} must have shape (out_features, K_red) = {self.weight_shape} for {self}, "
                f"got {tuple(weight.shape)}"
            )

    def dense_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Equivalent dense weight ``W: (N, K)`` of a compressed ``weight: (N, K_red)``."""
        self.check_weight(weight)
        return weight.gather(1, self.dense_index(weight.device))

    def project(self, dense: torch.Tensor) -> torch.Tensor:
        """Least-squares projection of a dense ``(N, K)`` weight onto SS1: ``(N, K_red)``.

        Each compressed entry is the mean of the dense entries that share it; entries no dense
        entry maps to (padding past K) are zero.
        """
        expected = (self.out_features, self.in_features)
        if tuple(dense.shape) != expected:
            raise ValueError(f"dense weight must have shape {expected}, got {tuple(dense.shape)}")
        index = self.dense_index(dense.device)
        work_dtype = torch.float64 if dense.dtype == torch.float64 else torch.float32
        total = torch.zeros(self.weight_shape, dtype=work_dtype, device=dense.device)
        count = torch.zeros(self.weight_shape, dtype=work_dtype, device=dense.device)
        total.scatter_add_(1, index, dense.to(work_dtype))
        count.scatter_add_(1, index, torch.ones(index.shape, dtype=work_dtype, device=dense.device))
        return (total / count.clamp_min(1)).to(dense.dtype)


@functools.lru_cache(maxsize=1024)
def cached_structure(
    in_features: int, out_features: int, redn_factor: int, seed: int, block_k: int, block_n: int
) -> SS1Structure:
    """Structure for these ints, built once (the hash numbers come from a generator call)."""
    return SS1Structure(in_features, out_features, redn_factor, seed, block_k, block_n)
