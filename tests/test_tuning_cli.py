"""``ss1bench tune`` and ``ss1bench db`` through click's CliRunner (device list mocked)."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from click.testing import CliRunner

from ss1bench.cli import main
from ss1bench.kernels.config import LaunchConfig
from ss1bench.tuning import db as tdb
from ss1bench.tuning import gpu as tgpu


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(tgpu, "list_devices", lambda: [])


@pytest.fixture
def places(tmp_path, monkeypatch):
    """User database dir (via SS1BENCH_DB) and a shipped dir, both temporary."""
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(tdb, "shipped_dir", lambda: shipped)
    monkeypatch.setenv(tdb.ENV_VAR, str(user))
    return user, shipped


def write_db(path, gpu="H200"):
    updates = tdb.TuningDatabase(gpu=gpu)
    updates.structures["fp16/K768/N3072/c4"] = {"block_k": 64, "block_n": 128, "searched": True,
                                                "relative_time": {"64x128": 1.0, "64x256": 1.01}}
    key = tdb.LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 4096).text()
    updates.launch[key] = {"config": LaunchConfig(128, 128, 64, 8, 3).to_dict(), "ms": 0.05, "dense_ms": 0.1,
                           "speedup": 2.0, "gate_rel_err": 2e-4, "gate_max_err": 1e-3,
                           "date": "2026-01-01T00:00:00Z", "triton": version("triton")}
    tdb.write_records(path, updates, run={"date": "2026-01-01T00:00:00Z", "device_name": "NVIDIA H200",
                                          "wall_time_s": 300.0, "torch": "2.11.0", "triton": "3.6.0"})


def test_dry_run_without_a_gpu(no_gpu, places):
    result = CliRunner().invoke(main, ["tune", "--gpu", "H200", "--shapes", "gpt2", "--redn-factors", "2,4,8,16",
                                       "--dtype", "fp16", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "GPU H200" in result.output and "shared memory 232448" in result.output
    assert "32 items to tune" in result.output
    assert "fp16 K=768 N=2304 c=2" in result.output and "fwd@16384:" in result.output
    assert result.output.strip().splitlines()[-1].startswith("total: 32 items")


def test_dry_run_sees_what_the_database_already_has(no_gpu, places):
    user, _ = places
    write_db(user / "H200.json")
    result = CliRunner().invoke(main, ["tune", "--gpu", "H200", "--shape", "4096x768x3072", "--redn-factors", "4",
                                       "--dry-run", "--no-structure-search"])
    assert result.exit_code == 0, result.output
    assert "0 items to tune, 1 already tuned" in result.output


def test_tune_without_cuda_exits_2_with_one_line(no_gpu, places):
    result = CliRunner().invoke(main, ["tune", "--gpu", "A100", "--shapes", "gpt2"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "no CUDA device" in result.output
    assert "Traceback" not in result.output


def test_unmatched_gpu_lists_visible_devices(monkeypatch, places):
    monkeypatch.setattr(tgpu, "list_devices", lambda: [tgpu.Device(0, "NVIDIA H200"), tgpu.Device(1, "NVIDIA L40S")])
    result = CliRunner().invoke(main, ["tune", "--gpu", "A100", "--shapes", "gpt2"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "A100" in result.output and "cuda:0 NVIDIA H200 (H200)" in result.output and "L40S" in result.output


@pytest.mark.parametrize("args", [
    ["--shape", "12x34"], ["--shape", "0x768x768"], ["--shapes", "gpt5"], ["--redn-factors", "3"],
    ["--dtype", "fp8"], ["--kinds", "backward"], ["--m-buckets", "a,b"],
])
def test_bad_options_exit_2(no_gpu, args):
    result = CliRunner().invoke(main, ["tune", "--dry-run", *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_corrupted_database_stops_tune_with_exit_2(no_gpu, places):
    user, _ = places
    user.mkdir()
    (user / "H200.json").write_text("{broken")
    result = CliRunner().invoke(main, ["tune", "--gpu", "H200", "--dry-run"])
    assert result.exit_code == 2 and "H200.json" in result.output and "not valid JSON" in result.output
    assert (user / "H200.json").read_text() == "{broken"


def test_db_path_show_validate_merge(no_gpu, places, tmp_path):
    user, shipped = places
    runner = CliRunner()
    result = runner.invoke(main, ["db", "path", "--gpu", "H200"])
    assert result.exit_code == 0
    assert f"user:    {user / 'H200.json'}  (missing)" in result.output and "shipped:" in result.output
    write_db(user / "H200.json")
    assert "(exists)" in runner.invoke(main, ["db", "path", "--gpu", "h200"]).output

    result = runner.invoke(main, ["db", "show", "--gpu", "H200"])
    assert result.exit_code == 0, result.output
    assert "fp16/K768/N3072/c4" in result.output and "block_k=64" in result.output
    assert "forward/fp16/K768/N3072/c4/bk64/bn128/M4096" in result.output and "2.00x" in result.output
    assert "tuning wall time 300.0 s" in result.output

    result = runner.invoke(main, ["db", "validate"])
    assert result.exit_code == 0 and result.output.startswith("ok: ")
    (shipped / "A100.json").write_text('{"schema": "ss1bench.tuning_db", "version": 7}')
    result = runner.invoke(main, ["db", "validate"])
    assert result.exit_code == 1 and "invalid:" in result.output and "A100.json" in result.output

    target = tmp_path / "ship" / "H200.json"
    result = runner.invoke(main, ["db", "merge", str(user / "H200.json"), "--into", str(target)])
    assert result.exit_code == 0, result.output
    assert "2 records added or updated" in result.output and tdb.read_database(target).launch
    result = runner.invoke(main, ["db", "merge", str(shipped / "A100.json"), "--into", str(target)])
    assert result.exit_code == 2 and result.output.count("\n") == 1


@pytest.mark.interpret
def test_tune_end_to_end_with_interpreted_kernels(monkeypatch, places, tmp_path):
    """The whole command on CPU: real kernels in the interpreter, timing faked, two candidates."""
    import csv
    import types

    import torch

    from ss1bench.kernels import ss1
    from ss1bench.tuning import measure, space

    class CpuBench(measure.KernelBench):
        def __init__(self, device, compile_workers=0, seed=0):
            super().__init__(torch.device("cpu"), 0, seed)

        def time(self, case, config, confirm=False):
            return 0.5 if config.algorithm == "sketch_gemm" else 1.0

        def dense_ms(self, case):
            return 2.0

    monkeypatch.setattr(tgpu, "list_devices", lambda: [tgpu.Device(0, "NVIDIA H200")])
    monkeypatch.setattr(tgpu, "current_device_index", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(
        multi_processor_count=132))
    monkeypatch.setattr(ss1, "device_limits", lambda device: ("NVIDIA H200", 232448))
    monkeypatch.setattr(measure, "KernelBench", CpuBench)
    fused, sketch = LaunchConfig(16, 32, 16, 4, 2), space.sketch_gemm_config(16, 64, 4)
    monkeypatch.setattr(space, "launch_candidates",
                        lambda problem, limit, sm_count=132: space.CandidateSet(problem, [fused, sketch]))
    results = tmp_path / "results.csv"
    args = ["tune", "--gpu", "H200", "--shape", "8x64x64", "--redn-factors", "2", "--results-csv", str(results)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "sketch+gemm 16x64 w4" in result.output and "4.00x" in result.output
    user, _ = places
    database = tdb.read_database(user / "H200.json")
    assert database.metadata["tuning_wall_time_s"] >= 0 and database.metadata["device_name"] == "NVIDIA H200"
    default = space.default_structure(64, 2)
    (record,) = [r for k, r in database.launch.items() if tdb.LaunchKey.parse(k).family[5:] == default]
    assert record["config"] == sketch.to_dict() and record["speedup"] == 4.0
    assert database.structures["fp16/K64/N64/c2"]["searched"] is True
    with results.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["phase"] for row in rows} >= {"screen", "confirm", "probe"}
    # run again: everything is in the database, nothing is re-tuned
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "nothing to tune" in again.output
