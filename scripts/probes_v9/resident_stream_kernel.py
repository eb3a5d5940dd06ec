import triton
import triton.language as tl

from ss1bench.kernels.ss1 import HASH_ARGS, _load_rotated_weight, _row_rotations, _store_output


@triton.jit
def _member_cols_rt(kk, r, R0M, R1M, R3M, C: tl.constexpr, BK: tl.constexpr, VEC: tl.constexpr):
    it = kk // BK
    t = kk % BK
    shift = (R3M + R1M * ((it + 1) % BK) + R0M * ((r + 1) % BK)) % BK
    shift = (shift * VEC) % BK
    col = (it * C + r) * BK + ((t + shift) % BK)
    return tl.max_contiguous(tl.multiple_of(col, VEC), VEC)


@triton.jit(do_not_specialize=HASH_ARGS)
def resident2(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, N, K, K_RED, TILES_PER_PROGRAM,
    stride_xm, stride_wn, stride_ym,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    TILE_M: tl.constexpr, TILE_N: tl.constexpr, KR: tl.constexpr, DOT_PRECISION: tl.constexpr,
    XSTAGES: tl.constexpr,
):
    pid_chunk = tl.program_id(0)
    offs_m = tl.program_id(1) * TILE_M + tl.arange(0, TILE_M)
    mask_m = offs_m < M
    kk = tl.arange(0, KR)
    mask_kk = kk < K_RED
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    xs = tl.zeros((TILE_M, KR), dtype=tl.float32)
    for r in tl.range(0, C, num_stages=XSTAGES):
        col = _member_cols_rt(kk, r, R0M, R1M, R3M, C, BK, VEC)
        mask = mask_m[:, None] & (mask_kk & (col < K))[None, :]
        xs += tl.load(x_rows + col[None, :], mask=mask, other=0.0).to(tl.float32)
    xs = xs.to(w_ptr.dtype.element_ty)
    first = pid_chunk * TILES_PER_PROGRAM
    last = tl.minimum(first + TILES_PER_PROGRAM, tl.cdiv(N, TILE_N))
    for tile in range(first, last):
        offs_n = tile * TILE_N + tl.arange(0, TILE_N)
        mask_n = offs_n < N
        w = _load_rotated_weight(w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn, kk,
                                 _row_rotations(offs_n, R2M, C, BK, BN, VEC), mask_n, mask_kk, BK, VEC)
        acc = tl.dot(xs, tl.trans(w), input_precision=DOT_PRECISION)
        _store_output(acc, b_ptr, y_ptr, offs_m, offs_n, mask_m, mask_n, stride_ym, HAS_BIAS)
