"""LaunchConfig's register cap (``maxnreg``): validation, records, results CSVs, the tuner's
decode refinement (pure logic, no kernels)."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from ss1bench.kernels.config import LaunchConfig, Problem
from ss1bench.kernels.heuristic import grid_point
from ss1bench.tuning import results, space
from ss1bench.tuning.outcome import CSV_FIELDS
from ss1bench.tuning.runner import _append_csv

HOPPER = 227 * 1024
GEMV = LaunchConfig(1, 64, 64, 4, 3, group_m=1, algorithm="gemv")


def _problem(kind="forward", m=1, k=768, n=768, c=16) -> Problem:
    bk, bn = space.default_structure(k, c)
    return Problem(kind, m, k, n, c, bk, bn, "fp16", "NVIDIA H200")


@pytest.mark.parametrize("value", [-1, 1, 63, 256, 128.0])
def test_maxnreg_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match="maxnreg"):
        LaunchConfig(16, 64, 64, 4, 3, maxnreg=value)


def test_maxnreg_on_sketch_gemm_is_refused():
    with pytest.raises(ValueError, match="sketch_gemm"):
        LaunchConfig(16, 64, 64, 4, 1, algorithm="sketch_gemm", maxnreg=255)


def test_compiler_options_carry_maxnreg_only_when_set():
    assert GEMV.compiler_options() == {"num_warps": 4, "num_stages": 3}
    capped = LaunchConfig(16, 64, 64, 4, 3, maxnreg=255)
    assert capped.compiler_options() == {"num_warps": 4, "num_stages": 3, "maxnreg": 255}


def test_records_without_maxnreg_read_and_write_as_before():
    record = GEMV.to_dict()
    assert "maxnreg" not in record  # a record older versions read unchanged
    assert LaunchConfig.from_dict(record) == GEMV
    capped = LaunchConfig(16, 64, 64, 4, 3, maxnreg=255)
    assert capped.to_dict()["maxnreg"] == 255
    assert LaunchConfig.from_dict(capped.to_dict()) == capped


def test_decode_forward_winners_get_a_register_cap_refinement():
    for kind in ("forward", "forward_rotated"):
        for m in (1, 16, 64):
            variants = space.refinements(GEMV, _problem(kind, m), HOPPER, tried={GEMV})
            assert LaunchConfig(1, 64, 64, 4, 3, group_m=1, algorithm="gemv", maxnreg=space.DECODE_MAXNREG) \
                in variants
    fused = LaunchConfig(16, 128, 64, 4, 3)
    assert any(v.maxnreg for v in space.refinements(fused, _problem(m=16), HOPPER, tried={fused}))


@pytest.mark.parametrize("problem", [_problem(m=4096), _problem("grad_input", 1), _problem(c=1)],
                         ids=["prefill", "backward", "c1"])
def test_no_register_cap_refinement_elsewhere(problem):
    config = LaunchConfig(16, 64, 64, 4, 3)
    assert not any(v.maxnreg for v in space.refinements(config, problem, HOPPER, tried={config}))


def test_a_capped_winner_is_not_refined_again_and_is_described():
    capped = LaunchConfig(1, 64, 64, 4, 3, group_m=1, algorithm="gemv", maxnreg=255)
    assert all(v.maxnreg == 255 for v in space.refinements(capped, _problem(), HOPPER, tried={capped}))
    assert space.describe(capped).endswith(" r255")
    assert "r255" not in space.describe(GEMV)


def test_the_heuristic_learns_the_grid_point_without_the_cap():
    capped = LaunchConfig(1, 64, 64, 4, 3, group_m=1, algorithm="gemv", maxnreg=255)
    assert grid_point(capped, "forward", 1).maxnreg == 0


def test_results_rows_with_and_without_the_column():
    row = {name: getattr(GEMV, name) for name in results.CONFIG_FIELDS}
    assert results.config_of(row) == GEMV  # a results CSV written before the column
    assert results.config_of({**row, "maxnreg": ""}) == GEMV
    assert results.config_of(pd.Series({**row, "maxnreg": float("nan")})) == GEMV
    assert results.config_of({**row, "maxnreg": "255"}).maxnreg == 255


def test_appending_to_a_results_csv_of_an_older_version_keeps_its_columns(tmp_path):
    path = tmp_path / "results.csv"
    old_fields = [name for name in CSV_FIELDS if name != "maxnreg"]
    with path.open("w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=old_fields).writeheader()
    row = {name: "" for name in CSV_FIELDS} | {"algorithm": "gemv", "maxnreg": 255, "ms": "0.01"}
    _append_csv(path, [row])
    frame = pd.read_csv(path)
    assert list(frame.columns) == old_fields and frame.loc[0, "ms"] == 0.01 and frame.loc[0, "algorithm"] == "gemv"
    fresh = tmp_path / "fresh.csv"
    _append_csv(fresh, [row])
    assert pd.read_csv(fresh).loc[0, "maxnreg"] == 255
