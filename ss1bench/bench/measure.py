"""How the benchmark times one provider call: ``do_bench`` quantiles (re-timed when the spread is
bimodal) and peak memory, eagerly or as CUDA-graph replays; plus the copy-bandwidth probe and the
memory floor that the ideal is built from.

``Built`` is what a provider's builder hands over to be timed; ``Timing`` (what came out) and
:func:`one_line_error` are shared with ``ss1bench e2e``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ss1bench.timing import do_bench, graphed

from .schema import QUANTILES

#: Copy-bandwidth probe: 1 GiB read + 1 GiB written, far beyond any GPU's L2 (50-60 MiB on
#: H100/H200), so it measures HBM bandwidth (docs/perf-notes.md gives the H200's figure).
COPY_BYTES = 1 << 30

#: do_bench defaults (ms of warm-up and of timed repetitions); ``--warmup-ms``/``--rep-ms`` change them.
DEFAULT_WARMUP_MS = 25
DEFAULT_REP_MS = 100

#: A timing whose p80 exceeds this multiple of its p20 is taken again, up to RETIMES more runs,
#: and the run with the tightest p80/p20 kept. Graph replays and L2-flushed calls spread by a few
#: percent; a bimodal spread is interference from outside the call (another process on the GPU
#: or its host), and it lands in the median (one bench run had p20 8.7 us, median 42 us).
SPREAD_LIMIT = 1.5
RETIMES = 2


@dataclass
class Built:
    """A provider ready to time: its module, input width and what the CSV says about it."""

    module: nn.Module
    in_features: int
    weight_params: int
    forward_flops: int
    detail: str = ""
    block_k: int | None = None
    block_n: int | None = None
    #: Entered once around all of a provider's timed calls (warm-up, capture, replays): a setting,
    #: not per-call state such as an autocast region, whose cast cache would outlive the calls.
    launch_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass
class Timing:
    """One provider call's do_bench median and spread (ms) and peak memory (MiB); ``status`` is
    ``"ok"`` or the one-line error that replaced the timing."""

    median_ms: float = math.nan
    p20_ms: float = math.nan
    p80_ms: float = math.nan
    peak_mem_mib: float = math.nan
    status: str = "ok"


def measure_copy_bandwidth(device: torch.device, nbytes: int = COPY_BYTES, warmup_ms: int = DEFAULT_WARMUP_MS,
                           rep_ms: int = DEFAULT_REP_MS) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written, do_bench median)."""
    source = torch.full((nbytes // 2,), 1.5, dtype=torch.float16, device=device)
    target = torch.empty_like(source)
    ms = do_bench(lambda: target.copy_(source), warmup_ms, rep_ms)
    return 2 * nbytes / (ms * 1e-3)


def memory_floor_bytes(m: int, k: int, n: int, k_red: int, element_size: int, mode: str) -> int:
    """Bytes SS1 must move at least (see ``schema.MEMORY_FLOOR``)."""
    elements = m * k + n * k_red + n + m * n
    if mode == "fwd+bwd":
        elements += (m * n + m * k + n * k_red) + (m * k + n * k_red + n)
    return elements * element_size


def one_line_error(error: BaseException) -> str:
    """``"TypeName: first line of the message"``, at most 200 characters: a failed timing's status."""
    message = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {message[0] if message else ''}".strip()
    return text[:200]


def free_after_oom(error: BaseException) -> None:
    """Hand the allocator's cached blocks back after an out-of-memory error, so the next timing
    starts from what is really allocated."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()


def tightest(measure: Callable[[], list[float]], spread_limit: float = SPREAD_LIMIT,
             retimes: int = RETIMES) -> list[float]:
    """``measure()``'s (median, p20, p80), re-measured while p80 > ``spread_limit`` x p20, at most
    ``retimes`` more times; the run with the smallest p80/p20 is returned."""
    best = measure()
    for _ in range(retimes):
        if not best[2] > spread_limit * best[1]:
            break
        again = measure()
        if again[2] * best[1] < best[2] * again[1]:
            best = again
    return best


def _with_fresh_gradients(call: Callable[[], None], tensors: list[torch.Tensor] | None) -> Callable[[], None]:
    """``call`` that first drops the ``.grad`` of ``tensors`` (None: ``call`` itself).

    A captured backward then writes its gradients into new buffers of the graph's pool, as a
    training step with ``zero_grad(set_to_none=True)`` does. Without it, the capture would
    accumulate into the gradients that the warm-up run before it left: one more read-modify-write
    of every gradient per replay (x's: 3 x M x K elements), for every provider alike, which is
    not part of the layer's work (it added 0.09 ms to both dense and SS1 at 16384 x 4096 x 1024).
    """
    if not tensors:
        return call

    def fresh() -> None:
        for tensor in tensors:
            tensor.grad = None
        call()

    return fresh


def time_module(built: Built, x: torch.Tensor, dy: torch.Tensor | None, warmup_ms: int, rep_ms: int,
                cuda_graph: bool = False) -> Timing:
    """do_bench quantiles and peak memory of one provider call (``dy`` given: forward + backward).

    With ``cuda_graph`` the call (forward, or forward and backward) is captured once in a CUDA
    graph and its replays are timed: host-side launch overhead (Python, dispatch, Triton's
    launcher, autograd) drops out for every provider alike, which is how decode steps are served
    and how graph-captured training steps run. The gradients then live in the graph's memory pool
    and are overwritten by every replay (the captured call drops them first: nothing accumulates).
    """
    module = built.module
    backward = dy is not None
    params = list(module.parameters())
    for param in params:
        param.requires_grad_(backward)
    x.requires_grad_(backward)
    if backward:
        def call() -> None:
            module(x).backward(dy)
        grads = [x, *params]
    else:
        def call() -> None:
            module(x)
        grads = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(built.launch_context())
        if not backward:
            stack.enter_context(torch.no_grad())
        # Eager, before any CUDA-graph capture: compiles (Triton), warms cuBLAS and fills an SSL
        # layer's rotated-weight cache (ss1_cached; a capture does not fill it) before peak memory is read.
        call()
        for tensor in grads or ():
            tensor.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        for tensor in grads or ():
            tensor.grad = None
        if cuda_graph:
            call, grads = graphed(_with_fresh_gradients(call, grads)), None
        median, p20, p80 = tightest(lambda: do_bench(call, warmup_ms, rep_ms, quantiles=QUANTILES,
                                                     grad_to_none=grads))
    for tensor in [x, *params]:
        tensor.grad = None
    return Timing(median, p20, p80, peak)
