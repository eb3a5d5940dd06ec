"""Tuning database: keys, round trip, lookup order, nearest bucket, errors, concurrent writers, merge."""

from __future__ import annotations

import json
import multiprocessing
import warnings
from importlib.metadata import version

import pytest

from ss1bench.kernels.config import LaunchConfig, Problem
from ss1bench.tuning import db as tdb
from ss1bench.tuning import lookup

H200 = "NVIDIA H200"


def launch_record(config: LaunchConfig, ms: float = 0.1, date: str = "2026-01-01T00:00:00Z",
                  triton: str = version("triton")) -> dict:
    return {"config": config.to_dict(), "ms": ms, "dense_ms": 0.2, "speedup": 0.2 / ms, "gate_rel_err": 1e-3,
            "gate_max_err": 5e-3, "date": date, "torch": "2.11.0", "triton": triton}


def database_with(gpu: str = "H200", **launch: LaunchConfig) -> tdb.TuningDatabase:
    database = tdb.TuningDatabase(gpu=gpu)
    for text, config in launch.items():
        database.launch[text] = launch_record(config)
    return database


KEY = tdb.LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 16)
SMALL = LaunchConfig(16, 64, 128, 4, 3)
BIG = LaunchConfig(128, 128, 64, 8, 3)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """An empty shipped-database directory standing in for the ss1bench.tuning_db package."""
    directory = tmp_path / "shipped"
    directory.mkdir()
    monkeypatch.setattr(tdb, "shipped_dir", lambda: directory)
    return directory


@pytest.fixture
def user(tmp_path, monkeypatch):
    directory = tmp_path / "user"
    monkeypatch.setenv(tdb.ENV_VAR, str(directory))
    return directory


def test_keys_round_trip():
    assert KEY.text() == "forward/fp16/K768/N3072/c4/bk64/bn128/M16"
    assert tdb.LaunchKey.parse(KEY.text()) == KEY
    skey = tdb.StructureKey("bf16", 4096, 14336, 8)
    assert tdb.StructureKey.parse(skey.text()) == skey
    with pytest.raises(ValueError, match="bad launch key"):
        tdb.LaunchKey.parse("forward/fp16/K768")


def test_round_trip_is_byte_stable(tmp_path):
    path = tmp_path / "H200.json"
    updates = database_with(**{KEY.text(): SMALL})
    updates.structures["fp16/K768/N3072/c4"] = {"block_k": 64, "block_n": 128, "date": "2026-01-01T00:00:00Z"}
    tdb.write_records(path, updates, run={"date": "2026-01-01T00:00:00Z", "device_name": H200, "wall_time_s": 12.5,
                                          "torch": "2.11.0", "triton": "3.6.0"})
    first = path.read_bytes()
    again = tdb.read_database(path)
    assert again.launch == updates.launch and again.structures == updates.structures
    assert again.metadata["device_name"] == H200 and again.metadata["tuning_wall_time_s"] == 12.5
    path.write_text(again.dumps())
    assert path.read_bytes() == first
    data = json.loads(first)
    assert list(data) == sorted(data) and data["schema"] == tdb.SCHEMA and data["version"] == tdb.SCHEMA_VERSION
    assert first.endswith(b"\n") and b'\n "gpu": "H200",\n' in first


def test_nearest_bucket_in_log2():
    buckets = [1, 16, 4096]
    assert tdb.nearest_bucket(1, buckets) == 1
    assert tdb.nearest_bucket(8, buckets) == 16
    assert tdb.nearest_bucket(4, buckets) == 1  # tie (2 octaves each way): the smaller bucket
    assert tdb.nearest_bucket(300, buckets) == 4096
    assert tdb.nearest_bucket(10**6, buckets) == 4096


def test_lookup_user_before_shipped_and_nearest_bucket(user, shipped):
    other = tdb.LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 4096)
    (shipped / "H200.json").write_text(database_with(**{KEY.text(): BIG, other.text(): BIG}).dumps())
    tdb.write_records(user / "H200.json", database_with(**{KEY.text(): SMALL}))
    answers = lookup.DatabaseLookup()

    def ask(m: int) -> LaunchConfig | None:
        return answers.launch_config(Problem("forward", m, 768, 3072, 4, 64, 128, "fp16", H200))

    assert ask(16) == SMALL  # both have M16: the user's wins
    assert ask(4096) == BIG  # only shipped has M4096
    assert ask(8) == SMALL and ask(2048) == BIG  # nearest buckets
    assert answers.launch_config(Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", "")) is None  # CPU
    assert answers.launch_config(Problem("forward", 16, 768, 3072, 4, 32, 128, "fp16", H200)) is None  # structure
    assert answers.launch_config(Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", "NVIDIA A100-SXM4-80GB")) is None


def test_single_json_file_override(tmp_path, shipped, monkeypatch):
    path = tmp_path / "mine.json"
    tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    monkeypatch.setenv(tdb.ENV_VAR, str(path))
    assert tdb.user_db_path("H200") == path
    assert lookup.DatabaseLookup().launch_config(Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", H200)) == SMALL


def test_user_data_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(tdb.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert tdb.user_db_path("H200") == tmp_path / "ss1bench" / "H200.json"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tdb.user_db_path("H200") == tmp_path / ".local" / "share" / "ss1bench" / "H200.json"
    assert tdb.user_db_path("H200", str(tmp_path / "x.json")) == tmp_path / "x.json"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"schema": "ss1bench.tuning_db", "version": 99, "gpu": "H200"}', "schema version 99"),
    ('{"schema": "something.else", "version": 1}', "unknown schema"),
    ('[1, 2]', "not a tuning database"),
])
def test_bad_file_is_a_clear_error_and_never_overwritten(tmp_path, content, message):
    path = tmp_path / "H200.json"
    path.write_text(content)
    with pytest.raises(tdb.DatabaseError, match=message) as error:
        tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    assert str(path) in str(error.value)
    assert path.read_text() == content
    with pytest.raises(tdb.DatabaseError, match=message):
        tdb.merge_files([path], tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_lookup_skips_a_corrupted_file_and_logs(user, shipped, caplog):
    user.mkdir()
    (user / "H200.json").write_text("{oops")
    with caplog.at_level("ERROR", logger="ss1bench.tuning"):
        problem = Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", H200)
        assert lookup.DatabaseLookup().launch_config(problem) is None
    assert "H200.json" in caplog.text and "not valid JSON" in caplog.text


def test_validation_catches_bad_records():
    data = database_with(**{KEY.text(): SMALL}).to_json()
    data["launch"][KEY.text()]["gate_rel_err"] = 0.5
    data["launch"]["forward/fp16/K1/N1/c3/bk64/bn128/M1"] = launch_record(SMALL)
    data["structures"]["fp16/K768/N3072/c4"] = {"block_k": 512, "block_n": 128}
    problems = tdb.validate_data(data)
    assert any("gate_rel_err" in p for p in problems)
    assert any("reduction factor 3" in p for p in problems)
    assert any("block_k = 512" in p for p in problems)
    with pytest.raises(tdb.DatabaseError, match="invalid tuning database"):
        tdb.TuningDatabase.from_json(data, "x.json")


def _write_many(path: str, writer: int, count: int) -> None:
    for i in range(count):
        key = tdb.LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 1 + writer * 1000 + i)
        tdb.write_records(path, database_with(**{key.text(): SMALL}))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "H200.json"
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    writers, count = 4, 15
    processes = [context.Process(target=_write_many, args=(str(path), w, count)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    database = tdb.read_database(path)
    assert len(database.launch) == writers * count
    assert not list(tmp_path.glob("*.tmp"))


def test_merge_newer_record_wins(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    older = tdb.TuningDatabase(gpu="H200", launch={KEY.text(): launch_record(BIG, date="2026-01-01T00:00:00Z")})
    newer = tdb.TuningDatabase(gpu="H200", launch={KEY.text(): launch_record(SMALL, date="2026-02-01T00:00:00Z")})
    tdb.write_records(old, older)
    tdb.write_records(new, newer)
    target = tmp_path / "H200.json"
    merged, changed = tdb.merge_files([new, old], target)
    assert changed == 1 and merged.launch[KEY.text()]["config"] == SMALL.to_dict()
    with pytest.raises(tdb.DatabaseError, match="holds A100 results"):
        tdb.write_records(tmp_path / "a100.json", tdb.TuningDatabase(gpu="A100"))
        tdb.merge_files([tmp_path / "a100.json"], target)


def test_triton_mismatch_warns_once(monkeypatch):
    monkeypatch.setattr(lookup, "_triton_warning_issued", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            lookup.warn_triton_mismatch("H200.json", "3.6.0", "3.9.0")
        lookup.warn_triton_mismatch("H200.json", "3.9.0", "3.9.0")
    assert len(caught) == 1 and "3.6.0" in str(caught[0].message) and "H200.json" in str(caught[0].message)
