"""The layer reads the database: structure advisor and launch-config hook (device name mocked)."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import version

import pytest
import torch

from ss1bench.kernels.config import LaunchConfig, Problem, resolve_launch_config
from ss1bench.layer import choose_structure
from ss1bench.tuning import db as tdb
from ss1bench.tuning import lookup
from ss1bench.tuning.keys import LaunchKey
from ss1bench.tuning.records import TuningDatabase

TUNED = LaunchConfig(64, 128, 32, num_warps=4, num_stages=4, group_m=4)
H200 = "NVIDIA H200"


def record(config: LaunchConfig) -> dict:
    return {"config": config.to_dict(), "ms": 0.05, "dense_ms": 0.1, "speedup": 2.0, "gate_rel_err": 2e-4,
            "gate_max_err": 1e-3, "date": "2026-01-01T00:00:00Z", "triton": version("triton")}


def use_the_database() -> None:
    """The defaults: new layers and launches ask the tuning database (other tests may have set an
    advisor or a database of their own and put it back; this makes sure)."""
    from ss1bench.kernels import config
    from ss1bench.layer import set_structure_advisor

    set_structure_advisor(None)
    config.set_database(config.DATABASE_DEFAULT)


@pytest.fixture
def database(tmp_path, monkeypatch):
    """A user database for H200 with a structure and one launch record; the global lookup reset."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(tdb, "shipped_dir", lambda: shipped)
    monkeypatch.setenv(tdb.ENV_VAR, str(tmp_path / "user"))
    updates = TuningDatabase(gpu="H200")
    updates.structures["fp16/K768/N3072/c4"] = {"block_k": 32, "block_n": 256, "searched": True}
    updates.launch[LaunchKey("forward", "fp16", 768, 3072, 4, 32, 256, 4096).text()] = record(TUNED)
    tdb.write_records(tmp_path / "user" / "H200.json", updates)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: H200)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    use_the_database()
    lookup.DATABASE.reset()
    yield
    lookup.DATABASE.reset()


def test_new_layer_takes_its_structure_from_the_database(database):
    cuda = torch.device("cuda", 0)
    structure = choose_structure(768, 3072, 4, 1024, None, None, torch.float16, cuda)
    assert (structure.block_k, structure.block_n) == (32, 256)
    explicit = choose_structure(768, 3072, 4, 1024, 64, None, torch.float16, cuda)
    assert (explicit.block_k, explicit.block_n) == (64, 256)  # explicit arguments win
    for dtype, device in ((torch.bfloat16, cuda), (torch.float32, cuda), (torch.float16, torch.device("cpu"))):
        default = choose_structure(768, 3072, 4, 1024, None, None, dtype, device)
        assert (default.block_k, default.block_n) == (64, 128)  # untuned dtype or a CPU layer: defaults


def test_forward_takes_the_launch_config_of_the_nearest_bucket(database):
    for m in (4096, 2048, 32768):
        problem = Problem("forward", m, 768, 3072, 4, 32, 256, "fp16", H200)
        assert resolve_launch_config(problem, 232448) == TUNED
    # Another structure of the same shape has no record: the nearest tuned shape's (this one's) answers.
    other_structure = Problem("forward", 4096, 768, 3072, 4, 64, 128, "fp16", H200)
    assert resolve_launch_config(other_structure, 232448) == TUNED
    answer = lookup.DATABASE.explain(other_structure, 232448)
    assert (answer.source, answer.key) == ("nearest shape", "forward/fp16/K768/N3072/c4/bk32/bn256/M4096")
    assert lookup.DATABASE.launch_config(Problem("forward", 4096, 768, 3072, 4, 32, 256, "fp16", "")) is None


def test_a_bucket_of_the_other_regime_is_not_used(database, caplog):
    # The database has a prefill record only (M = 4096): decode-sized launches get the heuristic.
    with caplog.at_level(logging.INFO, logger="ss1bench.tuning"):
        for m in (1, 16, 64):
            problem = Problem("forward", m, 768, 3072, 4, 32, 256, "fp16", H200)
            assert lookup.DATABASE.launch_config(problem) is None
    assert caplog.text.count("at decode sizes on H200: using the heuristic") == 1
    assert lookup.DATABASE.launch_config(Problem("forward", 65, 768, 3072, 4, 32, 256, "fp16", H200)) == TUNED


def test_forward_rotated_has_its_own_records_else_takes_the_forward_ones(database, tmp_path):
    rotated_pick = LaunchConfig(16, 64, 128, num_warps=4, num_stages=1, algorithm="sketch_gemm")
    prefill = Problem("forward_rotated", 4096, 768, 3072, 4, 32, 256, "fp16", H200)
    decode = Problem("forward_rotated", 16, 768, 3072, 4, 32, 256, "fp16", H200)
    assert lookup.DATABASE.launch_config(prefill) == TUNED  # no record of its own: the forward's
    assert lookup.DATABASE.launch_config(decode) is None  # neither kind has a decode record
    updates = TuningDatabase(gpu="H200")
    updates.launch[LaunchKey("forward_rotated", "fp16", 768, 3072, 4, 32, 256, 16).text()] = record(rotated_pick)
    tdb.write_records(tmp_path / "user" / "H200.json", updates)
    lookup.DATABASE.reset()
    assert lookup.DATABASE.launch_config(decode) == rotated_pick
    assert lookup.DATABASE.launch_config(prefill) == TUNED  # its decode record does not answer prefill
    assert lookup.DATABASE.launch_config(Problem("forward", 16, 768, 3072, 4, 32, 256, "fp16", H200)) is None


def test_unknown_gpu_logs_once(database, caplog):
    with caplog.at_level(logging.INFO, logger="ss1bench.tuning"):
        for m in (1, 2, 3):
            problem = Problem("forward", m, 768, 3072, 4, 32, 256, "fp16", "Mystery Accelerator 9")
            assert lookup.DATABASE.launch_config(problem) is None
    assert caplog.text.count("no ss1bench tuning database for GPU MYSTERYACCELERATOR9: layers use the default") == 1


def test_importing_ss1bench_reads_no_database_and_does_not_touch_cuda():
    """The database is activated on first use: importing ss1bench neither imports the lookup nor
    queries CUDA; the first launch-config resolution brings the default database in."""
    code = ("import sys, torch\n"
            "def boom(*a, **k):\n    raise SystemExit('CUDA queried at import')\n"
            "torch.cuda.is_available = torch.cuda.device_count = torch.cuda.get_device_name = boom\n"
            "torch.cuda.current_device = torch.cuda.get_device_properties = boom\n"
            "import ss1bench, ss1bench.layer as layer\n"
            "from ss1bench.kernels import config\n"
            "assert 'ss1bench.tuning.lookup' not in sys.modules, 'the lookup was imported'\n"
            "assert layer._structure_advisor is None and config._database == config.DATABASE_DEFAULT\n"
            "problem = config.Problem('forward', 64, 768, 3072, 4, 32, 128, 'fp16', '')\n"
            "assert config.database_answer(problem, 232448) is None  # a CPU problem: no records\n"
            "from ss1bench.tuning import lookup\n"
            "assert config._database == lookup.DATABASE.launch_config\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("content", [b'{"gpu": "\xff"}', b"[" * 200_000 + b"]" * 200_000],
                         ids=["not-utf8", "deeply-nested"])
def test_a_bad_user_file_never_stops_a_layer_or_a_launch(tmp_path, monkeypatch, caplog, content):
    """The user file cannot be read: the shipped database answers, with one warning."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(tdb, "shipped_dir", lambda: shipped)
    monkeypatch.setenv(tdb.ENV_VAR, str(tmp_path / "user"))
    ship = TuningDatabase(gpu="H200")
    ship.structures["fp16/K768/N3072/c4"] = {"block_k": 32, "block_n": 256, "searched": True}
    ship.launch[LaunchKey("forward", "fp16", 768, 3072, 4, 32, 256, 4096).text()] = record(TUNED)
    (shipped / "H200.json").write_text(ship.dumps())
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "H200.json").write_bytes(content)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: H200)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    use_the_database()
    lookup.DATABASE.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="ss1bench.tuning"):
            structure = choose_structure(768, 3072, 4, 1024, None, None, torch.float16, torch.device("cuda", 0))
            problem = Problem("forward", 4096, 768, 3072, 4, 32, 256, "fp16", H200)
            assert resolve_launch_config(problem, 232448) == TUNED
    finally:
        lookup.DATABASE.reset()
    assert (structure.block_k, structure.block_n) == (32, 256)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "H200.json" in warned[0], warned


def test_a_lookup_that_raises_answers_none_and_logs_once(database, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(lookup.DatabaseLookup, "_view", broken)
    with caplog.at_level(logging.WARNING, logger="ss1bench.tuning"):
        for m in (1, 2):
            assert lookup.DATABASE.launch_config(Problem("forward", m, 768, 3072, 4, 32, 256, "fp16", H200)) is None
        assert lookup.DATABASE.structure(768, 3072, 4, torch.float16, torch.device("cuda", 0)) is None
    assert caplog.text.count("lookup failed (RecursionError") == 2  # once for launches, once for structures


# ---- sibling databases and the nearest tuned shape (issue 20) ----------------------------------------

AMPERE = 166912  # opt-in shared memory per block of an A100 (163 KiB)


@pytest.fixture
def shipped_only(tmp_path, monkeypatch):
    """The real shipped database (H200) and an empty user database; the global lookup reset."""
    monkeypatch.setenv(tdb.ENV_VAR, str(tmp_path / "user"))
    use_the_database()
    lookup.DATABASE.reset()
    yield tdb.read_database(tdb.shipped_db_path("H200"))
    lookup.DATABASE.reset()


def test_an_a100_takes_the_h200_records_and_never_launches_a_config_over_its_shared_memory(shipped_only, monkeypatch,
                                                                                            caplog):
    """A faked A100 (device name and limits of kernels.ss1 patched): its launches resolve through the
    launchers' own path; every config fits 163 KiB, and the H200 records that fit are used as they are."""
    from ss1bench.kernels import ss1
    from ss1bench.kernels.config import fits
    from ss1bench.structure import SS1Structure

    monkeypatch.setattr(ss1, "device_limits", lambda device: ("NVIDIA A100-SXM4-80GB", AMPERE))
    cuda = torch.device("cuda", 0)
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    over, used = 0, 0
    with caplog.at_level(logging.INFO, logger="ss1bench.tuning"):
        for text, entry in shipped_only.launch.items():
            key = LaunchKey.parse(text)
            structure = SS1Structure(key.in_features, key.out_features, key.redn_factor, 0, key.block_k, key.block_n)
            problem = Problem(key.kind, key.m, key.in_features, key.out_features, key.redn_factor, key.block_k,
                              key.block_n, key.dtype, "NVIDIA A100-SXM4-80GB")
            config = ss1._resolved_config((key.kind, key.m, structure.key, dtypes[key.dtype], cuda), structure)
            assert fits(config, problem, AMPERE), (text, config)
            recorded = LaunchConfig.from_dict(entry["config"])
            if fits(recorded, problem, AMPERE):
                used += config == recorded
            else:
                over += 1
            if key.kind in ("forward_rotated", "grad_input"):  # the training path's sketch passes
                ss1.sketch_pass_config(key.kind, key.m, structure, dtypes[key.dtype], cuda)
    assert over > 0  # the check has something to catch: H200 records over the A100's limit exist
    assert used == len(shipped_only.launch) - over
    assert caplog.text.count("no ss1bench tuning database for GPU A100: using H200's") == 1


def test_the_shared_memory_limit_prunes_database_answers_but_not_overrides(database):
    from ss1bench.kernels.config import override_launch_config, shared_memory_bytes

    problem = Problem("forward", 4096, 768, 3072, 4, 32, 256, "fp16", H200)
    small_limit = shared_memory_bytes(TUNED, problem) - 1
    assert resolve_launch_config(problem, 232448) == TUNED
    assert resolve_launch_config(problem, small_limit) != TUNED  # the record does not fit: not launched
    with override_launch_config(TUNED):  # a pinned config is the caller's decision
        assert resolve_launch_config(problem, small_limit) == TUNED


def test_explain_says_record_nearest_shape_or_heuristic(shipped_only):
    def explain(m, k, n, c, bk, bn, dtype="fp16", kind="forward"):
        return lookup.DATABASE.explain(Problem(kind, m, k, n, c, bk, bn, dtype, "NVIDIA H100 80GB HBM3"), 232448)

    hit = explain(64, 768, 3072, 16, 16, 128)
    assert (hit.source, hit.key, hit.sibling) == ("record", "forward/fp16/K768/N3072/c16/bk16/bn128/M64", "H200")
    assert explain(48, 768, 3072, 16, 16, 128).key.endswith("/M64")  # nearest bucket of its regime
    near = explain(64, 2048, 5632, 8, 128, 128)  # not a shipped shape
    assert near.source == "nearest shape" and near.key.startswith("forward/fp16/") and "/c8/" in near.key
    assert near.distance > 0
    fp32 = explain(64, 2048, 5632, 8, 128, 128, dtype="fp32")
    assert (fp32.source, fp32.file) == ("heuristic", "fixed rule")
