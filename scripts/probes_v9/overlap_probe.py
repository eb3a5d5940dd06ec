"""GPU probe: overlap (persistent sketch+GEMM, flag-synchronised) vs shipped config; graph-timed.

Run on the H200 (one GPU): ``python3 scripts/probes_v9/overlap_probe.py [budget_s]``;
output of the v9 run: ``reports/H200/raw/overlap_probe_v9.txt``.
See docs/perf-notes.md (v9 probes).
"""
# ruff: noqa: B023  (each timing lambda is called in the loop iteration that defines it)
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import overlap_kernel as overlap
from common import SHARED_MEMORY, baseline, budget_arg, graph_ms, rel_err, within_budget

from ss1bench.tuning import space

torch.manual_seed(0)
BUDGET = budget_arg()
SMS = torch.cuda.get_device_properties(0).multi_processor_count
shapes = [(16384, 4096, 1024, 16), (16384, 3072, 768, 4), (16384, 4096, 4096, 4), (4096, 4096, 1024, 16),
          (16384, 14336, 4096, 16), (16384, 3072, 768, 16), (16384, 1024, 4096, 4), (16384, 4096, 1024, 8)]
# tile_m, tile_n, tile_k, sk, warps, stages, lag, occupancy multiplier
cfgs = [(128, 128, 64, 64, 8, 3, None, 1), (128, 128, 64, 32, 8, 3, None, 1), (128, 256, 64, 64, 8, 3, None, 1),
        (64, 128, 64, 64, 4, 3, None, 2), (64, 128, 64, 32, 4, 3, None, 3), (128, 128, 64, 64, 8, 3, 64, 1),
        (128, 256, 64, 32, 8, 3, None, 1)]
for (m, k, n, c) in within_budget(shapes, BUDGET):
    base = baseline(m, k, n, c)
    st, x, w, b, y, ref, ideal = base.st, base.x, base.w, base.b, base.y, base.ref, base.ideal
    shipped, t_ship = base.shipped()
    print(f"== {m}x{k}x{n} c={c} kred={st.k_red} red={base.t_red*1e3:.1f} floor={base.floor*1e3:.1f} "
          f"ideal={ideal*1e3:.1f} shipped={t_ship*1e3:.1f} ({space.describe(shipped)}) frac={ideal/t_ship:.2f}",
          flush=True)
    res = []
    xs = torch.empty((m, st.k_red), device=x.device, dtype=x.dtype)
    for (tm, tn, tk, sk, nw, ns, lag, occ) in cfgs:
        kw = dict(tile_m=tm, tile_n=tn, tile_k=tk, sk=sk, lag=lag, num_warps=nw, num_stages=ns, programs=SMS)
        try:
            y.fill_(float("nan"))
            xs.fill_(float("nan"))
            _, flags, kern = overlap.run(x, w, b, y, st, xs=xs, **kw)
            torch.cuda.synchronize()
            regs, smem = kern.n_regs, kern.metadata.shared
            fit = min(65536 // (regs * 32 * nw), SHARED_MEMORY // max(smem, 1))
            if occ > fit:
                print(f"  skip {kw} occupancy {fit} < {occ}", flush=True)
                continue
            kw["programs"] = SMS * occ
            y.fill_(float("nan"))
            xs.fill_(float("nan"))
            _, flags, kern = overlap.run(x, w, b, y, st, xs=xs, **kw)
            err = rel_err(y, ref)
            okflags = bool((flags == -(-st.k_red // sk)).all().item())
            t = graph_ms(lambda: overlap.run(x, w, b, y, st, **kw))
        except Exception as exc:
            print("  ERR", kw, str(exc)[:200], flush=True)
            continue
        res.append((t, str(kw), err))
        print(f"  overlap {tm}x{tn}x{tk} sk{sk} w{nw} s{ns} lag{lag} P={kw['programs']} regs={regs} smem={smem}: "
              f"{t*1e3:7.1f} us frac={ideal/t:.2f} err={err:.1e} flags_ok={okflags}", flush=True)
    if res:
        t, kw, err = min(res)
        print(f"BEST {m}x{k}x{n} c={c}: shipped {t_ship*1e3:.1f} -> overlap {t*1e3:.1f} us frac {ideal/t_ship:.2f} -> "
              f"{ideal/t:.2f} err={err:.1e} {kw}", flush=True)
