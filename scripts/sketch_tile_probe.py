"""Probe: the rotated-weight forward's sketch_gemm at decode sizes, c = 16, over sketch tiles.

With the rotated weight cached, sketch_gemm is one sketch launch plus cuBLAS at K/c. At decode
the sketch is tiny (M x K_red), so its tile decides how many programs share it. Prints, per
shape and M, the dense and K/c cuBLAS times and the four fastest (tile_k, warps) pairs, every
candidate gated against the float64 reference first. CUDA-graph timing, as the tuner's.

    python3 scripts/sketch_tile_probe.py
"""

import torch

from ss1bench.kernels.config import LaunchConfig
from ss1bench.structure import SS1Structure
from ss1bench.tuning import measure
from ss1bench.tuning.space import default_structure

SHAPES = [(4096, 4096), (14336, 4096), (1024, 4096)]  # (K, N)
REDN_FACTOR = 16
ROWS = (16, 64)
TILE_K = (16, 32, 64, 128, 256)
WARPS = (1, 2, 4)


def main() -> None:
    device = torch.device("cuda")
    for k, n in SHAPES:
        structure = SS1Structure(k, n, REDN_FACTOR, 1024, *default_structure(k, REDN_FACTOR))
        for m in ROWS:
            case = measure.make_case("forward_rotated", m, structure, torch.float16, device)
            dense_ms = measure.bench_ms(measure.dense_function(case), 5, 30)
            x_red = torch.randn(m, structure.k_red, device=device, dtype=torch.float16)
            w_red = torch.randn(n, structure.k_red, device=device, dtype=torch.float16)
            reduced_ms = measure.bench_ms(lambda x=x_red, w=w_red: torch.nn.functional.linear(x, w), 5, 30)
            results = []
            widest = max(16, 1 << (structure.k_red - 1).bit_length())
            for tile_k in (t for t in TILE_K if t <= widest):
                for warps in WARPS:
                    config = LaunchConfig(16, 64, tile_k, warps, 1, algorithm="sketch_gemm")
                    passed = measure.run_gate(case, config).passed
                    out = case.tensors["out"]
                    ms = measure.bench_ms(
                        lambda c=config, o=out, s=case: measure.LAUNCHERS["forward_rotated"](s, c, o), 5, 30)
                    results.append((ms * 1e3, tile_k, warps, passed))
            results.sort()
            best = ", ".join(f"{us:.2f}us tk{tk} w{w}{'' if ok else ' FAILED GATE'}" for us, tk, w, ok in results[:4])
            print(f"K={k} N={n} c={REDN_FACTOR} M={m} K_red={structure.k_red} dense={dense_ms * 1e3:.2f}us "
                  f"K/c={reduced_ms * 1e3:.2f}us best: {best}", flush=True)


if __name__ == "__main__":
    main()
