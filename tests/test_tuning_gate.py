"""The tuner's correctness gate (ss1bench/tuning/gate.py) at its bounds: a candidate just over
either bound is rejected and one just under is accepted.

The bounds are written out here, not read from ``GATE_TOLERANCE``: a test that derives "just
over" from the constant moves with it, so a loosened bound would still pass (issue 22: the
per-entry fp16 bound loosened 100x passed every test).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import randn

from ss1bench.tuning import gate

#: The documented bounds (gate.py's docstring): relative Frobenius error, largest error / rms(ref).
FROBENIUS_BOUND = 1e-2
ENTRY_BOUND = {"fp32": 0.02, "fp16": 0.02, "bf16": 0.10}

SHAPE = (40, 24)
#: Rows per chunk of the gate's float64 pass: one chunk, or 7-row chunks (the last one short), so
#: an error in the first chunk must survive the later ones.
CHUNKS = {"one-chunk": 1 << 25, "7-row-chunks": 7 * SHAPE[1]}


def _rms(tensor: torch.Tensor) -> float:
    return tensor.norm().item() / math.sqrt(tensor.numel())


@pytest.fixture(params=sorted(CHUNKS), ids=lambda name: name)
def chunked(request, monkeypatch):
    monkeypatch.setattr(gate, "_CHUNK_ELEMENTS", CHUNKS[request.param])


@pytest.mark.parametrize("where", [(0, 0), (SHAPE[0] - 1, 5)], ids=["first-row", "last-row"])
@pytest.mark.parametrize("dtype", sorted(ENTRY_BOUND))
@pytest.mark.parametrize("factor", [1.05, 0.95], ids=["over", "under"])
def test_one_entry_just_over_the_per_entry_bound_is_rejected(generator, chunked, dtype, factor, where):
    reference = randn(*SHAPE, dtype=torch.float64, generator=generator)
    out = reference.clone()
    out[where] += factor * ENTRY_BOUND[dtype] * _rms(reference)
    result = gate.compare(out, reference, dtype)
    assert result.max_err_over_rms == pytest.approx(factor * ENTRY_BOUND[dtype], rel=1e-9)
    assert result.rel_err < FROBENIUS_BOUND / 2  # one entry: the Frobenius bound cannot see it
    if factor > 1:
        assert not result.passed, f"{dtype}: one entry {factor}x the per-entry bound {ENTRY_BOUND[dtype]} passed"
        assert "largest error" in result.reason, result
    else:
        assert result.passed, f"{dtype}: one entry {factor}x the per-entry bound was refused: {result.reason}"


@pytest.mark.parametrize("dtype", sorted(ENTRY_BOUND))
@pytest.mark.parametrize("factor", [1.05, 0.95], ids=["over", "under"])
def test_an_error_everywhere_just_over_the_frobenius_bound_is_rejected(generator, chunked, dtype, factor):
    # Every entry off by the same amount: relative error factor * 1e-2, largest error the same
    # fraction of rms(ref), half the smallest per-entry bound, so only the Frobenius bound decides.
    reference = randn(*SHAPE, dtype=torch.float64, generator=generator)
    signs = torch.where(randn(*SHAPE, generator=generator) > 0, 1.0, -1.0).double()
    out = reference + signs * factor * FROBENIUS_BOUND * _rms(reference)
    result = gate.compare(out, reference, dtype)
    assert result.rel_err == pytest.approx(factor * FROBENIUS_BOUND, rel=1e-9)
    assert result.max_err_over_rms < min(ENTRY_BOUND.values())
    if factor > 1:
        assert not result.passed, f"{dtype}: relative error {factor}x the Frobenius bound {FROBENIUS_BOUND} passed"
        assert "relative error" in result.reason, result
    else:
        assert result.passed, f"{dtype}: relative error {factor}x the Frobenius bound was refused: {result.reason}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_entry_in_any_chunk_is_rejected(generator, chunked, bad):
    reference = randn(*SHAPE, dtype=torch.float64, generator=generator)
    for where in [(0, 3), (SHAPE[0] - 1, 0)]:
        out = reference.clone()
        out[where] = bad
        result = gate.compare(out, reference, "fp16")
        assert not result.passed and "NaN/inf" in result.reason, (where, result)
