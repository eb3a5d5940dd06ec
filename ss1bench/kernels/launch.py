"""Launch paths for compiled Triton kernels: the host cost of a launch, not the kernel.

``kernel[grid](*args, **kwargs)`` re-derives, on every call, which compiled binary the arguments
select (binding, specialization, cache key) and builds launch metadata before launching it:
15-24 us of host time per launch (``scripts/host_profile.py``, H200, Triton 3.6), as long as a
decode-sized SS1 kernel runs. Two ways around it live here:

- :func:`launch` (the direct path) keeps, per kernel, the compiled binary for each
  *specialization key* and runs it through its C launcher (:func:`run_binary`).
- :func:`record` / :class:`RecordedLaunch`: the launches made inside a ``with record()`` block,
  replayable with new leading tensors and nothing else re-derived. The *plans* of eager calls
  (``kernels/plans.py``, one per input key) are built from them; the plan's key is the caller's
  guarantee that the binary still applies.

A third hook, :class:`capture`, hands every launch to a handler instead of running it (the tuner
collects the compiles a candidate needs this way).

The key is at least as fine as Triton's own specialization, so a cached binary is only reused
where Triton would pick the same one:

- constexpr parameters: their values;
- tensors: dtype and whether the data pointer is 16-byte aligned;
- integers: whether the value is 1, divisible by 16, and its integer type range (parameters in
  ``do_not_specialize``: the range only); floats and bools: their type (bools: their value);
- ``num_warps``, ``num_stages``, ``maxnreg`` and the current CUDA device.

The first call for a key goes through ``kernel[grid]`` (which compiles, or loads Triton's cache)
and keeps the binary it returns. In the interpreter (``TRITON_INTERPRET=1``), for arguments of
other types and for a parameter left to its default, every call takes the normal path.

On by default, because it is faster: one launch took 13-14 us through this path against 21-24 us
through ``kernel[grid]`` (same measurement, two runs). ``SS1BENCH_DIRECT_LAUNCH=0`` switches it off
(the setting is read once; :func:`clear` reads it again).

The C launcher's argument list is Triton's private interface, and ``pyproject.toml`` allows any
``triton>=3.6``: the first launch checks once that this Triton's own launch makes the same call
(:func:`interface_mismatch`); on any difference every launch, recorded ones included, goes through
``kernel[grid]`` (one warning on the ``ss1bench.kernels`` logger). A Triton that changed the
interface costs launch time, never a wrong launch.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any

import torch
import triton

_INT64 = (-(2**63), 2**63 - 1)

logger = logging.getLogger("ss1bench.kernels")

#: The calls Triton's own launches make once they have the binary, whitespace removed:
#: ``kernel[grid](...)`` (``JITFunction.run``, the path :func:`launch` skips) and the runner of
#: ``CompiledKernel[grid]``. :func:`run_binary` makes the same call (written for Triton 3.6; the
#: source of Triton 3.9, the CPU test environment's, reads the same).
_TRITON_RUN_CALLS = {
    "JITFunction.run": ("kernel.run(grid_0,grid_1,grid_2,stream,kernel.function,kernel.packed_metadata,"
                        "launch_metadata,knobs.runtime.launch_enter_hook,knobs.runtime.launch_exit_hook,"
                        "*bound_args.values())"),
    "CompiledKernel.__getitem__": ("self.run(grid[0],grid[1],grid[2],stream,self.function,self.packed_metadata,"
                                   "launch_metadata,knobs.runtime.launch_enter_hook,knobs.runtime.launch_exit_hook,"
                                   "*args)"),
}


class _KernelInfo:
    """What the launch path needs to know about one ``@triton.jit`` function."""

    __slots__ = ("binaries", "constexpr", "names", "no_specialize")

    def __init__(self, kernel) -> None:
        params = kernel.params
        self.names = tuple(p.name for p in params)
        self.constexpr = tuple(bool(p.is_constexpr) for p in params)
        self.no_specialize = tuple(bool(p.do_not_specialize) for p in params)
        self.binaries: dict[tuple, Any] = {}


#: id(kernel) -> its info, or False where the direct path cannot be used for it.
_INFO: dict[int, _KernelInfo | bool] = {}


def interpreting() -> bool:
    """Triton's CPU interpreter is on (``TRITON_INTERPRET`` set to anything but 0)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_ENABLED: bool | None = None
_INTERFACE_OK: bool | None = None


def _runner_sources() -> dict[str, str]:
    """The source of the Triton functions that launch a compiled binary (keys of _TRITON_RUN_CALLS)."""
    from triton.compiler.compiler import CompiledKernel
    from triton.runtime.jit import JITFunction

    return {"JITFunction.run": inspect.getsource(JITFunction.run),
            "CompiledKernel.__getitem__": inspect.getsource(CompiledKernel.__getitem__)}


def interface_mismatch() -> str | None:
    """Why :func:`run_binary`'s call may not fit this Triton, or None when Triton's own launches make
    the same call (``CompiledKernel.run`` with grid, stream, function, packed metadata, launch
    metadata, the two hooks, then the kernel's arguments) and it has the launch hooks read here."""
    try:
        sources = _runner_sources()
        runtime = triton.knobs.runtime
        runtime.launch_enter_hook, runtime.launch_exit_hook  # noqa: B018  (read by _no_launch_hooks)
    except Exception as error:  # any Triton this path cannot check is a mismatch
        return f"cannot check Triton's launch interface ({type(error).__name__}: {error})"
    for name, call in _TRITON_RUN_CALLS.items():
        if call not in "".join(sources.get(name, "").split()):
            return f"{name} launches the binary with another argument list than Triton 3.6's"
    return None


def interface_ok() -> bool:
    """Whether this Triton's launch interface is the one :func:`run_binary` calls; checked once
    (:func:`clear` checks again), a mismatch logged once."""
    global _INTERFACE_OK
    if _INTERFACE_OK is None:
        problem = interface_mismatch()
        _INTERFACE_OK = problem is None
        if problem is not None:
            logger.warning("ss1bench: direct kernel launches are off for triton %s: %s; launching through "
                           "kernel[grid] instead (correct, but several microseconds more per launch)",
                           getattr(triton, "__version__", "?"), problem)
    return _INTERFACE_OK


def enabled() -> bool:
    """Whether launches may bypass ``kernel[grid]``: not switched off (``SS1BENCH_DIRECT_LAUNCH=0``),
    not in the interpreter, and this Triton's launch interface is the expected one
    (:func:`interface_ok`). Read once (a per-launch environment lookup costs microseconds);
    :func:`clear` reads it again."""
    global _ENABLED
    if _ENABLED is None:
        _ENABLED = (os.environ.get("SS1BENCH_DIRECT_LAUNCH", "1") not in ("", "0") and not interpreting()
                    and interface_ok())
    return _ENABLED


def _int_range(value: int) -> int:
    if -2147483648 <= value <= 2147483647:
        return 32
    return 64 if _INT64[0] <= value <= _INT64[1] else 65


def _int_key(value: int, no_specialize: bool) -> int:
    """An int argument's entry: its integer type, and (unless not specialized) whether it is 1 or
    divisible by 16, as one int (negative: range only)."""
    if no_specialize:
        return -_int_range(value)
    return _int_range(value) * 4 + (value == 1) * 2 + (value % 16 == 0)


def spec(value: Any, no_specialize: bool) -> tuple | None:
    """The key entries of one runtime argument, or None when it is of a type this path does not
    key (the caller then takes the normal launch path)."""
    if isinstance(value, bool):
        return (("b", value),)
    if isinstance(value, torch.Tensor):
        return (value.dtype, value.data_ptr() % 16 == 0)
    if isinstance(value, int):
        return (_int_key(value, no_specialize),)
    if isinstance(value, float):
        return (("f",),)
    return None


def specialization_key(info: _KernelInfo, values: list, num_warps, num_stages, device: int,
                       maxnreg=None) -> tuple | None:
    """The key of one launch: the constexpr values, :func:`spec` of each runtime argument, the
    compile options and the device, flattened into one tuple (each position's entries have types
    that cannot be confused)."""
    if len(values) != len(info.constexpr):
        raise ValueError(f"{len(values)} launch arguments for {len(info.constexpr)} kernel parameters")
    parts: list = [device, num_warps, num_stages, maxnreg]
    append = parts.append
    for value, constexpr, no_specialize in zip(values, info.constexpr, info.no_specialize, strict=False):
        if constexpr:
            append(value)
        # the two common cases inlined (this runs per launch): spec()'s entries, without the call
        elif type(value) is int:
            append(-_int_range(value) if no_specialize
                   else _int_range(value) * 4 + (value == 1) * 2 + (value % 16 == 0))
        elif type(value) is not bool and isinstance(value, torch.Tensor):
            append(value.dtype)
            append(value.data_ptr() % 16 == 0)
        else:
            entries = spec(value, no_specialize)
            if entries is None:
                return None
            parts.extend(entries)
    return tuple(parts)


def launch(kernel, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """``kernel[grid](*args, **kwargs)``, through the cached binary when there is one (and
    recorded, under :func:`record`; handed to the handler instead, under :func:`capture`)."""
    if _RECORDING.capture is not None:
        _RECORDING.capture(kernel, grid, args, kwargs)
        return
    if _RECORDING.launches is not None:
        _record(kernel, grid, args, kwargs, kernel[grid](*args, **kwargs))
        return
    if not enabled():
        kernel[grid](*args, **kwargs)
        return
    info = _INFO.get(id(kernel))
    if info is None:
        try:
            info = _KernelInfo(kernel)
        except AttributeError:  # a Triton without the parameter metadata this path reads
            info = None
        _INFO[id(kernel)] = info or False
    if not info:
        kernel[grid](*args, **kwargs)
        return
    num_warps, num_stages = kwargs.get("num_warps"), kwargs.get("num_stages")
    values = _values(info.names, args, kwargs)
    if values is None:  # a parameter left to its default: let Triton bind it
        kernel[grid](*args, **kwargs)
        return
    key = specialization_key(info, values, num_warps, num_stages, current_device(), kwargs.get("maxnreg"))
    binary = info.binaries.get(key) if key is not None else None
    if binary is None:
        compiled = kernel[grid](*args, **kwargs)
        if key is not None and _launchable(compiled):
            info.binaries[key] = compiled
        return
    run_binary(binary, _grid3(grid), values)


def _values(names, args: tuple, kwargs: dict) -> list | None:
    """Every parameter's value in parameter order (positional ``args``, then ``kwargs`` by name),
    or None when one is left to its default."""
    try:
        return [*args, *[kwargs[name] for name in names[len(args):]]]
    except KeyError:
        return None


def _launchable(binary) -> bool:
    """``binary`` is a compiled kernel :func:`run_binary` can launch (not None, as the
    interpreter's launches return, and this Triton's launch interface is the expected one)."""
    return (binary is not None and all(hasattr(binary, name) for name in ("run", "function", "packed_metadata"))
            and interface_ok())


def _grid3(grid: tuple[int, ...]) -> tuple[int, int, int]:
    return (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)


def _no_launch_hooks() -> bool:
    """No launch hooks are installed (a profiler such as proton installs them): launches may then
    skip building Triton's launch metadata."""
    runtime = triton.knobs.runtime
    for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook):
        # Triton 3.6+: a HookChain, empty when unused; elsewhere None or a callable
        if hook is not None and getattr(hook, "calls", True):
            return False
    return True


def run_binary(binary, grid3: tuple[int, int, int], values) -> None:
    """Launch a compiled kernel (what ``kernel[grid]`` returned) with every parameter's value in
    parameter order, on the current CUDA stream, through its C launcher: what Triton's own launch
    does once it has found the binary."""
    device = current_device()
    stream = _current_raw_stream(device)
    if _no_launch_hooks():
        binary.run(*grid3, stream, binary.function, binary.packed_metadata, None, None, None, *values)
        return
    binary[grid3](*values, stream=stream)


def current_device() -> int:
    """The current CUDA device's index."""
    return torch.cuda.current_device()


def _current_raw_stream(device: int) -> int:
    return torch.cuda.current_stream(device).cuda_stream


try:  # the C entry points torch.cuda's functions wrap (what Triton's launcher calls too)
    from torch._C import _cuda_getCurrentRawStream as _current_raw_stream
    from torch._C import _cuda_getDevice as current_device
except ImportError:  # a torch built without CUDA: launches never happen
    pass


# ---- recorded launches --------------------------------------------------------------------------


class RecordedLaunch:
    """One launch made under :func:`record`, replayable with new tensors in its leading
    parameters (every other argument, the grid and the compile options fixed).

    ``tensors`` is how many leading parameters a replay passes (-1: a tensor also sits among the
    fixed arguments, so the launch is not replayable). ``binary`` is the compiled kernel Triton
    picked for the recorded arguments; a replay runs it directly. Valid only while the replayed
    tensors specialize like the recorded ones (same dtype, same 16-byte alignment): the caller's
    key guarantees that. Without a binary (Triton's interpreter) a replay goes through
    ``kernel[grid]``.
    """

    __slots__ = ("binary", "grid", "kernel", "options", "tail", "tensors")

    def __init__(self, kernel, grid: tuple[int, ...], values: list, options: dict, binary) -> None:
        tensors = 0
        while tensors < len(values) and isinstance(values[tensors], torch.Tensor):
            tensors += 1
        self.kernel, self.grid, self.options = kernel, _grid3(grid), options
        self.tensors, self.tail = tensors, tuple(values[tensors:])
        if any(isinstance(value, torch.Tensor) for value in self.tail):
            self.tensors = -1  # a tensor after the leading ones would be replayed stale: unusable
        self.binary = binary if _launchable(binary) else None

    def __call__(self, *tensors: torch.Tensor) -> None:
        if self.binary is not None:
            run_binary(self.binary, self.grid, (*tensors, *self.tail))
        else:
            self.kernel[self.grid](*tensors, *self.tail, **self.options)


class _Recording(threading.local):
    # per thread: another thread's launches never land in a recording or a capture
    launches: list | None = None
    capture = None


_RECORDING = _Recording()


class record:
    """``with record() as launches:``: every :func:`launch` this thread makes inside also appends
    a :class:`RecordedLaunch` to ``launches`` (None for a launch that could not be recorded: an
    argument left to its default)."""

    def __enter__(self) -> list:
        self.previous, self.launches = _RECORDING.launches, []
        _RECORDING.launches = self.launches
        return self.launches

    def __exit__(self, *exc) -> None:
        _RECORDING.launches = self.previous


class capture:
    """``with capture(handler):``: every :func:`launch` this thread makes inside calls
    ``handler(kernel, grid, args, kwargs)`` instead of compiling and running the kernel (the
    tuner collects the compiles a candidate needs this way, then compiles them in parallel)."""

    def __init__(self, handler) -> None:
        self.handler = handler

    def __enter__(self) -> None:
        self.previous, _RECORDING.capture = _RECORDING.capture, self.handler

    def __exit__(self, *exc) -> None:
        _RECORDING.capture = self.previous


def _record(kernel, grid, args, kwargs, binary) -> None:
    launches = _RECORDING.launches
    names = getattr(kernel, "arg_names", None)
    values = None if names is None else _values(names, args, kwargs)
    if values is None:  # no parameter metadata, or a parameter left to its default
        launches.append(None)
        return
    options = {key: value for key, value in kwargs.items() if key not in names}
    launches.append(RecordedLaunch(kernel, grid, values, options, binary))


def clear() -> None:
    """Forget every cached binary, re-read the switch and re-check the launch interface (tests,
    and after changing ``SS1BENCH_DIRECT_LAUNCH``; Triton's own caches are untouched)."""
    global _ENABLED, _INTERFACE_OK
    _INFO.clear()
    _ENABLED = None
    _INTERFACE_OK = None
