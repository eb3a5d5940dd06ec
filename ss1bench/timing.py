"""GPU timing shared by the tuner and the benchmarks: ``do_bench`` medians, optionally of CUDA-graph
replays.

Why graphs. ``triton.testing.do_bench`` flushes the L2 (a 256 MB memset) and records a CUDA event
before every call. When a call costs more host time than the flush costs GPU time, the GPU idles
between the start event and the kernel, and the host's launch cost is measured, not the kernel:
an eager SS1 call at M = 1 took 18-74 us of host time (H200, with and without launch plans,
docs/perf-notes.md) where a decode-sized kernel runs 5-15 us. Replaying a captured graph costs a
few microseconds of host time, so the flush hides it and the median is the GPU's time for the
call (L2 still flushed before every replay).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def graphed(call: Callable[[], object]) -> Callable[[], None]:
    """Capture ``call`` in a CUDA graph and return its replay.

    ``call`` runs once on a side stream first (compiles, cuBLAS workspaces), then once under
    capture. Tensors it allocates come from the graph's private pool and are rewritten by every
    replay; tensors it writes in place (``out=``) are written by every replay.
    Raises whatever capture raises (the caller decides whether to fall back to eager timing).
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    torch.cuda.synchronize()

    def replay() -> None:
        graph.replay()

    replay.graph = graph  # keeps the graph (and its memory pool) alive as long as the replay
    return replay


def do_bench(fn: Callable[[], object], warmup_ms: float, rep_ms: float,
             quantiles: Sequence[float] | None = None, grad_to_none=None):
    """``triton.testing.do_bench`` (L2 flushed before every call): the median in ms, or the
    ``quantiles`` list when given."""
    import triton.testing

    if quantiles is None:
        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                                             return_mode="median"))
    return [float(v) for v in triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                                                      quantiles=list(quantiles))]


def graph_bench_ms(fn: Callable[[], object], warmup_ms: float, rep_ms: float) -> tuple[float, bool]:
    """(median ms of ``fn`` replayed from a CUDA graph, True), or (eager median, False) when ``fn``
    cannot be captured. Capture errors other than "not capturable" propagate."""
    try:
        replay = graphed(fn)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        if "captur" not in str(exc).lower() and "graph" not in str(exc).lower():
            raise
        torch.cuda.synchronize()
        return do_bench(fn, warmup_ms, rep_ms), False
    return do_bench(replay, warmup_ms, rep_ms), True


def kernel_table(call: Callable[[], object], repeats: int = 3) -> list[tuple[str, float, int]]:
    """GPU kernels of one ``call`` (torch.profiler, after one warm-up call): ``(kernel name, mean
    GPU microseconds per call, launches per call)``, largest first. No L2 flush between calls."""
    from torch.profiler import ProfilerActivity, profile

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            call()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        time_us = getattr(event, "self_device_time_total", None)
        if time_us is None:
            time_us = getattr(event, "self_cuda_time_total", 0.0)
        if time_us > 0:
            rows.append((event.key, time_us / repeats, event.count // repeats))
    return sorted(rows, key=lambda row: -row[1])


def kernel_ms(call: Callable[[], object], repeats: int = 3) -> float:
    """GPU time of one ``call`` in ms: the self time of every kernel, copy and memset it runs,
    summed (:func:`kernel_table`: mean over ``repeats`` calls after one warm-up call). Host time
    does not count, so a call's wall time over this is what the host adds (launches, Python)."""
    return sum(time_us for _, time_us, _ in kernel_table(call, repeats)) / 1e3
