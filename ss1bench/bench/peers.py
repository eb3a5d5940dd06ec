"""Structured peers SS1 is compared with at equal parameter count: low-rank and Monarch.

Both are plain PyTorch (cuBLAS GEMMs and batched GEMMs), as a user would write them, and both
have a ``dense_weight()`` so tests can check them against the dense matrix built from their
factors. Sizing: SS1 stores ``N * K_red`` weights; each peer's weight count is ``h * (K + N)``
for an integer ``h``, so choosing ``h = round(N * K_red / (K + N))`` lands within half a step
``(K + N) / 2`` of SS1's count, which is less than one SS1 block (``N * block_k`` weights) for
every shape with ``K < (2 * block_k - 1) * N``. All three layers carry the same ``N`` biases.

Shapes: ``x: (M, K)``, ``y: (M, N)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ss1bench.structure import SS1Structure


def matching_width(in_features: int, out_features: int, target_params: int) -> int:
    """``h >= 1`` whose ``h * (K + N)`` weights are nearest ``target_params``."""
    return max(1, round(target_params / (in_features + out_features)))


def _fill_uniform_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator | None) -> None:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (nn.Linear's law), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(fan_in)
    values = torch.rand(tensor.shape, generator=generator, dtype=torch.float32,
                        device=generator.device if generator is not None else tensor.device)
    tensor.copy_(values.mul_(2 * bound).sub_(bound))


class LowRankLinear(nn.Module):
    """``y = (x @ down.T) @ up.T + bias``: ``down: (rank, K)``, ``up: (N, rank)``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.up = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    @classmethod
    def matching(cls, structure: SS1Structure, bias: bool = True, device=None, dtype=None) -> LowRankLinear:
        """The low-rank layer with as many weights as an SS1 layer of ``structure`` (to half a rank)."""
        k, n = structure.in_features, structure.out_features
        rank = matching_width(k, n, n * structure.k_red)
        return cls(k, n, rank, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            _fill_uniform_(self.down, self.in_features, generator)
            _fill_uniform_(self.up, self.rank, generator)
            if self.bias is not None:
                _fill_uniform_(self.bias, self.in_features, generator)

    @property
    def weight_params(self) -> int:
        return self.down.numel() + self.up.numel()

    def flops(self, m: int) -> int:
        """Forward FLOPs for ``m`` rows (multiply-add = 2)."""
        return 2 * m * self.rank * (self.in_features + self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down), self.up, self.bias)

    def dense_weight(self) -> torch.Tensor:
        """``up @ down``: ``(N, K)``."""
        return self.up @ self.down

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def monarch_blocks(in_features: int, out_features: int, width: int) -> int:
    """Number of diagonal blocks ``b`` for a Monarch layer of per-block width ``width``.

    Following the rectangular MonarchLinear of the Monarch paper's code (HazyResearch/fly), the
    hidden width ``b * width`` is about ``min(K, N)`` (so ``b = 2c`` for a square layer at SS1's
    parameter count). ``b`` is a power of two dividing both K and N (no padding), and at most
    ``width`` so that every output block sees every input block (full mixing).
    """
    target = math.log2(max(min(in_features, out_features) / width, 1.0))
    candidates = [1 << e for e in range(0, width.bit_length())
                  if (1 << e) <= width and in_features % (1 << e) == 0 and out_features % (1 << e) == 0]
    return min(candidates, key=lambda b: (abs(math.log2(b) - target), -b))


class MonarchLinear(nn.Module):
    """Monarch matrix ``W = B2 · P · B1`` (two block-diagonal factors and a permutation).

    ``B1`` has ``b`` blocks ``(width, K/b)`` (``w1: (b, width, K/b)``), mapping K to a hidden
    width ``H = b * width``; ``P`` reads the hidden vector, laid out ``(b, width)`` by block,
    in transposed order ``(width, b)``, so each of the ``b`` blocks of ``B2`` (``w2: (b, N/b,
    width)``) mixes entries from every block of ``B1``. Forward: two ``torch.bmm`` calls.
    """

    def __init__(self, in_features: int, out_features: int, num_blocks: int, width: int,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if in_features % num_blocks or out_features % num_blocks:
            raise ValueError(f"num_blocks={num_blocks} must divide in_features={in_features} and "
                             f"out_features={out_features}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.num_blocks, self.width = num_blocks, width
        self.w1 = nn.Parameter(torch.empty(num_blocks, width, in_features // num_blocks, **factory))
        self.w2 = nn.Parameter(torch.empty(num_blocks, out_features // num_blocks, width, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    @classmethod
    def matching(cls, structure: SS1Structure, bias: bool = True, device=None, dtype=None) -> MonarchLinear:
        """The Monarch layer with as many weights as an SS1 layer of ``structure`` (to half a step)."""
        k, n = structure.in_features, structure.out_features
        width = matching_width(k, n, n * structure.k_red)
        return cls(k, n, monarch_blocks(k, n, width), width, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            _fill_uniform_(self.w1, self.in_features // self.num_blocks, generator)
            _fill_uniform_(self.w2, self.width, generator)
            if self.bias is not None:
                _fill_uniform_(self.bias, self.in_features, generator)

    @property
    def hidden(self) -> int:
        return self.num_blocks * self.width

    @property
    def weight_params(self) -> int:
        return self.w1.numel() + self.w2.numel()

    def flops(self, m: int) -> int:
        """Forward FLOPs for ``m`` rows (multiply-add = 2)."""
        return 2 * m * self.width * (self.in_features + self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, width = self.num_blocks, self.width
        leading = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        m = x2.shape[0]
        # (b, M, K/b) @ (b, K/b, width) -> (b, M, width): block i of B1 on slice i of x.
        hidden = torch.bmm(x2.view(m, b, -1).transpose(0, 1), self.w1.transpose(1, 2))
        # P: hidden entry (block i, q) moves to flat position q*b + i, then regroup into b blocks.
        mixed = hidden.permute(1, 2, 0).reshape(m, b, width).transpose(0, 1)
        out = torch.bmm(mixed, self.w2.transpose(1, 2))  # (b, M, N/b)
        y = out.transpose(0, 1).reshape(m, self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*leading, self.out_features)

    def permutation(self, device=None) -> torch.Tensor:
        """``perm`` with ``mixed_flat = hidden_flat[perm]``: ``perm[q*b + i] = i*width + q``."""
        q = torch.arange(self.width, device=device)[:, None]
        i = torch.arange(self.num_blocks, device=device)[None, :]
        return (i * self.width + q).reshape(-1)

    def dense_weight(self) -> torch.Tensor:
        """``B2 @ P @ B1``: ``(N, K)``, built from the factors with ``torch.block_diag``."""
        first = torch.block_diag(*self.w1.unbind(0))  # (H, K)
        second = torch.block_diag(*self.w2.unbind(0))  # (N, H)
        return second @ first[self.permutation(first.device)]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"num_blocks={self.num_blocks}, width={self.width}, hidden={self.hidden}")
