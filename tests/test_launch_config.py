"""LaunchConfig's register cap (``maxnreg``) and the gemv's block gather (``block_gather``):
validation, records, results CSVs, the tuner's candidates and refinements, the heuristic (pure
logic, no kernels)."""

from __future__ import annotations

import csv
import dataclasses

import pandas as pd
import pytest

from ss1bench.kernels.config import LaunchConfig, Problem
from ss1bench.kernels.heuristic import adapt, grid_point
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


BLOCK = LaunchConfig(1, 64, 64, 2, 3, group_m=1, algorithm="gemv", block_gather=True)


@pytest.mark.parametrize("algorithm", ["fused", "sketch_gemm", "resident"])
def test_block_gather_on_another_algorithm_is_refused(algorithm):
    with pytest.raises(ValueError, match="block_gather applies to the gemv forward only"):
        LaunchConfig(16, 64, 64, 4, 1, algorithm=algorithm, block_gather=True)


def test_block_gather_must_be_a_bool():
    with pytest.raises(ValueError, match="block_gather must be a bool, got 1"):
        LaunchConfig(1, 64, 64, 4, 3, algorithm="gemv", block_gather=1)


def test_records_carry_block_gather_only_when_set():
    assert "block_gather" not in GEMV.to_dict()
    assert BLOCK.to_dict()["block_gather"] is True
    assert LaunchConfig.from_dict(BLOCK.to_dict()) == BLOCK
    assert space.describe(BLOCK) == "gemv 64x64 block w2 s3"
    assert "block" not in space.describe(GEMV)


def test_results_rows_read_block_gather():
    row = {name: getattr(BLOCK, name) for name in results.CONFIG_FIELDS}
    assert results.config_of(row) == dataclasses.replace(BLOCK, block_gather=False)  # an older CSV
    assert results.config_of({**row, "block_gather": "1"}) == BLOCK
    assert results.config_of(pd.Series({**row, "block_gather": 0})).block_gather is False


def _gemv_candidates(c: int, m: int = 16) -> list[LaunchConfig]:
    return [cfg for cfg in space.launch_candidates(_problem(m=m, c=c), HOPPER).kept if cfg.algorithm == "gemv"]


@pytest.mark.parametrize("c", [2, 8, 16])
def test_the_decode_grid_offers_the_block_gather_for_c_over_one(c):
    blocks = [cfg for cfg in _gemv_candidates(c) if cfg.block_gather]
    assert blocks and {cfg.num_warps for cfg in blocks} == {2, 4}
    assert 1 in {cfg.tile_m for cfg in blocks}  # more rows where the register rule lets them
    assert {cfg.tile_m for cfg in blocks} <= {cfg.tile_m for cfg in _gemv_candidates(c) if not cfg.block_gather}
    assert not any(cfg.block_gather for cfg in _gemv_candidates(1))


def test_the_register_rule_counts_the_gathered_block():
    wide = LaunchConfig(8, 32, 256, 2, 3, group_m=1, algorithm="gemv", block_gather=True)
    _, live_c2 = space.live_fp32_per_thread(wide, "forward", 2)
    _, live_c32 = space.live_fp32_per_thread(wide, "forward", 32)
    assert live_c32 - live_c2 == 8 * 30 * 256 / 64
    assert space.rejection_reason(wide, _problem(m=16, k=8192, c=32), 10**9).startswith("registers")


def test_the_heuristic_keeps_a_block_gathered_configs_warps():
    problem = _problem(m=1, c=16)
    assert adapt(BLOCK, problem).num_warps == 2
    assert adapt(dataclasses.replace(BLOCK, tile_m=4, num_warps=8), problem) == BLOCK.__class__(
        1, 64, 64, 8, 3, group_m=1, algorithm="gemv", block_gather=True)
    assert adapt(dataclasses.replace(GEMV, tile_m=4, num_warps=8), problem).num_warps == 4



def test_the_bench_text_names_rows_block_and_cap():
    from ss1bench.bench.runner import _format_config

    assert _format_config(GEMV) == "gemv:64x64/w4/s3"
    rows = LaunchConfig(4, 32, 64, 2, 3, group_m=1, algorithm="gemv", block_gather=True, maxnreg=255)
    assert _format_config(rows) == "gemv:32x64/rows4/block/w2/s3/r255"
    assert space.describe(rows) == "gemv 32x64 rows4 block w2 s3 r255"


@pytest.mark.parametrize("config, bench, tuner", [
    (LaunchConfig(128, 128, 64, 8, 3, group_m=8, split_m=4, split_k=2, maxnreg=255),
     "fused:128x128x64/w8/s3/g8/split4/splitk2/r255", "128x128x64 w8 s3 g8 split4 splitk2 r255"),
    (LaunchConfig(32, 64, 128, 4, 2, algorithm="sketch_gemm"), "sketch_gemm:32x128/w4", "sketch+gemm 32x128 w4"),
    (LaunchConfig(64, 128, 64, 4, 2, group_m=1, algorithm="resident", maxnreg=128),
     "resident:64x128/w4/s2/r128", "resident 64x128 w4 s2 r128"),
])
def test_one_field_list_spells_a_config_for_the_bench_and_the_tuner(config, bench, tuner):
    from ss1bench.bench.runner import _format_config

    assert _format_config(config) == bench
    assert space.describe(config) == tuner
