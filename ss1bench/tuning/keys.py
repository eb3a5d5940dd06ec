"""Keys of the tuning database's records, and the nearest M bucket.

A structure record is keyed by layer (``fp16/K768/N3072/c4``: dtype, in and out features, reduction
factor c); a launch record by kernel kind, layer, structure and M bucket
(``forward/fp16/K768/N3072/c4/bk64/bn128/M16``). The text form is what the JSON files hold.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ss1bench.kernels.config import KINDS

#: The dtype names a key may hold.
DTYPES = ("fp32", "fp16", "bf16")

_STRUCTURE_KEY = re.compile(r"(fp32|fp16|bf16)/K(\d+)/N(\d+)/c(\d+)")
_LAUNCH_KEY = re.compile(
    r"(" + "|".join(KINDS) + r")/(fp32|fp16|bf16)/K(\d+)/N(\d+)/c(\d+)/bk(\d+)/bn(\d+)/M(\d+)")


@dataclass(frozen=True, order=True)
class StructureKey:
    """Key of a recommended structure: ``fp16/K768/N3072/c4``."""

    dtype: str
    in_features: int
    out_features: int
    redn_factor: int

    def text(self) -> str:
        return f"{self.dtype}/K{self.in_features}/N{self.out_features}/c{self.redn_factor}"

    @classmethod
    def parse(cls, text: str) -> StructureKey:
        match = _STRUCTURE_KEY.fullmatch(text)
        if not match:
            raise ValueError(f"bad structure key {text!r} (expected like 'fp16/K768/N3072/c4')")
        dtype, k, n, c = match.groups()
        return cls(dtype, int(k), int(n), int(c))


@dataclass(frozen=True, order=True)
class LaunchKey:
    """Key of a tuned launch config: ``forward/fp16/K768/N3072/c4/bk64/bn128/M16``."""

    kind: str
    dtype: str
    in_features: int
    out_features: int
    redn_factor: int
    block_k: int
    block_n: int
    m: int

    def text(self) -> str:
        return (f"{self.kind}/{self.dtype}/K{self.in_features}/N{self.out_features}/c{self.redn_factor}"
                f"/bk{self.block_k}/bn{self.block_n}/M{self.m}")

    @property
    def family(self) -> tuple:
        """Everything but the M bucket: the keys nearest-bucket lookup chooses among."""
        return (self.kind, self.dtype, self.in_features, self.out_features, self.redn_factor,
                self.block_k, self.block_n)

    @classmethod
    def parse(cls, text: str) -> LaunchKey:
        match = _LAUNCH_KEY.fullmatch(text)
        if not match:
            raise ValueError(f"bad launch key {text!r} (expected like 'forward/fp16/K768/N3072/c4/bk64/bn128/M16')")
        kind, dtype, *ints = match.groups()
        return cls(kind, dtype, *(int(v) for v in ints))


def nearest_bucket(m: int, buckets: list[int] | tuple[int, ...] | set[int]) -> int:
    """The bucket closest to ``m`` in log2 (ties go to the smaller bucket: its smaller tiles waste
    less when the problem is smaller than the bucket, and still launch when it is larger)."""
    if not buckets:
        raise ValueError("no buckets to choose from")
    target = math.log2(max(m, 1))
    return min(sorted(buckets), key=lambda b: (abs(math.log2(max(b, 1)) - target), b))
