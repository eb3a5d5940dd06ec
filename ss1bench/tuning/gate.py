"""The correctness gate: a candidate's output against the float64 reference, before any timing.

Two bounds, both relative to the reference's scale, per dtype:

- relative Frobenius error ``||out - ref|| / ||ref||`` (the test suite's bound, ``tests/conftest.py``);
- largest single error over ``rms(ref)``. The Frobenius bound alone would pass a kernel with one
  wrong 16 x 16 tile in a 16384 x 3072 output (relative error ~1e-3); a wrong entry is off by
  about ``rms(ref)``, so a per-entry bound catches it.

Per-entry bound, derived for random inputs: the kernels round the fp32 sketch to the input dtype
before the product (unit roundoff u: 2**-11 fp16, 2**-8 bf16) and round the output once, so the
largest error over ~1e8 entries is about 6 sigma, ~6u * rms(ref) from each source: 3e-3 (fp16) and
2.6e-2 (bf16). The bounds below leave a 4-6x margin and stay 10x below what a wrong tile gives.
fp32 runs in TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is on (10-bit mantissa, like fp16).

NaN or inf anywhere fails: outputs are filled with NaN before the kernel runs, so a tile the
kernel never wrote is caught.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: dtype name -> (relative Frobenius bound, largest-error / rms(reference) bound).
GATE_TOLERANCE = {
    "fp32": (1e-2, 0.02),
    "fp16": (1e-2, 0.02),
    "bf16": (1e-2, 0.10),
}
#: Rows compared per chunk: bounds the float64 temporaries to ~256 MiB on big outputs.
_CHUNK_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class GateResult:
    passed: bool
    rel_err: float
    max_err_over_rms: float
    reason: str = ""


def compare(out, reference, dtype: str) -> GateResult:
    """Check ``out`` (any float dtype) against ``reference`` (float64 or float32, same shape).

    Computed in float64 on the tensors' device, in row chunks.
    """
    import torch

    rel_bound, max_bound = GATE_TOLERANCE[dtype]
    if tuple(out.shape) != tuple(reference.shape):
        return GateResult(False, math.inf, math.inf, f"shape {tuple(out.shape)} != {tuple(reference.shape)}")
    if out.numel() == 0:
        return GateResult(True, 0.0, 0.0)
    rows = out.shape[0]
    per_row = max(1, out.numel() // rows)
    step = max(1, _CHUNK_ELEMENTS // per_row)
    err_sq = ref_sq = 0.0
    max_abs = 0.0
    bad = 0
    for start in range(0, rows, step):
        a = out[start:start + step].to(torch.float64)
        e = reference[start:start + step].to(torch.float64)
        finite = torch.isfinite(a)
        bad += int((~finite).sum())
        diff = (a - e).abs()
        err_sq += float(diff.square().sum())
        ref_sq += float(e.square().sum())
        max_abs = max(max_abs, float(diff.max()))
    if bad:
        return GateResult(False, math.inf, math.inf, f"{bad} NaN/inf entries (a tile was not written or overflowed)")
    scale = math.sqrt(ref_sq) if ref_sq > 0 else 1.0
    rel = math.sqrt(err_sq) / scale
    rms = scale / math.sqrt(out.numel()) if ref_sq > 0 else 1.0
    max_ratio = max_abs / rms
    if rel > rel_bound:
        return GateResult(False, rel, max_ratio, f"relative error {rel:.2e} > {rel_bound:.0e}")
    if max_ratio > max_bound:
        return GateResult(False, rel, max_ratio, f"largest error {max_ratio:.2e} x rms(ref) > {max_bound:.2g}")
    return GateResult(True, rel, max_ratio)
