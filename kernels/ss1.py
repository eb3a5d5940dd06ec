"""Triton kernels for SS1: forward, input gradient, weight gradient, and their launchers.

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
the calibration kernel ran at 0.02-0.10 of ideal, see BASELINES). Kernel tiles are free of the
structural block sizes: the index math is per column and per row.

Shapes: x (M, K), weight (N, K_red), bias (N,), y and dy (M, N).

Host path: ``ss1_forward``, ``ss1_grad_input`` and ``ss1_grad_weight`` check their inputs and
resolve a launch config on the first eager call per *plan key* (every tensor's shape, strides,
dtype, device and 16-byte alignment, the structure, the device, TF32), record the launches
(``kernels/launch.py``) and keep them as a plan; a later call with the same key replays the plan
(the recorded binaries through their C launchers, the cuBLAS product as before) and skips the
rest. Plans are dropped with the resolved configs. ``SS1BENCH_FAST_PATH=0`` switches them off.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import torch
import triton
import triton.language as tl

from ss1bench.structure import VEC, SS1Structure

from .config import (
    FORWARD_KINDS,
    RESIDENT_MAX_K_RED,
    LaunchConfig,
    Problem,
    cdiv,
    launch_config_cache,
    launch_plans,
    resident_chunks,
    resident_width,
    resolve_launch_config,
    shrink_config,
)
from .launch import current_device, interpreting, record
from .launch import launch as launch_kernel

logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

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
def _member_columns(kk, r: tl.constexpr, R0M, R1M, R3M, C: tl.constexpr, BK: tl.constexpr, VEC: tl.constexpr):
    """Dense column of member r for compressed columns kk: (it*C + r)*BK + ((t + a(it, r)) mod BK).

    Every hash term is already reduced mod BK, so the largest intermediate is 3 * BK**2.
    """
    it = kk // BK
    t = kk % BK
    if C == 1:
        col = kk
    else:
        shift = (R3M + R1M * ((it + 1) % BK) + R0M * ((r + 1) % BK)) % BK
        shift = (shift * VEC) % BK
        col = (it * C + r) * BK + ((t + shift) % BK)
    return tl.max_contiguous(tl.multiple_of(col, VEC), VEC)


@triton.jit
def _row_rotations(offs_n, R2M, C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr):
    """d(j) for the N block j = n // BN of every row n (zero when C == 1)."""
    if C == 1:  # noqa: SIM108 - a constexpr branch: Triton compiles only the taken side
        rot = offs_n * 0
    else:
        rot = ((R2M * ((offs_n // BN) % BK)) % BK * VEC) % BK
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
def _rotated_weight_columns(kk, rot_n, BK: tl.constexpr, VEC: tl.constexpr):
    """Wc column of Wr[n, kk]: (kk // BK)*BK + ((kk mod BK - d(n)) mod BK), shape (N tile, K tile)."""
    it = kk // BK
    t = kk % BK
    col = (it * BK)[None, :] + ((t[None, :] - rot_n[:, None]) & (BK - 1))
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
):
    """Forward for a few rows without tl.dot (whose 16-row minimum would pad M = 1 sixteen-fold):
    program (N tile, row block) gathers the sketch of its ROWS rows one TILE_K chunk at a time and
    reduces the rotated weight tile against each row in fp32 on the CUDA cores, so the weight tile
    is read once per ROWS rows. Weight-read bound, like decode."""
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


@triton.jit(do_not_specialize=HASH_ARGS)
def _ss1_sketch_rotate_kernel(
    x_ptr, xs_ptr, w_ptr, wr_ptr, M, N, K, K_RED, stride_xm, stride_xsm, stride_w, stride_wr,
    R0M, R1M, R2M, R3M,
    C: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, VEC: tl.constexpr,
    TILE_M: tl.constexpr, TILE_K: tl.constexpr, ROT_N: tl.constexpr, ROT_K: tl.constexpr,
):
    """The forward's two memory-bound passes in one launch: the first programs write
    xs = sketch(x) (TILE_M x TILE_K tiles), the others Wr = rotate(Wc) (ROT_N x ROT_K tiles)."""
    pid = tl.program_id(0)
    sketch_cols = tl.cdiv(K_RED, TILE_K)
    sketch_programs = tl.cdiv(M, TILE_M) * sketch_cols
    if pid < sketch_programs:
        _sketch_tile(x_ptr, xs_ptr, pid // sketch_cols, pid % sketch_cols, M, K, K_RED, stride_xm, stride_xsm,
                     R0M, R1M, R3M, C, BK, VEC, TILE_M, TILE_K)
    else:
        pid -= sketch_programs
        rot_cols = tl.cdiv(K_RED, ROT_K)
        _rotate_tile(w_ptr, wr_ptr, pid // rot_cols, pid % rot_cols, N, K_RED, stride_w, stride_wr, R2M,
                     C, BK, BN, VEC, ROT_N, ROT_K, False)


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
    offs_m = (pid // cols) * TILE_M + tl.arange(0, TILE_M)
    kk = (pid % cols) * TILE_K + tl.arange(0, TILE_K)
    mask_m = offs_m < M
    mask_kk = kk < K_RED
    rows64 = offs_m.to(tl.int64)[:, None]
    tile = tl.load(dxs_ptr + rows64 * stride_dxsm + kk[None, :], mask=mask_m[:, None] & mask_kk[None, :])
    for r in tl.static_range(C):
        col = _member_columns(kk, r, R0M, R1M, R3M, C, BK, VEC)
        tl.store(dx_ptr + rows64 * stride_dxm + col[None, :], tile,
                 mask=mask_m[:, None] & (mask_kk & (col < K))[None, :])


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


# ---------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return SUPPORTED_DTYPES[dtype]
    except KeyError:
        raise TypeError(
            f"SS1 kernels support float32, float16 and bfloat16 tensors, got {dtype}"
        ) from None


@functools.lru_cache(maxsize=16)
def _device_limits(device_index: int) -> tuple[str, int]:
    """(name, opt-in shared memory per block) of a CUDA device, read once."""
    props = torch.cuda.get_device_properties(device_index)
    limit = getattr(props, "shared_memory_per_block_optin", 0)
    if not limit:
        limit = triton.runtime.driver.active.utils.get_device_properties(device_index)["max_shared_mem"]
    return props.name, int(limit)


def device_limits(device: torch.device) -> tuple[str, int]:
    """(device name, shared-memory limit in bytes) used to pick and check launch configs."""
    if device.type == "cuda":
        return _device_limits(device.index if device.index is not None else torch.cuda.current_device())
    from .config import FALLBACK_SHARED_MEMORY

    return "", FALLBACK_SHARED_MEMORY


def _check_tensor(name: str, tensor: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype,
                  device: torch.device) -> None:
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device} but the other inputs are on {device}")
    if tensor.dtype != dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but the other inputs are {dtype}")
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")


def _check_device(device: torch.device) -> None:
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"the SS1 Triton kernels need CUDA tensors (got {device}); use the reference op on CPU "
            "or set TRITON_INTERPRET=1 to run them in Triton's interpreter"
        )


def _row_major(tensor: torch.Tensor) -> torch.Tensor:
    """Unit stride along the last dim (the kernels' vector loads need it); copies only if not."""
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


def _copied_below(*tensors: torch.Tensor | None) -> bool:
    """Whether a launcher's checks copy any of ``tensors`` (None skipped) to a unit last stride
    (:func:`_row_major`, the forward's contiguous bias). A plan passes the caller's tensors as they
    are, so a call that copies one keeps no plan."""
    return any(tensor is not None and tensor.stride(-1) != 1 for tensor in tensors)


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _structure_args(structure: SS1Structure) -> dict:
    r0, r1, r2, r3 = structure.kernel_hash()
    return dict(R0M=r0, R1M=r1, R2M=r2, R3M=r3, C=structure.redn_factor, BK=structure.block_k,
                BN=structure.block_n, VEC=VEC)


def _check_config(kind: str, config: LaunchConfig, structure: SS1Structure) -> None:
    """Errors for configs that name a variant the kernel ``kind`` does not have."""
    forward = kind in FORWARD_KINDS
    if config.split_k > 1 and (not forward or config.algorithm != "fused"):
        raise ValueError(f"split_k={config.split_k} applies to the fused forward kernel only, not to "
                         f"{kind} ({config.algorithm})")
    if config.algorithm in ("resident", "gemv") and not forward:
        raise ValueError(f"algorithm {config.algorithm!r} applies to the forward kernel only, not to {kind}")
    if config.algorithm == "resident" and resident_width(structure.k_red) > RESIDENT_MAX_K_RED:
        raise ValueError(f"algorithm 'resident' holds a whole sketch row on chip: K_red={structure.k_red} "
                         f"is over its limit of {RESIDENT_MAX_K_RED}")


#: Entries of the launchers' config cache before it starts over (one per kind, M, layer shape).
LAUNCH_CACHE_SIZE = 4096


def _resolved_config(key: tuple, structure: SS1Structure) -> LaunchConfig:
    """The launch config for ``key = (kind, m, structure.key, dtype, device)``, resolved once and
    cached (:data:`launch_config_cache`)."""
    cfg = launch_config_cache.get(key)
    if cfg is None:
        kind, m, _, dtype, device = key
        name, limit = device_limits(device)
        problem = Problem(kind, m, structure.in_features, structure.out_features, structure.redn_factor,
                          structure.block_k, structure.block_n, dtype_name(dtype), name)
        cfg = resolve_launch_config(problem, limit)
        _check_config(kind, cfg, structure)
        if len(launch_config_cache) >= LAUNCH_CACHE_SIZE:  # many distinct M: start over
            launch_config_cache.clear()
        launch_config_cache[key] = cfg
    return cfg


def _launch(kind: str, m: int, structure: SS1Structure, dtype: torch.dtype, device: torch.device,
            config: LaunchConfig | None, launch) -> None:
    """Run ``launch(cfg)`` with ``config`` if given (errors propagate: the caller pinned it),
    else with the resolved config; if that runs out of GPU resources (a model of shared memory
    is an estimate), retry with a smaller heuristic config so the default path always launches.
    """
    if config is not None:
        _check_config(kind, config, structure)
        launch(config)
        return
    key = (kind, m, structure.key, dtype, device)
    cfg = _resolved_config(key, structure)
    while True:
        try:
            launch(cfg)
            return
        except triton.runtime.errors.OutOfResources:
            smaller = shrink_config(cfg)
            if smaller == cfg:
                raise
            logger.warning("%s launch config %s ran out of GPU resources; retrying with %s", kind, cfg, smaller)
            cfg = launch_config_cache[key] = smaller


def _check_out(out: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor,
               name: str = "out") -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    _check_tensor(name, out, shape, like.dtype, like.device)
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return out


#: Elements per program of the split-K epilogue (an element-wise pass over M x N).
SPLIT_K_SUM_BLOCK = 1024

#: Tile of the weight-rotation kernel (a permutation copy of N x K_red; memory-bound).
ROTATE_TILE_N, ROTATE_TILE_K = 32, 128


def _sketch_grid(m: int, k_red: int, cfg: LaunchConfig) -> tuple[int]:
    """One program per (row block, K_red chunk), row-major in a 1-D grid."""
    return (cdiv(m, cfg.tile_m) * cdiv(k_red, cfg.tile_k),)


def sketch(x: torch.Tensor, structure: SS1Structure, cfg: LaunchConfig) -> torch.Tensor:
    """``xs: (M, K_red)`` for ``x: (M, K)`` (row-major last dim)."""
    m = x.shape[0]
    xs = torch.empty((m, structure.k_red), dtype=x.dtype, device=x.device)
    launch_kernel(
        _ss1_sketch_kernel, _sketch_grid(m, structure.k_red, cfg),
        x, xs, m, structure.in_features, structure.k_red, x.stride(0), xs.stride(0),
        **_structure_args(structure), TILE_M=cfg.tile_m, TILE_K=cfg.tile_k, num_warps=cfg.num_warps,
    )
    return xs


def sketch_and_rotate(x: torch.Tensor, weight: torch.Tensor, structure: SS1Structure,
                      cfg: LaunchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sketch(x), rotate(weight))`` in one launch (the forward's two memory-bound passes)."""
    m = x.shape[0]
    n, k_red = structure.weight_shape
    xs = torch.empty((m, k_red), dtype=x.dtype, device=x.device)
    wr = torch.empty((n, k_red), dtype=weight.dtype, device=weight.device)
    programs = (math.prod(_sketch_grid(m, k_red, cfg))
                + cdiv(n, ROTATE_TILE_N) * cdiv(k_red, ROTATE_TILE_K))
    launch_kernel(
        _ss1_sketch_rotate_kernel, (programs,),
        x, xs, weight, wr, m, n, structure.in_features, k_red, x.stride(0), xs.stride(0),
        weight.stride(0), wr.stride(0), **_structure_args(structure),
        TILE_M=cfg.tile_m, TILE_K=cfg.tile_k, ROT_N=ROTATE_TILE_N, ROT_K=ROTATE_TILE_K,
        num_warps=cfg.num_warps,
    )
    return xs, wr


def unsketch(dxs: torch.Tensor, structure: SS1Structure, cfg: LaunchConfig, out: torch.Tensor) -> None:
    """``out: (M, K) = unsketch(dxs: (M, K_red))``."""
    m = dxs.shape[0]
    launch_kernel(
        _ss1_unsketch_kernel, _sketch_grid(m, structure.k_red, cfg),
        dxs, out, m, structure.in_features, structure.k_red, dxs.stride(0), out.stride(0),
        **_structure_args(structure), TILE_M=cfg.tile_m, TILE_K=cfg.tile_k, num_warps=cfg.num_warps,
    )


def rotate_weight(weight: torch.Tensor, structure: SS1Structure, inverse: bool = False,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """``Wr = rotate(weight)`` or, with ``inverse``, ``dWc = unrotate(weight)``; both (N, K_red)."""
    n, k_red = structure.weight_shape
    out = torch.empty((n, k_red), dtype=weight.dtype, device=weight.device) if out is None else out
    grid = (cdiv(n, ROTATE_TILE_N), cdiv(k_red, ROTATE_TILE_K))
    launch_kernel(
        _ss1_rotate_kernel, grid,
        weight, out, n, k_red, weight.stride(0), out.stride(0), **_structure_args(structure),
        TILE_N=ROTATE_TILE_N, TILE_K=ROTATE_TILE_K, INVERSE=inverse, num_warps=4,
    )
    return out


def _resident_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
                      structure: SS1Structure, cfg: LaunchConfig) -> None:
    """The ``resident`` forward: grid (N chunks, row blocks), chunks from :func:`resident_chunks`."""
    m, n = y.shape
    width = resident_width(structure.k_red)
    chunks, per_program = resident_chunks(m, n, cfg.tile_m, cfg.tile_n)
    launch_kernel(
        _ss1_resident_forward_kernel, (chunks, cdiv(m, cfg.tile_m)),
        x, weight, bias if bias is not None else y, y,
        m, n, structure.in_features, structure.k_red, per_program,
        x.stride(0), weight.stride(0), y.stride(0),
        **_structure_args(structure),
        HAS_BIAS=bias is not None,
        TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, KR=width, DOT_PRECISION=_dot_precision(x.dtype),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def ss1_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                structure: SS1Structure, config: LaunchConfig | None = None,
                out: torch.Tensor | None = None, rotated_weight: torch.Tensor | None = None,
                return_sketch: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """``y: (M, N) = x @ dense_weight(weight).T + bias`` for ``x: (M, K)``, ``weight: (N, K_red)``.

    ``rotated_weight``, when given, must be ``rotate_weight(weight, structure)`` (the caller's
    cache of it; not checked, only its shape, dtype and device): ``sketch_gemm`` then multiplies
    by it instead of rotating the weight on every call, and the launch config is the
    ``"forward_rotated"`` kind's. The other algorithms read ``weight`` as always.

    With ``return_sketch``, returns ``(y, xs)``: ``xs = sketch(x): (M, K_red)`` in ``x``'s dtype
    where the algorithm made it (``sketch_gemm``), else None. The autograd forward keeps it for
    :func:`ss1_grad_weight_from_sketch`, so the backward does not sketch ``x`` again.
    """
    plan_key = None
    if config is None and out is None and FAST_PATH:
        plan_key = forward_plan_key(x, weight, bias, structure, rotated_weight)
        plan = launch_plans.get(plan_key)
        if plan is not None:
            y, xs = plan(x, weight, bias, rotated_weight)
            return (y, xs) if return_sketch else y
        plan_key = plan_key if x.dim() == 2 else None
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (M, K), got shape {tuple(x.shape)}")
    m, k = x.shape
    n, k_red = structure.weight_shape
    dtype_name(x.dtype)
    _check_device(x.device)
    if plan_key is not None and _copied_below(x, weight, bias):
        plan_key = None
    if k != structure.in_features:
        raise ValueError(f"x has {k} features but the layer expects in_features={structure.in_features}")
    _check_tensor("weight", weight, structure.weight_shape, x.dtype, x.device)
    if rotated_weight is not None:
        _check_tensor("rotated_weight", rotated_weight, structure.weight_shape, x.dtype, x.device)
    if bias is not None:
        _check_tensor("bias", bias, (n,), x.dtype, x.device)
        bias = bias.contiguous()
    y = _check_out(out, (m, n), x)
    if m == 0:
        return (y, None) if return_sketch else y
    x, weight = _row_major(x), _row_major(weight)

    recorded: list = []
    sketches: dict[str, torch.Tensor] = {}

    def run(cfg: LaunchConfig) -> None:
        if cfg.algorithm == "resident":
            _resident_forward(x, weight, bias, y, structure, cfg)
            return
        if cfg.algorithm == "gemv":
            launch_kernel(
                _ss1_gemv_forward_kernel, (cdiv(n, cfg.tile_n), cdiv(m, cfg.tile_m)),
                x, weight, bias if bias is not None else y, y, m, n, k, k_red,
                x.stride(0), weight.stride(0), y.stride(0), **_structure_args(structure),
                HAS_BIAS=bias is not None, ROWS=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            )
            return
        if cfg.algorithm == "sketch_gemm":
            if rotated_weight is None:
                xs, wr = sketch_and_rotate(x, weight, structure, cfg)
            else:
                xs, wr = sketch(x, structure, cfg), rotated_weight
            if bias is None:
                torch.mm(xs, wr.t(), out=y)
            else:
                torch.addmm(bias, xs, wr.t(), out=y)
            sketches["xs"] = xs
            return
        split = cfg.split_k
        partial = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else y
        grid = (cdiv(m, cfg.tile_m) * cdiv(n, cfg.tile_n), split)
        launch_kernel(
            _ss1_forward_kernel, grid,
            x, weight, bias if bias is not None else y, y, partial,
            m, n, k, k_red,
            x.stride(0), weight.stride(0), y.stride(0),
            **_structure_args(structure),
            HAS_BIAS=bias is not None,
            TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k, GROUP_M=cfg.group_m,
            SPLIT_K=split, DOT_PRECISION=_dot_precision(x.dtype),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        if split > 1:  # the partials' sum in a fixed order, then bias and the cast: one launch
            launch_kernel(
                _split_k_sum_kernel, (cdiv(m * n, SPLIT_K_SUM_BLOCK),),
                partial, bias if bias is not None else y, y, m, n, y.stride(0),
                SPLIT=split, HAS_BIAS=bias is not None, BLOCK=SPLIT_K_SUM_BLOCK, num_warps=4,
            )

    kind = "forward" if rotated_weight is None else "forward_rotated"
    _launch(kind, m, structure, x.dtype, x.device, config, _recording(run, plan_key, recorded))
    if recorded:
        _keep_plan(plan_key, _forward_plan(*recorded, m, n, k_red))
    return (y, sketches.get("xs")) if return_sketch else y


# ---- plans: the eager host path after the first call per key -----------------------------------

#: Whether ``ss1_forward``, ``ss1_grad_input`` and ``ss1_grad_weight`` keep and replay plans
#: (``SS1BENCH_FAST_PATH=0``: never; read at import).
FAST_PATH = os.environ.get("SS1BENCH_FAST_PATH", "1") not in ("", "0")


def _tensor_key(tensor: torch.Tensor | None) -> tuple | None:
    if tensor is None:
        return None
    return (tensor.shape, tensor.stride(), tensor.dtype, tensor.device, tensor.data_ptr() % 16)


def _plan_key(kind: str, structure: SS1Structure, *tensors: torch.Tensor | None) -> tuple:
    """Everything that decides the launches of one eager call of ``kind`` (default config, new
    output): each tensor's shape, strides, dtype, device and pointer alignment (Triton specializes
    on 16-byte alignment), the structure, the current CUDA device and, for float32, whether TF32 is
    allowed. Calls with the same key passed the same checks and launch the same binaries."""
    first = tensors[0]
    device = current_device() if first.is_cuda else -1
    tf32 = first.dtype is torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return (kind, structure.key, device, tf32, *map(_tensor_key, tensors))


def _recording(run, plan_key: tuple | None, recorded: list):
    """``run`` for :func:`_launch`; with a plan key, each attempt's launches are recorded and
    ``recorded`` ends as ``[config, launches]`` of the attempt that succeeded."""
    if plan_key is None:
        return run

    def launch(cfg: LaunchConfig) -> None:
        with record() as launches:
            run(cfg)
        recorded[:] = [cfg, launches]

    return launch


def _keep_plan(plan_key: tuple, plan) -> None:
    if plan is None:
        return
    if len(launch_plans) >= LAUNCH_CACHE_SIZE:  # many distinct keys: start over
        launch_plans.clear()
    launch_plans[plan_key] = plan


def _launches_of(launches: list) -> list[int] | None:
    """How many leading tensors each recorded launch takes, or None if one was not recorded."""
    if any(launch is None for launch in launches):
        return None
    return [launch.tensors for launch in launches]


def forward_plan_key(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, structure: SS1Structure,
                     rotated_weight: torch.Tensor | None) -> tuple:
    """The plan key (:func:`_plan_key`) of one :func:`ss1_forward` call."""
    return _plan_key("forward", structure, x, weight, bias, rotated_weight)


def forward_with_plan(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, structure: SS1Structure,
                      rotated_weight: torch.Tensor | None = None) -> torch.Tensor | None:
    """``ss1_forward(x, weight, bias, structure, rotated_weight=rotated_weight)`` if a plan for
    these inputs is kept (an earlier call with the same key checked them), else None."""
    if not FAST_PATH:
        return None
    plan = launch_plans.get(forward_plan_key(x, weight, bias, structure, rotated_weight))
    return None if plan is None else plan(x, weight, bias, rotated_weight)[0]


def _forward_plan(cfg: LaunchConfig, launches: list, m: int, n: int, k_red: int):
    """The function that repeats the recorded launches of one forward for new tensors of the same
    key: each algorithm's intermediates allocated as the first call did, its kernels run through
    their recorded binaries, its cuBLAS product called as before. It returns ``(y, xs)``, ``xs``
    the sketch where the algorithm made one (else None; see ``ss1_forward(return_sketch=True)``).
    None where the recording is not what the algorithm launches (a launch that could not be
    recorded)."""
    counts = _launches_of(launches)
    algorithm, split = cfg.algorithm, cfg.split_k

    if algorithm in ("gemv", "resident") and counts == [4]:
        (kernel,) = launches

        def plan(x, weight, bias, rotated_weight):
            y = torch.empty((m, n), dtype=x.dtype, device=x.device)
            kernel(x, weight, y if bias is None else bias, y)
            return y, None
    elif algorithm == "fused" and split == 1 and counts == [5]:
        (kernel,) = launches

        def plan(x, weight, bias, rotated_weight):
            y = torch.empty((m, n), dtype=x.dtype, device=x.device)
            kernel(x, weight, y if bias is None else bias, y, y)
            return y, None
    elif algorithm == "fused" and counts == [5, 3]:
        kernel, epilogue = launches

        def plan(x, weight, bias, rotated_weight):
            y = torch.empty((m, n), dtype=x.dtype, device=x.device)
            partial = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
            bias_or_y = y if bias is None else bias
            kernel(x, weight, bias_or_y, y, partial)
            epilogue(partial, bias_or_y, y)
            return y, None
    elif algorithm == "sketch_gemm" and counts in ([2], [4]):
        (kernel,) = launches
        rotates = counts == [4]

        def plan(x, weight, bias, rotated_weight):
            y = torch.empty((m, n), dtype=x.dtype, device=x.device)
            xs = torch.empty((m, k_red), dtype=x.dtype, device=x.device)
            if rotates:
                rotated_weight = torch.empty((n, k_red), dtype=weight.dtype, device=weight.device)
                kernel(x, xs, weight, rotated_weight)
            else:
                kernel(x, xs)
            if bias is None:
                torch.mm(xs, rotated_weight.t(), out=y)
            else:
                torch.addmm(bias, xs, rotated_weight.t(), out=y)
            return y, xs
    else:
        return None
    return plan


def ss1_grad_input(grad_out: torch.Tensor, weight: torch.Tensor, structure: SS1Structure,
                   config: LaunchConfig | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``dx: (M, K)`` from ``grad_out: (M, N)`` and ``weight: (N, K_red)``."""
    plan_key = None
    if config is None and out is None and FAST_PATH:
        plan_key = _plan_key("grad_input", structure, grad_out, weight)
        plan = launch_plans.get(plan_key)
        if plan is not None:
            return plan(grad_out, weight)
    if grad_out.dim() != 2:
        raise ValueError(f"grad_out must be 2-D (M, N), got shape {tuple(grad_out.shape)}")
    m, n = grad_out.shape
    k, k_red = structure.in_features, structure.k_red
    dtype_name(grad_out.dtype)
    _check_device(grad_out.device)
    if n != structure.out_features:
        raise ValueError(f"grad_out has {n} columns but out_features={structure.out_features}")
    _check_tensor("weight", weight, structure.weight_shape, grad_out.dtype, grad_out.device)
    dx = _check_out(out, (m, k), grad_out)
    if m == 0:
        return dx
    if _copied_below(grad_out, weight):
        plan_key = None
    grad_out, weight = _row_major(grad_out), _row_major(weight)
    recorded: list = []

    def launch(cfg: LaunchConfig) -> None:
        if cfg.algorithm == "sketch_gemm":
            unsketch(torch.mm(grad_out, rotate_weight(weight, structure)), structure, cfg, dx)
            return
        grid = (cdiv(m, cfg.tile_m) * cdiv(k_red, cfg.tile_k),)
        launch_kernel(
            _ss1_grad_input_kernel, grid,
            grad_out, weight, dx,
            m, n, k, k_red,
            grad_out.stride(0), weight.stride(0), dx.stride(0),
            **_structure_args(structure),
            TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k, GROUP_M=cfg.group_m,
            DOT_PRECISION=_dot_precision(grad_out.dtype),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )

    _launch("grad_input", m, structure, grad_out.dtype, grad_out.device, config,
            _recording(launch, plan_key, recorded))
    if recorded:
        _keep_plan(plan_key, _grad_input_plan(*recorded, m, n, k, k_red))
    return dx


def ss1_grad_weight(grad_out: torch.Tensor, x: torch.Tensor, structure: SS1Structure,
                    config: LaunchConfig | None = None, deterministic: bool | None = None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """``dW: (N, K_red)`` from ``grad_out: (M, N)`` and ``x: (M, K)``, accumulated in fp32.

    With ``split_m > 1`` the M reduction is split over programs. Deterministic mode (the default
    when ``torch.are_deterministic_algorithms_enabled()``) writes one fp32 partial per split and
    sums them in a fixed order; otherwise the partials meet through fp32 atomics. Never fp16
    atomics.
    """
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    plan_key = None
    if config is None and out is None and FAST_PATH:
        plan_key = (*_plan_key("grad_weight", structure, grad_out, x), bool(deterministic))
        plan = launch_plans.get(plan_key)
        if plan is not None:
            return plan(grad_out, x)
    if grad_out.dim() != 2 or x.dim() != 2:
        raise ValueError(
            f"grad_out and x must be 2-D, got {tuple(grad_out.shape)} and {tuple(x.shape)}"
        )
    m, n = grad_out.shape
    k, k_red = structure.in_features, structure.k_red
    dtype_name(grad_out.dtype)
    _check_device(grad_out.device)
    if n != structure.out_features:
        raise ValueError(f"grad_out has {n} columns but out_features={structure.out_features}")
    _check_tensor("x", x, (m, k), grad_out.dtype, grad_out.device)
    dw = _check_out(out, structure.weight_shape, grad_out)
    if m == 0:
        return dw.zero_()
    if _copied_below(grad_out, x):
        plan_key = None
    grad_out, x = _row_major(grad_out), _row_major(x)
    result: dict[str, torch.Tensor] = {}
    recorded: list = []

    def launch(cfg: LaunchConfig) -> None:
        if cfg.algorithm == "sketch_gemm":
            _weight_grad_of_sketch(grad_out, sketch(x, structure, cfg), structure, dw)
            result["target"] = dw
            return
        rows_per_split = cdiv(cdiv(m, cfg.split_m), cfg.tile_m) * cfg.tile_m
        splits = cdiv(m, rows_per_split)
        atomic = splits > 1 and not deterministic
        if splits == 1:
            target = dw
        elif atomic:
            target = torch.zeros((n, k_red), dtype=torch.float32, device=x.device)
        else:
            target = torch.empty((splits, n, k_red), dtype=torch.float32, device=x.device)
        grid = (cdiv(n, cfg.tile_n) * cdiv(k_red, cfg.tile_k), splits)
        launch_kernel(
            _ss1_grad_weight_kernel, grid,
            grad_out, x, target,
            m, n, k, k_red, rows_per_split,
            grad_out.stride(0), x.stride(0), target.stride(0) if target.dim() == 3 else 0, target.stride(-2),
            **_structure_args(structure),
            TILE_M=cfg.tile_m, TILE_N=cfg.tile_n, TILE_K=cfg.tile_k, GROUP_M=cfg.group_m,
            ATOMIC=atomic, DOT_PRECISION=_dot_precision(grad_out.dtype),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        result["target"] = target

    _launch("grad_weight", m, structure, grad_out.dtype, grad_out.device, config,
            _recording(launch, plan_key, recorded))
    target = result["target"]
    if target is not dw:
        dw.copy_(target if target.dim() == 2 else target.sum(dim=0))
    if recorded:
        splits = 0 if target is dw else (target.shape[0] if target.dim() == 3 else 1)
        _keep_plan(plan_key, _grad_weight_plan(*recorded, m, n, k_red, splits))
    return dw


def grad_weight_takes_sketch(m: int, structure: SS1Structure, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether :func:`ss1_grad_weight`'s default config for ``m`` rows is ``sketch_gemm`` (sketch
    ``x``, one cuBLAS product, unrotate). Then a sketch of ``x`` that the forward made serves it
    (:func:`ss1_grad_weight_from_sketch`); otherwise the tuned kernel gathers ``x`` itself and
    the autograd forward keeps ``x``."""
    return _resolved_config(("grad_weight", m, structure.key, dtype, device), structure).algorithm == "sketch_gemm"


def ss1_grad_weight_from_sketch(grad_out: torch.Tensor, xs: torch.Tensor, structure: SS1Structure) -> torch.Tensor:
    """``dW: (N, K_red)`` from ``grad_out: (M, N)`` and ``xs = sketch(x): (M, K_red)`` (the sketch
    the forward made, ``ss1_forward(return_sketch=True)``): ``unrotate(grad_out.T @ xs)``, the
    ``sketch_gemm`` weight gradient without its pass over ``x`` (the same values: the sketch is the
    same elementwise sum in the same order). cuBLAS accumulates the M reduction in fp32."""
    if grad_out.dim() != 2 or xs.dim() != 2:
        raise ValueError(f"grad_out and xs must be 2-D, got {tuple(grad_out.shape)} and {tuple(xs.shape)}")
    m, n = grad_out.shape
    dtype_name(grad_out.dtype)
    _check_device(grad_out.device)
    if n != structure.out_features:
        raise ValueError(f"grad_out has {n} columns but out_features={structure.out_features}")
    _check_tensor("xs", xs, (m, structure.k_red), grad_out.dtype, grad_out.device)
    dw = torch.empty(structure.weight_shape, dtype=grad_out.dtype, device=grad_out.device)
    if m == 0:
        return dw.zero_()
    return _weight_grad_of_sketch(grad_out, xs, structure, dw)


def _weight_grad_of_sketch(grad_out: torch.Tensor, xs: torch.Tensor, structure: SS1Structure,
                           dw: torch.Tensor) -> torch.Tensor:
    """``dw = unrotate(grad_out.T @ xs)``: cuBLAS accumulates the M reduction in fp32; the unrotate
    is an exact permutation."""
    return rotate_weight(torch.mm(grad_out.t(), xs), structure, inverse=True, out=dw)


def _pass_product_pass(first, second, buffer_shape: tuple, out_shape: tuple, product):
    """The backward's ``sketch_gemm`` replay: ``first(b, buffer)`` (a memory-bound pass over the
    plan's second input ``b``), ``product(grad_out, buffer)`` by cuBLAS, ``second(product, out)``."""
    def plan(grad_out, b):
        buffer = torch.empty(buffer_shape, dtype=b.dtype, device=b.device)
        first(b, buffer)
        out = torch.empty(out_shape, dtype=grad_out.dtype, device=grad_out.device)
        second(product(grad_out, buffer), out)
        return out

    return plan


def _grad_input_plan(cfg: LaunchConfig, launches: list, m: int, n: int, k: int, k_red: int):
    """:func:`ss1_grad_input`'s recorded launches as a replay (see :func:`_forward_plan`)."""
    counts = _launches_of(launches)
    if cfg.algorithm == "sketch_gemm" and counts == [2, 2]:  # rotate W, cuBLAS, unsketch
        return _pass_product_pass(*launches, (n, k_red), (m, k), lambda grad_out, rotated: torch.mm(grad_out, rotated))
    if cfg.algorithm != "fused" or counts != [3]:
        return None
    (kernel,) = launches

    def plan(grad_out, weight):
        dx = torch.empty((m, k), dtype=grad_out.dtype, device=grad_out.device)
        kernel(grad_out, weight, dx)
        return dx

    return plan


def _grad_weight_plan(cfg: LaunchConfig, launches: list, m: int, n: int, k_red: int, splits: int):
    """:func:`ss1_grad_weight`'s recorded launches as a replay (see :func:`_forward_plan`).
    ``splits``: 0 where the kernel wrote ``dW`` itself, 1 for fp32 atomics into one buffer, else
    the number of fp32 partials summed in a fixed order."""
    counts = _launches_of(launches)
    if cfg.algorithm == "sketch_gemm" and counts == [2, 2]:  # sketch x, cuBLAS, unrotate
        return _pass_product_pass(*launches, (m, k_red), (n, k_red), lambda grad_out, xs: torch.mm(grad_out.t(), xs))
    if cfg.algorithm != "fused" or counts != [3]:
        return None
    (kernel,) = launches

    def plan(grad_out, x):
        dw = torch.empty((n, k_red), dtype=grad_out.dtype, device=grad_out.device)
        if splits == 0:
            kernel(grad_out, x, dw)
            return dw
        if splits == 1:
            target = torch.zeros((n, k_red), dtype=torch.float32, device=x.device)
            kernel(grad_out, x, target)
            return dw.copy_(target)
        target = torch.empty((splits, n, k_red), dtype=torch.float32, device=x.device)
        kernel(grad_out, x, target)
        return dw.copy_(target.sum(dim=0))

    return plan
