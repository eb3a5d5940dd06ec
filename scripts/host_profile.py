"""Host time of one eager SSL forward (no grad) on the GPU, and where it goes (cProfile).

    python scripts/host_profile.py

Prints, for a 768 -> 3072 layer at c = 4 and M = 1 (fused kernel) and M = 8192 (sketch + cuBLAS):
host microseconds per call (launch loop without synchronizing), wall microseconds per call, and
the ten functions with the most own time.
"""

import cProfile
import pstats
import time

import torch

from ss1bench import SSL


def main() -> None:
    for m in (1, 8192):
        layer = SSL(768, 3072, redn_factor=4, seed=1, device="cuda", dtype=torch.float16)
        x = torch.randn(m, 768, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            for _ in range(20):
                layer(x)
            torch.cuda.synchronize()
            calls = 300
            start = time.perf_counter()
            for _ in range(calls):
                layer(x)
            host = (time.perf_counter() - start) / calls * 1e6
            torch.cuda.synchronize()
            wall = (time.perf_counter() - start) / calls * 1e6
            print(f"M={m}: host {host:.0f} us/call, wall {wall:.0f} us/call", flush=True)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(200):
                layer(x)
            profiler.disable()
            torch.cuda.synchronize()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(10)


if __name__ == "__main__":
    main()
