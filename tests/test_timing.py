"""ss1bench.timing: the graph-or-eager rule of graph_bench_ms (no GPU needed: capture is faked)."""

from __future__ import annotations

import pytest
import torch

from ss1bench import timing


@pytest.fixture
def fake_bench(monkeypatch):
    timed = []

    def do_bench(fn, warmup_ms, rep_ms, quantiles=None, grad_to_none=None):
        timed.append(fn)
        return 2.5

    monkeypatch.setattr(timing, "do_bench", do_bench)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    return timed


def test_a_captured_call_is_timed_as_its_replay(monkeypatch, fake_bench):
    def replay():
        return None

    monkeypatch.setattr(timing, "graphed", lambda fn: replay)
    assert timing.graph_bench_ms(lambda: None, 1, 5) == (2.5, True)
    assert fake_bench == [replay]


def test_an_uncapturable_call_is_timed_eagerly(monkeypatch, fake_bench):
    def refuse(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    def call():
        return None

    monkeypatch.setattr(timing, "graphed", refuse)
    assert timing.graph_bench_ms(call, 1, 5) == (2.5, False)
    assert fake_bench == [call]


def test_other_errors_propagate(monkeypatch, fake_bench):
    def broken(fn):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(timing, "graphed", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        timing.graph_bench_ms(lambda: None, 1, 5)
    assert fake_bench == []


def test_kernel_ms_sums_every_kernel_of_one_call(monkeypatch):
    """GPU time per call: the kernel table's per-call microseconds, summed, in ms."""
    seen = []

    def table(call, repeats):
        seen.append(repeats)
        return [("gemm", 1500.0, 2), ("_ss1_sketch_kernel", 400.0, 1), ("memset", 100.0, 1)]

    monkeypatch.setattr(timing, "kernel_table", table)
    assert timing.kernel_ms(lambda: None, repeats=5) == pytest.approx(2.0)
    assert seen == [5]
