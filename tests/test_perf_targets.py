"""scripts/perf_targets.py on a hand-made bench CSV whose figures are known."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def perf_targets():
    return load_script("perf_targets")


def _row(provider, mode, m, c, fraction, speedup, *, shape_set="gpt2", k=1024, n=1024, dense_ms=1.0,
         ideal_ms=0.5, median_ms=None):
    return {"gpu": "H200", "dtype": "fp16", "mode": mode, "shape_set": shape_set, "layer": "l", "M": m, "K": k,
            "N": n, "redn_factor": c, "provider": provider, "fraction_of_ideal": fraction,
            "speedup_vs_dense": speedup, "dense_ms": dense_ms, "ideal_ms": ideal_ms,
            "median_ms": ideal_ms / fraction if median_ms is None else median_ms}


def _run(perf_targets, tmp_path, rows, capsys, *extra):
    path = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    argv = sys.argv
    sys.argv = ["perf_targets.py", str(path), *extra]
    try:
        perf_targets.main()
    finally:
        sys.argv = argv
    return capsys.readouterr().out


def test_prefill_medians_count_a_shape_once_and_the_goal_per_c(perf_targets, tmp_path, capsys):
    rows = []
    for c, fractions in {2: [0.9, 0.7, 0.7], 4: [0.85, 0.81, 0.5], 8: [0.7, 0.6, 0.75], 16: [0.1, 0.2, 0.3]}.items():
        for i, f in enumerate(fractions):
            rows.append(_row("ss1_tuned", "fwd", 4096, c, f, 1.5, k=1024 * (i + 1)))
    # the same shape in a second set: counted once, so c = 2's median stays 0.7
    rows.append(_row("ss1_tuned", "fwd", 4096, 2, 0.9, 1.5, shape_set="llama", k=1024))
    rows.append(_row("ss1_tuned", "fwd", 512, 2, 0.01, 1.5))  # under PREFILL_MIN_M = 1024: not prefill
    out = _run(perf_targets, tmp_path, rows, capsys)
    line = next(x for x in out.splitlines() if "prefill fwd ss1_tuned" in x)
    assert "median 0.700 / 0.810 / 0.700 / 0.200" in line
    assert "min 0.700 / 0.500 / 0.600 / 0.100" in line
    assert "rows at goal 33% / 67% / 67% / 0%" in line


def test_two_pass_bound_is_the_ideal_over_sketch_plus_reduced_gemm(perf_targets, tmp_path, capsys):
    m, k = 4096, 1000
    rows = []
    cases = ((4, 0.03), (8, 0.005), (16, 0.004))  # bounds ~0.99, ~0.2, ~0.16: above, under, under the goal
    for c, ideal_ms in cases:
        rows += [_row("ss1_tuned", "fwd", m, c, 0.15, 2.0, k=k, ideal_ms=ideal_ms),
                 _row("dense_reduced", "fwd", m, c, 1.0, 2.0, k=k, ideal_ms=ideal_ms, median_ms=0.02)]
    out = _run(perf_targets, tmp_path, rows, capsys, "--sketch-tbps", "1")
    bounds = [ideal_ms / (m * k * (1 + 1 / c) * 2 / 1e12 * 1e3 + 0.02) for c, ideal_ms in cases]
    assert bounds[0] > 0.8 and bounds[1] < 0.7 and bounds[2] < 0.7
    line = next(x for x in out.splitlines() if "two-pass bound" in x)
    assert f"fraction median nan / {bounds[0]:.3f} / {bounds[1]:.3f} / {bounds[2]:.3f}" in line
    assert f"measured / bound median nan / {0.15 / bounds[0]:.3f} / {0.15 / bounds[1]:.3f}" in line
    assert "rows under their goal: 3 of 3, of which 2 with the two-pass bound under the goal too" in out


def test_fwdbwd_rows_under_target_and_never_worse_counts(perf_targets, tmp_path, capsys):
    rows = [_row("ss1_tuned", "fwd+bwd", 16384, 2, 0.9, 1.4),
            _row("ss1_tuned", "fwd+bwd", 8192, 8, 0.55, 1.2, n=768),
            _row("ss1_tuned", "fwd+bwd", 4096, 8, 0.3, 0.9),  # under M = 8192: not a fwd+bwd target row
            _row("ss1_tuned", "fwd+bwd", 64, 16, 0.5, 0.8),  # slower, ideal 2x: counts
            _row("ss1_tuned", "fwd+bwd", 16, 16, 0.5, 0.8, ideal_ms=0.9)]  # slower, ideal 1.1x: does not
    out = _run(perf_targets, tmp_path, rows, capsys)
    assert "rows under 0.6: 1 of 2" in out
    assert "l M=8192 c=8: 0.550" in out
    assert "never worse ss1_tuned  fwd+bwd : 2 of 4 slower (M=64 1, M>=1024 1)" in out
