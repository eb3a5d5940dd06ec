"""GPU probe: sketch_gemm with the sketch on a side stream in row chunks, each chunk's cuBLAS
product on the main stream as soon as its sketch is done (sketch of chunk i+1 overlaps the GEMM of
chunk i). Graph-timed against the shipped config.

Run on the H200 (one GPU): ``python3 scripts/probes_v9/two_stream_probe.py [budget_s]``;
output of the v9 run: ``reports/H200/raw/two_stream_probe_v9.txt``.
See docs/perf-notes.md (v9 probes).
"""
# ruff: noqa: B023  (each timing lambda is called in the loop iteration that defines it)
import sys
import time

import torch

from ss1bench.kernels import ss1 as K
from ss1bench.kernels.config import LaunchConfig, Problem, cdiv, resolve_launch_config
from ss1bench.kernels.launch import launch as launch_kernel
from ss1bench.layer import SSL
from ss1bench.timing import graph_bench_ms
from ss1bench.tuning import space

torch.manual_seed(0)
dev = "cuda"
BUDGET = float(sys.argv[1]) if len(sys.argv) > 1 else 240
SIDE = torch.cuda.Stream()


def sketch_into(x, xs, st, cfg):
    m = x.shape[0]
    launch_kernel(K._ss1_sketch_kernel, K._sketch_grid(m, st.k_red, cfg), x, xs, m, st.in_features, st.k_red,
                  x.stride(0), xs.stride(0), **K._structure_args(st), TILE_M=cfg.tile_m, TILE_K=cfg.tile_k,
                  num_warps=cfg.num_warps)


def streamed(x, wr, b, y, st, cfg, chunks, order="rows"):
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
t0 = time.time()
for (m, k, n, c) in shapes:
    if time.time() - t0 > BUDGET:
        print("budget out")
        break
    dt = torch.float16
    layer = SSL(k, n, redn_factor=c).to(dev, dt)
    st = layer.structure
    x = torch.randn(m, k, device=dev, dtype=dt)
    w, b = layer.weight.detach(), layer.bias.detach()
    wr = K.rotate_weight(w, st)
    ref = torch.nn.functional.linear(x.float(), st.dense_weight(w).float(), b.float())
    y = torch.empty(m, n, device=dev, dtype=dt)
    red_w = torch.randn(n, st.k_red, device=dev, dtype=dt)
    xr = torch.randn(m, st.k_red, device=dev, dtype=dt)
    t_red = graph_bench_ms(lambda: torch.nn.functional.linear(xr, red_w, b), 5, 40)[0]
    floor = (m * k + n * st.k_red + m * n) * 2 / 4.2e12 * 1e3
    ideal = max(t_red, floor)
    prob = Problem("forward_rotated", m, k, n, c, st.block_k, st.block_n, "fp16", torch.cuda.get_device_name())
    shipped = resolve_launch_config(prob, 232448)
    t_ship = graph_bench_ms(lambda: K.ss1_forward(x, w, b, st, shipped, out=y, rotated_weight=wr), 5, 40)[0]
    cfg = shipped if shipped.algorithm == "sketch_gemm" else LaunchConfig(16, 64, 128, 4, 1, algorithm="sketch_gemm")
    xs1 = torch.empty((m, st.k_red), device=dev, dtype=dt)
    t_sk = graph_bench_ms(lambda: sketch_into(x, xs1, st, cfg), 5, 40)[0]
    t_plain = graph_bench_ms(lambda: plain(x, wr, b, y, st, cfg), 5, 40)[0]
    line = (f"== {m}x{k}x{n} c={c} kred={st.k_red} red={t_red*1e3:.1f} floor={floor*1e3:.1f} ideal={ideal*1e3:.1f} "
            f"cached-shipped={t_ship*1e3:.1f} ({space.describe(shipped)}) sketch-alone={t_sk*1e3:.1f} "
            f"plain={t_plain*1e3:.1f}")
    print(line, flush=True)
    best = (t_ship, "shipped")
    for chunks in (2, 3, 4, 6, 8):
        y.fill_(float("nan"))
        streamed(x, wr, b, y, st, cfg, chunks)
        torch.cuda.synchronize()
        err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
        t, graphed = graph_bench_ms(lambda: streamed(x, wr, b, y, st, cfg, chunks), 5, 40)
        print(f"  streamed chunks={chunks}: {t*1e3:7.1f} us (graph={graphed}) frac={ideal/t:.2f} err={err:.1e}",
              flush=True)
        best = min(best, (t, f"chunks={chunks}"))
    print(f"BEST {m}x{k}x{n} c={c}: cached-shipped {t_ship*1e3:.1f} frac {ideal/t_ship:.2f} -> {best[1]} "
          f"{best[0]*1e3:.1f} frac {ideal/best[0]:.2f}", flush=True)
