"""Host time of one eager SSL forward on the GPU, taken apart (run on the GPU host).

    python scripts/host_profile.py [--profile]

For a 768 -> 3072 layer at c = 4 (fp16; M = 1 and M = 128), prints host microseconds per call
(a launch loop without synchronizing, GPU work negligible) of the pieces an SSL call is made of:
``torch.empty``, ``F.linear``, ``torch.addmm``, one Triton launch through ``kernel[grid]`` and
through the direct path (``kernels/launch.py``), then ``ss1_forward`` and the whole ``SSL`` call
(no grad, cached rotated weight, with autograd, forward + backward with and without a gradient
for x, and the training setting: float32 parameters under bf16 autocast) next to ``nn.Linear``'s,
and the SSL / nn.Linear ratios. ``--profile``: also the 20
functions with the most own time (cProfile) in the SSL forward + backward at M = 1 and M = 128.
"""

import cProfile
import os
import pstats
import sys
import time

import torch
import torch.nn.functional as F

from ss1bench import SSL
from ss1bench.kernels import launch as direct
from ss1bench.kernels import ss1 as kernels
from ss1bench.kernels.config import invalidate_config_cache

CALLS = 3000


def host_us(fn, calls: int = CALLS) -> float:
    """Median over 5 rounds of host microseconds per call (no sync inside a round)."""
    rounds = []
    for _ in range(5):
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
        torch.cuda.synchronize()
    return sorted(rounds)[2]


def main() -> None:
    dtype = torch.float16
    layer = SSL(768, 3072, redn_factor=4, seed=1, device="cuda", dtype=dtype)
    s, w, b = layer.structure, layer.weight.detach(), layer.bias.detach()
    x1 = torch.randn(1, 768, device="cuda", dtype=dtype)
    x128 = torch.randn(128, 768, device="cuda", dtype=dtype)
    wd = torch.randn(3072, 768, device="cuda", dtype=dtype)
    xs = torch.randn(128, s.k_red, device="cuda", dtype=dtype)
    wr = torch.randn(3072, s.k_red, device="cuda", dtype=dtype)
    y128 = torch.empty(128, 3072, device="cuda", dtype=dtype)
    part = torch.randn(2, 1, 3072, device="cuda", dtype=torch.float32)
    y1 = torch.empty(1, 3072, device="cuda", dtype=dtype)

    def triton_launch():
        kernels.launch_kernel(kernels._split_k_sum_kernel, (3,), part, b, y1, 1, 3072, 3072,
                              SPLIT=2, HAS_BIAS=True, BLOCK=1024, num_warps=4)

    def raw_triton():
        kernels._split_k_sum_kernel[(3,)](part, b, y1, 1, 3072, 3072, SPLIT=2, HAS_BIAS=True, BLOCK=1024,
                                          num_warps=4)

    stream = torch.cuda.current_stream()
    rows = {}
    with torch.no_grad():
        rows["torch.empty (1, 3072)"] = host_us(lambda: torch.empty((1, 3072), dtype=dtype, device="cuda"))
        rows["torch.cuda.current_stream().cuda_stream"] = host_us(lambda: torch.cuda.current_stream().cuda_stream)
        rows["stream.cuda_stream (held stream)"] = host_us(lambda: stream.cuda_stream)
        rows["F.linear M=1"] = host_us(lambda: F.linear(x1, wd, b))
        rows["F.linear M=128"] = host_us(lambda: F.linear(x128, wd, b))
        rows["torch.addmm(out=) M=128 K_red"] = host_us(lambda: torch.addmm(b, xs, wr.t(), out=y128))
        rows["triton kernel[grid] (split-K sum, 10 args)"] = host_us(raw_triton)
        os.environ["SS1BENCH_DIRECT_LAUNCH"] = "1"
        direct.clear()
        rows["launch_kernel (direct path)"] = host_us(triton_launch)
        os.environ["SS1BENCH_DIRECT_LAUNCH"] = "0"
        direct.clear()
        rows["launch_kernel (kernel[grid])"] = host_us(triton_launch)
        del os.environ["SS1BENCH_DIRECT_LAUNCH"]  # the default (direct path on) from here on
        direct.clear()
    invalidate_config_cache()
    dense_layer = torch.nn.Linear(768, 3072, device="cuda", dtype=dtype)
    with torch.no_grad():
        for m, x in ((1, x1), (128, x128)):
            rows[f"ss1_forward M={m}"] = host_us(lambda x=x: kernels.ss1_forward(x, w, b, s))
            rows[f"SSL no grad M={m}"] = host_us(lambda x=x: layer(x))
            rows[f"nn.Linear no grad M={m}"] = host_us(lambda x=x: dense_layer(x))
        layer.cache_rotated_weight()
        for m, x in ((1, x1), (128, x128)):
            rows[f"SSL no grad, cached M={m}"] = host_us(lambda x=x: layer(x))
        layer.cache_rotated_weight(False)
    ratios = {}
    for m, x in ((1, x1), (128, x128)):
        rows[f"SSL with autograd (fwd only) M={m}"] = host_us(lambda x=x: layer(x))
        gy = torch.randn(m, 3072, device="cuda", dtype=dtype)
        xg = x.clone().requires_grad_()
        for module, name in ((layer, "SSL"), (dense_layer, "nn.Linear")):
            rows[f"{name} fwd+bwd M={m}"] = host_us(lambda x=x, gy=gy, f=module: f(x).backward(gy), calls=1000)
            rows[f"{name} fwd+bwd, x needs grad M={m}"] = host_us(
                lambda xg=xg, gy=gy, f=module: f(xg).backward(gy), calls=1000)
    # the training setting: float32 parameters and x under bf16 autocast (casts folded into the passes)
    layer32 = SSL(768, 3072, redn_factor=4, seed=1, device="cuda", dtype=torch.float32)
    dense32 = torch.nn.Linear(768, 3072, device="cuda", dtype=torch.float32)
    for m in (1, 128):
        xg = torch.randn(m, 768, device="cuda", requires_grad=True)
        gy = torch.randn(m, 3072, device="cuda", dtype=torch.bfloat16)

        def step(f, xg=xg, gy=gy):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = f(xg)
            y.backward(gy)

        for module, name in ((layer32, "SSL"), (dense32, "nn.Linear")):
            rows[f"{name} fwd+bwd, bf16 autocast M={m}"] = host_us(lambda f=module: step(f), calls=1000)
    for m in (1, 128):
        for what in ("no grad", "fwd+bwd", "fwd+bwd, x needs grad", "fwd+bwd, bf16 autocast"):
            ratios[f"SSL / nn.Linear, {what}, M={m}"] = rows[f"SSL {what} M={m}"] / rows[f"nn.Linear {what} M={m}"]
    print(f"torch {torch.__version__}; host us/call, median of 5 rounds of {CALLS} calls")
    for name, us in rows.items():
        print(f"  {name:48s} {us:7.1f}")
    for name, ratio in ratios.items():
        print(f"  {name:48s} {ratio:7.2f}x")

    if "--profile" in sys.argv:
        for m, x in ((1, x1), (128, x128)):
            gy = torch.randn(m, 3072, device="cuda", dtype=dtype)
            xg = x.clone().requires_grad_()
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(1000):
                layer(xg).backward(gy)
            profiler.disable()
            torch.cuda.synchronize()
            print(f"== cProfile, SSL forward + backward, M={m}, 1000 calls")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
