"""``ss1bench tune`` and ``ss1bench db`` through click's CliRunner (device list mocked)."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from click.testing import CliRunner

from ss1bench.cli import main
from ss1bench.kernels.config import LaunchConfig
from ss1bench.tuning import db as tdb
from ss1bench.tuning import gpu as tgpu
from ss1bench.tuning.keys import LaunchKey


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


def write_db(path, gpu="H200", config=None):
    updates = tdb.TuningDatabase(gpu=gpu)
    updates.structures["fp16/K768/N3072/c4"] = {"block_k": 64, "block_n": 128, "searched": True,
                                                "relative_time": {"64x128": 1.0, "64x256": 1.01}}
    key = LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 4096).text()
    config = config or LaunchConfig(128, 128, 64, 8, 3)
    updates.launch[key] = {"config": config.to_dict(), "ms": 0.05, "dense_ms": 0.1,
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

    result = runner.invoke(main, ["db", "show", "--gpu", "H200", "--launch"])
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


def fake_h200_tuning(monkeypatch, candidates, timed) -> None:
    """`ss1bench tune` on CPU as on one H200: real kernels in the interpreter, ``timed(config)``
    as every candidate's time, ``candidates`` as the launch candidates."""
    import types

    import torch

    from ss1bench.kernels import ss1
    from ss1bench.tuning import measure, space

    class CpuBench(measure.KernelBench):
        def __init__(self, device, compile_workers=0, seed=0):
            super().__init__(torch.device("cpu"), 0, seed)

        def time(self, case, config, confirm=False):
            return timed(config)

        def dense_ms(self, case):
            return 2.0

    monkeypatch.setattr(tgpu, "list_devices", lambda: [tgpu.Device(0, "NVIDIA H200")])
    monkeypatch.setattr(tgpu, "current_device_index", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(
        multi_processor_count=132))
    monkeypatch.setattr(ss1, "device_limits", lambda device: ("NVIDIA H200", 232448))
    monkeypatch.setattr(measure, "KernelBench", CpuBench)
    monkeypatch.setattr(space, "launch_candidates",
                        lambda problem, limit, sm_count=132: space.CandidateSet(problem, list(candidates)))


@pytest.mark.interpret
def test_tune_end_to_end_with_interpreted_kernels(monkeypatch, places, tmp_path):
    """The whole command on CPU: real kernels in the interpreter, timing faked, two candidates."""
    import csv

    from ss1bench.tuning import space

    fused, sketch = LaunchConfig(16, 32, 16, 4, 2), space.sketch_gemm_config(16, 64, 4)
    fake_h200_tuning(monkeypatch, [fused, sketch], lambda config: 0.5 if config.algorithm == "sketch_gemm" else 1.0)
    results = tmp_path / "results.csv"
    args = ["tune", "--gpu", "H200", "--shape", "8x64x64", "--redn-factors", "2", "--results-csv", str(results)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "sketch+gemm 16x64 w4" in result.output and "4.00x" in result.output
    user, _ = places
    database = tdb.read_database(user / "H200.json")
    assert database.metadata["tuning_wall_time_s"] >= 0 and database.metadata["device_name"] == "NVIDIA H200"
    default = space.default_structure(64, 2)
    (record,) = [r for k, r in database.launch.items() if LaunchKey.parse(k).family[5:] == default]
    assert record["config"] == sketch.to_dict() and record["speedup"] == 4.0
    assert database.structures["fp16/K64/N64/c2"]["searched"] is True
    with results.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["phase"] for row in rows} >= {"screen", "confirm", "probe"}
    # run again: everything is in the database, nothing is re-tuned
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "nothing to tune" in again.output


# ---- one error style -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "command", "part"), [
    (["tune", "--bogus"], "ss1bench tune", "No such option '--bogus'"),
    (["tune", "--compile-workers", "-1", "--dry-run"], "ss1bench tune", "--compile-workers"),
    (["tune", "--devices", "xyz", "--dry-run"], "ss1bench tune", "--devices 'xyz'"),
    (["tune", "--devices", "0,x"], "ss1bench tune", "--devices '0,x'"),
    (["bench", "--dry-run", "--warmup-ms=-5"], "ss1bench bench", "'--warmup-ms': -5 is not in the range x>=0"),
    (["bench", "--dry-run", "--rep-ms", "0"], "ss1bench bench", "--rep-ms"),
    (["bench", "--dry-run", "--m-buckets", "0"], "ss1bench bench", "--m-buckets"),
    (["db", "show", "--bogus"], "ss1bench db show", "No such option"),
    (["db", "merge", "x.json"], "ss1bench db merge", "Missing option '--into'"),
    (["report"], "ss1bench report", "Missing argument"),
    (["nosuch"], "ss1bench", "No such command 'nosuch'"),
], ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_every_usage_error_is_one_line_naming_the_command(no_gpu, places, args, command, part):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"{command}: error: ") and result.output.count("\n") == 1, result.output
    assert part in result.output and "Usage:" not in result.output and "Traceback" not in result.output


def test_bench_takes_m_buckets_and_the_old_m_quietly(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runner = CliRunner()
    help_text = runner.invoke(main, ["bench", "--help"]).output
    assert "--m-buckets" in help_text and "--m " not in help_text and "--m," not in help_text
    new = runner.invoke(main, ["bench", "--dry-run", "--shapes", "gpt2", "--m-buckets", "1,64", "--redn-factors", "4"])
    old = runner.invoke(main, ["bench", "--dry-run", "--shapes", "gpt2", "--m", "1,64", "--redn-factors", "4"])
    assert new.exit_code == old.exit_code == 0 and new.output == old.output
    assert "M=64" in new.output and "M=4096" not in new.output


# ---- tune: what is already tuned, and its database before any GPU work --------------------------------------


def test_dry_run_says_what_the_shipped_database_covers(no_gpu, places):
    _, shipped = places
    write_db(shipped / "H200.json")
    args = ["tune", "--gpu", "H200", "--shape", "4096x768x3072", "--redn-factors", "4", "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    covered = f"0 items to tune, 1 already tuned (1 of them by the shipped database {shipped / 'H200.json'}"
    assert covered in result.output
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0 and "1 items to tune, 0 already tuned (--force" in forced.output
    partly = CliRunner().invoke(main, [*args, "--kinds", "forward,grad_input"])
    assert partly.exit_code == 0, partly.output
    assert "1 items to tune, 0 already tuned; launch records: 1 of 2 recorded (1 by the shipped database)" in (
        partly.output)
    assert "fwd@4096: recorded" in partly.output


@pytest.fixture
def one_h200(monkeypatch):
    """A (pretend) visible H200; tuning itself must not start."""
    from ss1bench.tuning import runner

    monkeypatch.setattr(tgpu, "list_devices", lambda: [tgpu.Device(0, "NVIDIA H200")])
    monkeypatch.setattr(tgpu, "current_device_index", lambda: 0)

    def no_gpu_work(*args, **kwargs):
        raise AssertionError("GPU work started")

    monkeypatch.setattr(runner, "run_tuning", no_gpu_work)


@pytest.mark.parametrize("problem", ["read-only file", "corrupted file", "not utf-8", "folder not writable",
                                     "folder is a file", "results folder cannot be made"])
def test_tune_checks_its_files_before_any_gpu_work(one_h200, places, tmp_path, monkeypatch, problem):
    import os

    user, _ = places
    args = ["tune", "--gpu", "H200", "--shape", "64x64x64", "--redn-factors", "2",
            "--results-csv", str(tmp_path / "results.csv")]
    if problem == "read-only file":
        write_db(user / "H200.json")
        os.chmod(user / "H200.json", 0o444)
        expected = "read-only (mode 444)"
    elif problem in ("corrupted file", "not utf-8"):
        user.mkdir()
        (user / "H200.json").write_bytes(b"{broken" if problem == "corrupted file" else b'{"gpu": "\xff"}')
        expected = "not valid JSON" if problem == "corrupted file" else "not UTF-8"
    elif problem == "folder not writable":
        user.mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(user) and real_access(path, mode))
        expected = f"cannot write in {user}"
    elif problem == "folder is a file":
        user.write_text("")
        expected = "H200.json"
    else:
        (tmp_path / "a-file").write_text("")
        args[-1] = str(tmp_path / "a-file" / "results.csv")
        expected = "cannot create its folder"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("ss1bench tune: error: ") and result.output.count("\n") == 1, result.output
    assert expected in result.output


@pytest.mark.interpret
def test_a_database_that_fails_mid_run_keeps_the_results_and_says_how_to_resume(monkeypatch, places, tmp_path):
    from ss1bench.tuning import runner

    fake_h200_tuning(monkeypatch, [LaunchConfig(16, 32, 16, 4, 2)], lambda config: 1.0)
    user, _ = places
    real_write = runner.write_records

    def write_records(path, updates, run=None):  # the database breaks after the checks passed
        if path == user / "H200.json":
            raise tdb.DatabaseError(f"{path}: disk full (test)")
        return real_write(path, updates, run)

    monkeypatch.setattr(runner, "write_records", write_records)
    results = tmp_path / "results.csv"
    result = CliRunner().invoke(main, ["tune", "--gpu", "H200", "--shape", "8x64x64", "--redn-factors", "2",
                                       "--no-structure-search", "--results-csv", str(results)])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    (line,) = [text for text in result.output.splitlines() if text.startswith("ss1bench tune: error: ")]
    pending = tmp_path / "results-unwritten-cuda0.json"
    assert "disk full (test)" in line and f"every measured candidate is in {results}" in line
    assert f"ss1bench db merge {pending} --into {user / 'H200.json'}" in line and "re-run the same command" in line
    assert results.read_text().count("\n") > 1
    merged = CliRunner().invoke(main, ["db", "merge", str(pending), "--into", str(tmp_path / "fixed.json")])
    assert merged.exit_code == 0, merged.output
    assert tdb.read_database(tmp_path / "fixed.json").launch


# ---- db show, validate, merge ------------------------------------------------------------------------------


def test_db_show_is_short_by_default_and_lists_everything_with_launch(no_gpu, places):
    user, _ = places
    write_db(user / "H200.json")
    short = CliRunner().invoke(main, ["db", "show", "--gpu", "H200"])
    assert short.exit_code == 0, short.output
    assert "fp16/K768/N3072/c4" in short.output and "block_k=64" in short.output
    assert "launch configs (1): forward 1 (--launch lists them)" in short.output
    assert "forward/fp16/K768/N3072/c4/bk64/bn128/M4096" not in short.output
    full = CliRunner().invoke(main, ["db", "show", "--gpu", "H200", "--launch"])
    assert "forward/fp16/K768/N3072/c4/bk64/bn128/M4096" in full.output and "128x128x64 w8 s3 g8" in full.output
    assert "legend:" in full.output and "TMxTNxTK wW sS gG" in full.output and "W warps" in full.output


@pytest.mark.parametrize("change", ["ms Infinity", "dense_ms NaN", "relative_time Infinity", "runs not a list",
                                    "no speedup"])
def test_db_validate_rejects_what_later_writes_cannot_handle(no_gpu, places, tmp_path, change):
    import json

    user, _ = places
    write_db(user / "H200.json")
    data = json.loads((user / "H200.json").read_text())
    (key,) = data["launch"]
    if change == "ms Infinity":
        data["launch"][key]["ms"] = float("inf")
    elif change == "dense_ms NaN":
        data["launch"][key]["dense_ms"] = float("nan")
    elif change == "relative_time Infinity":
        data["structures"]["fp16/K768/N3072/c4"]["relative_time"]["64x256"] = float("inf")
    elif change == "runs not a list":
        data["metadata"]["runs"] = "yesterday"
    else:
        del data["launch"][key]["speedup"]
    path = tmp_path / "H200.json"
    path.write_text(json.dumps(data))  # Infinity / NaN as Python writes them
    result = CliRunner().invoke(main, ["db", "validate", str(path)])
    assert result.exit_code == 1 and result.output.startswith("invalid: "), result.output
    show = CliRunner().invoke(main, ["db", "show", str(path), "--launch"])
    assert show.exit_code == 2 and show.output.count("\n") == 1 and "Traceback" not in show.output


def test_db_commands_on_a_file_that_is_not_utf8(no_gpu, places, tmp_path):
    path = tmp_path / "H200.json"
    path.write_bytes(b'{"gpu": "\xff"}')
    show = CliRunner().invoke(main, ["db", "show", str(path)])
    assert show.exit_code == 2 and show.output.startswith("ss1bench db show: error: ") and "not UTF-8" in show.output
    validate = CliRunner().invoke(main, ["db", "validate", str(path)])
    assert validate.exit_code == 1 and "not UTF-8" in validate.output and "Traceback" not in validate.output


def test_db_merge_documents_its_tie_rule():
    help_text = " ".join(CliRunner().invoke(main, ["db", "merge", "--help"]).output.split())
    assert "later date wins" in help_text and "same instant the faster record" in help_text
    assert "does not depend on the order of the files" in help_text


def test_a_missing_ss1bench_db_is_noted(no_gpu, tmp_path, monkeypatch):
    monkeypatch.setenv(tdb.ENV_VAR, str(tmp_path / "nonexistent" / "dir"))
    result = CliRunner().invoke(main, ["db", "show"])
    assert result.exit_code == 0
    assert result.output.count("does not exist: only the shipped tuning database is read") == 1


# ---- issue 20: tune --model / --budget, db show --explain, siblings, info ----------------------------------


def test_tune_model_dry_run_lists_exactly_the_converted_layers(no_gpu, places):
    result = CliRunner().invoke(main, ["tune", "--model", "gpt2", "--gpu", "H200", "--redn-factors", "4",
                                       "--dtype", "fp16", "--dry-run", "--no-structure-search", "--force"])
    assert result.exit_code == 0, result.output
    items = [line.split()[1:4] for line in result.output.splitlines() if line.startswith("fp16 K=")]
    # GPT-2 small: c_attn, attn c_proj, mlp c_fc, mlp c_proj; the LM head is tied to the embeddings (kept dense)
    assert items == [["K=768", "N=2304", "c=4"], ["K=768", "N=768", "c=4"], ["K=768", "N=3072", "c=4"],
                     ["K=3072", "N=768", "c=4"]]
    assert "4 items to tune" in result.output


def test_tune_model_takes_a_hugging_face_config_json(no_gpu, places, tmp_path):
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
              "intermediate_size": 688, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
              "vocab_size": 1000, "tie_word_embeddings": False}
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["tune", "--model", str(tmp_path), "--gpu", "H200", "--redn-factors", "4",
                                       "--m-buckets", "16", "--dry-run", "--no-structure-search"])
    assert result.exit_code == 0, result.output
    shapes = {tuple(line.split()[1:3]) for line in result.output.splitlines() if line.startswith("fp16 K=")}
    assert shapes == {("K=256", "N=256"), ("K=256", "N=128"), ("K=256", "N=688"), ("K=688", "N=256"),
                      ("K=256", "N=1000")}  # q/o, k/v (2 KV heads of 64), gate/up, down, the untied LM head
    bad = CliRunner().invoke(main, ["tune", "--model", str(tmp_path / "nothing.json"), "--dry-run"])
    assert bad.exit_code == 2 and "neither a known model" in bad.output


def test_budget_dry_run_orders_by_expected_gain_and_marks_what_does_not_fit(no_gpu, places):
    result = CliRunner().invoke(main, ["tune", "--model", "gpt2", "--gpu", "H100", "--redn-factors", "2,16",
                                       "--budget", "0.5", "--dry-run"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("fp16 K=")]
    gains = [float(line.split()[4]) for line in rows]
    assert len(rows) == 8 and "budget 0.5 min" in result.output
    assert any("over budget" in line for line in rows) and "over budget" not in rows[0]
    first_over = next(i for i, line in enumerate(rows) if "over budget" in line)
    assert all("over budget" in line for line in rows[first_over:])
    assert gains[0] == max(gains)  # the most gain per second of tuning first (here also the most gain)
    assert CliRunner().invoke(main, ["tune", "--budget", "0", "--dry-run"]).exit_code == 2


def test_db_show_names_the_sibling_file_and_explains_a_layer(no_gpu, places):
    _, shipped = places
    write_db(shipped / "H200.json", config=LaunchConfig(64, 128, 32, 8, 3))  # fits an H100's 227 KiB
    shown = CliRunner().invoke(main, ["db", "show", "--gpu", "H100"])
    assert shown.exit_code == 0, shown.output
    assert f"GPU H100 has no database file: served by {shipped / 'H200.json'}" in shown.output
    assert "same architecture, sm_90" in shown.output and "== " in shown.output
    explained = CliRunner().invoke(main, ["db", "show", "--gpu", "H100", "--explain", "4096x768x3072",
                                          "--redn-factor", "4"])
    assert explained.exit_code == 0, explained.output
    lines = explained.output.splitlines()
    assert "structure: block_k=64 block_n=128 (record fp16/K768/N3072/c4)" in lines
    forward = next(line for line in lines if line.strip().startswith("forward "))
    assert "record forward/fp16/K768/N3072/c4/bk64/bn128/M4096" in forward and "64x128x32 w8 s3" in forward
    a100 = CliRunner().invoke(main, ["db", "show", "--gpu", "A100", "--explain", "4096x768x3072",
                                     "--redn-factor", "4"])
    assert "shared memory 166912" in a100.output and "sm_90 for sm_80" in a100.output
    rotated = next(line for line in lines if line.strip().startswith("forward_rotated"))
    assert "record forward/fp16/K768/N3072/c4/bk64/bn128/M4096" in rotated  # falls back to the forward's
    near = CliRunner().invoke(main, ["db", "show", "--gpu", "H200", "--explain", "2048x1024x3072",
                                     "--redn-factors", "4,8"])
    assert near.output.count("structure: ") == 2  # one block per c
    forward = next(line for line in near.output.splitlines() if line.strip().startswith("forward "))
    assert "nearest tuned shape: record forward/fp16/K768/N3072/c4/bk64/bn128/M4096" in forward
    decode = CliRunner().invoke(main, ["db", "show", "--gpu", "H200", "--explain", "16x768x3072", "--redn-factor", "4"])
    assert "heuristic: the learned rule, nearest H200 layer" in decode.output  # no decode record here
    missing = CliRunner().invoke(main, ["db", "show", "--explain", "16x768x3072"])
    assert missing.exit_code == 2 and "--explain needs a GPU" in missing.output
    bad = CliRunner().invoke(main, ["db", "show", "--gpu", "H200", "--explain", "16x768x3072", "--redn-factor", "3"])
    assert bad.exit_code == 2 and bad.output.startswith("ss1bench db show: error: --redn-factors '3'")


def test_info_says_which_file_serves_each_device(places, monkeypatch):
    import torch

    _, shipped = places
    write_db(shipped / "H200.json")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: names[index])
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    h100, h200 = [line for line in result.output.splitlines() if line.startswith("cuda:")]
    assert f"{shipped / 'H200.json'} (H200's records: no H100 file, same architecture, sm_90" in h100
    assert f"{shipped / 'H200.json'} (H200's own)" in h200
