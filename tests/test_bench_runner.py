"""The benchmark runner end to end on CPU: the CUDA timing calls are replaced by stand-ins, the
providers' modules run for real (SS1 through its pure-torch path), and the CSV it writes is
checked column by column."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from ss1bench.bench import measure as bench_measure
from ss1bench.bench import results, runner
from ss1bench.bench.measure import memory_floor_bytes, tightest
from ss1bench.bench.results import Progress
from ss1bench.bench.runner import plan, timings_in
from ss1bench.bench.schema import (
    PROVIDER_LABELS,
    PROVIDER_NAMES,
    PROVIDERS,
    RESULT_COLUMNS,
    SS1_PROVIDERS,
    provider_listing,
    providers_in,
)
from ss1bench.bench.shapes import Shape, resolve_shapes

BANDWIDTH = 4.0e12  # bytes/s the copy probe "measures"


@pytest.fixture
def cpu_as_cuda(monkeypatch):
    """Stand-ins for the CUDA-only calls; do_bench calls ``fn`` once and returns fixed quantiles.

    The returned medians cycle through 0.01..0.07 ms so the derived columns differ between providers.
    """
    calls = []

    def fake_do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        for tensor in grad_to_none or ():
            tensor.grad = None
        fn()
        calls.append(fn)
        median = 0.01 * (len(calls) % 7 + 1)  # differs between providers
        return [median, 0.9 * median, 1.2 * median] if quantiles else median

    import triton.testing

    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    monkeypatch.setattr(runner, "measure_copy_bandwidth", lambda device: BANDWIDTH)
    for name, value in [("synchronize", None), ("reset_peak_memory_stats", None), ("empty_cache", None)]:
        monkeypatch.setattr(torch.cuda, name, lambda *a, value=value, **k: value)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "NVIDIA H200")
    return calls


def _shapes() -> list[Shape]:
    # Two sets sharing one layer (timed once, reported under both), odd K/N, M = 1.
    return [Shape("setA", "a.one", 1, 96, 80), Shape("setA", "a.two", 8, 64, 48),
            Shape("setB", "b.same", 8, 64, 48)]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_run_writes_every_column_and_derived_values(tmp_path, cpu_as_cuda, mode, monkeypatch):
    user_db = tmp_path / "user-db"
    user_db.mkdir()
    (user_db / "H200.json").write_text("{}")
    monkeypatch.setenv("SS1BENCH_DB", str(user_db))
    cases = plan(_shapes(), [2, 4], ["fp32"], [mode])
    csv_path, frame = runner.run(cases, tmp_path, "bench_test", {"note": "cpu", "modes": [mode]},
                                 device=torch.device("cpu"), echo=lambda _: None)
    written = pd.read_csv(csv_path)
    assert list(written.columns) == list(RESULT_COLUMNS)
    # ss1_cached (inference: the weight stays put) has rows in fwd cases only.
    assert len(written) == len(cases) * (len(PROVIDER_NAMES) - (mode == "fwd+bwd"))
    assert ("ss1_cached" in set(written["provider"])) == (mode == "fwd")
    assert (written["status"] == "ok").all(), written.loc[written["status"] != "ok", "status"].tolist()
    assert set(written["gpu"]) == {"H200"}
    # The shared (M, K, N) shape: timed once, identical timings under both sets.
    assert len(cpu_as_cuda) == timings_in(cases)
    shared = written[(written["K"] == 64) & (written["N"] == 48)]
    a = shared[shared["shape_set"] == "setA"].drop(columns=["shape_set", "layer"]).reset_index(drop=True)
    b = shared[shared["shape_set"] == "setB"].drop(columns=["shape_set", "layer"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)

    scale = 3 if mode == "fwd+bwd" else 1
    for _, group in written.groupby(["shape_set", "M", "K", "N", "redn_factor"]):
        rows = group.set_index("provider")
        dense_ms = rows.loc["dense", "median_ms"]
        floor = rows.loc["memory_floor"]
        m, k, n, k_red = (int(floor[c]) for c in ("M", "K", "N", "k_red"))
        assert floor["median_ms"] == pytest.approx(memory_floor_bytes(m, k, n, k_red, 4, mode) / BANDWIDTH * 1e3)
        ideal = max(rows.loc["dense_reduced", "median_ms"], floor["median_ms"])
        for provider, row in rows.iterrows():
            assert row["dense_ms"] == dense_ms and row["ideal_ms"] == pytest.approx(ideal)
            assert row["speedup_vs_dense"] == pytest.approx(dense_ms / row["median_ms"])
            assert row["fraction_of_ideal"] == pytest.approx(ideal / row["median_ms"])
            assert row["dense_flops"] == scale * 2 * m * n * k
            if provider != "memory_floor":
                assert row["p20_ms"] < row["median_ms"] < row["p80_ms"]
                assert row["tflops"] == pytest.approx(row["flops"] / row["median_ms"] * 1e-9)
                assert row["peak_mem_mib"] == 3.0
        assert rows.loc["ss1_tuned", "flops"] == scale * 2 * m * n * k_red
        assert rows.loc["dense_reduced", "flops"] == scale * 2 * m * n * math.ceil(k / rows.iloc[0]["redn_factor"])
        ss1_params = rows.loc["ss1_tuned", "weight_params"]
        assert ss1_params == n * k_red
        for peer in ("lowrank", "monarch"):
            assert abs(rows.loc[peer, "weight_params"] - ss1_params) <= (k + n) / 2
        assert rows.loc["ss1_tuned", "block_k"] == rows.loc["ss1_heuristic", "block_k"]
        assert rows.loc["ss1_heuristic", "detail"].startswith("forward=" if mode == "fwd" else "sketch_rotate=")
        if mode == "fwd+bwd":  # the training path: the sketch passes around cuBLAS products
            assert [part.split("=")[0] for part in rows.loc["ss1_tuned", "detail"].split()] == [
                "sketch_rotate", "unsketch"]
        else:  # the cached layer: the tuned one's structure and counts, its forward of kind forward_rotated
            cached, tuned = rows.loc["ss1_cached"], rows.loc["ss1_tuned"]
            for column in ("block_k", "block_n", "k_red", "weight_params", "flops"):
                assert cached[column] == tuned[column], column
            assert cached["detail"].startswith("forward_rotated=") and "forward=" not in cached["detail"]
            assert cached["detail"].split("=", 1)[1] == tuned["detail"].split("=", 1)[1]  # CPU: heuristic

    meta = json.loads(csv_path.with_suffix(".json").read_text())
    for key in ("gpu", "device_name", "torch", "triton", "date", "git_commit", "database", "copy_bandwidth_gbs"):
        assert key in meta
    assert meta["complete"] is True and meta["cases_done"] == len(cases)
    assert meta["copy_bandwidth_gbs"] == BANDWIDTH / 1e9
    assert meta["database"].startswith(f"user {user_db / 'H200.json'}")
    assert ("ss1_cached" in meta["providers"]) == (mode == "fwd") and "ss1_tuned" in meta["providers"]
    assert frame.shape == written.shape
    # End-of-run table: one line per distinct (M, K, N, c), the shared shape listed once.
    assert len(results.summary_table(frame).splitlines()) == 1 + 2 * 2
    assert ("cached x" in results.summary_table(frame).splitlines()[0]) == (mode == "fwd")


@pytest.mark.parametrize(("mode", "chosen"), [("fwd", ["ss1_heuristic", "lowrank"]), ("fwd+bwd", ["ss1_tuned"]),
                                              ("fwd+bwd", ["ss1_cached", "monarch"])])
def test_a_run_of_some_providers_times_them_and_the_yardsticks(tmp_path, cpu_as_cuda, mode, chosen):
    """``--providers``: rows (and timings) of the chosen providers that run in the mode, plus the
    yardsticks every row's speedup and fraction of ideal need; the sidecar lists just those."""
    cases = plan(_shapes(), [2, 4], ["fp32"], [mode])
    args = {"modes": [mode], "providers": chosen}
    csv_path, frame = runner.run(cases, tmp_path, "bench_some", args, device=torch.device("cpu"),
                                 echo=lambda _: None, providers=chosen)
    timed = [p.name for p in providers_in(mode, chosen)]
    in_mode = [p for p in chosen if p != "ss1_cached" or mode == "fwd"]  # ss1_cached: fwd only
    assert timed == ["dense", "dense_reduced", "memory_floor", *in_mode]
    assert len(cpu_as_cuda) == timings_in(cases, chosen) < timings_in(cases)
    written = pd.read_csv(csv_path)
    assert len(written) == len(cases) * len(timed)
    for _, group in written.groupby(["shape_set", "M", "K", "N", "redn_factor"]):
        assert list(group["provider"]) == timed
        rows = group.set_index("provider")
        ideal = max(rows.loc["dense_reduced", "median_ms"], rows.loc["memory_floor", "median_ms"])
        assert list(rows["ideal_ms"]) == pytest.approx([ideal] * len(timed))
        assert (rows["dense_ms"] == rows.loc["dense", "median_ms"]).all()
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    assert sorted(meta["providers"]) == sorted(timed) and meta["args"]["providers"] == chosen
    header = results.summary_table(frame).splitlines()[0].split()
    assert ("SS1" in header) == ("ss1_tuned" in chosen)
    assert ("heuristic" in header, "low-rank" in header, "Monarch" in header, "cached" in header) == (
        "ss1_heuristic" in chosen, "lowrank" in chosen, "monarch" in chosen, False)


def test_failed_provider_is_a_row_not_a_crash(tmp_path, cpu_as_cuda, monkeypatch):
    real_build = runner.build_provider

    def build(name, *args, **kwargs):
        if name == "monarch":
            raise RuntimeError("out of shared memory\nsecond line")
        return real_build(name, *args, **kwargs)

    monkeypatch.setattr(runner, "build_provider", build)
    cases = plan([Shape("custom", "64x48", 4, 64, 48)], [2], ["fp32"], ["fwd"])
    _, frame = runner.run(cases, tmp_path, "bench_fail", {}, device=torch.device("cpu"), echo=lambda _: None)
    monarch = frame[frame["provider"] == "monarch"].iloc[0]
    assert monarch["status"] == "RuntimeError: out of shared memory"
    assert math.isnan(monarch["median_ms"]) and math.isnan(monarch["speedup_vs_dense"])
    assert (frame[frame["provider"] != "monarch"]["status"] == "ok").all()


def test_inputs_are_random_never_zero(cpu_as_cuda, monkeypatch):
    seen = []
    real_time = runner.time_module

    def spy(built, x, dy, warmup_ms, rep_ms, cuda_graph=False):
        seen.append((x, [p.detach().clone() for p in built.module.parameters()]))
        return real_time(built, x, dy, warmup_ms, rep_ms)

    monkeypatch.setattr(runner, "time_module", spy)
    inputs = runner._Inputs(4, 48, True, torch.Generator().manual_seed(0), torch.device("cpu"), torch.float32)
    case = plan([Shape("custom", "64x48", 4, 64, 48)], [2], ["fp32"], ["fwd+bwd"])[0]
    structure = runner.case_structure(case, torch.device("cpu"), torch.float32)
    for name in ("dense", "ss1_tuned", "lowrank", "monarch"):
        _, timing = runner._time_provider(name, case, structure, inputs, torch.device("cpu"), torch.float32, 1, 1)
        assert timing.status == "ok"
    for x, params in seen:
        assert (x != 0).float().mean() > 0.99
        for param in params:
            assert (param != 0).float().mean() > 0.99 and param.abs().max() <= 1


def test_schema_has_ss1_cached_for_fwd_only():
    names = [p.name for p in PROVIDERS]
    assert names[names.index("ss1_tuned") + 1] == "ss1_cached"
    cached = PROVIDERS[names.index("ss1_cached")]
    assert cached.measured and cached.modes == ("fwd",)
    assert PROVIDER_LABELS["ss1_cached"] == "SS1 (tuning database, rotated-weight cache)"
    assert "cache_rotated_weight()" in cached.description and "ss1_tuned" in cached.description
    assert "ss1_cached" in SS1_PROVIDERS  # an SSL layer: its rows carry block_k and block_n
    assert "ss1_cached" in [p.name for p in providers_in("fwd")]
    assert "ss1_cached" not in [p.name for p in providers_in("fwd+bwd")]
    assert [p.name for p in providers_in("fwd+bwd")] == [n for n in names if n != "ss1_cached"]
    assert "ss1_tuned, ss1_cached (fwd only), ss1_heuristic" in provider_listing(["fwd", "fwd+bwd"])
    assert "ss1_cached" not in provider_listing(["fwd+bwd"])
    assert provider_listing(["fwd"]) == ", ".join(names)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_build_ss1_cached_on_cpu(mode):
    from ss1bench.layer import SSL

    case = plan([Shape("custom", "64x48", 4, 64, 48)], [2], ["fp32"], [mode])[0]
    cpu = torch.device("cpu")
    structure = runner.case_structure(case, cpu, torch.float32)
    cached = runner.build_provider("ss1_cached", case, structure, cpu, torch.float32)
    tuned = runner.build_provider("ss1_tuned", case, structure, cpu, torch.float32)
    assert isinstance(cached.module, SSL) and cached.module.caches_rotated_weight
    assert not tuned.module.caches_rotated_weight
    assert cached.module.structure.key == tuned.module.structure.key
    assert (cached.block_k, cached.block_n) == (structure.block_k, structure.block_n)
    kinds = [part.split("=")[0] for part in cached.detail.split()]
    # fwd+bwd records autograd: the training path's passes, which rotate the weight every call (no cache)
    assert kinds == (["forward_rotated"] if mode == "fwd" else ["sketch_rotate", "unsketch"])


def test_the_rotated_weight_cache_is_filled_before_graph_capture(cpu_as_cuda, monkeypatch):
    """time_module's first call is eager: a CUDA-graph capture does not fill the cache (it returns
    None while capturing), so it must be full when the call is captured."""
    seen = []

    def fake_graphed(call):
        seen.append(layer._rotated is not None)
        return call

    monkeypatch.setattr(bench_measure, "graphed", fake_graphed)
    case = plan([Shape("custom", "64x48", 4, 64, 48)], [2], ["fp32"], ["fwd"])[0]
    cpu = torch.device("cpu")
    built = runner.build_provider("ss1_cached", case, runner.case_structure(case, cpu, torch.float32), cpu,
                                  torch.float32)
    layer = built.module
    assert layer._rotated is None
    timing = runner.time_module(built, torch.randn(4, 64), None, 1, 1, cuda_graph=True)
    assert seen == [True] and timing.status == "ok"


def test_plan_order_and_counts():
    shapes = resolve_shapes(["gpt2", "bert"], ["4x300x64"], [1, 4096])
    cases = plan(shapes, [2, 4], ["fp16", "bf16"], ["fwd", "fwd+bwd"])
    assert len(cases) == len(shapes) * 2 * 2 * 2
    assert [c.dtype for c in cases[:3]] == ["fp16"] * 3 and cases[-1].dtype == "bf16"
    # Every BERT layer is also a GPT-2 layer: timed once. Per dtype: dense once per shape and mode, then per
    # case 6 others in fwd (ss1_cached among them) and 5 in fwd+bwd.
    distinct = {(s.m, s.k, s.n) for s in shapes}
    assert timings_in(cases) == 2 * (2 * len(distinct) + (6 + 5) * 2 * len(distinct))
    assert timings_in([c for c in cases if c.mode == "fwd+bwd"]) == 2 * (len(distinct) + 5 * 2 * len(distinct))


def test_progress_line_reports_eta():
    import io

    stream = io.StringIO()
    progress = Progress(3, stream=stream, interval_s=0.0)
    for label in ("a", "b", "c"):
        progress.step(label)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("[3/3] 100%") and "eta 0s" in lines[-1]


def _sequence(runs):
    """A measure() that returns the given (median, p20, p80) runs in order, counting its calls."""
    calls = []

    def measure():
        calls.append(1)
        return list(runs[len(calls) - 1])
    return measure, calls


def test_tightest_times_once_when_the_spread_is_narrow():
    measure, calls = _sequence([(1.0, 0.95, 1.2)])
    assert tightest(measure) == [1.0, 0.95, 1.2] and len(calls) == 1


def test_tightest_retimes_a_bimodal_run_and_keeps_the_tight_one():
    measure, calls = _sequence([(0.042, 0.0087, 0.059), (0.0091, 0.0088, 0.0094)])
    assert tightest(measure) == [0.0091, 0.0088, 0.0094] and len(calls) == 2


def test_tightest_stops_after_its_retimes_and_keeps_the_tightest_seen():
    runs = [(3.0, 1.0, 4.0), (2.0, 1.0, 2.0), (5.0, 1.0, 6.0), (1.0, 1.0, 1.0)]
    measure, calls = _sequence(runs)
    assert tightest(measure, retimes=2) == [2.0, 1.0, 2.0] and len(calls) == 3


def test_time_module_reports_the_retimed_run(cpu_as_cuda, monkeypatch):
    """A provider whose first do_bench run is bimodal gets the re-timed quantiles in its row."""
    runs = iter([[0.042, 0.0087, 0.059], [0.0091, 0.0088, 0.0094]])
    monkeypatch.setattr(bench_measure, "do_bench", lambda call, *a, **k: (call(), next(runs))[1])
    case = plan([Shape("custom", "64x48", 4, 64, 48)], [2], ["fp32"], ["fwd"])[0]
    cpu = torch.device("cpu")
    built = runner.build_provider("dense", case, runner.case_structure(case, cpu, torch.float32), cpu,
                                  torch.float32)
    timing = runner.time_module(built, torch.randn(4, 64), None, 1, 1)
    assert (timing.median_ms, timing.p20_ms, timing.p80_ms) == (0.0091, 0.0088, 0.0094)


@pytest.mark.parametrize("provider", ["dense", "ss1_tuned"])
def test_a_captured_backward_writes_fresh_gradients_instead_of_accumulating(cpu_as_cuda, monkeypatch, provider):
    """The call captured for fwd+bwd drops the gradients an earlier run left, so a replay's
    gradients are that step's alone (no read-modify-write of x.grad inside the timed graph)."""
    captured = {}

    def fake_graphed(call):
        left = {name: torch.full_like(tensor, 1000.0) for name, tensor in [("x", x), *module.named_parameters()]}
        x.grad = left["x"]
        for name, param in module.named_parameters():
            param.grad = left[name]
        call()  # what the capture records
        captured.update({name: tensor.grad.clone() for name, tensor in [("x", x), *module.named_parameters()]})
        return call

    monkeypatch.setattr(bench_measure, "graphed", fake_graphed)
    case = plan([Shape("custom", "5x64x48", 5, 64, 48)], [2], ["fp32"], ["fwd+bwd"])[0]
    cpu = torch.device("cpu")
    built = runner.build_provider(provider, case, runner.case_structure(case, cpu, torch.float32), cpu,
                                  torch.float32)
    module = built.module
    x, dy = torch.randn(5, 64), torch.randn(5, 48)
    timing = runner.time_module(built, x, dy, 1, 1, cuda_graph=True)
    assert timing.status == "ok" and set(captured) == {"x", "weight", "bias"}
    xr = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    module(xr).backward(dy)
    assert torch.allclose(captured["x"], xr.grad, atol=1e-5)
    for name, param in module.named_parameters():
        assert torch.allclose(captured[name], param.grad, atol=1e-5), name


def test_the_run_metadata_names_the_database_serving_the_gpu(tmp_path, monkeypatch):
    """A GPU without a file of its own is served by a sibling's: the run's metadata says whose."""
    from ss1bench.bench.results import use_tuning_database
    from ss1bench.tuning import db as tdb

    monkeypatch.setenv(tdb.ENV_VAR, str(tmp_path / "no-user-db"))
    assert use_tuning_database("H200").startswith("shipped ss1bench/tuning_db/H200.json (sha256 ")
    assert "H200's records serve H100 (same architecture" in use_tuning_database("H100")
    assert use_tuning_database("MYSTERY9").startswith("no database file for MYSTERY9")
