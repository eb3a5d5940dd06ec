"""The calls ``ss1bench e2e`` times and how: wall time, GPU kernel time and first-call time.

A call is one phase of one model (:func:`phase_call`): a prefill forward, a decode step against a
KV cache of fixed length (:class:`DecodeStep`), or a training step (:class:`TrainStep`), eager or
through ``torch.compile(model, mode=...)`` (only the model is compiled; the step around it stays
Python). :func:`time_call` runs it once untimed (compilation happens there; its duration is the
row's ``compile_s``), once for peak memory, then times it:

- wall time: ``triton.testing.do_bench`` median and 20th/80th percentiles (L2 flushed before each
  call), as in the layer benchmark; with ``cuda_graph`` (eager calls only) a CUDA-graph replay of
  the call is timed too and the faster kept;
- GPU kernel time: the self time of every kernel the call runs, summed, from torch.profiler
  (:func:`ss1bench.timing.kernel_ms`); wall over kernel time is the host's share. CUDA only: NaN
  elsewhere.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ss1bench.bench.measure import Timing, one_line_error
from ss1bench.bench.schema import QUANTILES
from ss1bench.timing import do_bench, graphed, kernel_ms

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

#: Calls profiled for the kernel time (after one warm-up call); their mean is the row's.
KERNEL_REPEATS = 3

#: AdamW learning rate of the training step (its value changes no timing).
LEARNING_RATE = 1e-5

#: ``timer(call, warmup_ms, rep_ms) -> (median, p20, p80)`` in ms; tests inject a fake one.
Timer = Callable[[Callable[[], object], int, int], Sequence[float]]
#: ``kernel_timer(call, device) -> GPU kernel ms per call`` (NaN where it cannot be measured).
KernelTimer = Callable[[Callable[[], object], torch.device], float]
#: ``compiler(model, mode) -> compiled callable``; tests inject a cheaper backend than Inductor.
Compiler = Callable[[nn.Module, str], Callable]


def do_bench_timer(call: Callable[[], object], warmup_ms: int, rep_ms: int) -> tuple[float, float, float]:
    """``triton.testing.do_bench`` quantiles (median, p20, p80) of ``call``, as the layer benchmark."""
    median, p20, p80 = do_bench(call, warmup_ms, rep_ms, quantiles=QUANTILES)
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

    Under a compile mode the model is compiled here, after ``torch.compiler.reset()`` (each model
    gets a fresh compile, never another model's cached code, and no run reaches Dynamo's
    recompile limit); decode is eager only.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}; known: {', '.join(COMPILE_MODES)}")
    forward, mark_step = model, compile_mode in CUDAGRAPH_MODES
    if compile_mode != "none":
        if phase == "decode":
            raise ValueError("the decode step is timed eagerly only (compile mode none)")
        torch.compiler.reset()
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
    """What :func:`time_call` measured: the wall time, how it was taken (``eager``,
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


def time_call(make_call: Callable[[], Callable[[], object]], device: torch.device, timer: Timer = do_bench_timer,
              warmup_ms: int = E2E_WARMUP_MS, rep_ms: int = E2E_REP_MS, cuda_graph: bool = False, *,
              grad: bool = False, kernel_timer: KernelTimer = cuda_kernel_ms, how: str = "eager") -> Measurement:
    """Time the call ``make_call()`` returns (under ``torch.no_grad()`` unless ``grad``).

    The call runs once before timing (compilation, Triton JIT, cuBLAS algorithm choice, the tuning
    database read: ``first_call_s``) and once more for peak memory (CUDA only: the allocator's
    peak during the call minus what was allocated before it). ``how`` names the call's kind in the
    result (``eager``, ``compiled``). With ``cuda_graph`` the call is then captured and its replays
    timed too, and the faster of the two is kept (``how`` says which, and why eager when capture
    failed or the graph was slower). The kernel time is taken on the call kept. Any failure,
    building the call included, becomes the Timing's one-line status: one failed row never ends
    the run (a failed kernel timing only empties ``kernel_ms`` and adds a note).
    """
    result = Measurement(Timing(), how)
    try:
        with torch.set_grad_enabled(grad):
            call = make_call()
            start = time.perf_counter()
            call()
            _synchronize(device)
            result.first_call_s = time.perf_counter() - start
            peak = math.nan
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                call()
                torch.cuda.synchronize(device)
                peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            quantiles = timer(call, warmup_ms, rep_ms)
            if cuda_graph:
                # The replay is kept only when it is faster: a graph can be slower than eager calls
                # (BERT on an H200: 29 ms replayed, 9 ms eager; SDPA picks another kernel under
                # capture), and a user would run whichever is faster.
                replay, captured = _capture(call, device)
                if replay is None:
                    result.how = captured
                else:
                    graph_quantiles = timer(replay, warmup_ms, rep_ms)
                    if graph_quantiles[0] <= quantiles[0]:
                        quantiles, result.how, call = graph_quantiles, "cuda-graph", replay
                    else:
                        result.how = f"eager (faster than its CUDA graph: {graph_quantiles[0]:.3g} ms)"
            median, p20, p80 = quantiles
            result.timing = Timing(median, p20, p80, peak)
            try:
                result.kernel_ms = kernel_timer(call, device)
            except Exception as error:  # the wall time stands without it
                result.notes.append(f"kernel time failed: {one_line_error(error)}")
    except Exception as error:  # a failed timing is a CSV row, not a crashed run
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        result.timing = Timing(status=one_line_error(error))
    return result


def release(device: torch.device, compiled: bool = False) -> None:
    """Give memory back between timings: compiled code and its CUDA-graph pools
    (``torch.compiler.reset()``) after a compiled call; on CUDA, objects held only by reference
    cycles (a training step's optimizer state, compiled wrappers) and the allocator's cache."""
    if compiled:
        torch.compiler.reset()
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
