"""The measuring helpers of scripts/train_step_profile.py, on hand-made inputs (the script itself
needs a GPU)."""

from __future__ import annotations

import gc
import json
import os
import threading
import time

import pytest
from conftest import load_script

profile_script = load_script("train_step_profile")


class FakeProfile:
    """Writes a hand-made Chrome trace where the profiler would write its own."""

    def __init__(self, events: list[dict]) -> None:
        self.events = events

    def export_chrome_trace(self, path: str) -> None:
        with open(path, "w") as handle:
            json.dump({"traceEvents": self.events}, handle)


def test_gpu_gaps_sums_the_idle_time_between_kernels_and_names_what_the_host_did():
    events = [
        {"cat": "kernel", "ts": 0, "dur": 10, "name": "first"},
        {"cat": "kernel", "ts": 110, "dur": 10, "name": "after_long_gap"},
        {"cat": "kernel", "ts": 125, "dur": 5, "name": "after_short_gap"},
        {"cat": "kernel", "ts": 128, "dur": 4, "name": "overlapping"},  # starts before the last one ends
        {"ph": "X", "cat": "cpu_op", "ts": 20, "dur": 50, "name": "aten::host_work"},
        {"ph": "X", "cat": "python_function", "ts": 300, "dur": 50, "name": "after_every_kernel"},
        {"ph": "X", "cat": "gpu_memcpy", "ts": 30, "dur": 5, "name": "not_a_host_event"},
    ]
    idle_ms, gaps = profile_script.gpu_gaps(FakeProfile(events), steps=2)
    assert idle_ms == pytest.approx((100 + 5) / 1e3 / 2)  # us -> ms, per step
    assert [(round(ms, 6), kernel) for ms, kernel, _ in gaps] == [(0.1, "after_long_gap"), (0.005, "after_short_gap")]
    assert gaps[0][2] == ["aten::host_work (0.05 ms)"] and gaps[1][2] == []


def test_gpu_gaps_without_two_kernels_reports_nothing():
    assert profile_script.gpu_gaps(FakeProfile([{"cat": "kernel", "ts": 0, "dur": 1, "name": "k"}]), 1) == (0.0, [])


def test_host_self_ms_charges_each_event_its_own_time_on_its_own_thread():
    events = [
        {"ph": "X", "cat": "python_function", "tid": 1, "ts": 0, "dur": 100, "name": "call"},
        {"ph": "X", "cat": "python_function", "tid": 1, "ts": 10, "dur": 30, "name": "run"},
        {"ph": "X", "cat": "cuda_driver", "tid": 1, "ts": 20, "dur": 8, "name": "cuLaunchKernel"},
        {"ph": "X", "cat": "python_function", "tid": 1, "ts": 50, "dur": 30, "name": "run"},
        {"ph": "X", "cat": "cuda_driver", "tid": 1, "ts": 60, "dur": 8, "name": "cuLaunchKernel"},
        # another thread, overlapping in time: not nested in "call"
        {"ph": "X", "cat": "python_function", "tid": 2, "ts": 5, "dur": 50, "name": "run"},
        {"cat": "kernel", "tid": 7, "ts": 20, "dur": 500, "name": "not_a_host_event"},
    ]
    rows = profile_script.host_self_ms(events, steps=2)
    assert [(round(ms, 6), calls, name) for ms, calls, name in rows] == [
        (0.047, 1.5, "run"),  # (22 + 22 + 50) us / 2 steps
        (0.02, 0.5, "call"),  # 100 - 30 - 30
        (0.008, 1.0, "cuLaunchKernel"),
    ]


def test_launch_clock_times_each_launch_by_kind_and_restores_run(monkeypatch):
    from torch._inductor.runtime import triton_heuristics
    from torch._inductor.runtime.hints import HeuristicType

    def run(autotuner, *args, stream):
        time.sleep(0.002 if autotuner.heuristic_type == HeuristicType.USER_AUTOTUNE else 0.0)
        return args, stream

    monkeypatch.setattr(triton_heuristics.CachingAutotuner, "run", run)
    user, own = (object.__new__(triton_heuristics.CachingAutotuner) for _ in range(2))
    user.heuristic_type, own.heuristic_type = HeuristicType.USER_AUTOTUNE, HeuristicType.POINTWISE
    with profile_script.LaunchClock() as clock:
        assert user.run(1, 2, stream=0) == ((1, 2), 0)  # the launch itself still runs
        user.run(stream=0)
        own.run(stream=0)
    assert triton_heuristics.CachingAutotuner.run is run
    assert clock.ns["user"][1] == 2 and clock.ns["inductor"][1] == 1
    assert clock.ns["user"][0] >= 4e6 > clock.ns["inductor"][0]
    assert clock.summary(steps=2).startswith("user 1 x ")


def test_gc_clock_counts_collections_by_generation_and_removes_its_callback():
    with profile_script.GcClock() as clock:
        gc.collect(0)
        gc.collect(2)
    assert clock.collections == [1, 0, 1] and clock.seconds > 0
    assert clock._callback not in gc.callbacks


@pytest.mark.skipif(not profile_script.Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_thread_clock_charges_each_thread_its_own_cpu_time():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(100))

    worker = threading.Thread(target=spin, name="spinner")
    worker.start()
    try:
        with profile_script.ThreadClock() as clock:
            time.sleep(0.3)  # the main thread sleeps: only the spinner spends CPU
    finally:
        stop.set()
        worker.join()
    spinner = [ms for name, ms in clock.ms.items() if "(spinner)" in name]
    main = [ms for name, ms in clock.ms.items() if "(MainThread)" in name]
    assert spinner and spinner[0] > 100  # most of the 300 ms
    assert main and main[0] < spinner[0] / 2
    label = next(name for name in clock.ms if "(spinner)" in name)
    assert clock.switches[label] >= 0 and 0 <= clock.cpu[label] < (os.cpu_count() or 1)
    assert not clock.wait_ms[label] < 0  # a run-queue wait in ms (NaN where the kernel keeps no schedstat)
    assert 0 <= clock.steal <= 1
    summary = clock.summary(steps=1)
    assert summary.split(" [")[0].endswith("(spinner)")  # the busiest thread first
    assert f"steal {clock.steal:.1%}; throttled" in summary and f"cpu {clock.cpu[label]})" in summary
    assert all(0 < us < 1e6 for us in clock.loop_us)


def test_thread_clock_reads_what_proc_gives(tmp_path, monkeypatch):
    """/proc/stat's steal column and per-thread schedstat, status and stat fields, from hand-made
    files: the deltas over the span, the CPU last run on."""
    task = tmp_path / "task" / "4242"
    task.mkdir(parents=True)
    proc_stat = tmp_path / "stat"

    cgroup_stat = tmp_path / "cpu.stat"

    def write(cpu_ns: int, wait_ns: int, switches: int, cpu: int, steal: int, total_rest: int,
              throttled_us: int) -> None:
        (task / "comm").write_text("python3\n")
        stat_fields = ["S"] + ["0"] * 35 + [str(cpu)] + ["0"] * 13  # fields 3..52; field 39 is the CPU
        (task / "stat").write_text("4242 (python3) " + " ".join(stat_fields) + "\n")
        (task / "schedstat").write_text(f"{cpu_ns} {wait_ns} 7\n")
        (task / "status").write_text(f"Name:\tpython3\nvoluntary_ctxt_switches:\t3\n"
                                     f"nonvoluntary_ctxt_switches:\t{switches}\n")
        proc_stat.write_text(f"cpu  {total_rest} 0 0 0 0 0 0 {steal} 0 0\ncpu0 1 2 3\n")
        cgroup_stat.write_text(f"usage_usec 5\nnr_periods 4\nnr_throttled 2\nthrottled_usec {throttled_us}\n")

    real_path = profile_script.Path

    def fake_path(name):
        return {"/proc/self/task": tmp_path / "task", "/proc/stat": proc_stat,
                "/sys/fs/cgroup/cpu.stat": cgroup_stat}.get(str(name), real_path(name))

    monkeypatch.setattr(profile_script, "Path", fake_path)
    write(cpu_ns=1_000_000, wait_ns=500_000, switches=4, cpu=2, steal=10, total_rest=990, throttled_us=1000)
    clock = profile_script.ThreadClock().__enter__()
    write(cpu_ns=21_000_000, wait_ns=4_500_000, switches=14, cpu=5, steal=30, total_rest=1170,
          throttled_us=7000)
    clock.__exit__(None, None, None)
    assert clock.ms == {"python3 [4242]": pytest.approx(20.0)}
    assert clock.wait_ms == {"python3 [4242]": pytest.approx(4.0)}
    assert clock.switches == {"python3 [4242]": 10} and clock.cpu == {"python3 [4242]": 5}
    assert clock.steal == pytest.approx(20 / 200)
    assert clock.throttled_ms == pytest.approx(6.0)
    clock.loop_us = (400.0, 600.0)
    assert clock.summary(steps=2) == ("python3 [4242] 10.00 (wait 2.00, 5.0 preempted, cpu 5); steal 10.0%; "
                                      "throttled 3.00; python loop 400/600 us")
