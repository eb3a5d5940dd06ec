"""The learned launch-config heuristic (kernels/heuristic.py) and its offline evaluation
(scripts/heuristic_eval.py on a hand-made raw CSV). Pure logic, no kernels."""

from __future__ import annotations

import itertools
import math
import pathlib
from importlib.metadata import version

import pandas as pd
import pytest
from conftest import load_script

from ss1bench.kernels import heuristic
from ss1bench.kernels.config import (
    LaunchConfig,
    Problem,
    fallback_config,
    heuristic_config,
    shared_memory_bytes,
)
from ss1bench.tuning import space
from ss1bench.tuning.keys import LaunchKey
from ss1bench.tuning.outcome import CSV_FIELDS
from ss1bench.tuning.records import TuningDatabase

HOPPER = 232448
AMPERE = 166912


def problem(kind="forward", m=16, k=768, n=3072, c=4, dtype="fp16", device="NVIDIA H200") -> Problem:
    bk, bn = space.default_structure(k, c)
    return Problem(kind, m, k, n, c, bk, bn, dtype, device)


def record(config: LaunchConfig, ms: float = 0.01) -> dict:
    return {"config": config.to_dict(), "ms": ms, "dense_ms": 0.02, "speedup": 0.02 / ms, "gate_rel_err": 1e-3,
            "gate_max_err": 5e-3, "date": "2026-01-01T00:00:00Z", "triton": version("triton")}


def key(kind, k, n, c, m, dtype="fp16") -> str:
    bk, bn = space.default_structure(k, c)
    return LaunchKey(kind, dtype, k, n, c, bk, bn, m).text()


FUSED = LaunchConfig(16, 64, 128, num_warps=4, num_stages=5, group_m=8)  # a refined grid point (s4 in the grid)
GEMV = LaunchConfig(1, 32, 256, num_warps=4, num_stages=3, group_m=1, algorithm="gemv")
SPLIT = LaunchConfig(16, 128, 128, num_warps=4, num_stages=4, group_m=8, split_k=4)
SKETCH = LaunchConfig(32, 64, 256, num_warps=4, num_stages=1, algorithm="sketch_gemm")


def test_the_nearest_layer_of_the_same_c_and_regime_answers_with_its_grid_point():
    examples = heuristic.examples_from_records({
        key("forward", 768, 768, 4, 16): record(GEMV),
        key("forward", 768, 3072, 4, 16): record(FUSED),
        key("forward", 768, 3072, 8, 16): record(SPLIT),
        key("forward", 768, 3072, 4, 4096): record(SKETCH),
    })
    pick = heuristic.learned_config(problem(n=2304), HOPPER, 132, examples)  # N 2304: nearest is 3072
    assert pick == LaunchConfig(16, 64, 128, num_warps=4, num_stages=4, group_m=8)  # refined s5 -> grid s4
    assert heuristic.learned_config(problem(n=640), HOPPER, 132, examples).algorithm == "gemv"  # nearest 768
    assert heuristic.learned_config(problem(m=48), HOPPER, 132, examples).algorithm == "fused"  # decode bucket 16
    assert heuristic.learned_config(problem(m=4096), HOPPER, 132, examples) == SKETCH  # the prefill example
    few_rows = heuristic.learned_config(problem(m=100), HOPPER, 132, examples)  # its tile narrowed for 100 rows
    assert (few_rows.algorithm, few_rows.tile_m, few_rows.tile_k) == ("sketch_gemm", 16, 16)
    assert heuristic.learned_config(problem(m=16, c=16), HOPPER, 132, examples).split_k >= 1  # nearest c: 8


def test_adapt_works_splits_out_for_the_sm_count_and_clamps_tiles():
    p = problem(m=16, k=14336, n=4096, c=2)
    on_132 = heuristic.adapt(SPLIT, p, 132)
    on_66 = heuristic.adapt(SPLIT, p, 66)
    assert on_132.split_k > on_66.split_k >= 1  # fewer SMs: fewer programs needed
    small = heuristic.adapt(LaunchConfig(64, 256, 256, num_warps=8, num_stages=3), problem(m=1, k=768, n=96, c=16))
    assert (small.tile_m, small.tile_n, small.tile_k) == (16, 128, 64)  # M, N and K_red rounded up
    assert heuristic.adapt(GEMV, problem(m=16, k=768, c=16)).tile_m == 1  # K_red 48 <= 64: rows allowed
    resident = LaunchConfig(64, 128, 256, num_warps=4, num_stages=2, group_m=1, algorithm="resident")
    assert heuristic.adapt(resident, problem(m=4096, k=4096, c=2)) is None  # K_red 2048: too wide to hold
    # a sketch tile measured at 4096 rows, used at 65 (the training path's decode-sized pass)
    narrow = heuristic.adapt(SKETCH, problem(kind="grad_input", m=65, k=768, c=16), 132, measured_m=4096)
    assert (narrow.tile_m, narrow.tile_k) == (16, 16)
    assert heuristic.adapt(SKETCH, problem(kind="grad_input", m=4096, k=4096, c=4), 132, 4096) == SKETCH


def test_shared_memory_prunes_to_the_next_example_and_fp32_takes_the_fixed_rule():
    big = LaunchConfig(16, 256, 64, num_warps=4, num_stages=4, group_m=8)
    examples = heuristic.examples_from_records({
        key("forward", 768, 3072, 8, 16): record(big),
        key("forward", 768, 768, 8, 16): record(LaunchConfig(16, 32, 64, num_warps=4, num_stages=4, group_m=8)),
    })
    p = problem(c=8, k=3072, n=3072)
    assert AMPERE < shared_memory_bytes(heuristic.adapt(big, p), p) <= HOPPER
    assert heuristic.learned_config(p, HOPPER, 132, examples).tile_n == 256
    assert heuristic.learned_config(p, AMPERE, 132, examples).tile_n == 32  # the next nearest that fits
    assert heuristic.learned_config(problem(dtype="fp32"), HOPPER, 132, examples) is None
    assert heuristic.learned_config(problem(dtype="bf16"), HOPPER, 132, examples) is not None  # fp16 stands in


def test_forward_rotated_takes_forward_examples_when_it_has_none():
    examples = heuristic.examples_from_records({key("forward", 768, 3072, 4, 4096): record(SKETCH)})
    assert heuristic.learned_config(problem(kind="forward_rotated", m=4096), HOPPER, 132, examples) == SKETCH
    assert heuristic.learned_config(problem(kind="grad_input", m=4096), HOPPER, 132, examples) is None


def test_grid_stages_are_the_tuners_grid():
    for kind, m in itertools.product(("forward", "grad_input", "grad_weight"), (16, 4096)):
        fused = [c for c in space._grid(kind, m, 4) if c.algorithm == "fused"]
        assert {c.num_stages for c in fused} == {heuristic.GRID_STAGES[(kind, m <= 64)]}
        assert {c.group_m for c in fused} == {heuristic.GRID_GROUP_M}


@pytest.mark.parametrize("kind", ["forward", "forward_rotated", "grad_input", "grad_weight"])
@pytest.mark.parametrize("m", [1, 16, 64, 4096, 16384])
def test_the_shipped_heuristic_fits_an_a100_and_picks_from_the_candidate_space(kind, m, monkeypatch):
    assert heuristic.reference_examples(), "tuning_db/H200.json is missing or unreadable"
    picks = {}
    for k, n, c in ((768, 3072, 16), (4096, 14336, 2), (2048, 5632, 8), (1000, 3000, 4)):
        p = problem(kind=kind, m=m, k=k, n=n, c=c)
        for limit in (HOPPER, AMPERE):
            config = heuristic_config(p, limit)
            assert shared_memory_bytes(config, p) <= limit
        picks[p] = heuristic_config(p, HOPPER)
    monkeypatch.setattr(space, "heuristic_config", lambda p, limit, sm_count=None: fallback_config(p, limit))
    for p, pick in picks.items():
        assert pick in space.launch_candidates(p, HOPPER).kept, (p, pick)
    fp32 = problem(kind=kind, m=m, dtype="fp32")
    assert heuristic_config(fp32, HOPPER) == fallback_config(fp32, HOPPER)


# ---- scripts/heuristic_eval.py on a hand-made raw CSV ------------------------------------------


@pytest.fixture(scope="module")
def heuristic_eval():
    return load_script("heuristic_eval")


def raw_row(kind, k, n, c, m, config: LaunchConfig, ms: float, phase="screen") -> dict:
    bk, bn = space.default_structure(k, c)
    row = dict.fromkeys(CSV_FIELDS, "")
    row.update(gpu="H200", device_name="NVIDIA H200", dtype="fp16", kind=kind, M=m, K=k, N=n, c=c, block_k=bk,
               block_n=bn, phase=phase, status="ok", ms=ms, dense_ms=0.02, gate_rel_err=1e-3, gate_max_err=5e-3,
               **config.to_dict())
    return row


def test_eval_leaves_the_shape_out_and_counts_unmeasured_picks_apart(heuristic_eval, tmp_path):
    grid_fused = LaunchConfig(16, 64, 128, num_warps=4, num_stages=4, group_m=8)
    other = LaunchConfig(16, 32, 64, num_warps=4, num_stages=4, group_m=8)
    database = TuningDatabase(gpu="H200", metadata={"device_name": "NVIDIA H200"})
    database.launch[key("forward", 768, 3072, 4, 16)] = record(grid_fused, 0.010)   # A: fused wins
    database.launch[key("forward", 1024, 3072, 4, 16)] = record(other, 0.008)       # B: other wins
    database.launch[key("forward", 4096, 4096, 4, 16)] = record(GEMV, 0.020)        # C: gemv wins
    rows = [
        # A: the heuristic (B's winner, the nearest shape) is timed too, 20% slower
        raw_row("forward", 768, 3072, 4, 16, grid_fused, 0.010, "confirm"),
        raw_row("forward", 768, 3072, 4, 16, other, 0.0125),
        # B: A's winner timed at 0.010 against B's 0.008
        raw_row("forward", 1024, 3072, 4, 16, other, 0.008, "confirm"),
        raw_row("forward", 1024, 3072, 4, 16, grid_fused, 0.010),
        # C: the nearest (B: N 3072, K_red 256 vs 1024) winner was never timed on C
        raw_row("forward", 4096, 4096, 4, 16, GEMV, 0.020, "confirm"),
    ]
    raw = tmp_path / "tune.csv"
    pd.DataFrame(rows).to_csv(raw, index=False)
    frame = heuristic_eval.evaluate(database, [raw], HOPPER, 132)
    by_k = frame.set_index("K")
    assert by_k.loc[768, "heuristic_from"] == key("forward", 1024, 3072, 4, 16)  # its own record left out
    assert by_k.loc[768, "ratio"] == pytest.approx(0.010 / 0.0125)
    assert by_k.loc[1024, "ratio"] == pytest.approx(0.8)
    assert not by_k.loc[4096, "heuristic_measured"] and math.isnan(by_k.loc[4096, "ratio"])
    table, failed = heuristic_eval.summary(frame)
    row16 = next(r for r in table if r["M"] == 16)
    assert row16["forward"] == pytest.approx(math.sqrt(0.8 * 0.8))  # the unmeasured pick is not counted
    assert any("forward decode" in text for text in failed)
    assert heuristic_eval.main(["--db", str(_write(database, tmp_path)), "--out", str(tmp_path / "out.csv"),
                                "--check", str(raw)]) == 1
    assert len(pd.read_csv(tmp_path / "out.csv")) == 3


def _write(database: TuningDatabase, tmp_path) -> pathlib.Path:
    path = tmp_path / "H200.json"
    path.write_text(database.dumps())
    return path
