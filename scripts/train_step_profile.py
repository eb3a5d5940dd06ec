"""Where a GPT-2 training step's time goes, dense against SS1: wall, GPU kernel time, host calls.

A GPT-2 (vocab 50304, ``--layers`` blocks, batch 8 x 1024) trained one step at a time as
``ss1bench e2e --train`` does (its ``TrainStep``: ``zero_grad``, forward with labels under bf16
autocast, ``backward``, fused AdamW), eager and under ``torch.compile``, dense and converted with
``convert_to_ss_linear`` at ``--redn-factor``. For each it prints the first call's seconds, the
wall ms per step (10 steps, synchronized), the GPU kernel ms (torch.profiler), their ratio, and
per step the CUDA launches, cudaMalloc / cudaFree, synchronizations, copies and memsets, then
the host operations with the most own CPU time (all threads: the autograd engine's too).
It also gives the host time of each phase (zero_grad + forward, backward, optimizer step): the
GPU is first kept busy with ``torch.cuda._sleep``, so the host never waits on it and the time to
enqueue a phase is what the host spends on it (a little above the unloaded cost: the launch queue
is deep). A step is host-bound when its host time exceeds its GPU kernel time.

Two more columns say what keeps the GPU waiting when wall time runs above kernel time: the GPU's
idle time per step in the profiled steps (the time between kernels), with the host operations
that overlap the longest gaps listed for SS1, and the Python garbage collector's time and
collections per step over the timed steps (``gc.callbacks``). Each run also lists, per step over
the timed steps, every busy thread's CPU time, its time waiting for a CPU on a run queue and its
involuntary context switches, and the share of the machine's CPU time the hypervisor stole: what
tells a process kept off its CPUs from one that spends its host time running. ``--gc-freeze`` calls
``gc.freeze()`` after the warm-up steps. ``--trace DIR`` writes one step of each SS1 run as a
Chrome trace. ``--python-functions N`` profiles each run again with Python call stacks and lists
the host events with the most own time (a Python function's own time excludes the operations it
calls), which names the Python that a host-bound compiled step spends its time in;
``--code-dir DIR`` keeps the code Inductor generated for each run. ``--launch-host`` times the
host side of every Triton launch the generated code makes, ss1bench's user-defined kernels apart
from Inductor's own.
``TORCHINDUCTOR_CPP_WRAPPER=1`` in the environment runs the compiled steps with Inductor's C++
wrapper.

    python3 scripts/train_step_profile.py --layers 4 [--modes eager,compiled] [--providers dense,ss1] [--trace DIR]
        [--gc-freeze] [--python-functions N] [--code-dir DIR] [--launch-host]
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch._inductor.runtime.cache_dir_utils import cache_dir
from torch.profiler import ProfilerActivity, profile

from ss1bench import convert_to_ss_linear
from ss1bench.e2e.timing import TrainStep
from ss1bench.timing import kernel_ms

#: Profiler events counted per step, by what they are.
HOST_CALLS = {
    "launches": ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC"),
    "mallocs": ("cudaMalloc",),
    "frees": ("cudaFree",),
    "syncs": ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"),
    "copies": ("cudaMemcpyAsync", "cudaMemcpy"),
    "memsets": ("cudaMemsetAsync",),
}
PROFILED_STEPS = 3
#: Steps timed for the wall time (and clocked for the collector and the threads).
TIMED_STEPS = 10
#: GPU cycles slept before each host-timed step (~0.15 s on an H200: longer than any step's host time).
SLEEP_CYCLES = 300_000_000
HOST_REPEATS = 7
#: Host operations listed per long GPU gap, and gaps listed per SS1 run.
GAP_OPS, GAPS_LISTED = 6, 8
#: Threads listed with their CPU time per step when they spend at least this many ms.
THREAD_MS = 0.2
#: Chrome-trace categories of host events.
HOST_CATEGORIES = ("cpu_op", "python_function", "user_annotation", "cuda_runtime", "cuda_driver")


def python_loop() -> int:
    """A fixed piece of pure Python (a few ms) whose time says how fast the process's CPU runs
    Python at the moment: a slow process whose threads neither wait nor get throttled runs it slower."""
    total = 0
    for i in range(20_000):
        total += i * i % 7
    return total


class GcClock:
    """Time spent in the garbage collector and collections per generation while active."""

    def __init__(self) -> None:
        self.seconds, self.collections, self._start = 0.0, [0, 0, 0], 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)


class ThreadClock:
    """Per thread of the process while active (Linux: ``/proc/self/task``): its CPU time, its time
    waiting on a run queue for a CPU, its involuntary context switches and the CPU it last ran on;
    and for the whole machine the share of CPU time the hypervisor stole (``/proc/stat``). So a
    host-bound step shows which threads spend the time (the main thread, the autograd engine's
    device thread, something in the background) and whether they were kept off a CPU."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}  # CPU ms per thread
        self.wait_ms: dict[str, float] = {}  # ms waiting on a run queue per thread
        self.switches: dict[str, int] = {}  # involuntary context switches per thread
        self.cpu: dict[str, int] = {}  # the CPU each thread last ran on
        self.steal = float("nan")  # share of all CPUs' time stolen by the hypervisor
        self.throttled_ms = float("nan")  # ms the process's cgroup was held back by its CPU quota
        self.loop_us = (float("nan"), float("nan"))  # python_loop()'s median us before and after

    @staticmethod
    def _snapshot() -> dict[str, tuple[float, float, int, int]]:
        """{thread label: (CPU ms, run-queue wait ms, involuntary switches, last CPU)}."""
        names = {thread.native_id: thread.name for thread in threading.enumerate()}
        times = {}
        for task in Path("/proc/self/task").iterdir():
            try:
                comm = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()  # fields[0] is stat's field 3
                schedstat = task / "schedstat"
                if schedstat.exists():  # nanoseconds on the CPU, nanoseconds waiting for one
                    on_cpu, waiting = (int(v) / 1e6 for v in schedstat.read_text().split()[:2])
                else:  # utime + stime in clock ticks; no wait figure
                    on_cpu = (int(fields[11]) + int(fields[12])) * 1e3 / os.sysconf("SC_CLK_TCK")
                    waiting = float("nan")
                status = (task / "status").read_text()
                switches = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
                cpu = int(fields[36])
            except (OSError, ValueError, IndexError):  # the thread ended meanwhile, or no such field
                continue
            label = f"{comm}" + (f" ({names[int(task.name)]})" if int(task.name) in names else "")
            times[f"{label} [{task.name}]"] = (on_cpu, waiting, switches, cpu)
        return times

    @staticmethod
    def _cpu_ticks() -> tuple[int, int] | None:
        """(stolen, all) clock ticks of all CPUs since boot, or None without ``/proc/stat``."""
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice: counted in user and nice]
        return (values[7] if len(values) > 7 else 0), sum(values[:8])

    @staticmethod
    def _throttled_ms() -> float | None:
        """ms the cgroup's CPU quota has held its tasks back since it was made (cgroup v2
        ``throttled_usec``, v1 ``throttled_time`` in ns), or None without a CPU controller."""
        for name, scale in (("/sys/fs/cgroup/cpu.stat", 1e-3), ("/sys/fs/cgroup/cpu/cpu.stat", 1e-6),
                            ("/sys/fs/cgroup/cpu,cpuacct/cpu.stat", 1e-6)):
            try:
                fields = dict(line.split() for line in Path(name).read_text().splitlines() if line.strip())
            except (OSError, ValueError):
                continue
            for key in ("throttled_usec", "throttled_time"):
                if key in fields:
                    return int(fields[key]) * scale
        return None

    @staticmethod
    def _loop_us() -> float:
        """Median us of :func:`python_loop` (5 runs): how fast this process's CPU runs Python now."""
        times = []
        for _ in range(5):
            start = time.perf_counter()
            python_loop()
            times.append((time.perf_counter() - start) * 1e6)
        return statistics.median(times)

    def __enter__(self) -> ThreadClock:
        self._loop_before = self._loop_us()
        self._start = self._snapshot() if Path("/proc/self/task").is_dir() else {}
        self._ticks = self._cpu_ticks()
        self._throttled = self._throttled_ms()
        return self

    def __exit__(self, *exc) -> None:
        if self._start:
            end = self._snapshot()
            zero = (0.0, 0.0, 0, 0)
            self.ms = {name: end[name][0] - self._start.get(name, zero)[0] for name in end}
            self.wait_ms = {name: end[name][1] - self._start.get(name, zero)[1] for name in end}
            self.switches = {name: end[name][2] - self._start.get(name, zero)[2] for name in end}
            self.cpu = {name: end[name][3] for name in end}
        ticks = self._cpu_ticks()
        if self._ticks and ticks and ticks[1] > self._ticks[1]:
            self.steal = (ticks[0] - self._ticks[0]) / (ticks[1] - self._ticks[1])
        throttled = self._throttled_ms()
        if self._throttled is not None and throttled is not None:
            self.throttled_ms = throttled - self._throttled
        self.loop_us = (self._loop_before, self._loop_us())

    def summary(self, steps: int) -> str:
        """Busy threads (at least ``THREAD_MS`` of CPU per step), busiest first: CPU and run-queue
        wait ms and involuntary switches per step, the CPU last run on; then the machine's steal,
        the cgroup's throttled ms per step and :func:`python_loop`'s us before and after."""
        busy = sorted(((ms / steps, name) for name, ms in self.ms.items() if ms / steps >= THREAD_MS), reverse=True)
        threads = "; ".join(f"{name} {ms:.2f} (wait {self.wait_ms[name] / steps:.2f}, "
                            f"{self.switches[name] / steps:.1f} preempted, cpu {self.cpu[name]})"
                            for ms, name in busy)
        return (f"{threads}; steal {self.steal:.1%}; throttled {self.throttled_ms / steps:.2f}; "
                f"python loop {self.loop_us[0]:.0f}/{self.loop_us[1]:.0f} us")


class LaunchClock:
    """Host time of each Triton kernel launch that Inductor's generated code makes (one
    ``CachingAutotuner.run`` call), by kind: ``user`` for user-defined kernels (the ``triton_op``
    kernels of ss1bench), ``inductor`` for Inductor's own. ``ns[kind]`` is [total ns, launches]."""

    def __init__(self) -> None:
        self.ns = {"user": [0, 0], "inductor": [0, 0]}

    def __enter__(self) -> LaunchClock:
        from torch._inductor.runtime import triton_heuristics
        from torch._inductor.runtime.hints import HeuristicType

        self._autotuner = triton_heuristics.CachingAutotuner
        run, totals = self._autotuner.run, self.ns
        self._run = run

        def timed_run(autotuner, *args, **kwargs):
            start = time.perf_counter_ns()
            try:
                return run(autotuner, *args, **kwargs)
            finally:
                kind = "user" if autotuner.heuristic_type == HeuristicType.USER_AUTOTUNE else "inductor"
                totals[kind][0] += time.perf_counter_ns() - start
                totals[kind][1] += 1

        self._autotuner.run = timed_run
        return self

    def __exit__(self, *exc) -> None:
        self._autotuner.run = self._run

    def summary(self, steps: int) -> str:
        """Per step: launches and host us per launch of each kind."""
        return "; ".join(f"{kind} {calls / steps:.0f} x {total / max(calls, 1) / 1e3:.1f} us"
                         for kind, (total, calls) in self.ns.items())


def chrome_events(prof: profile) -> list[dict]:
    """The profile's events as its Chrome trace holds them."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        return json.loads(path.read_text())["traceEvents"]


def gpu_gaps(prof: profile, steps: int) -> tuple[float, list[tuple[float, str, list[str]]]]:
    """GPU idle ms per step between the profiled kernels, and the longest gaps: (ms, next
    kernel, the longest host operations overlapping the gap)."""
    events = chrome_events(prof)
    kernels = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events if e.get("cat") == "kernel")
    if len(kernels) < 2:
        return 0.0, []
    gaps = sorted(((nxt[0] - prev[1], prev[1], nxt[2]) for prev, nxt in itertools.pairwise(kernels)
                   if nxt[0] > prev[1]), reverse=True)
    host = [e for e in events if e.get("ph") == "X" and e.get("cat") in HOST_CATEGORIES]
    listed = []
    for gap, start, kernel in gaps[:GAPS_LISTED]:
        overlapping = sorted((e for e in host if e["ts"] < start + gap and e["ts"] + e["dur"] > start),
                             key=lambda e: -e["dur"])
        listed.append((gap / 1e3, kernel, [f"{e['name'][:60]} ({e['dur'] / 1e3:.2f} ms)"
                                           for e in overlapping[:GAP_OPS]]))
    return sum(gap for gap, _, _ in gaps) / 1e3 / steps, listed


def host_self_ms(events: list[dict], steps: int) -> list[tuple[float, float, str]]:
    """Own host time of every host event name, Python functions included: (ms per step, calls per
    step, name), longest first. An event's own time is its duration less that of the events
    nested directly in it on the same thread, so a Python function that launches a kernel is not
    charged the launch, and the launch is not charged twice."""
    by_thread: dict[tuple, list[dict]] = {}
    for event in events:
        if event.get("ph") == "X" and event.get("cat") in HOST_CATEGORIES:
            by_thread.setdefault((event.get("pid"), event.get("tid")), []).append(event)
    entries: list[list] = []  # [name, own us]
    for thread_events in by_thread.values():
        open_events: list[tuple[float, list]] = []  # (end us, entry) of the enclosing events
        for event in sorted(thread_events, key=lambda e: (e["ts"], -e["dur"])):
            while open_events and open_events[-1][0] <= event["ts"]:
                open_events.pop()
            if open_events:
                open_events[-1][1][1] -= event["dur"]
            entry = [event["name"], float(event["dur"])]
            open_events.append((event["ts"] + event["dur"], entry))
            entries.append(entry)
    totals: dict[str, tuple[float, int]] = {}
    for name, own_us in entries:
        ms, calls = totals.get(name, (0.0, 0))
        totals[name] = (ms + own_us / 1e3, calls + 1)
    return sorted(((ms / steps, calls / steps, name) for name, (ms, calls) in totals.items()), reverse=True)


def copy_new_code(before: set[Path], into: Path) -> None:
    """Copy the Python files Inductor's cache gained since ``before`` (output code: wrappers and
    kernels) into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for path in set(Path(cache_dir()).rglob("*.py")) - before:
        shutil.copy(path, into / path.name)


def run_steps(step: TrainStep, steps: int) -> None:
    """``steps`` training steps, then wait for the GPU (the span a profile or clock covers)."""
    for _ in range(steps):
        step()
    torch.cuda.synchronize()


def host_phase_ms(step: TrainStep) -> tuple[float, float, float]:
    """Median host ms of (zero_grad + forward, backward, optimizer step) with the GPU kept busy."""
    samples = []
    for _ in range(HOST_REPEATS):
        torch.cuda.synchronize()
        torch.cuda._sleep(SLEEP_CYCLES)
        start = time.perf_counter()
        loss = step.loss()
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        step.optimizer.step()
        samples.append((forward - start, backward - forward, time.perf_counter() - backward))
        torch.cuda.synchronize()
    return tuple(statistics.median(sample[i] for sample in samples) * 1e3 for i in range(3))


def main() -> None:
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--redn-factor", type=int, default=4)
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--providers", default="dense,ss1", help="dense, ss1 or both (comma-separated)")
    parser.add_argument("--top", type=int, default=25, help="host operations listed per SS1 run")
    parser.add_argument("--trace", help="folder for Chrome traces of one SS1 step")
    parser.add_argument("--python-functions", type=int, default=0, metavar="N",
                        help="profile 3 more steps of every run with Python call stacks and list the N host "
                             "events (Python functions included) with the most own time per step")
    parser.add_argument("--launch-host", action="store_true",
                        help="time the host side of each Triton launch in compiled steps, user-defined kernels "
                             "(ss1bench's) apart from Inductor's own")
    parser.add_argument("--code-dir", help="copy each run's Inductor output code (the generated wrappers and "
                                           "kernels it wrote) into DIR/<mode>_<provider>")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after the warm-up steps: the collector then skips every object alive "
                             "by then (the model, the compiled code), as long-running servers do")
    args = parser.parse_args()

    base = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50304, n_layer=args.layers))
    generator = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(1, 50257, (8, 1024), device="cuda", generator=generator)
    rows = []
    for mode in args.modes.split(","):
        for provider in args.providers.split(","):
            torch.compiler.reset()
            model = copy.deepcopy(base).cuda().train()
            if provider == "ss1":
                convert_to_ss_linear(model, args.redn_factor, project=False)
            forward = torch.compile(model) if mode == "compiled" else model
            step = TrainStep(model, ids, torch.bfloat16, forward)
            code_before = set(Path(cache_dir()).rglob("*.py")) if args.code_dir else set()
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            first_s = time.perf_counter() - start
            if args.code_dir:
                copy_new_code(code_before, Path(args.code_dir) / f"{mode}_{provider}")
            for _ in range(3):
                step()
            if args.gc_freeze:
                gc.collect()
                gc.freeze()
            torch.cuda.synchronize()
            with GcClock() as collector, ThreadClock() as threads:
                start = time.perf_counter()
                run_steps(step, TIMED_STEPS)
                wall = (time.perf_counter() - start) / TIMED_STEPS * 1e3
            gc_ms = collector.seconds / TIMED_STEPS * 1e3
            gc_counts = [n / TIMED_STEPS for n in collector.collections]
            print(f"---- {mode} {provider}: CPU ms per step by thread over the timed steps (wall {wall:.2f} ms; "
                  f"run-queue wait ms, involuntary switches): {threads.summary(TIMED_STEPS)}")
            kernels = kernel_ms(step, PROFILED_STEPS)
            host = host_phase_ms(step)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run_steps(step, PROFILED_STEPS)
            events = prof.key_averages()
            calls = {name: sum(e.count for e in events if e.key in keys) / PROFILED_STEPS
                     for name, keys in HOST_CALLS.items()}
            idle_ms, gaps = gpu_gaps(prof, PROFILED_STEPS)
            rows.append((mode, provider, first_s, wall, kernels, host, idle_ms, gc_ms, gc_counts, calls))
            if provider == "ss1":
                print(f"---- {mode} SS1: host operations by own CPU time ({PROFILED_STEPS} steps)")
                print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=70))
                print(f"---- {mode} SS1: longest GPU gaps ({PROFILED_STEPS} steps) and the host operations in them")
                for gap_ms, kernel, ops in gaps:
                    print(f"{gap_ms:7.3f} ms before {kernel[:60]}: {'; '.join(ops)}")
                if args.trace:
                    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as one:
                        run_steps(step, 1)
                    one.export_chrome_trace(f"{args.trace}/train_step_{mode}_ss1.json")
            if args.launch_host and mode == "compiled":
                with LaunchClock() as launches:
                    run_steps(step, PROFILED_STEPS)
                print(f"---- {mode} {provider}: host time per Triton launch from the generated code "
                      f"({PROFILED_STEPS} steps): {launches.summary(PROFILED_STEPS)}")
            if args.python_functions:
                with profile(activities=[ProfilerActivity.CPU], with_stack=True) as stacks:
                    run_steps(step, PROFILED_STEPS)
                print(f"---- {mode} {provider}: own host ms per step with Python call stacks profiled "
                      f"({PROFILED_STEPS} steps; the tracer slows the host)")
                for ms, calls, name in host_self_ms(chrome_events(stacks), PROFILED_STEPS)[:args.python_functions]:
                    print(f"{ms:8.3f} ms {calls:7.1f} calls  {name[:110]}")
            del model, forward, step
            gc.unfreeze()
    print(f"{'mode':9s} {'provider':8s} {'first s':>8s} {'wall ms':>8s} {'kernel ms':>9s} {'wall/kernel':>11s} "
          f"{'host ms fwd/bwd/opt (sum)':>27s} {'GPU idle ms':>11s} {'gc ms (gen 0/1/2 per step)':>27s}"
          "  per step: " + ", ".join(HOST_CALLS))
    for mode, provider, first_s, wall, kernels, host, idle_ms, gc_ms, gc_counts, calls in rows:
        counts = ", ".join(f"{calls[name]:.0f}" for name in HOST_CALLS)
        phases = "/".join(f"{ms:.1f}" for ms in host) + f" ({sum(host):.1f})"
        collections = f"{gc_ms:.2f} ({'/'.join(f'{n:.1f}' for n in gc_counts)})"
        print(f"{mode:9s} {provider:8s} {first_s:8.1f} {wall:8.2f} {kernels:9.2f} {wall / kernels:11.2f} "
              f"{phases:>27s} {idle_ms:11.2f} {collections:>27s}  {counts}")


if __name__ == "__main__":
    main()
