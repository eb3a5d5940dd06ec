"""The calls ``ss1bench e2e`` times and how: wall time, GPU kernel time and first-call time.

A call is one phase of one model (:func:`phase_call`): a prefill forward, a decode step against a
KV cache of fixed length (:class:`DecodeStep`), or a training step (:class:`TrainStep`), eager or
through ``torch.compile(model, mode=...)`` (only the model is compiled; the step around it stays
Python). :func:`time_calls` takes the dense model's call and its SS1 copy's together: each runs
once untimed (compilation happens there; its duration is the row's ``compile_s``) and once for
peak memory, then they are timed side by side:

- wall time: :func:`side_by_side_timer`, the calls' timed runs interleaved in rounds, so a
  slower or faster spell of the host (Python runs up to 2x slower for seconds at a time on the
  H200 hosts, ``docs/perf-notes.md`` v25) falls on both models alike; median and 20th/80th
  percentiles of every timed run; with ``cuda_graph`` (eager calls only) each call's CUDA-graph
  replay is timed alongside and the faster of the two kept;
- GPU kernel time: the self time of every kernel the call runs, summed, from torch.profiler
  (:func:`ss1bench.timing.kernel_ms`); wall over kernel time is the host's share. CUDA only: NaN
  elsewhere.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ss1bench.bench.measure import Timing, free_after_oom, one_line_error
from ss1bench.bench.schema import QUANTILES
from ss1bench.timing import graphed, kernel_ms

from .models import PHASES

#: ``torch.compile`` modes of ``--compile``; ``none`` is the eager model, ``default`` is
#: ``torch.compile(model)`` without a mode argument.
COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")
#: Modes whose compiled code replays CUDA graphs (``torch._inductor.list_mode_options``:
#: max-autotune turns ``triton.cudagraphs`` on too): each call starts with
#: ``torch.compiler.cudagraph_mark_step_begin()``, so a call never waits on the previous one's outputs.
CUDAGRAPH_MODES = ("max-autotune", "reduce-overhead")

#: Defaults of --warmup-ms/--rep-ms: a whole-model call takes milliseconds, so the layer
#: benchmark's 25/100 ms would time a large prefill only a handful of times.
E2E_WARMUP_MS = 100
E2E_REP_MS = 500

#: Rounds of :func:`side_by_side_timer`: each round runs every call for ``rep_ms / ROUNDS``.
ROUNDS = 10

#: Calls profiled for the kernel time (after one warm-up call); their mean is the row's.
KERNEL_REPEATS = 3

#: AdamW learning rate of the training step (its value changes no timing).
LEARNING_RATE = 1e-5

#: ``timer(calls, warmup_ms, rep_ms) -> [(median, p20, p80) per call]`` in ms, the calls timed side
#: by side; tests inject a fake one.
Timer = Callable[[Sequence[Callable[[], object]], int, int], Sequence[Sequence[float]]]
#: ``kernel_timer(call, device) -> GPU kernel ms per call`` (NaN where it cannot be measured).
KernelTimer = Callable[[Callable[[], object], torch.device], float]
#: ``compiler(model, mode) -> compiled callable``; tests inject a cheaper backend than Inductor.
Compiler = Callable[[nn.Module, str], Callable]


def _run_timed(call: Callable[[], object], times: int) -> list:
    """``times`` back-to-back runs of ``call``, each timed: a pair of CUDA events around it when CUDA
    is there (as ``do_bench`` times: the GPU's time from one event to the next, which a host-bound
    call stretches to its host time), else its ms on the host clock. No synchronization: read the
    times with :func:`_elapsed_ms` once the GPU is done."""
    if not torch.cuda.is_available():
        samples = []
        for _ in range(times):
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1e3)
        return samples
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(times)]
    for start, end in events:
        start.record()
        call()
        end.record()
    return events


def _elapsed_ms(samples: list) -> list[float]:
    """The ms of :func:`_run_timed`'s samples, after waiting for the GPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return [sample if isinstance(sample, float) else sample[0].elapsed_time(sample[1]) for sample in samples]


def side_by_side_timer(calls: Sequence[Callable[[], object]], warmup_ms: int, rep_ms: int,
                       rounds: int = ROUNDS) -> list[tuple[float, float, float]]:
    """(median, p20, p80) ms per call of ``calls``, timed side by side.

    Each call's time is estimated from three runs, then every call runs about ``warmup_ms``
    untimed, then ``rounds`` rounds each run every call back to back for about ``rep_ms / rounds``
    (at least twice), in the given order in even rounds and reversed in odd ones. Nothing waits
    for the GPU between runs (as in a training loop, and in ``do_bench``), so the first run of each
    block starts beside the previous call's GPU tail: with the host ahead of that tail it gets a
    head start, with an idle GPU none. That run is not kept; the quantiles are of every later run,
    each in the steady state of its own call. Timing the calls one after the other instead let the
    host's speed, which drifts by up to 2x over seconds on a shared host, decide a host-bound
    comparison (a compiled GPT-2 training step measured 0.82-1.32x dense in four processes). No L2
    flush: a whole model's working set is many times the L2.
    """
    estimates = [max(statistics.median(_elapsed_ms(_run_timed(call, 3))), 1e-3) for call in calls]
    for call, estimate in zip(calls, estimates, strict=True):
        for _ in range(max(1, round(warmup_ms / estimate))):
            call()
    per_round = [max(2, round(rep_ms / rounds / estimate)) for estimate in estimates]
    samples: list[list] = [[] for _ in calls]
    order = list(range(len(calls)))
    for round_index in range(rounds):
        for i in order if round_index % 2 == 0 else order[::-1]:
            samples[i].extend(_run_timed(calls[i], per_round[i])[1:])  # the block's first run: the switch
    return [_quantiles(_elapsed_ms(values)) for values in samples]


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, p20, p80) of ``values`` (``QUANTILES``), linearly interpolated as ``do_bench`` does."""
    ordered = torch.tensor(values, dtype=torch.float64)
    median, p20, p80 = (float(ordered.quantile(q)) for q in QUANTILES)
    return median, p20, p80


def cuda_kernel_ms(call: Callable[[], object], device: torch.device) -> float:
    """GPU kernel ms per call of ``call`` (:func:`ss1bench.timing.kernel_ms`); NaN off CUDA."""
    return kernel_ms(call, KERNEL_REPEATS) if device.type == "cuda" else math.nan


def compile_model(model: nn.Module, mode: str) -> Callable:
    """``torch.compile(model)`` for mode ``default``, else ``torch.compile(model, mode=mode)``."""
    return torch.compile(model) if mode == "default" else torch.compile(model, mode=mode)


# ---- the calls --------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Random token ids in ``[1, vocab)`` (never zeros, never padding id 0): a ``(batch, seq)``
    prompt and one new token per sequence, shared by the dense and the SS1 model."""

    prompt: torch.Tensor
    new_ids: torch.Tensor

    @classmethod
    def random(cls, vocab_size: int, batch: int, seq: int, generator: torch.Generator,
               device: torch.device) -> Inputs:
        prompt = torch.randint(1, vocab_size, (batch, seq), generator=generator, device=device)
        new_ids = torch.randint(1, vocab_size, (batch, 1), generator=generator, device=device)
        return cls(prompt, new_ids)


def _cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a KV cache holds right now (``transformers`` 5.x cache layers)."""
    return [value for layer in getattr(cache, "layers", ()) for value in vars(layer).values()
            if isinstance(value, torch.Tensor)]


def cache_argument(model: nn.Module) -> str:
    """Name of the forward argument that takes a KV cache: ``cache`` in recent transformers 5.x
    releases (which deprecate the older ``past_key_values``), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class DecodeStep:
    """One decode step (one new token per sequence) against a KV cache of a fixed length.

    Building it runs one prefill of ``prompt`` (``(batch, seq)`` ids) into a ``DynamicCache``.
    Each call runs ``model(new_ids, cache=cache)`` (see :func:`cache_argument`) and crops the
    cache back to ``seq`` tokens (``crop(-excess)``: a negative count means "remove this many" in
    every transformers 5.x release), so repeated calls all attend over ``seq + 1`` positions.

    A CUDA graph captured from a call replays that call's ``torch.cat`` on the cache tensors of
    the capture step; ``held`` keeps those alive, so replays never read memory the allocator has
    handed out again. (Only under capture: in eager calls holding them would inflate peak memory.)
    """

    def __init__(self, model: nn.Module, prompt: torch.Tensor, new_ids: torch.Tensor) -> None:
        from transformers import DynamicCache

        self.model, self.new_ids, self.seq = model, new_ids, prompt.shape[1]
        try:
            self.cache = DynamicCache(config=model.config)
        except TypeError:  # releases whose DynamicCache takes no config
            self.cache = DynamicCache()
        self.cache_kwarg = cache_argument(model)
        model(prompt, use_cache=True, **{self.cache_kwarg: self.cache})
        self.held: list[torch.Tensor] = []

    def __call__(self):
        if self.new_ids.is_cuda and torch.cuda.is_current_stream_capturing():
            self.held = _cache_tensors(self.cache)
        output = self.model(self.new_ids, use_cache=True, **{self.cache_kwarg: self.cache})
        excess = self.cache.get_seq_length() - self.seq
        if excess > 0:
            self.cache.crop(-excess)
        return output


class TrainStep:
    """One training step of ``model`` on ``ids`` with labels = ``ids``, as a training loop runs it:
    ``zero_grad(set_to_none=True)``, forward and loss under autocast to ``autocast_dtype`` (None:
    no autocast), ``loss.backward()``, ``AdamW.step()`` (fused on CUDA, the default loop elsewhere).

    ``forward`` is what the step calls: ``model``, or the compiled model (only the model is
    compiled; the optimizer step runs eagerly). ``mark_step``: call
    ``torch.compiler.cudagraph_mark_step_begin()`` first (compile modes that replay CUDA graphs).
    """

    def __init__(self, model: nn.Module, ids: torch.Tensor, autocast_dtype: torch.dtype | None = None,
                 forward: Callable | None = None, mark_step: bool = False) -> None:
        self.ids, self.forward, self.mark_step = ids, model if forward is None else forward, mark_step
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, fused=ids.is_cuda)
        self.autocast = (partial(torch.autocast, ids.device.type, dtype=autocast_dtype)
                         if autocast_dtype is not None else contextlib.nullcontext)

    def loss(self) -> torch.Tensor:
        """The step's first phase: ``zero_grad`` and the forward with labels under autocast."""
        if self.mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            return self.forward(self.ids, labels=self.ids).loss

    def __call__(self) -> torch.Tensor:
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        return loss


def phase_call(model: nn.Module, phase: str, inputs: Inputs, decoder: bool, *, compile_mode: str = "none",
               compiler: Compiler = compile_model, autocast_dtype: torch.dtype | None = None) -> Callable[[], object]:
    """The timed call of one phase (building a decode step runs its prefill).

    Under a compile mode the model is compiled here (the caller runs ``torch.compiler.reset()``
    first where the model must get a fresh compile); decode is eager only.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}; known: {', '.join(COMPILE_MODES)}")
    forward, mark_step = model, compile_mode in CUDAGRAPH_MODES
    if compile_mode != "none":
        if phase == "decode":
            raise ValueError("the decode step is timed eagerly only (compile mode none)")
        forward = compiler(model, compile_mode)
    if phase == "train":
        return TrainStep(model, inputs.prompt, autocast_dtype, forward, mark_step)
    if phase == "decode":
        return DecodeStep(model, inputs.prompt, inputs.new_ids)
    kwargs = {"use_cache": False} if decoder else {}
    if not mark_step:
        return lambda: forward(inputs.prompt, **kwargs)

    def prefill():
        torch.compiler.cudagraph_mark_step_begin()
        return forward(inputs.prompt, **kwargs)

    return prefill


# ---- timing -----------------------------------------------------------------------------------


@dataclass
class Measurement:
    """What :func:`time_calls` measured for one call: the wall time, how it was taken (``eager``,
    ``cuda-graph``, ``compiled``, or why eager), the GPU kernel ms per call, the seconds of the
    first call, and notes for the row's detail (a kernel timing that failed)."""

    timing: Timing
    how: str = "eager"
    kernel_ms: float = math.nan
    first_call_s: float = math.nan
    notes: list[str] = field(default_factory=list)


def _capture(call: Callable[[], object], device: torch.device) -> tuple[Callable[[], object] | None, str]:
    """(replay of ``call`` captured in a CUDA graph, ``"cuda-graph"``), or (None, why capture failed)."""
    saved = torch.cuda.current_stream(device) if device.type == "cuda" else None
    try:
        return graphed(call), "cuda-graph"
    except Exception as error:  # best effort: the caller times an uncapturable call eagerly
        if saved is not None:  # a failed capture can leave its side stream current
            torch.cuda.set_stream(saved)
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(device)
        return None, f"eager (CUDA graph capture failed: {one_line_error(error)})"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(make_calls: Sequence[Callable[[], Callable[[], object]]], device: torch.device,
               timer: Timer = side_by_side_timer, warmup_ms: int = E2E_WARMUP_MS, rep_ms: int = E2E_REP_MS,
               cuda_graph: bool = False, *, grad: bool = False, kernel_timer: KernelTimer = cuda_kernel_ms,
               how: str = "eager") -> list[Measurement]:
    """Time the calls ``make_calls`` return side by side (under ``torch.no_grad()`` unless ``grad``):
    one :class:`Measurement` per call, in order.

    Each call runs once before timing (compilation, Triton JIT, cuBLAS algorithm choice, the tuning
    database read: ``first_call_s``) and once more for peak memory (CUDA only: the allocator's
    peak during the call minus what was allocated before it), then ``timer`` times them all
    together. ``how`` names the calls' kind in the results (``eager``, ``compiled``). With
    ``cuda_graph`` each call is then captured and its replay is timed alongside, and the faster of
    the two is kept (``how`` says which, and why eager when capture failed or the graph was
    slower). The kernel time is taken on the call kept. Any failure, building a call included,
    becomes that call's one-line status and leaves the others timed: where timing them together
    fails, each is timed alone (a note says so). A failed kernel timing only empties ``kernel_ms``
    and adds a note.
    """
    results = [Measurement(Timing(), how) for _ in make_calls]
    with torch.set_grad_enabled(grad):
        calls, peaks = {}, {}
        for index, make_call in enumerate(make_calls):
            try:
                calls[index], results[index].first_call_s, peaks[index] = _prepare(make_call, device)
            except Exception as error:  # a failed timing is a CSV row, not a crashed run
                _fail(results[index], error)
        candidates = [(index, "eager", call) for index, call in calls.items()]
        if cuda_graph:
            for index, call in calls.items():
                replay, captured = _capture(call, device)
                if replay is None:
                    results[index].how = captured
                else:
                    candidates.append((index, "cuda-graph", replay))
        timed, note = _time_together(timer, [call for _, _, call in candidates], warmup_ms, rep_ms)
        for index in calls:
            result = results[index]
            mine = {kind: (call, timing)
                    for (owner, kind, call), timing in zip(candidates, timed, strict=True) if owner == index}
            call, quantiles = mine["eager"]
            if isinstance(quantiles, Exception):
                _fail(result, quantiles)
                continue
            if note:
                result.notes.append(note)
            if "cuda-graph" in mine:
                # The replay is kept only when it is faster: a graph can be slower than eager calls
                # (BERT on an H200: 29 ms replayed, 9 ms eager; SDPA picks another kernel under
                # capture), and a user would run whichever is faster.
                replay, graph_quantiles = mine["cuda-graph"]
                if isinstance(graph_quantiles, Exception):
                    result.how = f"eager (CUDA graph replay failed: {one_line_error(graph_quantiles)})"
                elif graph_quantiles[0] <= quantiles[0]:
                    quantiles, result.how, call = graph_quantiles, "cuda-graph", replay
                else:
                    result.how = f"eager (faster than its CUDA graph: {graph_quantiles[0]:.3g} ms)"
            median, p20, p80 = quantiles
            result.timing = Timing(median, p20, p80, peaks[index])
            try:
                result.kernel_ms = kernel_timer(call, device)
            except Exception as error:  # the wall time stands without it
                result.notes.append(f"kernel time failed: {one_line_error(error)}")
    return results


def time_call(make_call: Callable[[], Callable[[], object]], device: torch.device, timer: Timer = side_by_side_timer,
              warmup_ms: int = E2E_WARMUP_MS, rep_ms: int = E2E_REP_MS, cuda_graph: bool = False, *,
              grad: bool = False, kernel_timer: KernelTimer = cuda_kernel_ms, how: str = "eager") -> Measurement:
    """:func:`time_calls` of one call."""
    return time_calls([make_call], device, timer, warmup_ms, rep_ms, cuda_graph, grad=grad,
                      kernel_timer=kernel_timer, how=how)[0]


def _prepare(make_call: Callable[[], Callable[[], object]], device: torch.device):
    """(the call, seconds of its first run, peak MiB of its second run: NaN off CUDA)."""
    call = make_call()
    start = time.perf_counter()
    call()
    _synchronize(device)
    first_call_s = time.perf_counter() - start
    peak = math.nan
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return call, first_call_s, peak


def _fail(result: Measurement, error: BaseException) -> None:
    free_after_oom(error)
    result.timing = Timing(status=one_line_error(error))


def _time_together(timer: Timer, calls: list[Callable[[], object]], warmup_ms: int,
                   rep_ms: int) -> tuple[list[Sequence[float] | Exception], str | None]:
    """(``timer``'s quantiles per call of ``calls`` timed together, None); if that fails, each call
    timed alone (its quantiles or its error) and a note that says why."""
    if not calls:
        return [], None
    try:
        return list(timer(calls, warmup_ms, rep_ms)), None
    except Exception as error:
        note = f"timed alone: timing side by side failed: {one_line_error(error)}"
        free_after_oom(error)
    alone: list[Sequence[float] | Exception] = []
    for call in calls:
        try:
            alone.append(timer([call], warmup_ms, rep_ms)[0])
        except Exception as error:
            free_after_oom(error)
            alone.append(error)
    return alone, note


def release(device: torch.device, compiled: bool = False) -> None:
    """Give memory back between timings: compiled code and its CUDA-graph pools
    (``torch.compiler.reset()``) after a compiled call; on CUDA, objects held only by reference
    cycles (a training step's optimizer state, compiled wrappers) and the allocator's cache."""
    if compiled:
        torch.compiler.reset()
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
