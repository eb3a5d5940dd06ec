"""The floating-point dtypes the SS1 kernels take, and their short names (``fp32``, ``fp16``,
``bf16``) used by launch configs, the tuning database, CSVs and command-line options."""

from __future__ import annotations

import torch

#: Short name -> dtype, in the order the command line lists them.
TORCH_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
#: dtype -> short name.
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in TORCH_DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype the kernels support; TypeError for any other."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise TypeError(f"SS1 kernels support float32, float16 and bfloat16 tensors, got {dtype}") from None
