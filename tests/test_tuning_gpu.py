"""On a GPU: ``ss1bench tune`` end to end on a small shape, and a fresh layer using what it wrote.

Skipped without CUDA. Uses a temporary database (``--db``), never the user's.
"""

from __future__ import annotations

import csv

import pytest
import torch
from click.testing import CliRunner

from ss1bench import SSL
from ss1bench.cli import main
from ss1bench.kernels.config import LaunchConfig, Problem, resolve_launch_config
from ss1bench.kernels.ss1 import device_limits
from ss1bench.tuning import db as tdb
from ss1bench.tuning import lookup
from ss1bench.tuning.gpu import normalize_gpu_name
from ss1bench.tuning.keys import LaunchKey


@pytest.mark.gpu
def test_tune_then_a_fresh_layer_uses_the_records(tmp_path, monkeypatch):
    directory = tmp_path / "db"
    results = tmp_path / "results.csv"
    args = ["tune", "--shape", "64x512x1024", "--shape", "1x512x1024", "--redn-factors", "4", "--dtype", "fp16",
            "--db", str(directory), "--results-csv", str(results), "--compile-workers", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    gpu = normalize_gpu_name(torch.cuda.get_device_name())
    database = tdb.read_database(directory / f"{gpu}.json")
    assert database is not None and database.metadata["tuning_wall_time_s"] > 0
    structure = database.structures["fp16/K512/N1024/c4"]
    assert structure["searched"] is True
    block_k, block_n = structure["block_k"], structure["block_n"]
    records = {LaunchKey.parse(k): r for k, r in database.launch.items()}
    chosen = {key.m: r for key, r in records.items() if (key.block_k, key.block_n) == (block_k, block_n)}
    assert set(chosen) == {1, 64}
    for record in chosen.values():
        assert record["gate_rel_err"] <= 1e-2 and record["ms"] > 0 and record["dense_ms"] > 0
    with results.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["status"] for row in rows} >= {"ok"}
    # every recorded winner was measured with status ok
    fields = ("M", "block_k", "block_n", "algorithm", "tile_m", "tile_n", "tile_k", "num_warps", "num_stages",
              "group_m", "split_m")
    ok = {tuple(row[f] for f in fields) for row in rows if row["status"] == "ok"}
    for key, record in records.items():
        c = LaunchConfig.from_dict(record["config"])
        assert (str(key.m), str(key.block_k), str(key.block_n), c.algorithm, str(c.tile_m), str(c.tile_n),
                str(c.tile_k), str(c.num_warps), str(c.num_stages), str(c.group_m), str(c.split_m)) in ok

    monkeypatch.setenv(tdb.ENV_VAR, str(directory))
    lookup.DATABASE.reset()
    try:
        layer = SSL(512, 1024, redn_factor=4, device="cuda", dtype=torch.float16)
        assert (layer.block_k, layer.block_n) == (block_k, block_n)
        name, limit = device_limits(torch.device("cuda"))
        problem = Problem("forward", 64, 512, 1024, 4, block_k, block_n, "fp16", name)
        assert resolve_launch_config(problem, limit) == LaunchConfig.from_dict(chosen[64]["config"])
        x = torch.randn(64, 512, device="cuda", dtype=torch.float16)
        expected = torch.nn.functional.linear(x.double(), layer.dense_weight().double(), layer.bias.double())
        assert (layer(x).double() - expected).norm() / expected.norm() < 1e-2
    finally:
        lookup.DATABASE.reset()


@pytest.mark.gpu
def test_shipped_database_is_valid():
    for gpu in tdb.shipped_gpus():
        tdb.parse_text(tdb.shipped_db_path(gpu).read_text(), gpu)
