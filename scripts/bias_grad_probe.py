"""Probe: the bias gradient ``dy.sum(0)`` against one cuBLAS product with a ones vector.

For ``dy: (M, N)`` in fp16/bf16, times (do_bench median, L2 flushed) torch's column reduction
``dy.sum(0)``, ``torch.mv(dy.t(), ones)`` (what ``ops._bias_grad`` runs from
``ops.BIAS_GRAD_PRODUCT_ROWS`` rows on) and ``ones[None] @ dy``, and gives each one's relative
error against the float64 sum and its read bandwidth.

    python3 scripts/bias_grad_probe.py --m 1024,4096,16384 --n 768,1024,3072,4096,14336
"""

from __future__ import annotations

import argparse

import torch

from ss1bench.timing import do_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", default="1024,4096,16384")
    parser.add_argument("--n", default="768,1024,2304,3072,4096,14336")
    parser.add_argument("--dtype", default="fp16,bf16")
    args = parser.parse_args()
    generator = torch.Generator(device="cuda").manual_seed(0)
    print(f"{'dtype':<5} {'M':>6} {'N':>6}  {'variant':<6} {'us':>8} {'TB/s':>6} {'rel err':>9}")
    for name in args.dtype.split(","):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[name]
        for m in (int(v) for v in args.m.split(",")):
            for n in (int(v) for v in args.n.split(",")):
                dy = torch.randn(m, n, generator=generator, device="cuda").to(dtype)
                ones = torch.ones(m, dtype=dtype, device="cuda")
                exact = dy.double().sum(0)
                variants = {
                    "sum": lambda dy=dy: dy.sum(0),
                    "mv": lambda dy=dy, ones=ones: torch.mv(dy.t(), ones),
                    "mm": lambda dy=dy, ones=ones: (ones[None] @ dy)[0],
                }
                for variant, call in variants.items():
                    error = ((call().double() - exact).norm() / exact.norm()).item()
                    ms = do_bench(call, 10, 30)
                    print(f"{name:<5} {m:>6} {n:>6}  {variant:<6} {ms * 1e3:8.1f} "
                          f"{m * n * dtype.itemsize / ms / 1e9:6.2f} {error:9.2e}", flush=True)


if __name__ == "__main__":
    main()
