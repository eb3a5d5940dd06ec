"""Where a layer's forward + backward GPU time goes: kernel time by kernel (torch.profiler).

One ``layer(x).backward(dy)`` step of the ``ss1_tuned`` layer (the shipped database) and of
dense ``nn.Linear``, profiled over a few steps after a warm-up, kernels listed with their mean
GPU time per step and bytes/s where a kernel is memory-bound by design (the SS1 sketch,
unsketch and rotations). Without an L2 flush between kernels, unlike ``ss1bench bench``.

    python3 scripts/fwdbwd_profile.py --shape 16384x4096x1024 --redn-factor 16 --dtype fp16
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ss1bench import SSL
from ss1bench.dtypes import TORCH_DTYPES
from ss1bench.timing import kernel_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", required=True, help="MxKxN (repeatable)")
    parser.add_argument("--redn-factor", default="16", help="comma-separated")
    parser.add_argument("--dtype", default="fp16", choices=sorted(TORCH_DTYPES))
    args = parser.parse_args()
    dtype = TORCH_DTYPES[args.dtype]
    device = torch.device("cuda")
    for shape in args.shape:
        m, k, n = (int(v) for v in shape.split("x"))
        x = torch.randn(m, k, device=device, dtype=dtype, requires_grad=True)
        dy = torch.randn(m, n, device=device, dtype=dtype)
        layers = {"dense": nn.Linear(k, n, device=device, dtype=dtype)}
        for c in (int(v) for v in args.redn_factor.split(",")):
            layers[f"ss1 c={c}"] = SSL(k, n, redn_factor=c, device=device, dtype=dtype)
        for name, layer in layers.items():
            def step(layer=layer, x=x, dy=dy) -> None:
                layer.zero_grad(set_to_none=True)
                x.grad = None
                layer(x).backward(dy)

            rows = kernel_table(step, repeats=5)
            total = sum(row[1] for row in rows)
            print(f"\n{args.dtype} {m}x{k}x{n} {name}: {total:.1f} us of kernels per step "
                  f"(x {m * k * dtype.itemsize / 2**20:.0f} MiB)")
            for key, time_us, calls in rows:
                print(f"  {time_us:9.1f} us  x{calls:<2} {key[:110]}")


if __name__ == "__main__":
    main()
