"""Python-side cost of one SSL call, without a GPU: the launch path runs on CPU tensors with the
kernel launches and the cuBLAS product replaced by no-ops, so what is timed is ss1bench's own
host code (argument checks, config lookup, launch arguments). Complements
``scripts/baselines.py --host-only`` (the real cost on a GPU host, launches included).

Usage: python scripts/host_python_cost.py [--calls 20000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from unittest import mock

import torch

from ss1bench import SSL, ops
from ss1bench.kernels import ss1 as kernels


def per_call_us(fn, calls: int) -> float:
    for _ in range(200):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true", help="cProfile the M = 1 call, top 20 by own time")
    args = parser.parse_args()
    layer = SSL(768, 3072, redn_factor=4, seed=1).half()
    x1, x128 = torch.randn(1, 768).half(), torch.randn(128, 768).half()
    no_op = lambda *a, **k: None
    with mock.patch.object(ops, "_use_kernels", lambda t: True), \
            mock.patch.object(kernels, "_check_device", no_op), \
            mock.patch.object(kernels, "launch_kernel", no_op), \
            mock.patch.object(torch, "mm", no_op), mock.patch.object(torch, "addmm", no_op), torch.no_grad():
        print(f"torch.empty (reference):       {per_call_us(lambda: torch.empty((1, 3072)), args.calls):6.1f} us")
        print(f"SSL call, M = 1 (gemv):        {per_call_us(lambda: layer(x1), args.calls):6.1f} us")
        print(f"SSL call, M = 128 (sketch_gemm): {per_call_us(lambda: layer(x128), args.calls):6.1f} us")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.calls):
                layer(x1)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
