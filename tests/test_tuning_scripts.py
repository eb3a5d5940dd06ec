"""scripts/repick_single_launch.py and scripts/c16_vs_c8.py on hand-made CSVs."""

from __future__ import annotations

from importlib.metadata import version

import pandas as pd
import pytest
from conftest import load_script as load

from ss1bench.kernels.config import LaunchConfig
from ss1bench.tuning import db as tdb
from ss1bench.tuning.keys import LaunchKey
from ss1bench.tuning.outcome import CSV_FIELDS
from ss1bench.tuning.records import TuningDatabase
from ss1bench.tuning.validation import validate_data

SKETCH = LaunchConfig(16, 64, 64, 4, 1, algorithm="sketch_gemm")
FUSED = LaunchConfig(16, 128, 64, 4, 4)
SLOW = LaunchConfig(16, 32, 64, 4, 4)



def raw_row(kind, m, config, ms, phase="screen") -> dict:
    row = dict.fromkeys(CSV_FIELDS, "")
    row.update(gpu="H200", device_name="NVIDIA H200", dtype="fp16", kind=kind, M=m, K=768, N=3072, c=16, block_k=16,
               block_n=128, phase=phase, status="ok", ms=ms, dense_ms=0.0096, gate_rel_err=2e-3, gate_max_err=1e-2,
               **config.to_dict())
    return row


def record(config, ms) -> dict:
    return {"config": config.to_dict(), "ms": ms, "dense_ms": 0.0096, "speedup": 0.0096 / ms, "gate_rel_err": 2e-3,
            "gate_max_err": 1e-2, "date": "2026-11-28T16:24:35Z", "triton": version("triton")}


def test_repick_keeps_measured_one_launch_configs_within_the_margin(tmp_path):
    repick = load("repick_single_launch")
    decode = LaunchKey("forward", "fp16", 768, 3072, 16, 16, 128, 64).text()
    far = LaunchKey("forward", "fp16", 768, 3072, 16, 16, 128, 16).text()
    prefill = LaunchKey("forward", "fp16", 768, 3072, 16, 16, 128, 4096).text()
    database = TuningDatabase(gpu="H200")
    database.launch[decode] = record(SKETCH, 0.011424)  # the outlier's record
    database.launch[far] = record(SKETCH, 0.0100)
    database.launch[prefill] = record(SKETCH, 0.0300)
    path = tmp_path / "H200.json"
    path.write_text(database.dumps())
    rows = [raw_row("forward", 64, SKETCH, 0.011424, "confirm"), raw_row("forward", 64, SKETCH, 0.0112),
            raw_row("forward", 64, FUSED, 0.011776, "confirm"), raw_row("forward", 64, FUSED, 0.0116),
            raw_row("forward", 64, SLOW, 0.0170),
            raw_row("forward", 16, SKETCH, 0.0100, "confirm"), raw_row("forward", 16, FUSED, 0.0120),
            raw_row("forward", 4096, SKETCH, 0.0300, "confirm"), raw_row("forward", 4096, FUSED, 0.0301)]
    raw = tmp_path / "tune.csv"
    pd.DataFrame(rows).to_csv(raw, index=False)
    assert repick.main([str(path), str(raw)]) == 0
    after = tdb.read_database(path)
    assert LaunchConfig.from_dict(after.launch[decode]["config"]) == FUSED
    assert after.launch[decode]["ms"] == pytest.approx(0.011776)  # its confirm time
    assert after.launch[decode]["speedup"] == pytest.approx(0.0096 / 0.011776, rel=1e-3)
    assert after.launch[decode]["date"] == "2026-11-28T16:24:35Z" and "repicked" in after.launch[decode]
    assert after.launch[far] == database.launch[far]  # 20% slower: sketch_gemm stays
    assert after.launch[prefill] == database.launch[prefill]  # prefill: graph time decides
    assert validate_data(after.to_json()) == []


def bench_row(provider, m, c, ms, mode="fwd", dtype="fp16", k=768, n=3072, shape_set="gpt2") -> dict:
    return {"gpu": "H200", "dtype": dtype, "mode": mode, "shape_set": shape_set, "layer": "mlp.fc", "M": m, "K": k,
            "N": n, "redn_factor": c, "provider": provider, "status": "ok", "median_ms": ms}


def test_c16_vs_c8_lists_shapes_slower_at_16(tmp_path, capsys):
    check = load("c16_vs_c8")
    rows = [bench_row("ss1_tuned", 64, 8, 0.0094), bench_row("ss1_tuned", 64, 16, 0.0112),
            bench_row("ss1_tuned", 64, 16, 0.0112, shape_set="bert"),  # the same shape in two sets: once
            bench_row("ss1_tuned", 1, 8, 0.0064), bench_row("ss1_tuned", 1, 16, 0.0065),  # within 3%
            bench_row("ss1_tuned", 4096, 8, 0.020), bench_row("ss1_tuned", 4096, 16, 0.018),
            bench_row("dense", 64, 8, 0.0089), bench_row("dense", 64, 16, 0.0200)]  # not an SS1 provider
    path = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = check.slower_at_16(pd.read_csv(path))
    assert len(table) == 3 and table.slower.sum() == 1
    slow = table[table.slower].iloc[0]
    assert (slow.M, slow.ratio) == (64, pytest.approx(0.0112 / 0.0094))
    assert check.main([str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "ss1_tuned fp16 fwd: 1 of 3 shapes slower at c = 16" in out and "total: 1 of 3" in out
    assert check.main([str(path), "--tolerance", "0.25"]) == 0


def test_c16_vs_c8_says_when_nothing_compares(tmp_path, capsys):
    check = load("c16_vs_c8")
    path = tmp_path / "e2e.csv"
    pd.DataFrame([bench_row("ss1_tuned", 64, 4, 0.01), bench_row("ss1_tuned", 64, 8, 0.01)]).to_csv(path, index=False)
    assert check.slower_at_16(pd.read_csv(path)).empty
    with pytest.raises(SystemExit) as exit_info:
        check.main([str(path)])
    assert exit_info.value.code == 2
    assert "no layer shape of ss1_tuned, ss1_cached is timed at both c = 8 and c = 16" in capsys.readouterr().err
