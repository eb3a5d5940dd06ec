"""A direct launch path for compiled Triton kernels: the host cost of a launch, not the kernel.

``kernel[grid](*args, **kwargs)`` re-derives, on every call, which compiled binary the arguments
select (binding, specialization, cache key) before launching it. On an H200 host that cost
60-80 us per launch, more than a decode-sized SS1 kernel runs, and an SSL layer launches one or
two kernels per call. :func:`launch` keeps, per kernel, the compiled binary for each
*specialization key* and launches it through ``CompiledKernel[grid]`` directly.

The key is at least as fine as Triton's own specialization, so a cached binary is only reused
where Triton would pick the same one:

- constexpr parameters: their values;
- tensors: dtype and whether the data pointer is 16-byte aligned;
- integers: whether the value is 1, divisible by 16, and its integer type range (parameters in
  ``do_not_specialize``: the range only); floats and bools: their type (bools: their value);
- ``num_warps``, ``num_stages`` and the current CUDA device.

The first call for a key goes through ``kernel[grid]`` (which compiles, or loads Triton's cache)
and keeps the binary it returns. In the interpreter (``TRITON_INTERPRET=1``), for arguments of
other types, or while a kernel's ``run`` is replaced on the instance (the tuner's compile
capture), every call takes the normal path.

Opt-in (``SS1BENCH_DIRECT_LAUNCH=1``); off by default. Measured on the H200 host with Triton 3.6
(``scripts/baselines.py --host-only``, two runs): one SSL call at M = 1 cost 74-76 us through
this path and 48 us through ``kernel[grid]``, whose launcher got cheaper than
``CompiledKernel[grid]`` there. The path stays for Triton versions where it pays (measure first).
"""

from __future__ import annotations

import os
from typing import Any

import torch

_INT64 = (-(2**63), 2**63 - 1)


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


def enabled() -> bool:
    """Whether launches may bypass ``kernel[grid]``: switched on (``SS1BENCH_DIRECT_LAUNCH=1``),
    not in the interpreter."""
    return os.environ.get("SS1BENCH_DIRECT_LAUNCH", "0") not in ("", "0") and not interpreting()


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


def specialization_key(info: _KernelInfo, values: list, num_warps, num_stages, device: int) -> tuple | None:
    """The key of one launch: the constexpr values, :func:`spec` of each runtime argument, the
    compile options and the device, flattened into one tuple (each position's entries have types
    that cannot be confused)."""
    if len(values) != len(info.constexpr):
        raise ValueError(f"{len(values)} launch arguments for {len(info.constexpr)} kernel parameters")
    parts: list = [device, num_warps, num_stages]
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
    """``kernel[grid](*args, **kwargs)``, through the cached binary when there is one."""
    # "run" set on the instance: someone intercepts launches (the tuner's compile capture)
    if not enabled() or "run" in getattr(kernel, "__dict__", {}):
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
    try:
        values = [*args, *[kwargs[name] for name in info.names[len(args):]]]
    except KeyError:  # a parameter left to its default: let Triton bind it
        kernel[grid](*args, **kwargs)
        return
    key = specialization_key(info, values, num_warps, num_stages, torch.cuda.current_device())
    binary = info.binaries.get(key) if key is not None else None
    if binary is None:
        compiled = kernel[grid](*args, **kwargs)
        if key is not None and hasattr(compiled, "function") and hasattr(compiled, "__getitem__"):
            info.binaries[key] = compiled
        return
    grid3 = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
    binary[grid3](*values, stream=torch.cuda.current_stream().cuda_stream)


def clear() -> None:
    """Forget every cached binary (tests; Triton's own caches are untouched)."""
    _INFO.clear()
