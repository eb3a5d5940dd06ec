"""GPU checks: kernels against a float64 reference at GPT-2 and Llama-3-8B sizes, every c.

Marked ``gpu`` (skipped without CUDA). Errors are relative Frobenius errors against the
float64 reference computed on the GPU from the same rounded inputs: <= 1e-4 in fp32 with TF32
off, <= 1e-2 in fp16/bf16 (conftest.TOLERANCE). Set SS1BENCH_ERRORS_CSV to append every
measured error to a CSV (the GPU run script collects them for the closing note).
"""

from __future__ import annotations

import contextlib
import csv
import os

import pytest
import torch
from conftest import TOLERANCE, assert_close, dtype_id, poisoned

from ss1bench import SSL, reference
from ss1bench.kernels.config import LaunchConfig
from ss1bench.structure import SS1Structure, default_block_k

pytestmark = pytest.mark.gpu

# (K, N) of BASELINES.md: GPT-2 small (fc, fc-proj, qkv) and Llama-3-8B (square, up, down).
GPT2 = [(768, 3072), (3072, 768), (768, 2304)]
LLAMA = [(4096, 4096), (4096, 14336), (14336, 4096)]
REDUCTION_FACTORS = [1, 2, 4, 8, 16, 32]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Decode, an odd middle size, and a prefill-sized batch for the smaller GPT-2 shapes.
BATCHES = {"gpt2": [1, 257, 4096], "llama": [1, 257]}


def _record(name: str, shape: tuple, c: int, dtype: torch.dtype, error: float) -> None:
    path = os.environ.get("SS1BENCH_ERRORS_CSV")
    if not path:
        return
    path = f"{path}.{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"  # one file per xdist worker
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["quantity", "M", "K", "N", "c", "dtype", "rel_error"])
        writer.writerow([name, *shape, c, dtype_id(dtype), f"{error:.3e}"])


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected).norm() / expected.norm()).item()


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def _cases():
    for family, shapes in (("gpt2", GPT2), ("llama", LLAMA)):
        for k, n in shapes:
            for c in REDUCTION_FACTORS:
                yield pytest.param(family, k, n, c, id=f"{family}-K{k}-N{n}-c{c}")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("family", "k", "n", "c"), list(_cases()))
def test_kernels_match_float64_reference(family, k, n, c, dtype):
    from ss1bench.kernels import ss1 as kernels

    device = "cuda"
    generator = torch.Generator(device=device).manual_seed(k * 31 + n * 7 + c)
    structure = SS1Structure(k, n, c, seed=100 + c, block_k=default_block_k(k, c), block_n=128)
    weight = (torch.rand(structure.weight_shape, generator=generator, device=device) * 2 - 1) / k**0.5
    bias = torch.randn(n, generator=generator, device=device)
    w64, b64 = weight.to(dtype).double(), bias.to(dtype).double()
    for m in BATCHES[family]:
        x = torch.randn(m, k, generator=generator, device=device).to(dtype)
        dy = torch.randn(m, n, generator=generator, device=device).to(dtype)
        x64, dy64 = x.double(), dy.double()
        y = kernels.ss1_forward(x, weight.to(dtype), bias.to(dtype), structure,
                                out=poisoned((m, n), dtype, device))
        y_ref = reference.ss1_forward_reference(x64, w64, b64, structure)
        dx = kernels.ss1_grad_input(dy, weight.to(dtype), structure, out=poisoned((m, k), dtype, device))
        dx_ref = reference.ss1_grad_input_reference(dy64, w64, structure)
        dw = kernels.ss1_grad_weight(dy, x, structure, out=poisoned(structure.weight_shape, dtype, device))
        dw_ref = reference.ss1_grad_weight_reference(dy64, x64, structure)
        for name, actual, expected in (("forward", y, y_ref), ("grad_input", dx, dx_ref),
                                       ("grad_weight", dw, dw_ref)):
            _record(name, (m, k, n), c, dtype, _rel(actual, expected) if not actual.isnan().any() else float("nan"))
            assert_close(f"{name} M{m}", actual, expected, TOLERANCE[dtype])


# One pinned config per forward variant (the tuning database may pick any of them per shape).
FORWARD_CONFIGS = {
    "fused": LaunchConfig(32, 64, 32, 4, 2),  # fits shared memory at c = 16 in fp32 too
    "fused-splitk": LaunchConfig(16, 64, 64, 4, 3, split_k=2),
    "sketch_gemm": LaunchConfig(32, 64, 128, 4, 1, algorithm="sketch_gemm"),
    "resident": LaunchConfig(64, 128, 256, 4, 2, group_m=1, algorithm="resident"),
    "gemv": LaunchConfig(1, 32, 256, 4, 3, group_m=1, algorithm="gemv"),
    "gemv-rows": LaunchConfig(4, 16, 128, 8, 3, group_m=1, algorithm="gemv"),
    # the decode refinement's register cap (compiled with Triton's maxnreg option)
    "gemv-maxnreg": LaunchConfig(1, 64, 64, 4, 3, group_m=1, algorithm="gemv", maxnreg=255),
    "fused-maxnreg": LaunchConfig(16, 64, 64, 4, 3, maxnreg=255),
    # the members gathered as one block (one row; several rows, the last block past M)
    "gemv-block": LaunchConfig(1, 64, 64, 2, 3, group_m=1, algorithm="gemv", block_gather=True),
    "gemv-rows-block": LaunchConfig(4, 16, 64, 4, 3, group_m=1, algorithm="gemv", block_gather=True, maxnreg=255),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(FORWARD_CONFIGS))
@pytest.mark.parametrize(("k", "n", "c"), [(768, 3072, 4), (3072, 768, 16), (1000, 1100, 8)],
                         ids=lambda v: str(v))
def test_every_forward_variant_matches_float64_reference(k, n, c, variant, dtype):
    from ss1bench.kernels import ss1 as kernels

    device = "cuda"
    generator = torch.Generator(device=device).manual_seed(k + n + c)
    structure = SS1Structure(k, n, c, seed=7 + c, block_k=default_block_k(k, c), block_n=128)
    weight = ((torch.rand(structure.weight_shape, generator=generator, device=device) * 2 - 1) / k**0.5).to(dtype)
    bias = torch.randn(n, generator=generator, device=device).to(dtype)
    for m in (1, 37, 300):
        x = torch.randn(m, k, generator=generator, device=device).to(dtype)
        y = kernels.ss1_forward(x, weight, bias, structure, FORWARD_CONFIGS[variant],
                                out=poisoned((m, n), dtype, device))
        y_ref = reference.ss1_forward_reference(x.double(), weight.double(), bias.double(), structure)
        _record(f"forward[{variant}]", (m, k, n), c, dtype,
                _rel(y, y_ref) if not y.isnan().any() else float("nan"))
        assert_close(f"forward[{variant}] M{m}", y, y_ref, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", ["sketch_gemm", "fused-splitk", "gemv"])
@pytest.mark.parametrize(("k", "n", "c"), [(768, 3072, 4), (3072, 768, 16), (1000, 1100, 8)],
                         ids=lambda v: str(v))
def test_forward_with_rotated_weight_matches_float64_reference(k, n, c, variant, dtype):
    """The rotated-weight cache's path (kind forward_rotated): sketch + cuBLAS on the given copy."""
    from ss1bench.kernels import ss1 as kernels

    device = "cuda"
    generator = torch.Generator(device=device).manual_seed(k + n + c + 1)
    structure = SS1Structure(k, n, c, seed=9 + c, block_k=default_block_k(k, c), block_n=128)
    weight = ((torch.rand(structure.weight_shape, generator=generator, device=device) * 2 - 1) / k**0.5).to(dtype)
    bias = torch.randn(n, generator=generator, device=device).to(dtype)
    rotated = kernels.rotate_weight(weight, structure)
    assert torch.equal(rotated, reference.rotate_weight(weight, structure))
    for m in (1, 37, 300):
        x = torch.randn(m, k, generator=generator, device=device).to(dtype)
        y = kernels.ss1_forward(x, weight, bias, structure, FORWARD_CONFIGS[variant],
                                out=poisoned((m, n), dtype, device), rotated_weight=rotated)
        y_ref = reference.ss1_forward_reference(x.double(), weight.double(), bias.double(), structure)
        _record(f"forward_rotated[{variant}]", (m, k, n), c, dtype,
                _rel(y, y_ref) if not y.isnan().any() else float("nan"))
        assert_close(f"forward_rotated[{variant}] M{m}", y, y_ref, TOLERANCE[dtype])


def test_rotated_weight_cache_under_cuda_graph_capture():
    """A valid cache is read by the captured graph; a stale one is not refilled during capture
    (its copy would hold data only after a replay): the graph then rotates the weight itself."""
    from ss1bench.kernels import ss1 as kernels
    from ss1bench.kernels.config import override_launch_config

    dtype = torch.float16
    sketch_gemm = LaunchConfig(16, 64, 128, 4, 1, algorithm="sketch_gemm")
    generator = torch.Generator(device="cuda").manual_seed(3)
    layer = SSL(1024, 4096, redn_factor=4, seed=5, device="cuda", dtype=dtype).cache_rotated_weight()
    x = torch.randn(16, 1024, generator=generator, device="cuda", dtype=dtype)

    def expected():
        return x.double() @ layer.dense_weight().double().T + layer.bias.double()

    with torch.no_grad(), override_launch_config(sketch_gemm):
        layer(x)  # fills the cache
        cached = layer._rotated
        kernels.ss1_forward(x, layer.weight, layer.bias, layer.structure)  # compiles the uncached path too
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
            out = layer(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph.replay()
        assert_close("graph, cached", out, expected(), TOLERANCE[dtype])
        assert layer._rotated is cached
        layer.weight.mul_(-1.0)  # stale now
        stale_graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream), torch.cuda.graph(stale_graph, stream=stream):
            out2 = layer(x)
        torch.cuda.current_stream().wait_stream(stream)
        assert layer._rotated is cached  # not refilled during capture
        stale_graph.replay()
        assert_close("graph, stale cache", out2, expected(), TOLERANCE[dtype])
        assert_close("eager after", layer(x), expected(), TOLERANCE[dtype])  # refilled eagerly
        assert layer._rotated is not cached


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_layer_autograd_on_gpu(dtype, nan_empty):
    """Eager training path (one autograd node: sketch-and-rotate launch, cuBLAS products,
    unsketch and unrotate) on CUDA against the dense equivalent."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    layer = SSL(768, 3072, redn_factor=4, seed=7, device="cuda", dtype=dtype)
    x = torch.randn(4, 33, 768, generator=generator, device="cuda", dtype=dtype, requires_grad=True)
    y = layer(x)
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "_SketchLinearBackward"  # under the reshape
    dense = layer.dense_weight().double()
    x64 = x.detach().double()
    y_ref = x64 @ dense.T + layer.bias.double()
    assert_close("y", y, y_ref)
    dy = torch.randn(y.shape, generator=generator, device="cuda", dtype=dtype)
    y.backward(dy)
    dy64 = dy.double().reshape(-1, 3072)
    assert_close("x.grad", x.grad, (dy64 @ dense).reshape(x.shape))
    dw_ref = reference.ss1_grad_weight_reference(dy64, x64.reshape(-1, 768), layer.structure)
    assert_close("weight.grad", layer.weight.grad, dw_ref)
    assert_close("bias.grad", layer.bias.grad, dy64.sum(0))


def test_torch_compile_and_cuda_graphs_small_model():
    """A small model with SSL layers under torch.compile (default and reduce-overhead)."""
    torch._dynamo.reset()
    generator = torch.Generator(device="cuda").manual_seed(0)
    model = torch.nn.Sequential(
        SSL(256, 512, redn_factor=4, seed=1), torch.nn.GELU(), SSL(512, 256, redn_factor=2, seed=2)
    ).to(device="cuda", dtype=torch.float16)
    x = torch.randn(64, 256, generator=generator, device="cuda", dtype=torch.float16)
    expected = model(x)
    compiled = torch.compile(model, fullgraph=True)
    assert_close("compiled", compiled(x), expected.double(), 1e-3)
    graphed = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # warm-up, record, replay
        out = graphed(x)
    assert_close("cuda-graphs", out, expected.double(), 1e-3)
    # Gradients through the compiled model.
    xg = x.clone().requires_grad_()
    compiled(xg).float().sum().backward()
    xe = x.clone().requires_grad_()
    model(xe).float().sum().backward()
    assert_close("compiled grad", xg.grad, xe.grad.double(), 1e-3)


def test_layer_built_under_default_cuda_device():
    """`with torch.device("cuda")` builds on the GPU with the same hash as a CPU-built layer."""
    with torch.device("cuda"):
        layer = SSL(768, 3072, redn_factor=4, seed=5, dtype=torch.float16)
    assert layer.weight.is_cuda
    assert layer.structure.hash == SSL(768, 3072, redn_factor=4, seed=5, device="meta").structure.hash
    x = torch.randn(3, 768, device="cuda", dtype=torch.float16)
    assert_close("y", layer(x), x.double() @ layer.dense_weight().double().T + layer.bias.double())


def test_direct_launch_path_matches_triton_launches_and_respects_alignment(monkeypatch):
    """kernels/launch.py reuses a compiled binary only for the same specialization: a launch on
    a misaligned view after an aligned one must compile its own (and be right)."""
    from ss1bench.kernels import launch as direct
    from ss1bench.kernels import ss1 as kernels

    device, dtype = "cuda", torch.float16
    structure = SS1Structure(768, 3072, 4, seed=3, block_k=default_block_k(768, 4), block_n=128)
    generator = torch.Generator(device=device).manual_seed(0)
    weight = torch.randn(structure.weight_shape, generator=generator, device=device).to(dtype) / 30
    bias = torch.randn(3072, generator=generator, device=device).to(dtype)
    flat = torch.randn(5 * 768 + 1, generator=generator, device=device).to(dtype)
    aligned, misaligned = flat[:5 * 768].view(5, 768), flat[1:].view(5, 768)
    assert misaligned.data_ptr() % 16 != 0
    results = {}
    for setting in ("0", "1"):
        monkeypatch.setenv("SS1BENCH_DIRECT_LAUNCH", setting)
        direct.clear()
        for name, x in (("aligned", aligned), ("misaligned", misaligned), ("aligned again", aligned)):
            for _ in range(2):  # the second call of a key takes the direct path
                y = kernels.ss1_forward(x, weight, bias, structure, out=poisoned((5, 3072), dtype, device))
            expected = reference.ss1_forward_reference(x.double(), weight.double(), bias.double(), structure)
            assert_close(f"{name} (direct launch {setting})", y, expected, TOLERANCE[dtype])
            results[(setting, name)] = y
    for name in ("aligned", "misaligned"):
        assert torch.equal(results[("0", name)], results[("1", name)])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(FORWARD_CONFIGS))
def test_forward_plans_replay_the_recorded_binaries(variant, dtype, monkeypatch, nan_empty):
    """The eager fast path (kernels/ss1.py forward plans): the first call per key records, later
    calls run the recorded binaries through their C launchers. Replays on new inputs, aligned and
    misaligned, with and without bias, with the rotated weight, and inside a CUDA graph must all
    match the reference; every intermediate starts as NaN; no replay may take the normal path."""
    from ss1bench.kernels import ss1 as kernels
    from ss1bench.kernels.config import invalidate_config_cache, launch_plans, override_launch_config

    device, (k, n, c) = "cuda", (1000, 1100, 8)
    generator = torch.Generator(device=device).manual_seed(11)
    structure = SS1Structure(k, n, c, seed=5, block_k=default_block_k(k, c), block_n=128)
    weight = ((torch.rand(structure.weight_shape, generator=generator, device=device) * 2 - 1) / k**0.5).to(dtype)
    bias = torch.randn(n, generator=generator, device=device).to(dtype)
    rotated = kernels.rotate_weight(weight, structure)
    m = FORWARD_CONFIGS[variant].tile_m * 3 + 1
    flat = torch.randn(2 * m * k + 1, generator=generator, device=device).to(dtype)
    inputs = {"aligned": flat[:m * k].view(m, k), "misaligned": flat[m * k + 1:].view(m, k)}
    invalidate_config_cache()
    with override_launch_config(FORWARD_CONFIGS[variant], kinds=("forward", "forward_rotated")):
        cases = [(name, x, b, r) for name, x in inputs.items() for b in (bias, None) for r in (None, rotated)]
        for _name, x, b, r in cases:  # record
            kernels.ss1_forward(x, weight, b, structure, rotated_weight=r)
        assert len(launch_plans) == len(cases)
        real_launch = kernels._launch
        monkeypatch.setattr(kernels, "_launch", lambda *a: pytest.fail(f"{variant}: a replay took the normal path"))
        for name, x, b, r in cases:
            x.copy_(torch.randn(x.shape, generator=generator, device=device).to(dtype))  # new values
            y = kernels.ss1_forward(x, weight, b, structure, rotated_weight=r)
            y_ref = reference.ss1_forward_reference(x.double(), weight.double(),
                                                    None if b is None else b.double(), structure)
            tag = f"{variant} {name} bias={b is not None} rotated={r is not None}"
            _record(f"forward plan[{variant}]", (m, k, n), c, dtype, _rel(y, y_ref))
            assert_close(tag, y, y_ref, TOLERANCE[dtype])
        x = inputs["aligned"]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = kernels.ss1_forward(x, weight, bias, structure)
        x.copy_(torch.randn(x.shape, generator=generator, device=device).to(dtype))
        graph.replay()
        y_ref = reference.ss1_forward_reference(x.double(), weight.double(), bias.double(), structure)
        assert_close(f"{variant} graph replay", y, y_ref, TOLERANCE[dtype])
        monkeypatch.setattr(kernels, "_launch", real_launch)
    invalidate_config_cache()


# ---- torch.compile: the traced triton ops ---------------------------------------------------------

COMPILE_CASES = [(257, 768, 3072, 4), (33, 1000, 1100, 8), (4096, 3072, 768, 16), (1, 768, 2304, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("m", "k", "n", "c"), COMPILE_CASES,
                         ids=[f"M{m}-K{k}-N{n}-c{c}" for m, k, n, c in COMPILE_CASES])
def test_compiled_forward_and_backward_match_float64_reference(m, k, n, c, dtype, nan_empty):
    """A compiled SSL (Inductor, fullgraph): ss1bench::sketch_rotate + F.linear forward, the traced
    backward (aten matmuls, unsketch, unrotate), against float64; intermediates NaN-poisoned."""
    torch.compiler.reset()
    generator = torch.Generator(device="cuda").manual_seed(m + k + n + c)
    layer = SSL(k, n, redn_factor=c, seed=3, block_k=default_block_k(k, c), block_n=128, device="cuda",
                dtype=dtype)
    x = torch.randn(m, k, generator=generator, device="cuda").to(dtype).requires_grad_()
    dy = torch.randn(m, n, generator=generator, device="cuda").to(dtype)
    compiled = torch.compile(layer, fullgraph=True)
    y = compiled(x)
    y.backward(dy)
    dense = layer.dense_weight().detach().double()
    x64, dy64 = x.detach().double(), dy.double()
    checks = {
        "y": (y, x64 @ dense.T + layer.bias.double()),
        "grad_x": (x.grad, dy64 @ dense),
        "grad_w": (layer.weight.grad, reference.ss1_grad_weight_reference(dy64, x64, layer.structure)),
        "grad_b": (layer.bias.grad, dy64.sum(0)),
    }
    for name, (actual, expected) in checks.items():
        _record(f"compiled {name}", (m, k, n), c, dtype, _rel(actual, expected))
        assert_close(name, actual, expected, TOLERANCE[dtype])
    with torch.no_grad():
        assert_close("no_grad", compiled(x), checks["y"][1], TOLERANCE[dtype])
    torch.compiler.reset()


def test_compiled_graph_launches_the_kernels_itself():
    """Inductor's generated code launches the SS1 Triton kernels and cuBLAS directly: no
    torch.ops.ss1bench call (an opaque op would run our Python on every call)."""
    from torch._inductor.utils import run_and_get_code

    torch.compiler.reset()
    layer = SSL(768, 3072, redn_factor=4, seed=3, device="cuda", dtype=torch.float16)
    x = torch.randn(64, 768, device="cuda", dtype=torch.float16, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    _, codes = run_and_get_code(lambda: compiled(x).sum().backward())
    code = "\n".join(codes)
    assert "_ss1_sketch_rotate_kernel" in code and "_ss1_unsketch_unrotate_kernel" in code
    assert "torch.ops.ss1bench" not in code
    assert "extern_kernels.addmm" in code or "extern_kernels.mm" in code
    torch.compiler.reset()


def test_reduce_overhead_with_new_sizes():
    """CUDA graphs (mode="reduce-overhead") with dynamic batch sizes: results stay right."""
    torch.compiler.reset()
    generator = torch.Generator(device="cuda").manual_seed(0)
    layer = SSL(1000, 1100, redn_factor=8, seed=2, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(layer, mode="reduce-overhead", dynamic=True)
    dense = layer.dense_weight().detach().double()
    with torch.no_grad():
        for rows in (8, 8, 8, 24, 100, 8):
            torch.compiler.cudagraph_mark_step_begin()
            x = torch.randn(rows, 1000, generator=generator, device="cuda").to(torch.bfloat16)
            y = compiled(x)
            assert_close(f"rows={rows}", y, x.double() @ dense.T + layer.bias.double(), TOLERANCE[torch.bfloat16])
    torch.compiler.reset()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("m", [1, 16, 300])
def test_frozen_compiled_inference_runs_only_the_sketch(m, dtype):
    """Inference compiled with Inductor's freezing: the rotation is folded into a constant at
    compile time, so the generated code launches the sketch kernel and the product only; the
    output matches float64, and (as freezing promises) a later in-place weight change does not
    reach it."""
    from torch._inductor.utils import run_and_get_code

    torch.compiler.reset()
    generator = torch.Generator(device="cuda").manual_seed(m)
    layer = SSL(768, 2304, redn_factor=16, seed=3, device="cuda", dtype=dtype).eval()
    x = torch.randn(m, 768, generator=generator, device="cuda").to(dtype)
    expected = x.double() @ layer.dense_weight().detach().double().T + layer.bias.detach().double()
    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        compiled = torch.compile(layer, fullgraph=True)
        y, codes = run_and_get_code(compiled, x)
        assert_close("frozen", y, expected, TOLERANCE[dtype])
        layer.weight.mul_(2.0)
        assert_close("after a weight change", compiled(x), expected, TOLERANCE[dtype])
    code = "\n".join(codes)
    assert "_ss1_sketch_kernel" in code, code
    assert "_ss1_sketch_rotate_kernel" not in code and "_ss1_rotate_kernel" not in code, code
    assert "ss1bench.rotate_weight" not in code, code  # folded: not called at run time
    torch.compiler.reset()


@pytest.mark.parametrize("name", ["sketch_rotate", "sketch_rotate_out_dtype", "sketch_rotate_bias", "unsketch",
                                  "unsketch_unrotate", "sketch", "rotate_weight"])
def test_triton_ops_pass_opcheck(name):
    """torch.library.opcheck: schema, fake tensors, autograd registration, AOT dispatch."""
    from ss1bench.kernels import traced  # noqa: F401  (registers the ops)

    structure = SS1Structure(1000, 300, 4, 7, 64, 128)
    generator = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(37, 1000, generator=generator, device="cuda").requires_grad_()
    weight = torch.randn(*structure.weight_shape, generator=generator, device="cuda").requires_grad_()
    args = {
        "sketch_rotate": (x, weight, *structure.key),
        # autocast's: x cast before the op, the float32 weight read and written in float16 by it
        "sketch_rotate_out_dtype": (x.detach().half().requires_grad_(), weight, *structure.key, torch.float16),
        "sketch_rotate_bias": (x.detach().half().requires_grad_(), weight,
                               torch.randn(300, generator=generator, device="cuda").requires_grad_(),
                               *structure.key, torch.float16),
        "unsketch": (torch.randn(37, structure.k_red, generator=generator, device="cuda"), *structure.key),
        "unsketch_unrotate": (torch.randn(37, structure.k_red, generator=generator, device="cuda").half(),
                              torch.randn(*structure.weight_shape, generator=generator, device="cuda").half(),
                              *structure.key, torch.float32),
        # inference ops (no autograd formula): inputs that do not require grad
        "sketch": (x.detach(), *structure.key),
        "rotate_weight": (weight.detach(), *structure.key),
    }[name]
    result = torch.library.opcheck(getattr(torch.ops.ss1bench, name.removesuffix("_out_dtype")), args)
    assert all(status == "SUCCESS" for status in result.values()), result


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_layer_under_autocast_folds_the_casts(dtype, compiled, nan_empty):
    """Float32 parameters under ``torch.autocast``: the training path, eager (the casts folded into
    the sketch passes: no cast of x, the weight or their sketches runs) and compiled with fullgraph
    (the casts made first, for Inductor to fuse), computes in autocast's dtype: output in ``dtype``,
    float32 gradients, against float64."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Casts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                self.shapes.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    torch.compiler.reset()
    generator = torch.Generator(device="cuda").manual_seed(11)
    layer = SSL(768, 3072, redn_factor=4, seed=7, device="cuda")
    x = torch.randn(4, 65, 768, generator=generator, device="cuda", requires_grad=True)
    dy = torch.randn(4, 65, 3072, generator=generator, device="cuda").to(dtype)
    run = torch.compile(layer, fullgraph=True) if compiled else layer
    casts = Casts()
    with torch.autocast("cuda", dtype=dtype), (contextlib.nullcontext() if compiled else casts):
        if compiled:  # the weight and the bias are cast by the op's kernel, not by casts of their own
            from torch._inductor.utils import run_and_get_code

            y, codes = run_and_get_code(run, x)
            assert "_ss1_sketch_rotate_bias_kernel" in "\n".join(codes)
        else:
            y = run(x)
    y.backward(dy)
    assert y.dtype == dtype and x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    # a cast of x, the sketch, the weight or the rotated weight has last dim K or K_red
    assert not [shape for shape in casts.shapes if shape[-1] in (768, layer.structure.k_red)], casts.shapes
    dense = layer.dense_weight().detach().double()
    x64, dy64 = x.detach().double().reshape(-1, 768), dy.double().reshape(-1, 3072)
    assert_close("y", y, (x64 @ dense.T + layer.bias.double()).reshape(y.shape), TOLERANCE[dtype])
    assert_close("grad_x", x.grad, (dy64 @ dense).reshape(x.shape), TOLERANCE[dtype])
    assert_close("grad_w", layer.weight.grad, reference.ss1_grad_weight_reference(dy64, x64, layer.structure),
                 TOLERANCE[dtype])
    torch.compiler.reset()
