"""Tuning database: keys, round trip, lookup order, nearest bucket, errors, concurrent writers, merge."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import multiprocessing
import os
import warnings
from importlib.metadata import version

import pytest
import torch

from ss1bench.kernels.config import LaunchConfig, Problem
from ss1bench.tuning import db as tdb
from ss1bench.tuning import lookup
from ss1bench.tuning.keys import DTYPES, LaunchKey, StructureKey, nearest_bucket
from ss1bench.tuning.records import SCHEMA, SCHEMA_VERSION, DatabaseError, TuningDatabase
from ss1bench.tuning.validation import validate_data, validate_launch_record

H200 = "NVIDIA H200"


def launch_record(config: LaunchConfig, ms: float = 0.1, date: str = "2026-01-01T00:00:00Z",
                  triton: str = version("triton")) -> dict:
    return {"config": config.to_dict(), "ms": ms, "dense_ms": 0.2, "speedup": 0.2 / ms, "gate_rel_err": 1e-3,
            "gate_max_err": 5e-3, "date": date, "torch": "2.11.0", "triton": triton}


def database_with(gpu: str = "H200", **launch: LaunchConfig) -> TuningDatabase:
    database = TuningDatabase(gpu=gpu)
    for text, config in launch.items():
        database.launch[text] = launch_record(config)
    return database


KEY = LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 16)
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
    assert LaunchKey.parse(KEY.text()) == KEY
    skey = StructureKey("bf16", 4096, 14336, 8)
    assert StructureKey.parse(skey.text()) == skey
    with pytest.raises(ValueError, match="bad launch key"):
        LaunchKey.parse("forward/fp16/K768")


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
    assert list(data) == sorted(data) and data["schema"] == SCHEMA and data["version"] == SCHEMA_VERSION
    assert first.endswith(b"\n") and b'\n "gpu": "H200",\n' in first


def test_nearest_bucket_in_log2():
    buckets = [1, 16, 4096]
    assert nearest_bucket(1, buckets) == 1
    assert nearest_bucket(8, buckets) == 16
    assert nearest_bucket(4, buckets) == 1  # tie (2 octaves each way): the smaller bucket
    assert nearest_bucket(300, buckets) == 4096
    assert nearest_bucket(10**6, buckets) == 4096


def test_lookup_user_before_shipped_and_nearest_bucket(user, shipped):
    other = LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 4096)
    (shipped / "H200.json").write_text(database_with(**{KEY.text(): BIG, other.text(): BIG}).dumps())
    tdb.write_records(user / "H200.json", database_with(**{KEY.text(): SMALL}))
    answers = lookup.DatabaseLookup()

    def ask(m: int) -> LaunchConfig | None:
        return answers.launch_config(Problem("forward", m, 768, 3072, 4, 64, 128, "fp16", H200))

    assert ask(16) == SMALL  # both have M16: the user's wins
    assert ask(4096) == BIG  # only shipped has M4096
    assert ask(8) == SMALL and ask(2048) == BIG  # nearest buckets
    assert answers.launch_config(Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", "")) is None  # CPU
    # another structure of the same layer: no record of its own, the nearest tuned shape's (this layer's)
    other_structure = Problem("forward", 16, 768, 3072, 4, 32, 128, "fp16", H200)
    assert answers.explain(other_structure, 232448).source == "nearest shape"
    # an A100 has no file: the H200's records serve it (issue 20), pruned by its own shared memory
    a100 = Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", "NVIDIA A100-SXM4-80GB")
    assert answers.launch_config(a100) == SMALL
    assert answers.launch_config(Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", "Mystery 9")) is None


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
    with pytest.raises(DatabaseError, match=message) as error:
        tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    assert str(path) in str(error.value)
    assert path.read_text() == content
    with pytest.raises(DatabaseError, match=message):
        tdb.merge_files([path], tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_lookup_skips_a_corrupted_file_and_logs(user, shipped, caplog):
    user.mkdir()
    (user / "H200.json").write_text("{oops")
    with caplog.at_level("WARNING", logger="ss1bench.tuning"):
        problem = Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", H200)
        assert lookup.DatabaseLookup().launch_config(problem) is None
    assert "H200.json" in caplog.text and "not valid JSON" in caplog.text


def test_validation_catches_bad_records():
    data = database_with(**{KEY.text(): SMALL}).to_json()
    data["launch"][KEY.text()]["gate_rel_err"] = 0.5
    data["launch"]["forward/fp16/K1/N1/c3/bk64/bn128/M1"] = launch_record(SMALL)
    data["structures"]["fp16/K768/N3072/c4"] = {"block_k": 512, "block_n": 128}
    problems = validate_data(data)
    assert any("gate_rel_err" in p for p in problems)
    assert any("reduction factor 3" in p for p in problems)
    assert any("block_k = 512" in p for p in problems)
    with pytest.raises(DatabaseError, match="invalid tuning database"):
        TuningDatabase.from_json(data, "x.json")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("gate_rel_err", "valid"), [(0.0105, False), (0.0095, True), (0.0, True), (-1e-6, False)],
                         ids=["just-over", "just-under", "zero", "negative"])
def test_a_shipped_record_must_have_passed_the_gate(dtype, gate_rel_err, valid):
    # 1e-2 is the gate's relative Frobenius bound (ss1bench/tuning/gate.py), written out so that
    # a loosened bound here or there fails this test instead of moving with it
    key = LaunchKey("forward", dtype, 768, 3072, 4, 64, 128, 16)
    record = {**launch_record(SMALL), "gate_rel_err": gate_rel_err}
    problems = validate_launch_record(key.text(), record)
    if valid:
        assert problems == [], f"gate_rel_err={gate_rel_err} refused"
    else:
        assert problems, f"gate_rel_err={gate_rel_err} accepted: the bound is not 1e-2"
        assert len(problems) == 1 and "gate_rel_err" in problems[0] and "<= 0.01" in problems[0], problems


def _write_many(path: str, writer: int, count: int) -> None:
    for i in range(count):
        key = LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, 1 + writer * 1000 + i)
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


@contextlib.contextmanager
def _disk_full_after(limit: int):
    """Writes past ``limit`` bytes of any file fail with EFBIG (RLIMIT_FSIZE; Python ignores
    SIGXFSZ), as on a full disk: the first ``limit`` bytes land, the rest raise OSError."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def _fsync_fails():
    """``os.fsync`` raises EIO, as a disk that fails to flush: the bytes are written, not kept."""
    def fsync(fd):
        raise OSError(errno.EIO, "fsync failed (test)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        yield


@pytest.mark.parametrize("writer", ["write_records", "merge_files"])
@pytest.mark.parametrize("failure", ["disk-full", "fsync-error"])
def test_a_write_failing_partway_leaves_the_old_file_and_no_temporary(tmp_path, writer, failure):
    """The atomic write: a failure while the new text is written leaves the old file byte for byte
    and removes its temporary file (the concurrent-writer test cannot see an in-place write: the
    lock serialises the writers)."""
    path = tmp_path / "H200.json"
    tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    before = path.read_bytes()
    bigger = database_with(**{LaunchKey("forward", "fp16", 768, 3072, 4, 64, 128, m).text(): BIG
                              for m in range(1, 300)})
    limit = 16 * 1024
    assert len(before) < limit < len(bigger.dumps())
    source = tmp_path / "source" / "H200.json"
    if writer == "merge_files":
        tdb.write_records(source, bigger)
    fails = _disk_full_after(limit) if failure == "disk-full" else _fsync_fails()
    with fails, pytest.raises(OSError):
        if writer == "write_records":
            tdb.write_records(path, bigger)
        else:
            tdb.merge_files([source], path)
    after = path.read_bytes()
    assert after == before, f"the old file changed: {len(before)} bytes before, {len(after)} after"
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert left == ["H200.json", "H200.json.lock"], f"files left behind: {left}"


def test_merge_newer_record_wins(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    older = TuningDatabase(gpu="H200", launch={KEY.text(): launch_record(BIG, date="2026-01-01T00:00:00Z")})
    newer = TuningDatabase(gpu="H200", launch={KEY.text(): launch_record(SMALL, date="2026-02-01T00:00:00Z")})
    tdb.write_records(old, older)
    tdb.write_records(new, newer)
    target = tmp_path / "H200.json"
    merged, changed = tdb.merge_files([new, old], target)
    assert changed == 1 and merged.launch[KEY.text()]["config"] == SMALL.to_dict()
    with pytest.raises(DatabaseError, match="holds A100 results"):
        tdb.write_records(tmp_path / "a100.json", TuningDatabase(gpu="A100"))
        tdb.merge_files([tmp_path / "a100.json"], target)


def test_triton_mismatch_warns_once(monkeypatch):
    monkeypatch.setattr(lookup, "_triton_warning_issued", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            lookup.warn_triton_mismatch("H200.json", "3.6.0", "3.9.0")
        lookup.warn_triton_mismatch("H200.json", "3.9.0", "3.9.0")
    assert len(caught) == 1 and "3.6.0" in str(caught[0].message) and "H200.json" in str(caught[0].message)


# ---- files that must not break anything ---------------------------------------------------------------

BAD_FILES = {
    "not-json": b"{oops",
    "not-utf8": b'{"schema": "ss1bench.tuning_db", "gpu": "H\xff200"}',
    "deeply-nested": b"[" * 200_000 + b"]" * 200_000,
    "invalid-record": json.dumps({"schema": SCHEMA, "version": 1, "gpu": "H200", "metadata": {"runs": 3}}).encode(),
}


@pytest.mark.parametrize("content", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_bad_file_is_a_database_error_naming_it(tmp_path, content):
    path = tmp_path / "H200.json"
    path.write_bytes(content)
    with pytest.raises(DatabaseError) as error:
        tdb.read_database(path)
    assert str(path) in str(error.value)
    with pytest.raises(DatabaseError):
        tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    assert path.read_bytes() == content


@pytest.mark.parametrize("content", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_bad_user_file_is_skipped_with_one_warning_and_the_shipped_one_answers(user, shipped, caplog, content):
    (shipped / "H200.json").write_text(database_with(**{KEY.text(): BIG}).dumps())
    user.mkdir()
    (user / "H200.json").write_bytes(content)
    answers = lookup.DatabaseLookup()
    with caplog.at_level("WARNING", logger="ss1bench.tuning"):
        for m in (16, 8, 16, 32):
            assert answers.launch_config(Problem("forward", m, 768, 3072, 4, 64, 128, "fp16", H200)) == BIG
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert str(user / "H200.json") in warned[0].getMessage()


@pytest.mark.parametrize(("field", "value"), [
    ("ms", math.inf), ("ms", math.nan), ("dense_ms", math.inf), ("dense_ms", -math.inf), ("speedup", math.inf),
    ("speedup", None), ("relative_time", math.inf), ("relative_time", math.nan), ("runs", {"a": 1}), ("runs", [1]),
])
def test_validation_rejects_what_writes_and_show_cannot_handle(field, value):
    data = database_with(**{KEY.text(): SMALL}).to_json()
    if field == "relative_time":
        data["structures"]["fp16/K768/N3072/c4"] = {"block_k": 64, "block_n": 128,
                                                    "relative_time": {"64x128": 1.0, "32x128": value}}
    elif field == "runs":
        data["metadata"]["runs"] = value
    elif value is None:
        del data["launch"][KEY.text()][field]
    else:
        data["launch"][KEY.text()][field] = value
    text = json.dumps(data)  # Infinity and NaN as Python's json writes them
    problems = validate_data(json.loads(text))
    assert len(problems) == 1 and field in problems[0], problems


def test_a_valid_file_still_validates():
    database = database_with(**{KEY.text(): SMALL})
    database.structures["fp16/K768/N3072/c4"] = {"block_k": 64, "block_n": 128, "relative_time": {"64x128": 1.0}}
    database.metadata["runs"] = [{"date": "2026-01-01T00:00:00Z"}]
    assert validate_data(database.to_json()) == []


# ---- atomic writes: leftovers, permissions, links -------------------------------------------------------


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "H200.json"
    tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    stale = tmp_path / "H200.json.x1y2z3.tmp"  # what a writer killed before os.replace leaves
    stale.write_text('{"half": ')
    other = tmp_path / "A100.json.abc.tmp"  # another file's: not ours to remove
    other.write_text("")
    tdb.write_records(path, database_with(**{KEY.text(): BIG}))
    assert not stale.exists() and other.exists()
    assert tdb.read_database(path).launch[KEY.text()]["config"] == BIG.to_dict()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_a_write_keeps_the_files_mode(tmp_path, mode):
    path = tmp_path / "H200.json"
    tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    os.chmod(path, mode)
    tdb.write_records(path, database_with(**{KEY.text(): BIG}))
    assert (path.stat().st_mode & 0o777) == mode
    tdb.merge_files([path], path)
    assert (path.stat().st_mode & 0o777) == mode


def test_a_read_only_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / "H200.json"
    tdb.write_records(path, database_with(**{KEY.text(): SMALL}))
    os.chmod(path, 0o444)
    before = path.read_bytes()
    for write in (lambda: tdb.write_records(path, database_with(**{KEY.text(): BIG})),
                  lambda: tdb.merge_files([path], path)):
        with pytest.raises(DatabaseError, match=r"read-only \(mode 444\).*chmod u\+w"):
            write()
    assert path.read_bytes() == before and (path.stat().st_mode & 0o777) == 0o444
    with pytest.raises(DatabaseError, match="read-only"):
        tdb.check_writable(path)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("dangling", [False, True], ids=["existing", "dangling"])
def test_a_symlinked_database_is_written_through_the_link(tmp_path, dangling):
    real = tmp_path / "store" / "H200.json"
    real.parent.mkdir()
    if not dangling:
        tdb.write_records(real, database_with(**{KEY.text(): SMALL}))
    link = tmp_path / "user" / "H200.json"
    link.parent.mkdir()
    link.symlink_to(real)
    tdb.write_records(link, database_with(**{KEY.text(): BIG}))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert tdb.read_database(real).launch[KEY.text()]["config"] == BIG.to_dict()
    tdb.merge_files([real], link)
    assert link.is_symlink()


# ---- merge: real instants and the tie rule --------------------------------------------------------------


@pytest.mark.parametrize(("first", "second", "winner"), [
    # 10:00+05:00 is 05:00Z: the record dated 06:00Z is the newer one, though it sorts first as text
    ("2026-03-01T10:00:00+05:00", "2026-03-01T06:00:00Z", "second"),
    ("2026-03-01T06:00:00Z", "2026-03-01T10:00:00+05:00", "first"),
    ("2026-03-01T06:00:00", "2026-03-01T05:59:59Z", "first"),  # no offset: UTC
    ("not a date", "2020-01-01T00:00:00Z", "second"),  # an unreadable date is the oldest
])
def test_merge_compares_instants(tmp_path, first, second, winner):
    sources = []
    for name, config, date in (("first", SMALL, first), ("second", BIG, second)):
        path = tmp_path / f"{name}.json"
        path.write_text(TuningDatabase(gpu="H200", launch={KEY.text(): launch_record(config, date=date)}).dumps())
        sources.append(path)
    expected = (SMALL if winner == "first" else BIG).to_dict()
    for order in (sources, sources[::-1]):
        target = tmp_path / f"target-{order[0].stem}.json"
        merged, _ = tdb.merge_files(order, target)
        assert merged.launch[KEY.text()]["config"] == expected


def test_merge_tie_goes_to_the_faster_record_in_any_order(tmp_path):
    date = "2026-03-01T06:00:00Z"
    same_instant = "2026-03-01T11:00:00+05:00"
    slow = tmp_path / "slow.json"
    fast = tmp_path / "fast.json"
    slow.write_text(TuningDatabase(gpu="H200", launch={KEY.text(): launch_record(BIG, ms=0.2, date=date)}).dumps())
    fast.write_text(TuningDatabase(
        gpu="H200", launch={KEY.text(): launch_record(SMALL, ms=0.1, date=same_instant)}).dumps())
    results = []
    for index, order in enumerate(([slow, fast], [fast, slow])):
        merged, _ = tdb.merge_files(order, tmp_path / f"target{index}.json")
        results.append(merged.launch[KEY.text()])
    assert results[0] == results[1] and results[0]["config"] == SMALL.to_dict()
    # equal instants and equal ms: the same record wins whichever side holds it
    a = {**launch_record(SMALL, date=date), "note": "a"}
    b = {**launch_record(SMALL, date=date), "note": "b"}
    left = TuningDatabase(gpu="H200", launch={KEY.text(): a})
    left.merge(TuningDatabase(gpu="H200", launch={KEY.text(): b}))
    right = TuningDatabase(gpu="H200", launch={KEY.text(): b})
    right.merge(TuningDatabase(gpu="H200", launch={KEY.text(): a}))
    assert left.launch == right.launch


# ---- where the files are ---------------------------------------------------------------------------------


def test_a_missing_ss1bench_db_location_is_said_once(tmp_path, shipped, monkeypatch, caplog):
    (shipped / "H200.json").write_text(database_with(**{KEY.text(): BIG}).dumps())
    missing = tmp_path / "nonexistent" / "dir"
    monkeypatch.setenv(tdb.ENV_VAR, str(missing))
    monkeypatch.setattr(tdb, "_warned_locations", set())
    with caplog.at_level("WARNING", logger="ss1bench.tuning"):
        for _ in range(2):
            answers = lookup.DatabaseLookup()  # a fresh lookup reads the files again: still said once
            assert answers.launch_config(Problem("forward", 16, 768, 3072, 4, 64, 128, "fp16", H200)) == BIG
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and f"SS1BENCH_DB={missing} does not exist" in warned[0], warned
    assert "shipped" in warned[0]


def test_fingerprint_follows_the_files_serving_the_gpu(user, shipped, monkeypatch):
    """The digest a traced SS1 call carries into torch.compile's cache keys (``kernels/traced.py``):
    it changes when a file serving the GPU changes (read again after ``reset``, as the answers are)
    and with the GPU; off CUDA it is ``"cpu"``."""
    (shipped / "H200.json").write_text(database_with(**{KEY.text(): BIG}).dumps())
    answers = lookup.DatabaseLookup()
    monkeypatch.setattr(answers, "_device_name", lambda index: H200)
    gpu = torch.device("cuda", 0)
    shipped_only = answers.fingerprint(gpu)
    assert answers.fingerprint(torch.device("cpu")) == "cpu"
    tdb.write_records(user / "H200.json", database_with(**{KEY.text(): SMALL}))  # a `tune` run
    assert answers.fingerprint(gpu) == shipped_only
    answers.reset()
    tuned = answers.fingerprint(gpu)
    assert tuned != shipped_only
    monkeypatch.setattr(answers, "_device_name", lambda index: "NVIDIA A100-SXM4-80GB")  # served by H200's files
    assert answers.fingerprint(gpu) not in (shipped_only, tuned)
