"""Time SS1 forward against dense and the ideal on the rows of the original kernel's baseline table.

Usage (GPU): python scripts/baselines.py --out results.csv [--dtype fp16]

Providers, side by side for each row: dense (cuBLAS F.linear), dense at K/c (the compute ideal),
the memory floor (x, Wc, bias, y moved once at the measured copy bandwidth), and SS1 (the layer's
normal path: tuning database if present, else the heuristic). Median of triton.testing.do_bench,
random inputs. The original kernel's times (``ROWS``) are its published figures (H200, fp16, bias
on), copied here so the table can show the ratio.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import torch.nn.functional as F
import triton

from ss1bench import SSL
from ss1bench.bench.measure import measure_copy_bandwidth, memory_floor_bytes
from ss1bench.dtypes import TORCH_DTYPES

# (M, K, N, c, original SS1 ms): the original kernel's published baseline table.
ROWS = [
    (32768, 768, 3072, 2, 2.503), (32768, 768, 3072, 4, 0.304), (32768, 3072, 768, 2, 2.410),
    (32768, 3072, 768, 4, 0.205), (32768, 768, 2304, 2, 1.889), (16384, 4096, 14336, 2, 28.41),
    (16384, 4096, 14336, 4, 2.282), (16384, 14336, 4096, 4, 1.984), (8192, 4096, 4096, 4, 0.338),
    (16, 4096, 4096, 4, 0.0489), (1, 4096, 14336, 4, 0.1450), (64, 768, 3072, 4, 0.1437),
    # c = 8 and 16, which the original failed to compile.
    (32768, 768, 3072, 8, float("nan")), (32768, 768, 3072, 16, float("nan")),
    (8192, 4096, 4096, 8, float("nan")), (8192, 4096, 4096, 16, float("nan")),
]
DTYPES = {name: TORCH_DTYPES[name] for name in ("fp16", "bf16")}


def time_row(m: int, k: int, n: int, c: int, dtype: torch.dtype, bandwidth: float, backward: bool) -> dict:
    layer = SSL(k, n, redn_factor=c, seed=1, device="cuda", dtype=dtype)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    w_dense = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
    bias = layer.bias.detach()
    k_small = layer.structure.k_red
    x_small = torch.randn(m, k_small, device="cuda", dtype=dtype)
    w_small = torch.randn(n, k_small, device="cuda", dtype=dtype)
    with torch.no_grad():
        dense = triton.testing.do_bench(lambda: F.linear(x, w_dense, bias), return_mode="median")
        reduced = triton.testing.do_bench(lambda: F.linear(x_small, w_small, bias), return_mode="median")
        ss1 = triton.testing.do_bench(lambda: layer(x), return_mode="median")
    floor_ms = memory_floor_bytes(m, k, n, k_small, x.element_size(), "fwd") / bandwidth * 1e3
    ideal = max(reduced, floor_ms)
    row = dict(M=m, K=k, N=n, c=c, block_k=layer.block_k, block_n=layer.block_n, dense_ms=dense,
               reduced_ms=reduced, floor_ms=floor_ms, ideal_ms=ideal, ss1_ms=ss1, speedup=dense / ss1,
               fraction_of_ideal=ideal / ss1)
    if backward:
        xg = x.clone().requires_grad_()
        xd = x.clone().requires_grad_()
        wd = w_dense.clone().requires_grad_()
        gy = torch.randn(m, n, device="cuda", dtype=dtype)
        row["dense_fwdbwd_ms"] = triton.testing.do_bench(
            lambda: F.linear(xd, wd, bias).backward(gy), return_mode="median", grad_to_none=[xd, wd])
        row["ss1_fwdbwd_ms"] = triton.testing.do_bench(
            lambda: layer(xg).backward(gy), return_mode="median", grad_to_none=[xg, layer.weight, layer.bias])
        row["fwdbwd_speedup"] = row["dense_fwdbwd_ms"] / row["ss1_fwdbwd_ms"]
    return row


def host_overhead(dtype: torch.dtype, calls: int = 2000) -> None:
    """Wall-clock microseconds per call on a tiny problem (GPU work negligible): host cost."""
    import time

    from ss1bench.kernels import ss1 as kernels
    from ss1bench.ops import ss1_linear

    layer = SSL(768, 3072, redn_factor=4, seed=1, device="cuda", dtype=dtype)
    x = torch.randn(1, 768, device="cuda", dtype=dtype)
    x128 = torch.randn(128, 768, device="cuda", dtype=dtype)
    w_dense = torch.randn(3072, 768, device="cuda", dtype=dtype)
    s, w, b = layer.structure, layer.weight.detach(), layer.bias.detach()
    cases = {
        "F.linear": lambda: F.linear(x, w_dense, b),
        "triton launcher": lambda: kernels.ss1_forward(x, w, b, s),
        "custom op (no grad)": lambda: ss1_linear(x, w, b, s),
        "SSL module (no grad)": lambda: layer(x),
        "SSL module (no grad), sketch+cuBLAS, M=128": lambda: layer(x128),
    }
    for name, fn in cases.items():
        with torch.no_grad():
            for _ in range(50):
                fn()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
        print(f"host overhead {name}: {(time.perf_counter() - start) / calls * 1e6:.1f} us/call")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--host-only", action="store_true",
                        help="only the host-overhead table, with and without the direct launch path")
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]
    if args.host_only:
        import os

        from ss1bench.kernels import launch as direct

        for setting in ("0", "1", "1", "0"):  # both orders: the host's state drifts during a run
            os.environ["SS1BENCH_DIRECT_LAUNCH"] = setting
            direct.clear()  # the switch is read once
            print(f"SS1BENCH_DIRECT_LAUNCH={setting}")
            host_overhead(dtype)
        return
    bandwidth = measure_copy_bandwidth(torch.device("cuda"))
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    rows = []
    for m, k, n, c, original in ROWS:
        row = time_row(m, k, n, c, dtype, bandwidth, args.backward)
        row.update(dtype=args.dtype, original_ms=original, vs_original=original / row["ss1_ms"])
        rows.append(row)
        print(" ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in row.items()), flush=True)
        torch.cuda.empty_cache()
    host_overhead(dtype)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out, index=False)
    cols = ["M", "K", "N", "c", "dense_ms", "ideal_ms", "ss1_ms", "speedup", "fraction_of_ideal", "vs_original"]
    if args.backward:
        cols.append("fwdbwd_speedup")
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
