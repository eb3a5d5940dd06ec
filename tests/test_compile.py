"""SS1 under ``torch.compile`` and in eager training, on CPU.

On CPU a compiled SSL call traces the reference's sketch, rotation and ``F.linear`` (on CUDA it
traces the ``ss1bench::sketch_rotate`` triton op instead: ``tests/test_gpu.py``). These tests check
what both share: the Python of ``SSL.forward`` and ``ss1_linear`` traces without graph breaks,
forward and backward match eager and the float64 reference, dynamic shapes do not recompile per
size, bad inputs get eager's errors, and training keeps the sketch, not x, for the weight gradient.
The interpreter tests run the triton ops' eager bodies and the eager training Function on CPU
tensors (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TOLERANCE, assert_close, dtype_id, randn

from ss1bench import SSL, convert_to_ss_linear, ops, reference
from ss1bench.structure import SS1Structure


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code is cached per code object (SSL.forward): start and end each test from scratch."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def small_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        SSL(100, 40, redn_factor=4, seed=1, block_k=16, block_n=16),
        torch.nn.GELU(),
        SSL(40, 24, redn_factor=2, seed=2, block_k=16, block_n=16, bias=False),
    )


def forward_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = model(x)
    (y * torch.linspace(-1.0, 1.0, y.shape[-1])).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


def reference_forward_and_grads(model, x):
    """The same model computed with each SSL's dense equivalent in float64."""
    dense = torch.nn.Sequential(*[
        torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=torch.float64)
        if isinstance(m, SSL) else m for m in model])
    for ssl, linear in zip(model, dense, strict=True):
        if isinstance(ssl, SSL):
            with torch.no_grad():
                linear.weight.copy_(ssl.dense_weight())
                if ssl.bias is not None:
                    linear.bias.copy_(ssl.bias)
    y, gx, _ = forward_and_grads(dense, x.double())
    # dense weight gradients map back to the compressed weights by the structure's adjoint
    ssl_grads = []
    for ssl, linear in zip(model, dense, strict=True):
        if isinstance(ssl, SSL):
            projected = torch.zeros(ssl.structure.weight_shape, dtype=torch.float64)
            projected.scatter_add_(1, ssl.structure.dense_index(), linear.weight.grad)
            ssl_grads.append(projected)
            if ssl.bias is not None:
                ssl_grads.append(linear.bias.grad)
    return y, gx, ssl_grads


def check_against(name, model, compiled, x, rtol):
    y_eager, gx_eager, gp_eager = forward_and_grads(model, x)
    y, gx, gp = forward_and_grads(compiled, x)
    assert_close(f"{name} y", y, y_eager, rtol)
    assert_close(f"{name} grad_x", gx, gx_eager, rtol)
    assert len(gp) == len(gp_eager) == 3
    for index, (actual, expected) in enumerate(zip(gp, gp_eager, strict=True)):
        assert_close(f"{name} grad param {index}", actual, expected, rtol)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_forward_and_backward_match_eager_and_the_reference(backend, generator):
    model = small_model()
    x = randn(2, 5, 100, generator=generator)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    check_against(backend, model, compiled, x, TOLERANCE[torch.float32])
    y_ref, gx_ref, gp_ref = reference_forward_and_grads(model, x)
    y, gx, gp = forward_and_grads(compiled, x)
    assert_close("y vs float64", y, y_ref, TOLERANCE[torch.float32])
    assert_close("grad_x vs float64", gx, gx_ref, TOLERANCE[torch.float32])
    for index, (actual, expected) in enumerate(zip(gp, gp_ref, strict=True)):
        assert_close(f"grad param {index} vs float64", actual, expected, TOLERANCE[torch.float32])
    with torch.no_grad():
        assert_close("no_grad", compiled(x), y_ref, TOLERANCE[torch.float32])


def test_dynamic_shapes_compile_once(generator):
    """dynamic=True: one graph serves every batch size (no recompile per M)."""
    from torch._dynamo.testing import CompileCounter

    model = small_model()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, dynamic=True, fullgraph=True)
    for rows in (3, 7, 11, 64):
        y = compiled(randn(rows, 100, generator=generator))
        assert y.shape == (rows, 24)
    assert counter.frame_count == 1


def test_new_sequence_lengths_recompile_at_most_once(generator):
    """The default (dynamic=None): the second new size switches to a dynamic graph, and later
    sizes reuse it."""
    from torch._dynamo.testing import CompileCounter

    model = small_model()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    for seq in (5, 9, 13, 21, 33):
        compiled(randn(2, seq, 100, generator=generator))
    assert counter.frame_count <= 2


def test_cached_rotated_weight_is_ignored_by_traces(generator):
    """A trace multiplies by the weight it is given, so a stale cache cannot reach compiled code."""
    layer = SSL(100, 40, redn_factor=4, seed=1, block_k=16, block_n=16).requires_grad_(False)
    layer.cache_rotated_weight()
    x = randn(3, 100, generator=generator)
    layer(x)  # fills the cache
    layer.weight.data.mul_(2.0)  # not tracked by torch: eager calls keep the stale copy until refreshed
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    expected = reference.ss1_forward_reference(x.double(), layer.weight.double(), layer.bias.double(),
                                               layer.structure)
    assert_close("compiled", compiled(x), expected, TOLERANCE[torch.float32])


# ---- converted Hugging Face models: no graph breaks from SS1 ---------------------------------------


def _tiny_models():
    transformers = pytest.importorskip("transformers")
    return {
        "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=2, n_embd=64, n_head=2, vocab_size=97, n_positions=32)),
        "bert": lambda: transformers.BertModel(transformers.BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=97,
            max_position_embeddings=32)),
        "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=97, max_position_embeddings=32)),
    }


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_converted_models_trace_in_one_graph(name):
    """fullgraph=True compiles the converted model (forward and a backward through it), and the
    compiled logits match eager ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _tiny_models()[name]().eval()
    convert_to_ss_linear(model, 4, project=False)
    assert any(isinstance(module, SSL) for module in model.modules())
    ids = torch.randint(1, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(ids)
    hidden = out.logits if hasattr(out, "logits") else out.last_hidden_state
    eager = model(ids)
    expected = eager.logits if hasattr(eager, "logits") else eager.last_hidden_state
    assert_close("compiled output", hidden.detach(), expected.detach(), TOLERANCE[torch.float32])
    hidden.float().square().mean().backward()
    ssl = next(module for module in model.modules() if isinstance(module, SSL))
    assert ssl.weight.grad is not None and torch.isfinite(ssl.weight.grad).all()


# ---- errors: the same under compile as in eager ----------------------------------------------------


@pytest.mark.parametrize("case", ["in_features", "weight shape", "bias shape", "int dtype"])
def test_bad_inputs_get_eager_errors_under_compile(case, generator):
    structure = SS1Structure(100, 40, 4, 1, 16, 16)
    x = randn(3, 100, generator=generator)
    weight = randn(*structure.weight_shape, generator=generator)
    bias = randn(40, generator=generator)
    if case == "in_features":
        x = x[:, :99]
    elif case == "weight shape":
        weight = weight[:, :-1]
    elif case == "bias shape":
        bias = bias[:-1]
    else:
        x = x.to(torch.int32)

    def call(a, w, b):
        return ops.ss1_linear(a, w, b, structure)

    with pytest.raises(Exception) as eager:
        call(x, weight, bias)
    message = str(eager.value).splitlines()[0]
    with pytest.raises(type(eager.value)) as compiled:  # Dynamo stops and runs the call: the same error
        torch.compile(call, backend="aot_eager")(x, weight, bias)
    assert str(compiled.value).splitlines()[0] == message
    # fullgraph=True: torch wraps the user's exception in its own error, whose text carries ours
    with pytest.raises(Exception, match=re.escape(message)):
        torch.compile(call, backend="aot_eager", fullgraph=True)(x, weight, bias)


# ---- training keeps the sketch, not x ---------------------------------------------------------------


def saved_shapes(fn) -> list[tuple[int, ...]]:
    """Shapes of every tensor autograd saves while ``fn`` runs."""
    shapes = []

    def pack(tensor):
        shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return shapes


@pytest.mark.parametrize("path", ["reference", pytest.param("kernels", marks=pytest.mark.interpret)])
def test_training_saves_the_sketch_not_x(path, monkeypatch, generator):
    if path == "kernels":
        monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)  # CPU tensors through the interpreter
    layer = SSL(200, 40, redn_factor=4, seed=3, block_k=16, block_n=16)
    x = randn(19, 200, generator=generator).requires_grad_()
    shapes = saved_shapes(lambda: layer(x))
    assert (19, layer.structure.k_red) in shapes  # the sketch, for the weight gradient
    assert (19, 200) not in shapes  # never x


# ---- the kernel path's training Function and triton ops, in the interpreter -----------------------

CASES = [(19, 200, 40, 4, 16, 16), (5, 77, 33, 2, 16, 32), (1, 300, 70, 8, 32, 16)]


def case_id(case) -> str:
    m, k, n, c, bk, bn = case
    return f"M{m}-K{k}-N{n}-c{c}-bk{bk}-bn{bn}"


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_eager_training_on_the_kernels_matches_the_reference(case, dtype, monkeypatch, nan_empty):
    """The eager training node (sketch-and-rotate launch, the product, the unsketch and unrotate
    launch): output and every gradient against float64, every intermediate NaN-poisoned."""
    m, k, n, c, bk, bn = case
    monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)
    generator = torch.Generator().manual_seed(m * k)
    structure = SS1Structure(k, n, c, 5, bk, bn)
    x = randn(m, k, dtype=dtype, generator=generator).requires_grad_()
    weight = (randn(*structure.weight_shape, dtype=dtype, generator=generator) / 4).requires_grad_()
    bias = randn(n, dtype=dtype, generator=generator).requires_grad_()
    dy = randn(m, n, dtype=dtype, generator=generator)
    y = ops.ss1_linear(x, weight, bias, structure)
    y.backward(dy)
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    y_ref = reference.ss1_forward_reference(*leaves, structure)
    y_ref.backward(dy.double())
    assert_close("y", y, y_ref)
    for name, actual, expected in zip(("grad_x", "grad_w", "grad_b"), (x.grad, weight.grad, bias.grad), leaves,
                                      strict=True):
        assert actual.dtype == dtype
        assert_close(name, actual, expected.grad)


@pytest.mark.interpret
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_triton_ops_match_the_reference(case, nan_empty):
    """The ops' bodies (what a compiled graph's kernels compute), called eagerly on CPU tensors."""
    from ss1bench.kernels import traced  # noqa: F401  (registers the ops)

    m, k, n, c, bk, bn = case
    generator = torch.Generator().manual_seed(m + k)
    structure = SS1Structure(k, n, c, 9, bk, bn)
    x = randn(m, k, generator=generator)
    weight = randn(*structure.weight_shape, generator=generator)
    grad_sketch = randn(m, structure.k_red, generator=generator)
    ops_ = torch.ops.ss1bench
    xs, wr = ops_.sketch_rotate(x, weight, *structure.key)
    assert_close("sketch", xs, reference.sketch(x.double(), structure))
    assert_close("sketch alone", ops_.sketch(x, *structure.key), reference.sketch(x.double(), structure))
    assert_close("rotated", wr, reference.rotate_weight(weight.double(), structure))
    assert_close("unsketch", ops_.unsketch(grad_sketch, *structure.key),
                 reference.unsketch(grad_sketch.double(), structure))
    assert_close("unrotate", reference.unrotate_weight(wr, structure), weight)
    grad_x, grad_w = ops_.unsketch_unrotate(grad_sketch, wr, *structure.key, torch.float64)
    assert grad_w.dtype == torch.float64
    assert_close("unsketch (paired)", grad_x, reference.unsketch(grad_sketch.double(), structure))
    assert_close("unrotate (paired)", grad_w, weight.double())
    # the weight read in float32, the rotated weight written in float16 (autocast's compute dtype)
    xs16, wr16 = ops_.sketch_rotate(x.half(), weight, *structure.key, torch.float16)
    assert xs16.dtype == wr16.dtype == torch.float16
    assert_close("sketch (float16)", xs16, reference.sketch(x.half().double(), structure), TOLERANCE[torch.float16])
    assert torch.equal(wr16, reference.rotate_weight(weight, structure).half())
    bias = randn(n, generator=generator)
    xs16, wr16, bias16 = ops_.sketch_rotate_bias(x.half(), weight, bias, *structure.key, torch.float16)
    assert xs16.dtype == wr16.dtype == bias16.dtype == torch.float16
    assert_close("sketch (with the bias)", xs16, reference.sketch(x.half().double(), structure),
                 TOLERANCE[torch.float16])
    assert torch.equal(wr16, reference.rotate_weight(weight, structure).half())
    assert torch.equal(bias16, bias.half())
    with pytest.raises(ValueError, match="bias must have shape"):
        ops_.sketch_rotate_bias(x.half(), weight, bias[:-1], *structure.key, torch.float16)
    with pytest.raises(ValueError, match="in_features=" + str(k)):
        ops_.sketch_rotate(x[:, :-1], weight, *structure.key)
    with pytest.raises(ValueError, match="in_features=" + str(k)):
        ops_.sketch(x[:, :-1], *structure.key)


@pytest.mark.interpret
def test_eager_training_replays_its_passes_from_plans(kernels_on_cpu, monkeypatch, nan_empty):
    """From the second step on, the training path's passes (sketch-and-rotate; unsketch and
    unrotate in one launch) replay their recorded launches (no checks, no config lookup), and the
    gradients stay those of the reference."""
    from ss1bench.kernels import ss1 as kernels
    from ss1bench.kernels.config import launch_plans

    generator = torch.Generator().manual_seed(5)
    structure = SS1Structure(200, 40, 4, 3, 16, 16)
    weight = (randn(*structure.weight_shape, generator=generator) / 4).requires_grad_()
    for step in range(3):
        if step == 2:
            def fail(*args, **kwargs):
                raise AssertionError("a pass took the checked path")

            monkeypatch.setattr(kernels, "sketch_pass_config", fail)
            monkeypatch.setattr(kernels, "check_pass_inputs", fail)
        x = randn(19, 200, generator=generator).requires_grad_()
        dy = randn(19, 40, generator=generator)
        weight.grad = None
        ops.ss1_linear(x, weight, None, structure).backward(dy)
        leaves = [t.detach().double().requires_grad_() for t in (x, weight)]
        reference.ss1_forward_reference(*leaves, None, structure).backward(dy.double())
        assert_close(f"grad_x step {step}", x.grad, leaves[0].grad)
        assert_close(f"grad_w step {step}", weight.grad, leaves[1].grad)
    assert {key[0][0] for key in launch_plans} == {"sketch_rotate", "unsketch_unrotate"}


@pytest.mark.interpret
@pytest.mark.parametrize("pass_name", ["unsketch", "unrotate", "unsketch_unrotate"])
def test_planned_backward_passes_replay_row_strided_gradients_right(pass_name, kernels_on_cpu, nan_empty):
    """A gradient with a unit last stride but a wider row stride (a view of a larger buffer) is
    planned as it is: its replay must read it with its own row stride."""
    from ss1bench.kernels import ss1 as kernels

    generator = torch.Generator().manual_seed(11)
    structure = SS1Structure(200, 40, 4, 3, 16, 16)

    def strided(rows):
        wide = randn(rows, 2 * structure.k_red, generator=generator)
        grad = wide[:, :structure.k_red]
        assert grad.stride() == (2 * structure.k_red, 1)
        return grad

    for call in range(2):  # the first call records, the second replays
        grad_sketch, grad_rotated = strided(19), strided(structure.out_features)
        expected = [reference.unsketch(grad_sketch.double(), structure),
                    reference.unrotate_weight(grad_rotated.double(), structure)]
        if pass_name == "unsketch":
            actual, expected = [kernels.unsketch_planned(grad_sketch, structure)], expected[:1]
        elif pass_name == "unrotate":
            actual, expected = [kernels.unrotate_planned(grad_rotated, structure)], expected[1:]
        else:
            actual = kernels.unsketch_unrotate_planned(grad_sketch, grad_rotated, structure)
        for index, (got, wanted) in enumerate(zip(actual, expected, strict=True)):
            assert_close(f"{pass_name} call {call} output {index}", got, wanted)


def test_registering_the_traced_ops_adds_no_guard(monkeypatch):
    """The compiled path registers ``torch.ops.ss1bench`` with a plain import: a model is compiled
    once, not again on its second call (reading ``ops._KERNELS``, which the first call sets, made
    Dynamo guard on it and recompile)."""
    monkeypatch.setattr(ops, "_KERNELS", None)
    compiles = []

    def backend(graph, example_inputs):
        compiles.append(graph)
        return graph.forward

    @torch.compile(backend=backend, fullgraph=True)
    def traced(x):
        ops._register_traced_ops()
        return x * 2

    for _ in range(3):
        traced(torch.ones(3))
    assert len(compiles) == 1
    assert hasattr(torch.ops.ss1bench, "sketch_rotate") and hasattr(torch.ops.ss1bench, "unsketch")


# ---- torch.compile's caches see what a trace depends on ---------------------------------------------


@pytest.fixture(scope="module")
def reference_sketch_rotate():
    """``ss1bench::sketch_rotate``'s stand-in for CPU traces (the triton op traces only CUDA fake
    tensors): the same schema, the reference's sketch and rotation, and the real op's autograd
    formula (``traced._sketch_rotate_backward``: the unsketch-and-unrotate triton op when both
    gradients are needed)."""
    from ss1bench.kernels import traced

    @torch.library.custom_op("ss1bench_test::sketch_rotate", mutates_args=())
    def stand_in(x: torch.Tensor, weight: torch.Tensor, in_features: int, out_features: int, redn_factor: int,
                 seed: int, block_k: int, block_n: int, out_dtype: torch.dtype | None = None,
                 trace_key: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        structure = SS1Structure(in_features, out_features, redn_factor, seed, block_k, block_n)
        xs, wr = reference.sketch(x, structure), reference.rotate_weight(weight, structure)
        return (xs, wr) if out_dtype is None else (xs.to(out_dtype), wr.to(out_dtype))

    @stand_in.register_fake
    def _(x, weight, in_features, out_features, redn_factor, seed, block_k, block_n, out_dtype=None, trace_key=0):
        k_red = weight.shape[1]
        return (x.new_empty(x.shape[0], k_red, dtype=out_dtype or x.dtype),
                weight.new_empty(weight.shape, dtype=out_dtype or weight.dtype))

    stand_in.register_autograd(traced._sketch_rotate_backward, setup_context=traced._setup_context)
    return torch.ops.ss1bench_test.sketch_rotate



@pytest.fixture(scope="module")
def reference_sketch_rotate_bias():
    """``ss1bench::sketch_rotate_bias``'s stand-in for CPU traces, as ``reference_sketch_rotate``'s."""
    from ss1bench.kernels import traced

    @torch.library.custom_op("ss1bench_test::sketch_rotate_bias", mutates_args=())
    def stand_in(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, in_features: int, out_features: int,
                 redn_factor: int, seed: int, block_k: int, block_n: int, out_dtype: torch.dtype,
                 trace_key: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        structure = SS1Structure(in_features, out_features, redn_factor, seed, block_k, block_n)
        return (reference.sketch(x, structure).to(out_dtype), reference.rotate_weight(weight, structure).to(out_dtype),
                bias.to(out_dtype))

    @stand_in.register_fake
    def _(x, weight, bias, in_features, out_features, redn_factor, seed, block_k, block_n, out_dtype, trace_key=0):
        return (x.new_empty(x.shape[0], weight.shape[1], dtype=out_dtype),
                weight.new_empty(weight.shape, dtype=out_dtype), bias.new_empty(bias.shape, dtype=out_dtype))

    stand_in.register_autograd(traced._sketch_rotate_bias_backward, setup_context=traced._setup_context)
    return torch.ops.ss1bench_test.sketch_rotate_bias


@pytest.fixture(scope="module")
def reference_sketch():
    """``ss1bench::sketch``'s stand-in for CPU traces (the triton op traces only CUDA fake tensors):
    the same schema, the reference's sketch."""

    @torch.library.custom_op("ss1bench_test::sketch", mutates_args=())
    def stand_in(x: torch.Tensor, in_features: int, out_features: int, redn_factor: int, seed: int, block_k: int,
                 block_n: int, trace_key: int = 0) -> torch.Tensor:
        return reference.sketch(x, SS1Structure(in_features, out_features, redn_factor, seed, block_k, block_n))

    @stand_in.register_fake
    def _(x, in_features, out_features, redn_factor, seed, block_k, block_n, trace_key=0):
        return x.new_empty(x.shape[0], SS1Structure(in_features, out_features, redn_factor, seed, block_k,
                                                    block_n).k_red)

    return torch.ops.ss1bench_test.sketch


@pytest.mark.parametrize("freezing", [True, False])
def test_frozen_inference_folds_the_rotation_into_a_constant(freezing, reference_sketch, reference_sketch_rotate,
                                                             monkeypatch, generator):
    """Under Inductor's freezing an inference trace sketches x alone and rotates the (frozen)
    weight with ``ss1bench::rotate_weight``, which freezing runs once at compile time: a later
    in-place change of the weight no longer reaches the output, as freezing promises for every
    parameter, and the compiled code has no rotation left. Without freezing the trace is the
    one-launch sketch-and-rotate op, which reads the weight on every call."""
    monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)
    monkeypatch.setattr(torch.ops.ss1bench, "sketch", reference_sketch)
    monkeypatch.setattr(torch.ops.ss1bench, "sketch_rotate", reference_sketch_rotate)
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("inductor")  # keeps Dynamo's graphs
    torch._dynamo.reset()
    layer = SSL(200, 40, redn_factor=4, seed=3, block_k=16, block_n=16).eval()
    x = randn(7, 200, generator=generator)
    with torch.no_grad(), torch._inductor.config.patch(freezing=freezing):
        compiled = torch.compile(layer, backend=counter, fullgraph=True)
        expected = reference.ss1_forward_reference(x.double(), layer.weight.double(), layer.bias.double(),
                                                   layer.structure)
        assert_close("compiled", compiled(x), expected, TOLERANCE[torch.float32])
        layer.weight.mul_(2.0)
        doubled = reference.ss1_forward_reference(x.double(), layer.weight.double(), layer.bias.double(),
                                                  layer.structure)
        assert_close("after a weight change", compiled(x), expected if freezing else doubled,
                     TOLERANCE[torch.float32])
    assert counter.frame_count == 1
    code = counter.graphs[0].code
    assert ("ss1bench_test.sketch_rotate" in code) != freezing, code
    assert ("ss1bench_test.sketch(" in code or "ss1bench_test.sketch.default(" in code) == freezing, code
    assert ("ss1bench.rotate_weight" in code) == freezing, code
    torch._dynamo.reset()


@pytest.mark.interpret
def test_traced_call_carries_the_trace_key(reference_sketch_rotate, monkeypatch, generator):
    """torch.compile's persistent caches key a graph on its ops and arguments, not on a custom op's
    Python or the kernels and configs its body picks. So the traced SSL call passes
    ``traced.trace_key(device)`` to ``ss1bench::sketch_rotate``: a constant of the graph (one
    compile, no guard on it); the op's backward takes the extra argument (output and gradients
    against float64)."""
    from ss1bench.kernels import traced

    monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)
    monkeypatch.setattr(torch.ops.ss1bench, "sketch_rotate", reference_sketch_rotate)
    graphs = []

    def backend(graph, example_inputs):  # Dynamo's graph, run as it is
        graphs.append(graph.code)
        return graph.forward

    layer = SSL(200, 40, redn_factor=4, seed=3, block_k=16, block_n=16)
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    dense = layer.dense_weight().detach().double()
    for rows in (19, 19):
        layer.zero_grad(set_to_none=True)
        x = randn(rows, 200, generator=generator).requires_grad_()
        weights = torch.linspace(-1.0, 1.0, 40)
        y = compiled(x)
        (y * weights).sum().backward()
        assert_close("y", y, x.detach().double() @ dense.T + layer.bias.detach().double())
        grad_y = weights.double().expand(rows, 40)
        assert_close("grad_x", x.grad, grad_y @ dense)
        expected = torch.zeros(layer.structure.weight_shape, dtype=torch.float64)
        expected.scatter_add_(1, layer.structure.dense_index(), grad_y.T @ x.detach().double())
        assert_close("grad_weight", layer.weight.grad, expected)
    assert len(graphs) == 1
    key = traced.trace_key(torch.device("cpu"))
    assert re.search(rf"ss1bench_test\.sketch_rotate(\.default)?\([^)]*, {key}\)", graphs[0]), graphs[0]


@pytest.mark.interpret
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_traced_call_under_autocast_leaves_the_parameter_casts_to_the_op(bias, reference_sketch_rotate,
                                                                        reference_sketch_rotate_bias, monkeypatch,
                                                                        generator):
    """Float32 parameters under autocast: the trace casts x (for Inductor to fuse into x's producer)
    but hands the float32 weight (and bias) and autocast's dtype to ``ss1bench::sketch_rotate``
    (``sketch_rotate_bias``), which writes the rotated weight (and the bias) in that dtype: no cast
    of the parameters, one or two launches per layer fewer. The backward (the unsketch-and-unrotate
    op) returns the parameters' gradients in float32."""
    monkeypatch.setattr(ops, "_use_kernels", lambda tensor: True)
    monkeypatch.setattr(torch.ops.ss1bench, "sketch_rotate", reference_sketch_rotate)
    monkeypatch.setattr(torch.ops.ss1bench, "sketch_rotate_bias", reference_sketch_rotate_bias)
    graphs = []

    def backend(graph, example_inputs):  # Dynamo's graph, run as it is
        graphs.append(graph)
        return graph.forward

    layer = SSL(200, 40, bias=bias, redn_factor=4, seed=3, block_k=16, block_n=16)
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    x = randn(19, 200, generator=generator).requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        y = compiled(x)
    weights = torch.linspace(-1.0, 1.0, 40)
    (y.float() * weights).sum().backward()
    assert y.dtype == torch.float16
    assert x.grad.dtype == layer.weight.grad.dtype == torch.float32
    dense = layer.dense_weight().detach().double()
    x64 = x.detach().half().double()
    bias64 = layer.bias.detach().double() if bias else 0.0
    assert_close("y", y, x64 @ dense.T + bias64, TOLERANCE[torch.float16])
    grad_y = weights.double().expand(19, 40)
    assert_close("grad_x", x.grad, grad_y @ dense, TOLERANCE[torch.float16])
    expected = torch.zeros(layer.structure.weight_shape, dtype=torch.float64)
    expected.scatter_add_(1, layer.structure.dense_index(), grad_y.T @ x64)
    assert_close("grad_weight", layer.weight.grad, expected, TOLERANCE[torch.float16])
    (call,) = [node for node in graphs[0].graph.nodes if "sketch_rotate" in str(node.target)]
    tensors = 3 if bias else 2
    assert ("sketch_rotate_bias" in str(call.target)) == bias, graphs[0].code
    assert all(arg.op == "placeholder" for arg in call.args[1:tensors]), graphs[0].code  # not cast
    assert call.args[tensors + 6] == torch.float16, graphs[0].code
    if bias:
        assert layer.bias.grad.dtype == torch.float32
        assert_close("grad_bias", layer.bias.grad, grad_y.sum(0), TOLERANCE[torch.float16])


def test_trace_key_follows_the_config_sources(monkeypatch):
    """The key changes with the launch configs' sources (a config override, the database switched
    off) and with this package's code, and is stable otherwise."""
    from ss1bench.kernels import config, traced

    cpu = torch.device("cpu")
    base = traced.trace_key(cpu)
    assert traced.trace_key(cpu) == base and 0 < base < 2**60
    with config.override_launch_config(config.LaunchConfig(16, 64, 64, 4, 2)):
        assert traced.trace_key(cpu) != base
    assert traced.trace_key(cpu) == base
    previous = config.set_database(None)
    try:
        assert traced.trace_key(cpu) != base
    finally:
        config.set_database(previous)
    monkeypatch.setattr(traced, "_code_digest", lambda: "another version")
    assert traced.trace_key(cpu) != base


def test_traced_size_hint_reads_a_symbolic_size_without_a_guard():
    """A dynamic M picks its launch config at its hint (no guard); an unbacked size at the fallback.
    The hint's name moved between torch releases (``size_hint``, ``optimization_hint``; 2.11's
    ``hint_int`` warns FutureWarning): each release's own name is used, without a warning."""
    import warnings

    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    from ss1bench.kernels import ss1, traced

    warnings.simplefilter("error", FutureWarning)  # pytest restores the filters after the test
    env = ShapeEnv()
    m = env.create_symintnode(env.create_symbol(37, ConstantSource("m"), dynamic_dim=DimDynamic.DYNAMIC), hint=37)
    assert isinstance(m, torch.SymInt)
    assert traced._size_hint(m) == 37
    assert traced._size_hint(env.create_unbacked_symint()) == ss1.PASS_CONFIG_FALLBACK_M
    assert traced._size_hint(5) == 5
    assert not env.guards
