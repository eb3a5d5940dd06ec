"""GPU probe: bandwidth of the sketch kernel over tiles/warps, with and without evict_first loads,
against a plain read of x (a Triton row-sum) and a torch copy.

Run on the H200 (one GPU): ``python3 scripts/probes_v9/sketch_bw_probe.py``;
output of the v9 run: ``reports/H200/raw/sketch_bw_probe_v9.txt``.
See docs/perf-notes.md (v9 probes).
"""
# ruff: noqa: B023  (each timing lambda is called in the loop iteration that defines it)
import itertools

import torch
import triton
import triton.language as tl

from ss1bench.kernels import ss1 as K
from ss1bench.kernels.config import LaunchConfig, cdiv
from ss1bench.kernels.ss1 import HASH_ARGS, _member_columns
from ss1bench.layer import SSL
from ss1bench.timing import graph_bench_ms


@triton.jit(do_not_specialize=HASH_ARGS)
def sketch_v(x_ptr, xs_ptr, M, K, K_RED, stride_xm, stride_xsm, R0M, R1M, R2M, R3M,
             C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
             TILE_M: tl.constexpr, TILE_K: tl.constexpr, EVICT: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.cdiv(K_RED, TILE_K)
    offs_m = (pid // cols) * TILE_M + tl.arange(0, TILE_M)
    kk = (pid % cols) * TILE_K + tl.arange(0, TILE_K)
    mask_m = offs_m < M
    mask_kk = kk < K_RED
    rows64 = offs_m.to(tl.int64)[:, None]
    xs = tl.zeros((TILE_M, TILE_K), dtype=tl.float32)
    for r in tl.static_range(C):
        col = _member_columns(kk, r, R0M, R1M, R3M, C, BK, VEC)
        mask = mask_m[:, None] & (mask_kk & (col < K))[None, :]
        xs += tl.load(x_ptr + rows64 * stride_xm + col[None, :], mask=mask, other=0.0,
                      eviction_policy=EVICT).to(tl.float32)
    tl.store(xs_ptr + rows64 * stride_xsm + kk[None, :], xs.to(xs_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_kk[None, :])


@triton.jit
def rowsum(x_ptr, out_ptr, M, K, stride_xm, TILE_M: tl.constexpr, TILE_K: tl.constexpr):
    offs_m = tl.program_id(0) * TILE_M + tl.arange(0, TILE_M)
    acc = tl.zeros((TILE_M, TILE_K), dtype=tl.float32)
    for k0 in range(0, K, TILE_K):
        kk = k0 + tl.arange(0, TILE_K)
        acc += tl.load(x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + kk[None, :],
                       mask=(offs_m < M)[:, None] & (kk < K)[None, :], other=0.0).to(tl.float32)
    tl.store(out_ptr + offs_m, tl.sum(acc, axis=1), mask=offs_m < M)


torch.manual_seed(0)
dev = "cuda"
shapes = [(16384, 4096, 1024, 16), (16384, 3072, 768, 4), (16384, 3072, 768, 16), (16384, 14336, 4096, 16),
]
for (m, k, n, c) in shapes:
    dt = torch.float16
    st = SSL(k, n, redn_factor=c).structure
    x = torch.randn(m, k, device=dev, dtype=dt)
    xs = torch.empty((m, st.k_red), device=dev, dtype=dt)
    ref = torch.empty_like(xs)
    K.sketch(x, st, LaunchConfig(16, 64, 128, 4, 1, algorithm="sketch_gemm"))
    ref = K.sketch(x, st, LaunchConfig(16, 64, 128, 4, 1, algorithm="sketch_gemm"))
    gb = (m * k + m * st.k_red) * 2 / 1e9
    y2 = torch.empty_like(x)
    t_copy = graph_bench_ms(lambda: y2.copy_(x), 5, 40)[0]
    out = torch.empty(m, device=dev, dtype=torch.float32)
    t_read = min(graph_bench_ms(lambda: rowsum[(cdiv(m, tm),)](x, out, m, k, x.stride(0), TILE_M=tm, TILE_K=tk,
                                                             num_warps=w), 5, 40)[0]
                 for tm, tk, w in [(4, 512, 4), (8, 256, 4), (16, 256, 8), (2, 1024, 4)])
    print(f"== {m}x{k} c={c} kred={st.k_red} (bk {st.block_k}) sketch bytes {gb*1e3:.0f} MB: copy x->x "
          f"{t_copy*1e3:.1f} us ({2*m*k*2/t_copy/1e9:.2f} TB/s r+w); read-only x {t_read*1e3:.1f} us "
          f"({m*k*2/t_read/1e9:.2f} TB/s)", flush=True)
    res = []
    for tm, tk, w, ev in itertools.product((16, 32, 64), (64, 128, 256), (2, 4, 8), ("", "evict_first")):
        if tk > max(16, st.k_red * 2) or tm * tk > 64 * 256 or tm * tk < 32 * w * 8:
            continue
        grid = (cdiv(m, tm) * cdiv(st.k_red, tk),)
        xs.fill_(float("nan"))
        fn = lambda: sketch_v[grid](x, xs, m, k, st.k_red, x.stride(0), xs.stride(0), **K._structure_args(st),
                                    TILE_M=tm, TILE_K=tk, EVICT=ev, num_warps=w)
        fn()
        ok = torch.equal(xs, ref)
        t = graph_bench_ms(fn, 5, 40)[0]
        res.append((t, tm, tk, w, ev, ok))
    res.sort()
    for t, tm, tk, w, ev, ok in res[:6]:
        print(f"  {tm}x{tk} w{w} {ev or 'default'}: {t*1e3:6.1f} us {gb/t:.2f} TB/s ok={ok}", flush=True)
    base = [r for r in res if r[1:5] == (16, 128, 4, "")]
    if base:
        print(f"  (16x128 w4 default: {base[0][0]*1e3:.1f} us)", flush=True)
    print(f"  bad: {[r[1:5] for r in res if not r[5]][:5]}", flush=True)
