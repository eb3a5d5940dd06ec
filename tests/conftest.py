"""Shared test setup: device choice, the one comparison helper, per-dtype tolerances.

Devices are chosen here only: GPU tests are marked ``@pytest.mark.gpu`` and skipped without
CUDA; interpreter tests (``@pytest.mark.interpret``) run the Triton kernels on CPU tensors with
``TRITON_INTERPRET=1``, which must be set before Triton decorates the kernels, so this file sets
it when no GPU is present (or when ``--interpret`` is given).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib

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


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float | None = None,
                 ulp: float | None = None, slack: torch.Tensor | float = 0.0) -> None:
    """Compare by relative Frobenius error; report max abs error and where it is worst.

    NaN anywhere in ``actual`` fails (outputs are poisoned with NaN before kernels run).

    With ``ulp``, every entry must also lie within ``ulp`` units in the last place of ``actual``'s
    dtype (taken at the expected value) plus ``slack`` (absolute, per entry or one number) of
    ``expected``: the bound for a result that should round once, checked against a float64
    ``expected`` of the same rounded operands, ``slack`` covering the error of the fp32 sums before
    that rounding. The Frobenius tolerance of fp16 (1e-2) is ~30x its output rounding, so it cannot
    see an intermediate sum that was rounded too (issue 22: fp16 split-K partials moved entries by
    up to 126 ulp).
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
    if ulp is not None and diff.numel():
        units = (diff - torch.as_tensor(slack, dtype=torch.float64).cpu()).clamp_min(0) / ulp_of(e, actual.dtype)
        over = units > ulp
        if over.any():
            at = tuple(int(i) for i in torch.unravel_index(units.argmax(), units.shape))
            raise AssertionError(
                f"{name}: {int(over.sum())} of {units.numel()} entries off by more than {ulp:g} ulp "
                f"({dtype_id(actual.dtype)}) beyond the slack; worst {units[at].item():.1f} ulp at {at}, "
                f"got {a[at].item()!r}, expected {e[at].item()!r} (relative error {rel:.3e})"
            )


def ulp_of(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of ``dtype`` at each of ``values`` (float64): 2**(floor(log2|v|)) * eps, and
    the subnormal spacing below the smallest normal."""
    info = torch.finfo(dtype)
    exponent = torch.floor(torch.log2(values.double().abs().clamp_min(info.tiny)))
    return torch.exp2(exponent) * info.eps


#: fp32 unit roundoff: a sum of n terms in fp32 is off by at most about n * FP32_UNIT * sum(|term|).
FP32_UNIT = 2.0**-24


def rounded_once_references(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, structure,
                            grad_out: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """What the kernels compute from their rounded operands, exactly: per output (``"y"``, and with
    ``grad_out`` ``"grad_input"`` and ``"grad_weight"``), ``(float64 value, slack)`` for
    :func:`assert_close`'s ``ulp`` check.

    The kernels round the fp32 sketch of ``x`` to ``x.dtype`` before each product (as the tensor-core
    paths must), sum in fp32 and round the result once; the value here uses the same rounded sketch,
    and the slack is the fp32 sums' worst error, ``n * FP32_UNIT * sum(|term|)`` (it matters only
    where the terms cancel).
    """
    from ss1bench import reference

    xs = reference.sketch(x.double(), structure).to(x.dtype).double()
    wr = reference.rotate_weight(weight.double(), structure)
    b = None if bias is None else bias.double()
    n_terms = structure.k_red + 2  # the products, the bias, and split-K's sum of partials
    out = {"y": (torch.nn.functional.linear(xs, wr, b),
                 n_terms * FP32_UNIT * torch.nn.functional.linear(xs.abs(), wr.abs(), None if b is None else b.abs()))}
    if grad_out is not None:
        dy = grad_out.double()
        out["grad_input"] = (reference.unsketch(dy @ wr, structure),
                             dy.shape[1] * FP32_UNIT * reference.unsketch(dy.abs() @ wr.abs(), structure))
        out["grad_weight"] = (reference.unrotate_weight(dy.t() @ xs, structure),
                              (dy.shape[0] + 1) * FP32_UNIT * reference.unrotate_weight(dy.abs().t() @ xs.abs(),
                                                                                        structure))
    return out


def poisoned(shape, dtype, device) -> torch.Tensor:
    """An output buffer full of NaN, so unwritten entries fail the comparison."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.fixture
def kernels_on_cpu(monkeypatch):
    """The ops' CUDA path (kernels, launch plans) on CPU tensors in the interpreter."""
    from ss1bench import ops
    from ss1bench.kernels import plans
    from ss1bench.kernels.config import invalidate_config_cache

    monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: self.device.type in ("cpu", "cuda")))
    monkeypatch.setattr(plans, "current_device", lambda: 0)
    invalidate_config_cache()
    yield
    invalidate_config_cache()


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


#: The repository's maintainer scripts (not a package: tests load them by path).
SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
EXAMPLES = SCRIPTS.parent / "examples"


def load_script(name: str, folder: pathlib.Path = SCRIPTS):
    """``<folder>/<name>.py`` (default ``scripts/``) imported as a module (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread, then restore the count. Matrices as small as the
    training tests' gain nothing from threads, and on a busy 2-core machine two threads made a
    step 15x slower (110 ms instead of 7 ms dense, 185 ms instead of 30 ms SS1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
