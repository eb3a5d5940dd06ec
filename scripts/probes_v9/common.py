"""What the v9 prefill probes share: the per-shape setup (the layer, its inputs and float32
reference, cuBLAS at K_red, the memory floor, the ideal), the shipped config's time, the shape
loop under a time budget and the error measure."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ss1bench.bench.runner import memory_floor_bytes
from ss1bench.kernels import ss1 as K
from ss1bench.kernels.config import LaunchConfig, Problem, resolve_launch_config
from ss1bench.layer import SSL
from ss1bench.structure import SS1Structure
from ss1bench.timing import graph_bench_ms
from ss1bench.tuning.gpu import KNOWN_SHARED_MEMORY

DEVICE = "cuda"
DTYPE = torch.float16
#: Bytes/s for the memory floor: the H200's measured copy rate (read + write), as in the benches.
FLOOR_BANDWIDTH = 4.2e12
#: Opt-in shared memory per block of the H100/H200.
SHARED_MEMORY = KNOWN_SHARED_MEMORY["H200"]


def budget_arg(default: float = 240) -> float:
    """Seconds of probing (first command-line argument)."""
    return float(sys.argv[1]) if len(sys.argv) > 1 else default


def within_budget(shapes: Iterable, budget_s: float) -> Iterator:
    """The shapes, until ``budget_s`` seconds have passed since the first."""
    start = time.time()
    for shape in shapes:
        if time.time() - start > budget_s:
            print("budget out")
            return
        yield shape


def graph_ms(fn) -> float:
    """Median ms of ``fn`` replayed from a CUDA graph (5 ms warm-up, 40 ms of repetitions)."""
    return graph_bench_ms(fn, 5, 40)[0]


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y - ref| / max |ref| (NaN if ``y`` kept any of its NaN poison)."""
    return ((y.float() - ref).abs().max() / ref.abs().max()).item()


@dataclass
class Baseline:
    """One (M, K, N, c) layer as the shipped database builds it, with its yardsticks in ms."""

    m: int
    k: int
    n: int
    c: int
    st: SS1Structure
    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    y: torch.Tensor
    ref: torch.Tensor
    t_red: float
    floor: float

    @property
    def ideal(self) -> float:
        return max(self.t_red, self.floor)

    def shipped(self, kind: str = "forward", rotated_weight: torch.Tensor | None = None) -> tuple[LaunchConfig, float]:
        """The database's (or heuristic's) config for ``kind`` and its time."""
        problem = Problem(kind, self.m, self.k, self.n, self.c, self.st.block_k, self.st.block_n, "fp16",
                          torch.cuda.get_device_name())
        config = resolve_launch_config(problem, SHARED_MEMORY)
        return config, graph_ms(lambda: K.ss1_forward(self.x, self.w, self.b, self.st, config, out=self.y,
                                                     rotated_weight=rotated_weight))


def baseline(m: int, k: int, n: int, c: int) -> Baseline:
    """The SSL layer (fp16, structure from the database), x ~ N(0, 1), y's buffer, the float32
    reference, cuBLAS at (M, K_red) x (N, K_red) and the forward memory floor."""
    layer = SSL(k, n, redn_factor=c).to(DEVICE, DTYPE)
    st = layer.structure
    x = torch.randn(m, k, device=DEVICE, dtype=DTYPE)
    w, b = layer.weight.detach(), layer.bias.detach()
    ref = torch.nn.functional.linear(x.float(), st.dense_weight(w).float(), b.float())
    y = torch.empty(m, n, device=DEVICE, dtype=DTYPE)
    red_w = torch.randn(n, st.k_red, device=DEVICE, dtype=DTYPE)
    xr = torch.randn(m, st.k_red, device=DEVICE, dtype=DTYPE)
    t_red = graph_ms(lambda: torch.nn.functional.linear(xr, red_w, b))
    floor = memory_floor_bytes(m, k, n, st.k_red, x.element_size(), "fwd") / FLOOR_BANDWIDTH * 1e3
    return Baseline(m, k, n, c, st, x, w, b, y, ref, t_red, floor)
