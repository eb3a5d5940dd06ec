"""Launch plans: the host path of every eager SS1 call after its first call per input key.

An eager call (the inference forward ``ss1_forward``; the training path's sketch-and-rotate,
unsketch and unrotate passes) checks its inputs and resolves a launch config on its first call
per *plan key* (every tensor's shape, strides, dtype, device and 16-byte alignment, the
structure, the device, TF32), records its launches (``kernels/launch.py``) and keeps them as a
plan; a later call with the same key replays the plan (the recorded binaries through their C
launchers, a cuBLAS product as before) and skips the checks, the config lookup and the argument
building. Plans are dropped with the resolved configs (``config.invalidate_config_cache``).
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

from ss1bench.structure import SS1Structure

from .config import LaunchConfig, launch_plans
from .launch import current_device, record

#: Plans kept before the cache starts over (one per input key).
MAX_PLANS = 4096


def _tensor_key(tensor: torch.Tensor | None) -> tuple | None:
    if tensor is None:
        return None
    return (tensor.shape, tensor.stride(), tensor.dtype, tensor.device, tensor.data_ptr() % 16)


def plan_key(kind: Hashable, structure: SS1Structure, *tensors: torch.Tensor | None) -> tuple:
    """Everything that decides the launches of one eager call of ``kind`` (a name, or a tuple of
    a name and what else the call depends on, e.g. a pass's output dtype; default config, new
    output): each tensor's shape, strides, dtype, device and pointer alignment (Triton specializes
    on 16-byte alignment), the structure, the current CUDA device and, for float32, whether TF32 is
    allowed. Calls with the same key passed the same checks and launch the same binaries."""
    first = tensors[0]
    device = current_device() if first.is_cuda else -1
    tf32 = first.dtype is torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return (kind, structure.key, device, tf32, *map(_tensor_key, tensors))


def recording(run, plan_key: tuple | None, recorded: list):
    """``run`` for :func:`_launch`; with a plan key, each attempt's launches are recorded and
    ``recorded`` ends as ``[config, launches]`` of the attempt that succeeded."""
    if plan_key is None:
        return run

    def launch(cfg: LaunchConfig) -> None:
        with record() as launches:
            run(cfg)
        recorded[:] = [cfg, launches]

    return launch


def keep_plan(plan_key: tuple, plan) -> None:
    if plan is None:
        return
    if len(launch_plans) >= MAX_PLANS:  # many distinct keys: start over
        launch_plans.clear()
    launch_plans[plan_key] = plan


def _replayable(launches: list, expected: int) -> bool:
    """``launches`` are the ``expected`` launches of an algorithm, each recorded in full."""
    return len(launches) == expected and all(launch is not None and launch.tensors > 0 for launch in launches)


def forward_plan_key(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, structure: SS1Structure,
                     rotated_weight: torch.Tensor | None) -> tuple:
    """The plan key (:func:`plan_key`) of one ``ss1_forward`` call."""
    return plan_key("forward", structure, x, weight, bias, rotated_weight)


def forward_with_plan(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, structure: SS1Structure,
                      rotated_weight: torch.Tensor | None = None) -> torch.Tensor | None:
    """``ss1_forward(x, weight, bias, structure, rotated_weight=rotated_weight)`` if a plan for
    these inputs is kept (an earlier call with the same key checked them), else None."""
    plan = launch_plans.get(forward_plan_key(x, weight, bias, structure, rotated_weight))
    return None if plan is None else plan(x, weight, bias, rotated_weight)


def forward_plan(cfg: LaunchConfig, launches: list, m: int, n: int, k_red: int):
    """The function that repeats the recorded launches of one forward for new tensors of the same
    key: each algorithm's intermediates allocated as the first call did, its kernels run through
    their recorded binaries, its cuBLAS product called as before; it returns ``y``. None where a
    launch could not be recorded (the call then keeps no plan)."""
    algorithm, split = cfg.algorithm, cfg.split_k
    if algorithm == "fused" and split > 1:  # the split-K kernel, then its epilogue
        if not _replayable(launches, 2):
            return None
        kernel, epilogue = launches

        def plan(x, weight, bias, rotated_weight):
            y = torch.empty((m, n), dtype=x.dtype, device=x.device)
            partial = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
            bias_or_y = y if bias is None else bias
            kernel(x, weight, bias_or_y, y, partial)
            epilogue(partial, bias_or_y, y)
            return y

        return plan
    if not _replayable(launches, 1):
        return None
    (kernel,) = launches
    if algorithm == "sketch_gemm":  # the sketch (and rotation) kernel, then cuBLAS
        def plan(x, weight, bias, rotated_weight):
            xs = torch.empty((m, k_red), dtype=x.dtype, device=x.device)
            if rotated_weight is None:
                rotated_weight = torch.empty((n, k_red), dtype=weight.dtype, device=weight.device)
                kernel(x, xs, weight, rotated_weight)
            else:
                kernel(x, xs)
            # y allocated by the product itself: one Python-level allocation fewer per call
            return torch.mm(xs, rotated_weight.t()) if bias is None else torch.addmm(bias, xs, rotated_weight.t())
    elif algorithm == "fused":
        def plan(x, weight, bias, rotated_weight):
            y = torch.empty((m, n), dtype=x.dtype, device=x.device)
            kernel(x, weight, y if bias is None else bias, y, y)
            return y
    else:  # gemv, resident
        def plan(x, weight, bias, rotated_weight):
            y = torch.empty((m, n), dtype=x.dtype, device=x.device)
            kernel(x, weight, y if bias is None else bias, y)
            return y
    return plan


def pass_plan(launches: list, output_shapes: tuple[tuple[int, ...], ...], interleaved: bool = False,
              out_dtypes: tuple[torch.dtype | None, ...] | None = None):
    """The replay of one memory-bound pass: one launch whose leading tensors are the pass's inputs
    followed by its fresh outputs (``output_shapes``, of ``out_dtypes``, where an entry is None
    the matching input's dtype, on the first input's device), or, with ``interleaved``, input,
    output, input, output (the sketch-and-rotate and unsketch-and-unrotate kernels). Returns the
    output (or the tuple of outputs); None where the launch could not be recorded."""
    if not _replayable(launches, 1):
        return None
    (kernel,) = launches
    out_dtypes = out_dtypes or (None,) * len(output_shapes)

    def plan(*inputs):
        device = inputs[0].device
        outputs = [torch.empty(shape, dtype=dtype or source.dtype, device=device)
                   for shape, dtype, source in zip(output_shapes, out_dtypes, inputs, strict=False)]
        if interleaved:
            kernel(*(t for pair in zip(inputs, outputs, strict=True) for t in pair))
        else:
            kernel(*inputs, *outputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    return plan
