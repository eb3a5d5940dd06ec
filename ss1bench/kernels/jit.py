"""The SS1 Triton kernels (``@triton.jit``): forward, input gradient, weight gradient and the
memory-bound passes. Launchers live in ``kernels/ss1.py``.

The structure (``ss1bench/structure.py``) splits every shift into a member shift ``a(it, r)``
and an N-block rotation ``d(j)``. So each kernel is a GEMM over the compressed dimension:

- forward:      y[m, n]   = sum_kk xs[m, kk] * Wr[n, kk] + b[n]
- grad_input:   dxs[m, kk] = sum_n dy[m, n] * Wr[n, kk],   dx = unsketch(dxs)
- grad_weight:  dWr[n, kk] = sum_m dy[m, n] * xs[m, kk],   dW = unrotate(dWr)

where ``xs[m, it*BK + t] = sum_r x[m, (it*c + r)*BK + ((t + a(it, r)) mod BK)]`` is gathered
on the fly (c rotated loads summed in fp32) and ``Wr[n, it*BK + t] = Wc[n, it*BK + ((t - d(j))
mod BK)]`` is read in place. Every shift is a multiple of VEC = 8 and every tile starts on a
multiple of 8, so each 8-element chunk of a rotated index is contiguous and 8-aligned: the
``tl.multiple_of``/``tl.max_contiguous`` hints below keep those loads 16 bytes wide (without them
the fused kernel ran at 0.02-0.10 of ideal on an H200, docs/perf-notes.md). Kernel tiles are
free of the structural block sizes: the index math is per column and per row.

Shapes: x (M, K), weight (N, K_red), bias (N,), y and dy (M, N).
"""

import triton
import triton.language as tl

#: The hash numbers are runtime arguments that Triton would otherwise specialize on (a value of 1
#: or one divisible by 16 compiles another binary), so layers with the same tiles and c would not
#: always share one kernel binary.
HASH_ARGS = ["R0M", "R1M", "R2M", "R3M"]


# ---------------------------------------------------------------------------------------------
# @triton.jit helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _tile_ids(pid, num_pid_rows, num_pid_cols, GROUP: tl.constexpr):
    """Grouped ordering: GROUP row tiles share column tiles while they are hot in L2."""
    num_pid_in_group = GROUP * num_pid_cols
    group_id = pid // num_pid_in_group
    first_row = group_id * GROUP
    group_rows = tl.minimum(num_pid_rows - first_row, GROUP)
    pid_row = first_row + ((pid % num_pid_in_group) % group_rows)
    pid_col = (pid % num_pid_in_group) // group_rows
    return pid_row, pid_col


@triton.jit
def _member_shift(it, r, R0M, R1M, R3M, BK: tl.constexpr, VEC: tl.constexpr):
    """a(it, r) = ((R3 + R1*(it+1) + R0*(r+1)) * VEC) mod BK, the rotation of member r of group it
    (``it`` and ``r`` non-negative; a constexpr member or a tensor of members)."""
    return ((R3M + R1M * ((it + 1) & (BK - 1)) + R0M * ((r + 1) & (BK - 1))) * VEC) & (BK - 1)


@triton.jit
def _member_columns(kk, r: tl.constexpr, R0M, R1M, R3M, C: tl.constexpr, BK: tl.constexpr, VEC: tl.constexpr):
    """Dense column of member r for compressed columns kk: (it*C + r)*BK + ((t + a(it, r)) mod BK).

    Index math in this file is on non-negative values with power-of-two divisors, so every mod is
    an AND and every division an unsigned one: Triton compiles a signed ``%`` or ``//`` with a
    sign fix-up per element, which made up about half of a small-M kernel's instructions. The AND
    also keeps the result exact if a hash product wraps in int32.
    """
    t = kk & (BK - 1)
    if C == 1:
        col = kk
    else:
        it = (kk.to(tl.uint32) // BK).to(tl.int32)
        shift = _member_shift(it, r, R0M, R1M, R3M, BK, VEC)
        col = (kk - t) * C + r * BK + ((t + shift) & (BK - 1))
    return tl.max_contiguous(tl.multiple_of(col, VEC), VEC)


@triton.jit
def _row_rotations(offs_n, R2M, C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr):
    """d(j) for the N block j = n // BN of every row n (zero when C == 1)."""
    if C == 1:  # a constexpr branch: Triton compiles only the taken side
        rot = offs_n * 0
    else:
        j = (offs_n.to(tl.uint32) // BN).to(tl.int32)
        rot = (R2M * (j & (BK - 1)) * VEC) & (BK - 1)
    return rot


@triton.jit
def _load_sketch(x_rows, kk, mask_rows, mask_kk, K, R0M, R1M, R3M,
                 C: tl.constexpr, BK: tl.constexpr, VEC: tl.constexpr):
    """xs tile (rows, kk) in fp32: sum of the C rotated member loads (zero past K)."""
    xs = tl.zeros((x_rows.shape[0], kk.shape[0]), dtype=tl.float32)
    for r in tl.static_range(C):
        col = _member_columns(kk, r, R0M, R1M, R3M, C, BK, VEC)
        mask = mask_rows[:, None] & (mask_kk & (col < K))[None, :]
        xs += tl.load(x_rows + col[None, :], mask=mask, other=0.0).to(tl.float32)
    return xs


@triton.jit
def _load_sketch_block(x_rows, kk, mask_rows, mask_kk, K, R0M, R1M, R3M,
                       C: tl.constexpr, BK: tl.constexpr, VEC: tl.constexpr):
    """As :func:`_load_sketch` (C > 1), the C members gathered as one (rows, C, kk) block and
    summed over C: each x element is loaded and added by one thread, where the C separate loads
    of ``_load_sketch`` are added by every thread that holds the element in the caller's layout."""
    r = tl.arange(0, C)
    t = kk & (BK - 1)
    it = (kk.to(tl.uint32) // BK).to(tl.int32)
    shift = _member_shift(it[None, :], r[:, None], R0M, R1M, R3M, BK, VEC)  # (C, kk)
    col = ((kk - t) * C)[None, :] + (r * BK)[:, None] + ((t[None, :] + shift) & (BK - 1))
    col = tl.max_contiguous(tl.multiple_of(col, [1, VEC]), [1, VEC])
    mask = mask_rows[:, None, None] & (mask_kk[None, :] & (col < K))[None, :, :]
    members = tl.load(x_rows[:, :, None] + col[None, :, :], mask=mask, other=0.0)
    return tl.sum(members.to(tl.float32), axis=1)


@triton.jit
def _rotated_weight_columns(kk, rot_n, BK: tl.constexpr, VEC: tl.constexpr):
    """Wc column of Wr[n, kk]: (kk // BK)*BK + ((kk mod BK - d(n)) mod BK), shape (N tile, K tile)."""
    t = kk & (BK - 1)
    col = (kk - t)[None, :] + ((t[None, :] - rot_n[:, None]) & (BK - 1))
    return tl.max_contiguous(tl.multiple_of(col, [1, VEC]), [1, VEC])


@triton.jit
def _load_rotated_weight(w_rows, kk, rot_n, mask_n, mask_kk, BK: tl.constexpr, VEC: tl.constexpr):
    """Wr tile (N tile, K tile) read in place from Wc (``w_rows``: the tile's row pointers; zero
    past N and K_red)."""
    return tl.load(w_rows + _rotated_weight_columns(kk, rot_n, BK, VEC),
                   mask=mask_n[:, None] & mask_kk[None, :], other=0.0)


@triton.jit
def _store_output(acc, b_ptr, y_ptr, offs_m, offs_n, mask_m, mask_n, stride_ym, HAS_BIAS: tl.constexpr):
    """y tile = acc (fp32, rows x N tile) + bias, cast to y's dtype."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, partial_ptr,
    M, N, K, K_RED,
    stride_xm, stride_wn, stride_ym,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    TILE_M: tl.constexpr, TILE_N: tl.constexpr, TILE_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """y tile = sketch(x) tile @ rotated weight tile (+ bias). With SPLIT_K > 1, program
    (tile, s) covers the s-th slice of the K_red steps and writes its fp32 partial sum to
    partial[s] (bias and cast happen in the reduction)."""
    pid = tl.program_id(0)
    pid_m, pid_n = _tile_ids(pid, tl.cdiv(M, TILE_M), tl.cdiv(N, TILE_N), GROUP_M)
    offs_m = pid_m * TILE_M + tl.arange(0, TILE_M)
    offs_n = pid_n * TILE_N + tl.arange(0, TILE_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    rot_n = _row_rotations(offs_n, R2M, C, BK, BN, VEC)

    acc = tl.zeros((TILE_M, TILE_N), dtype=tl.float32)
    if SPLIT_K == 1:
        k_begin = 0
        k_end = K_RED
    else:
        steps = tl.cdiv(tl.cdiv(K_RED, TILE_K), SPLIT_K)
        k_begin = tl.program_id(1) * steps * TILE_K
        k_end = tl.minimum(k_begin + steps * TILE_K, K_RED)
    for k0 in range(k_begin, k_end, TILE_K):
        kk = k0 + tl.arange(0, TILE_K)
        mask_kk = kk < K_RED
        xs = _load_sketch(x_rows, kk, mask_m, mask_kk, K, R0M, R1M, R3M, C, BK, VEC)
        w = _load_rotated_weight(w_rows, kk, rot_n, mask_n, mask_kk, BK, VEC)  # (TILE_N, TILE_K)
        acc = tl.dot(xs.to(w.dtype), tl.trans(w), acc, input_precision=DOT_PRECISION)

    if SPLIT_K > 1:
        p_ptrs = (partial_ptr + tl.program_id(1).to(tl.int64) * M * N
                  + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :])
        tl.store(p_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])
        return
    _store_output(acc, b_ptr, y_ptr, offs_m, offs_n, mask_m, mask_n, stride_ym, HAS_BIAS)


@triton.jit(do_not_specialize=["M", "N", "stride_ym"])  # M = 1 would become a constexpr (no .to)
def _split_k_sum_kernel(partial_ptr, b_ptr, y_ptr, M, N, stride_ym,
                        SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """y = sum_s partial[s] (+ bias), cast: the split-K forward's epilogue in one launch, the
    partials added in a fixed order (s = 0, 1, ...), so the result is deterministic."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    size = M.to(tl.int64) * N
    mask = offs < size
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for split in tl.static_range(SPLIT):
        acc += tl.load(partial_ptr + split * size + offs, mask=mask, other=0.0)
    cols = offs % N
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + (offs // N) * stride_ym + cols, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_resident_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, N, K, K_RED, TILES_PER_PROGRAM,
    stride_xm, stride_wn, stride_ym,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    TILE_M: tl.constexpr, TILE_N: tl.constexpr, KR: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Forward with the sketch resident on chip: program (chunk, row block) gathers the sketch of
    its TILE_M rows once, the whole K_red (padded to KR) wide, then sweeps TILES_PER_PROGRAM
    consecutive N tiles, each one product over all of K_red. x is read once per chunk and the
    sketch never goes to memory, so for high c (small K_red) the kernel streams x in and y out."""
    pid_chunk = tl.program_id(0)
    offs_m = tl.program_id(1) * TILE_M + tl.arange(0, TILE_M)
    mask_m = offs_m < M
    kk = tl.arange(0, KR)
    mask_kk = kk < K_RED
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    xs = _load_sketch(x_rows, kk, mask_m, mask_kk, K, R0M, R1M, R3M, C, BK, VEC).to(w_ptr.dtype.element_ty)
    first = pid_chunk * TILES_PER_PROGRAM
    last = tl.minimum(first + TILES_PER_PROGRAM, tl.cdiv(N, TILE_N))
    for tile in range(first, last):
        offs_n = tile * TILE_N + tl.arange(0, TILE_N)
        mask_n = offs_n < N
        w = _load_rotated_weight(w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn, kk,
                                 _row_rotations(offs_n, R2M, C, BK, BN, VEC), mask_n, mask_kk, BK, VEC)
        acc = tl.dot(xs, tl.trans(w), input_precision=DOT_PRECISION)
        _store_output(acc, b_ptr, y_ptr, offs_m, offs_n, mask_m, mask_n, stride_ym, HAS_BIAS)


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_gemv_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, N, K, K_RED,
    stride_xm, stride_wn, stride_ym,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, TILE_N: tl.constexpr, TILE_K: tl.constexpr,
    BLOCK_GATHER: tl.constexpr,
):
    """Forward for a few rows without tl.dot (whose 16-row minimum would pad M = 1 sixteen-fold):
    program (N tile, row block) gathers the sketch of its ROWS rows one TILE_K chunk at a time and
    reduces the rotated weight tile against each row in fp32 on the CUDA cores, so the weight tile
    is read once per ROWS rows. Weight-read bound, like decode. ``BLOCK_GATHER`` (C > 1): the
    members gathered as one block (:func:`_load_sketch_block`)."""
    offs_n = tl.program_id(0) * TILE_N + tl.arange(0, TILE_N)
    rows = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    mask_n = offs_n < N
    mask_rows = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    rot_n = _row_rotations(offs_n, R2M, C, BK, BN, VEC)
    acc = tl.zeros((ROWS, TILE_N), dtype=tl.float32)
    for k0 in range(0, K_RED, TILE_K):
        kk = k0 + tl.arange(0, TILE_K)
        mask_kk = kk < K_RED
        if BLOCK_GATHER:  # a constexpr branch
            xs = _load_sketch_block(x_rows, kk, mask_rows, mask_kk, K, R0M, R1M, R3M, C, BK, VEC)
        else:
            xs = _load_sketch(x_rows, kk, mask_rows, mask_kk, K, R0M, R1M, R3M, C, BK, VEC)  # (ROWS, TILE_K)
        # round the sketch to the input dtype first, as the tensor-core paths do
        xs = xs.to(w_ptr.dtype.element_ty).to(tl.float32)
        w = _load_rotated_weight(w_rows, kk, rot_n, mask_n, mask_kk, BK, VEC).to(tl.float32)  # (TILE_N, TILE_K)
        if ROWS == 1:  # a constexpr branch: the one-row product stays 2-D
            acc += tl.sum(w * xs, axis=1)[None, :]
        else:
            acc += tl.sum(w[None, :, :] * xs[:, None, :], axis=2)
    _store_output(acc, b_ptr, y_ptr, rows, offs_n, mask_rows, mask_n, stride_ym, HAS_BIAS)


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_grad_input_kernel(
    dy_ptr, w_ptr, dx_ptr,
    M, N, K, K_RED,
    stride_dym, stride_wn, stride_dxm,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_N: tl.constexpr, TILE_K: tl.constexpr, GROUP_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_m, pid_k = _tile_ids(pid, tl.cdiv(M, TILE_M), tl.cdiv(K_RED, TILE_K), GROUP_M)
    offs_m = pid_m * TILE_M + tl.arange(0, TILE_M)
    kk = pid_k * TILE_K + tl.arange(0, TILE_K)
    mask_m = offs_m < M
    mask_kk = kk < K_RED
    dy_rows = dy_ptr + offs_m.to(tl.int64)[:, None] * stride_dym

    acc = tl.zeros((TILE_M, TILE_K), dtype=tl.float32)
    for n0 in range(0, N, TILE_N):
        offs_n = n0 + tl.arange(0, TILE_N)
        mask_n = offs_n < N
        dy = tl.load(dy_rows + offs_n[None, :], mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        rot_n = _row_rotations(offs_n, R2M, C, BK, BN, VEC)
        w = _load_rotated_weight(w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn, kk, rot_n, mask_n, mask_kk,
                                 BK, VEC)  # (TILE_N, TILE_K)
        acc = tl.dot(dy, w, acc, input_precision=DOT_PRECISION)

    # unsketch: member r of group it receives the tile at its own rotation; every dense column
    # below K is written by exactly one (tile, member), so no atomics are needed.
    dx_rows = dx_ptr + offs_m.to(tl.int64)[:, None] * stride_dxm
    out = acc.to(dx_ptr.dtype.element_ty)
    for r in tl.static_range(C):
        col = _member_columns(kk, r, R0M, R1M, R3M, C, BK, VEC)
        tl.store(dx_rows + col[None, :], out, mask=mask_m[:, None] & (mask_kk & (col < K))[None, :])


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_grad_weight_kernel(
    dy_ptr, x_ptr, dw_ptr,
    M, N, K, K_RED, ROWS_PER_SPLIT,
    stride_dym, stride_xm, stride_dw_split, stride_dwn,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_N: tl.constexpr, TILE_K: tl.constexpr, GROUP_M: tl.constexpr,
    ATOMIC: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_split = tl.program_id(1)
    pid_n, pid_k = _tile_ids(pid, tl.cdiv(N, TILE_N), tl.cdiv(K_RED, TILE_K), GROUP_M)
    offs_n = pid_n * TILE_N + tl.arange(0, TILE_N)
    kk = pid_k * TILE_K + tl.arange(0, TILE_K)
    mask_n = offs_n < N
    mask_kk = kk < K_RED
    m_start = pid_split * ROWS_PER_SPLIT
    m_stop = tl.minimum(m_start + ROWS_PER_SPLIT, M)

    acc = tl.zeros((TILE_N, TILE_K), dtype=tl.float32)
    for m0 in range(m_start, m_stop, TILE_M):
        offs_m = m0 + tl.arange(0, TILE_M)
        mask_m = offs_m < m_stop
        rows64 = offs_m.to(tl.int64)
        dy_t = tl.load(dy_ptr + rows64[None, :] * stride_dym + offs_n[:, None],
                       mask=mask_n[:, None] & mask_m[None, :], other=0.0)  # (TILE_N, TILE_M)
        xs = _load_sketch(x_ptr + rows64[:, None] * stride_xm, kk, mask_m, mask_kk, K,
                          R0M, R1M, R3M, C, BK, VEC)
        acc = tl.dot(dy_t, xs.to(dy_t.dtype), acc, input_precision=DOT_PRECISION)

    # unrotate: dWc[n, (kk // BK)*BK + ((kk mod BK - d(n)) mod BK)] = dWr[n, kk] (a permutation)
    rot_n = _row_rotations(offs_n, R2M, C, BK, BN, VEC)
    w_cols = _rotated_weight_columns(kk, rot_n, BK, VEC)
    dw_ptrs = dw_ptr + pid_split * stride_dw_split + offs_n.to(tl.int64)[:, None] * stride_dwn + w_cols
    mask = mask_n[:, None] & mask_kk[None, :]
    if ATOMIC:
        tl.atomic_add(dw_ptrs, acc, mask=mask, sem="relaxed")
    else:
        tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sketch_tile(x_ptr, xs_ptr, pid_m, pid_k, M, K, K_RED, stride_xm, stride_xsm, R0M, R1M, R3M,
                 C: tl.constexpr, BK: tl.constexpr, VEC: tl.constexpr, TILE_M: tl.constexpr, TILE_K: tl.constexpr):
    offs_m = pid_m * TILE_M + tl.arange(0, TILE_M)
    kk = pid_k * TILE_K + tl.arange(0, TILE_K)
    mask_m = offs_m < M
    mask_kk = kk < K_RED
    rows64 = offs_m.to(tl.int64)[:, None]
    xs = _load_sketch(x_ptr + rows64 * stride_xm, kk, mask_m, mask_kk, K, R0M, R1M, R3M, C, BK, VEC)
    tl.store(xs_ptr + rows64 * stride_xsm + kk[None, :], xs.to(xs_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_kk[None, :])


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_sketch_kernel(
    x_ptr, xs_ptr, M, K, K_RED, stride_xm, stride_xsm,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_K: tl.constexpr,
):
    """xs (M, K_RED) = sketch(x): memory-bound, reads x once and writes xs once. Programs run
    row-major (the K_red chunks of a row block side by side: x's rows stream in order), as in
    the sketch-and-rotate kernel."""
    pid = tl.program_id(0)
    cols = tl.cdiv(K_RED, TILE_K)
    _sketch_tile(x_ptr, xs_ptr, pid // cols, pid % cols, M, K, K_RED, stride_xm, stride_xsm,
                 R0M, R1M, R3M, C, BK, VEC, TILE_M, TILE_K)


@triton.jit
def _sketch_rotate_program(
    pid, x_ptr, xs_ptr, w_ptr, wr_ptr, M, N, K, K_RED, stride_xm, stride_xsm, stride_w, stride_wr,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_K: tl.constexpr, ROT_N: tl.constexpr, ROT_K: tl.constexpr,
):
    """Program ``pid`` of a sketch-and-rotate grid: the first programs write xs = sketch(x)
    (TILE_M x TILE_K tiles), the others Wr = rotate(Wc) (ROT_N x ROT_K tiles, row-major). Returns
    the program's index among the rotating ones (negative for a sketching program)."""
    sketch_cols = tl.cdiv(K_RED, TILE_K)
    sketch_programs = tl.cdiv(M, TILE_M) * sketch_cols
    rot_pid = pid - sketch_programs
    if rot_pid < 0:
        _sketch_tile(x_ptr, xs_ptr, pid // sketch_cols, pid % sketch_cols, M, K, K_RED, stride_xm, stride_xsm,
                     R0M, R1M, R3M, C, BK, VEC, TILE_M, TILE_K)
    else:
        rot_cols = tl.cdiv(K_RED, ROT_K)
        _rotate_tile(w_ptr, wr_ptr, rot_pid // rot_cols, rot_pid % rot_cols, N, K_RED, stride_w, stride_wr, R2M,
                     C, BK, BN, VEC, ROT_N, ROT_K, False)
    return rot_pid


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_sketch_rotate_kernel(
    x_ptr, xs_ptr, w_ptr, wr_ptr, M, N, K, K_RED, stride_xm, stride_xsm, stride_w, stride_wr,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_K: tl.constexpr, ROT_N: tl.constexpr, ROT_K: tl.constexpr,
):
    """The forward's two memory-bound passes in one launch (:func:`_sketch_rotate_program`)."""
    _sketch_rotate_program(tl.program_id(0), x_ptr, xs_ptr, w_ptr, wr_ptr, M, N, K, K_RED, stride_xm, stride_xsm,
                           stride_w, stride_wr, R0M, R1M, R2M, R3M, C, BK, BN, VEC, TILE_M, TILE_K, ROT_N, ROT_K)


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_sketch_rotate_bias_kernel(
    x_ptr, xs_ptr, w_ptr, wr_ptr, b_ptr, bo_ptr, M, N, K, K_RED, stride_xm, stride_xsm, stride_w, stride_wr,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_K: tl.constexpr, ROT_N: tl.constexpr, ROT_K: tl.constexpr,
):
    """:func:`_ss1_sketch_rotate_kernel` that also writes the bias (N,) cast to ``bo``'s dtype: the
    programs rotating the weight's first K_red tile of each ROT_N rows store those rows' bias
    (autocast's cast of the bias, without a launch of its own)."""
    rot_pid = _sketch_rotate_program(tl.program_id(0), x_ptr, xs_ptr, w_ptr, wr_ptr, M, N, K, K_RED, stride_xm,
                                     stride_xsm, stride_w, stride_wr, R0M, R1M, R2M, R3M, C, BK, BN, VEC, TILE_M,
                                     TILE_K, ROT_N, ROT_K)
    rot_cols = tl.cdiv(K_RED, ROT_K)
    if rot_pid >= 0 and rot_pid % rot_cols == 0:
        offs_n = (rot_pid // rot_cols) * ROT_N + tl.arange(0, ROT_N)
        bias = tl.load(b_ptr + offs_n, mask=offs_n < N)
        tl.store(bo_ptr + offs_n, bias.to(bo_ptr.dtype.element_ty), mask=offs_n < N)


@triton.jit
def _unsketch_tile(dxs_ptr, dx_ptr, pid_m, pid_k, M, K, K_RED, stride_dxsm, stride_dxm, R0M, R1M, R3M,
                   C: tl.constexpr, BK: tl.constexpr, VEC: tl.constexpr, TILE_M: tl.constexpr,
                   TILE_K: tl.constexpr):
    offs_m = pid_m * TILE_M + tl.arange(0, TILE_M)
    kk = pid_k * TILE_K + tl.arange(0, TILE_K)
    mask_m = offs_m < M
    mask_kk = kk < K_RED
    rows64 = offs_m.to(tl.int64)[:, None]
    tile = tl.load(dxs_ptr + rows64 * stride_dxsm + kk[None, :], mask=mask_m[:, None] & mask_kk[None, :])
    for r in tl.static_range(C):
        col = _member_columns(kk, r, R0M, R1M, R3M, C, BK, VEC)
        tl.store(dx_ptr + rows64 * stride_dxm + col[None, :], tile,
                 mask=mask_m[:, None] & (mask_kk & (col < K))[None, :])


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_unsketch_kernel(
    dxs_ptr, dx_ptr, M, K, K_RED, stride_dxsm, stride_dxm,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_K: tl.constexpr,
):
    """dx (M, K) = unsketch(dxs): each dense column copies one sketch column (no atomics).
    Programs run row-major, like the sketch kernel's."""
    pid = tl.program_id(0)
    cols = tl.cdiv(K_RED, TILE_K)
    _unsketch_tile(dxs_ptr, dx_ptr, pid // cols, pid % cols, M, K, K_RED, stride_dxsm, stride_dxm,
                   R0M, R1M, R3M, C, BK, VEC, TILE_M, TILE_K)


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_unsketch_unrotate_kernel(
    dxs_ptr, dx_ptr, dwr_ptr, dw_ptr, M, N, K, K_RED, stride_dxsm, stride_dxm, stride_dwr, stride_dw,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_K: tl.constexpr, ROT_N: tl.constexpr, ROT_K: tl.constexpr,
):
    """The backward's two memory-bound passes in one launch (the sketch-and-rotate kernel's
    inverse): the first programs write dx = unsketch(dxs) (TILE_M x TILE_K tiles), the others
    dWc = unrotate(dWr) (ROT_N x ROT_K tiles)."""
    pid = tl.program_id(0)
    sketch_cols = tl.cdiv(K_RED, TILE_K)
    sketch_programs = tl.cdiv(M, TILE_M) * sketch_cols
    if pid < sketch_programs:
        _unsketch_tile(dxs_ptr, dx_ptr, pid // sketch_cols, pid % sketch_cols, M, K, K_RED, stride_dxsm,
                       stride_dxm, R0M, R1M, R3M, C, BK, VEC, TILE_M, TILE_K)
    else:
        pid -= sketch_programs
        rot_cols = tl.cdiv(K_RED, ROT_K)
        _rotate_tile(dwr_ptr, dw_ptr, pid // rot_cols, pid % rot_cols, N, K_RED, stride_dwr, stride_dw, R2M,
                     C, BK, BN, VEC, ROT_N, ROT_K, True)


@triton.jit
def _rotate_tile(src_ptr, dst_ptr, pid_n, pid_k, N, K_RED, stride_src, stride_dst, R2M,
                 C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
                 TILE_N: tl.constexpr, TILE_K: tl.constexpr, INVERSE: tl.constexpr):
    offs_n = pid_n * TILE_N + tl.arange(0, TILE_N)
    kk = pid_k * TILE_K + tl.arange(0, TILE_K)
    mask = (offs_n < N)[:, None] & (kk < K_RED)[None, :]
    rows64 = offs_n.to(tl.int64)[:, None]
    rotated = _rotated_weight_columns(kk, _row_rotations(offs_n, R2M, C, BK, BN, VEC), BK, VEC)
    if INVERSE:
        tile = tl.load(src_ptr + rows64 * stride_src + kk[None, :], mask=mask)
        tl.store(dst_ptr + rows64 * stride_dst + rotated, tile, mask=mask)
    else:
        tile = tl.load(src_ptr + rows64 * stride_src + rotated, mask=mask)
        tl.store(dst_ptr + rows64 * stride_dst + kk[None, :], tile, mask=mask)


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_rotate_kernel(
    src_ptr, dst_ptr, N, K_RED, stride_src, stride_dst,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_N: tl.constexpr, TILE_K: tl.constexpr, INVERSE: tl.constexpr,
):
    """Wr = rotate(Wc) (INVERSE=False) or dWc = unrotate(dWr) (INVERSE=True), both (N, K_RED)."""
    _rotate_tile(src_ptr, dst_ptr, tl.program_id(0), tl.program_id(1), N, K_RED, stride_src, stride_dst, R2M,
                 C, BK, BN, VEC, TILE_N, TILE_K, INVERSE)
