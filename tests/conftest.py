"""Shared test setup: device choice, the one comparison helper, per-dtype tolerances.

Devices are chosen here only: GPU tests are marked ``@pytest.mark.gpu`` and skipped without
CUDA; interpreter tests (``@pytest.mark.interpret``) run the Triton kernels on CPU tensors with
``TRITON_INTERPRET=1``, which must be set before Triton decorates the kernels, so this file sets
it when no GPU is present (or when ``--interpret`` is given).
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--interpret", action="store_true",
                     help="run Triton kernels in the CPU interpreter even when a GPU is present")


def pytest_configure(config):
    if config.getoption("--interpret") or not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_interp = pytest.mark.skip(reason="interpreter tests run without a GPU or with --interpret")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "interpret" in item.keywords and not interpreting:
            item.add_marker(skip_interp)


#: Relative-error bounds (||out - ref|| / ||ref|| against a float64 reference), per dtype.
#: fp32 runs with TF32 off: plain fp32 rounding lands far below 1e-4.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float | None = None) -> None:
    """Compare by relative Frobenius error; report max abs error and where it is worst.

    NaN anywhere in ``actual`` fails (outputs are poisoned with NaN before kernels run).
    """
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    bound = TOLERANCE[actual.dtype] if rtol is None else rtol
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    nan = torch.isnan(a)
    if nan.any():
        first = tuple(int(i) for i in nan.nonzero()[0])
        raise AssertionError(f"{name}: {int(nan.sum())} NaN entries (first at {first}): a tile was not written")
    diff = (a - e).abs()
    scale = e.norm().item()
    rel = (a - e).norm().item() / (scale if scale > 0 else 1.0)
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.numel() else ()
    assert rel <= bound, (
        f"{name}: relative error {rel:.3e} > {bound:.1e} (max abs {diff.max().item():.3e} at {worst}, "
        f"got {a[worst].item() if worst else 'n/a'}, expected {e[worst].item() if worst else 'n/a'})"
    )


def poisoned(shape, dtype, device) -> torch.Tensor:
    """An output buffer full of NaN, so unwritten entries fail the comparison."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.fixture
def nan_empty(monkeypatch):
    """torch.empty returns NaN-filled floating-point tensors (integer ones as before): an output
    or intermediate that a launch plan's replay does not write in full fails the comparison."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        tensor = real_empty(*args, **kwargs)
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", empty)


def dtype_id(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}[dtype]


@pytest.fixture
def generator() -> torch.Generator:
    """A private CPU generator: tests never seed the global RNG."""
    return torch.Generator().manual_seed(1234)


def randn(*shape, dtype=torch.float32, device="cpu", generator=None) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float32).to(dtype=dtype, device=device)
