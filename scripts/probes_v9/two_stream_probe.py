"""GPU probe: sketch_gemm with the sketch on a side stream in row chunks, each chunk's cuBLAS
product on the main stream as soon as its sketch is done (sketch of chunk i+1 overlaps the GEMM of
chunk i). Graph-timed against the shipped config.

Run on the H200 (one GPU): ``python3 scripts/probes_v9/two_stream_probe.py [budget_s]``;
output of the v9 run: ``reports/H200/raw/two_stream_probe_v9.txt``.
See docs/perf-notes.md (v9 probes).
"""
# ruff: noqa: B023  (each timing lambda is called in the loop iteration that defines it)
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import baseline, budget_arg, graph_ms, rel_err, within_budget

from ss1bench.kernels import ss1 as K
from ss1bench.kernels.config import LaunchConfig, cdiv
from ss1bench.kernels.launch import launch as launch_kernel
from ss1bench.timing import graph_bench_ms
from ss1bench.tuning import space

torch.manual_seed(0)
BUDGET = budget_arg()
SIDE = torch.cuda.Stream()


def sketch_into(x, xs, st, cfg):
    m = x.shape[0]
    launch_kernel(K._ss1_sketch_kernel, K._sketch_grid(m, st.k_red, cfg), x, xs, m, st.in_features, st.k_red,
                  x.stride(0), xs.stride(0), **K._structure_args(st), TILE_M=cfg.tile_m, TILE_K=cfg.tile_k,
                  num_warps=cfg.num_warps)


def streamed(x, wr, b, y, st, cfg, chunks):
    m = x.shape[0]
    main = torch.cuda.current_stream()
    xs = torch.empty((m, st.k_red), dtype=x.dtype, device=x.device)
    step = cdiv(cdiv(m, chunks), 128) * 128
    bounds = [(r, min(r + step, m)) for r in range(0, m, step)]
    SIDE.wait_stream(main)
    events = []
    with torch.cuda.stream(SIDE):
        for r0, r1 in bounds:
            sketch_into(x[r0:r1], xs[r0:r1], st, cfg)
            ev = torch.cuda.Event()
            ev.record(SIDE)
            events.append(ev)
    for (r0, r1), ev in zip(bounds, events, strict=True):
        main.wait_event(ev)
        torch.addmm(b, xs[r0:r1], wr.t(), out=y[r0:r1])
    return y


def plain(x, wr, b, y, st, cfg):
    xs = torch.empty((x.shape[0], st.k_red), dtype=x.dtype, device=x.device)
    sketch_into(x, xs, st, cfg)
    torch.addmm(b, xs, wr.t(), out=y)


shapes = [(16384, 4096, 1024, 16), (16384, 3072, 768, 4), (16384, 3072, 768, 16), (16384, 4096, 1024, 4),
          (4096, 4096, 1024, 16), (16384, 14336, 4096, 16), (16384, 14336, 4096, 4), (16384, 4096, 4096, 4),
          (16384, 4096, 4096, 16), (4096, 4096, 4096, 8), (16384, 1024, 4096, 4), (16384, 768, 3072, 8),
          (4096, 3072, 768, 4), (16384, 4096, 1024, 8), (16384, 4096, 14336, 2), (16384, 3072, 768, 2)]
for (m, k, n, c) in within_budget(shapes, BUDGET):
    base = baseline(m, k, n, c)
    st, x, w, b, y, ref, ideal = base.st, base.x, base.w, base.b, base.y, base.ref, base.ideal
    wr = K.rotate_weight(w, st)
    shipped, t_ship = base.shipped("forward_rotated", rotated_weight=wr)
    cfg = shipped if shipped.algorithm == "sketch_gemm" else LaunchConfig(16, 64, 128, 4, 1, algorithm="sketch_gemm")
    xs1 = torch.empty((m, st.k_red), device=x.device, dtype=x.dtype)
    t_sk = graph_ms(lambda: sketch_into(x, xs1, st, cfg))
    t_plain = graph_ms(lambda: plain(x, wr, b, y, st, cfg))
    line = (f"== {m}x{k}x{n} c={c} kred={st.k_red} red={base.t_red*1e3:.1f} floor={base.floor*1e3:.1f} "
            f"ideal={ideal*1e3:.1f} "
            f"cached-shipped={t_ship*1e3:.1f} ({space.describe(shipped)}) sketch-alone={t_sk*1e3:.1f} "
            f"plain={t_plain*1e3:.1f}")
    print(line, flush=True)
    best = (t_ship, "shipped")
    for chunks in (2, 3, 4, 6, 8):
        y.fill_(float("nan"))
        streamed(x, wr, b, y, st, cfg, chunks)
        torch.cuda.synchronize()
        err = rel_err(y, ref)
        t, graphed = graph_bench_ms(lambda: streamed(x, wr, b, y, st, cfg, chunks), 5, 40)
        print(f"  streamed chunks={chunks}: {t*1e3:7.1f} us (graph={graphed}) frac={ideal/t:.2f} err={err:.1e}",
              flush=True)
        best = min(best, (t, f"chunks={chunks}"))
    print(f"BEST {m}x{k}x{n} c={c}: cached-shipped {t_ship*1e3:.1f} frac {ideal/t_ship:.2f} -> {best[1]} "
          f"{best[0]*1e3:.1f} frac {ideal/best[0]:.2f}", flush=True)
