"""Probe kernel: sketch and GEMM work items in one persistent launch, GEMM items waiting on
per-row-block flags set by the sketch items (memory-bound and tensor-core work overlap across SMs)."""
import torch
import triton
import triton.language as tl

from ss1bench.kernels.config import cdiv
from ss1bench.kernels.ss1 import (
    HASH_ARGS,
    _load_rotated_weight,
    _load_sketch,
    _row_rotations,
    _store_output,
    _structure_args,
)


@triton.jit
def _item(i, RB, NT, SPR, LAG):
    """(is_sketch, row block, index) of work item i. Unit u holds the SPR sketch chunks of row block
    u, then the NT GEMM tiles of row block u - LAG: the sketches run LAG row blocks ahead."""
    lag = tl.minimum(LAG, RB)
    if i < lag * SPR:
        return True, i // SPR, i % SPR
    j = i - lag * SPR
    per = SPR + NT
    mid = (RB - lag) * per
    if j < mid:
        q = j // per
        r = j % per
        if r < SPR:
            return True, lag + q, r
        return False, q, r - SPR
    k = j - mid
    return False, RB - lag + k // NT, k % NT


@triton.jit(do_not_specialize=HASH_ARGS)
def overlap_forward(
    x_ptr, w_ptr, b_ptr, y_ptr, xs_ptr, flag_ptr,
    M, N, K, K_RED, LAG, MAX_SPIN,
    stride_xm, stride_wn, stride_ym,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    TILE_M: tl.constexpr, TILE_N: tl.constexpr, TILE_K: tl.constexpr, SK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    RB = tl.cdiv(M, TILE_M)
    NT = tl.cdiv(N, TILE_N)
    SPR = tl.cdiv(K_RED, SK)
    total = RB * (SPR + NT)
    for i in range(tl.program_id(0), total, tl.num_programs(0)):
        is_sketch, rb, idx = _item(i, RB, NT, SPR, LAG)
        offs_m = rb * TILE_M + tl.arange(0, TILE_M)
        mask_m = offs_m < M
        if is_sketch:
            x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
            xs_rows = xs_ptr + offs_m.to(tl.int64)[:, None] * K_RED
            kk = idx * SK + tl.arange(0, SK)
            mask_kk = kk < K_RED
            xs = _load_sketch(x_rows, kk, mask_m, mask_kk, K, R0M, R1M, R3M, C, BK, VEC)
            tl.store(xs_rows + kk[None, :], xs.to(xs_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_kk[None, :])
            tl.debug_barrier()
            tl.atomic_add(flag_ptr + rb, 1, sem="release")
        else:
            spins = 0
            ready = tl.atomic_add(flag_ptr + rb, 0, sem="acquire")
            while (ready < SPR) & (spins < MAX_SPIN):
                ready = tl.atomic_add(flag_ptr + rb, 0, sem="acquire")
                spins += 1
            offs_n = idx * TILE_N + tl.arange(0, TILE_N)
            mask_n = offs_n < N
            xs_rows = xs_ptr + offs_m.to(tl.int64)[:, None] * K_RED
            w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
            rot_n = _row_rotations(offs_n, R2M, C, BK, BN, VEC)
            acc = tl.zeros((TILE_M, TILE_N), dtype=tl.float32)
            for k0 in range(0, K_RED, TILE_K):
                kk = k0 + tl.arange(0, TILE_K)
                mask_kk = kk < K_RED
                a = tl.load(xs_rows + kk[None, :], mask=mask_m[:, None] & mask_kk[None, :], other=0.0,
                            cache_modifier=".cg")
                w = _load_rotated_weight(w_rows, kk, rot_n, mask_n, mask_kk, BK, VEC)
                acc = tl.dot(a, tl.trans(w), acc, input_precision=DOT_PRECISION)
            _store_output(acc, b_ptr, y_ptr, offs_m, offs_n, mask_m, mask_n, stride_ym, HAS_BIAS)


def run(x, w, b, y, st, tile_m=128, tile_n=128, tile_k=64, sk=64, lag=None, programs=None, num_warps=8,
        num_stages=3, max_spin=1 << 22, xs=None):
    m, n = y.shape
    rb = cdiv(m, tile_m)
    if xs is None:
        xs = torch.empty((m, st.k_red), dtype=x.dtype, device=x.device)
    flags = torch.zeros((rb,), dtype=torch.int32, device=x.device)
    if programs is None:
        programs = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 1
    if lag is None:  # enough row blocks ahead that a window of `programs` items never waits
        lag = cdiv(programs, cdiv(st.k_red, sk) + cdiv(n, tile_n)) + 2
    kernel = overlap_forward[(programs,)](
        x, w, b if b is not None else y, y, xs, flags, m, n, st.in_features, st.k_red, lag, max_spin,
        x.stride(0), w.stride(0), y.stride(0), **_structure_args(st), HAS_BIAS=b is not None,
        TILE_M=tile_m, TILE_N=tile_n, TILE_K=tile_k, SK=sk,
        DOT_PRECISION="ieee" if x.dtype != torch.float32 else "tf32" if False else "ieee",
        num_warps=num_warps, num_stages=num_stages)
    return y, flags, kernel
