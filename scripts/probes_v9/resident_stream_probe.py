"""Probe: streaming resident kernel (member loop pipelined) vs shipped config vs dense; graph-timed.

Run on the H200 (one GPU): ``python3 scripts/probes_v9/resident_stream_probe.py [budget_s]``;
output of the v9 run: ``reports/H200/raw/resident_stream_probe_v9.txt``.
See docs/perf-notes.md (v9 probes).
"""
# ruff: noqa: B023  (each timing lambda is called in the loop iteration that defines it)
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import baseline, budget_arg, graph_ms, rel_err, within_budget
from resident_stream_kernel import resident2

from ss1bench.kernels import ss1 as K
from ss1bench.kernels.config import cdiv, resident_chunks, resident_width
from ss1bench.tuning import space

torch.manual_seed(0)
BUDGET = budget_arg()
shapes = [(16384, 3072, 768, 16), (16384, 4096, 1024, 16), (4096, 4096, 1024, 16), (16384, 4096, 4096, 16),
          (4096, 3072, 768, 16), (16384, 768, 768, 16), (16384, 1024, 1024, 8), (16384, 1024, 4096, 4),
          (16384, 3072, 768, 8), (16384, 4096, 1024, 8), (4096, 4096, 4096, 16), (16384, 1024, 3072, 8)]
cfgs = [(32, 64, 4, 3, 2), (32, 64, 8, 3, 2), (32, 128, 8, 3, 2), (64, 64, 8, 3, 2), (64, 64, 8, 2, 2),
        (64, 64, 4, 3, 2), (64, 128, 8, 3, 2), (128, 64, 8, 2, 2), (32, 64, 8, 4, 3), (64, 64, 8, 4, 2)]


def run_res2(x, w, b, y, st, cfg):
    tm, tn, nw, xs, ns = cfg
    m, n = y.shape
    width = resident_width(st.k_red)
    chunks, per = resident_chunks(m, n, tm, tn, programs=int(sys.argv[2]) if len(sys.argv) > 2 else 256)
    resident2[(chunks, cdiv(m, tm))](
        x, w, b, y, m, n, st.in_features, st.k_red, per, x.stride(0), w.stride(0), y.stride(0),
        **K._structure_args(st), HAS_BIAS=True, TILE_M=tm, TILE_N=tn, KR=width, DOT_PRECISION="ieee",
        XSTAGES=xs, num_warps=nw, num_stages=ns)


for (m, k, n, c) in within_budget(shapes, BUDGET):
    base = baseline(m, k, n, c)
    st, x, w, b, y, ref, ideal = base.st, base.x, base.w, base.b, base.y, base.ref, base.ideal
    width = resident_width(st.k_red)
    dense_w = torch.randn(n, k, device=x.device, dtype=x.dtype)
    t_dense = graph_ms(lambda: torch.nn.functional.linear(x, dense_w, b))
    shipped, t_ship = base.shipped()
    print(f"== {m}x{k}x{n} c={c} kred={st.k_red} KR={width} dense={t_dense*1e3:.1f} red={base.t_red*1e3:.1f} "
          f"floor={base.floor*1e3:.1f} ideal={ideal*1e3:.1f} shipped={t_ship*1e3:.1f} ({space.describe(shipped)}) "
          f"frac={ideal/t_ship:.2f}", flush=True)
    res = []
    for cfg in cfgs:
        if cfg[0] * width > 64 * 512:
            continue
        try:
            y.fill_(float("nan"))
            run_res2(x, w, b, y, st, cfg)
            err = rel_err(y, ref)
            t = graph_ms(lambda: run_res2(x, w, b, y, st, cfg))
        except Exception as exc:
            print("  ERR", cfg, str(exc)[:160], flush=True)
            continue
        res.append((t, cfg, err))
        print(f"  res2 {cfg}: {t*1e3:7.1f} us frac={ideal/t:.2f} err={err:.1e}", flush=True)
    if res:
        t, cfg, err = min(res)
        print(f"BEST {m}x{k}x{n} c={c}: shipped {t_ship*1e3:.1f} -> res2 {t*1e3:.1f} us {cfg} "
              f"frac {ideal/t_ship:.2f} -> {ideal/t:.2f}", flush=True)
