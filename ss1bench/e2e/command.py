"""``ss1bench e2e``: end-to-end model latency, the dense model against its SS1 conversion.

The layer benchmark (``ss1bench bench``) times one linear layer at a time; this command times what
a user of :func:`~ss1bench.convert_to_ss_linear` gets: a whole Hugging Face model (GPT-2, BERT,
a Llama-3.2-1B-shaped Llama) built from its config with random weights (nothing is downloaded),
timed dense and converted, side by side in one run, in two phases:

- ``prefill``: one forward over ``(batch, seq)`` random token ids (decoder models with
  ``use_cache=False``; the LM head computes logits for every position, as a plain
  ``model(input_ids)`` call does);
- ``decode`` (decoder models only): one step of one new token per sequence against a KV cache
  (``transformers.DynamicCache``) filled by one prefill of ``seq`` tokens. After each timed step the
  cache is cropped back to ``seq`` tokens, so every step sees the same cache length; the crop (a
  host-side slice) is part of the timed call, for the dense and the SS1 model alike.

The SS1 model is a deep copy of the dense one converted with
``convert_to_ss_linear(copy, c, project=False)``: a fresh SS1 initialisation instead of the
least-squares projection of the dense weights. Timing does not depend on the weights' values,
and skipping the projection keeps a 1B-parameter conversion to a fraction of a second. Each
SSL's structure comes from the tuning database for the run's GPU and dtype (the models are
built on the device in the dtype, so the conversion sees both).

Times are ``triton.testing.do_bench`` median and 20th/80th percentiles (``schema.QUANTILES``), as
in the layer benchmark. With ``--cuda-graph`` each call is timed eagerly and as a CUDA-graph replay
and the faster is kept (a graph can replay slower than eager calls: BERT on an H200); the row's
``detail`` says which, and why eager when capture failed.

The CSV has the layer benchmark's columns (``schema.RESULT_COLUMNS``) so that ``ss1bench report``
reads it. Per (model, phase, c) there are two rows, providers ``dense`` and ``ss1_tuned``, with:

- ``shape_set`` = ``"e2e"``, ``layer`` = ``"<model> <phase>"``, ``mode`` = ``"fwd"`` (inference);
- ``M`` = tokens the call processes (``batch * seq`` for prefill, ``batch`` for decode);
- ``K``, ``N`` = the model's hidden size and MLP intermediate size; ``k_red``, ``block_k`` and
  ``block_n`` describe the SS1 structure of the MLP up projection (``K -> N``), the model's most
  common layer shape (``block_k``/``block_n`` on SS1 rows only, as in the layer benchmark);
- ``weight_params`` = weights (bias excluded) of every linear layer of the model: ``nn.Linear``,
  Hugging Face ``Conv1D`` and, after conversion, SSL's compressed weights; layers that stay dense
  (a tied LM head) count in both;
- ``flops``/``dense_flops`` = linear-layer FLOPs, ``2 * M * weight_params`` (see ``E2E_FLOPS``);
- ``dense_ms`` and ``speedup_vs_dense`` = the dense model's median and dense / this row's median;
  ``ideal_ms`` and ``fraction_of_ideal`` stay empty (no ideal is defined for a whole model);
- ``peak_mem_mib`` = the allocator's peak during one call minus what was allocated before it
  (activations, logits, the decode step's new cache tensors);
- ``detail`` = ``tokens/s=...; timing=...; attention=...; linear layers=...`` (tokens/s = M / median).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import click
import torch
from torch import nn

from ss1bench.bench.commands import _choices, _ints
from ss1bench.bench.runner import (
    INPUT_SEED,
    TORCH_DTYPES,
    ResultWriter,
    RunInfo,
    Timing,
    _one_line_error,
    use_tuning_database,
)
from ss1bench.bench.schema import DTYPES, QUANTILES
from ss1bench.cli import main
from ss1bench.convert import _layer_kind, conversion_report, convert_to_ss_linear
from ss1bench.layer import SSL, cache_rotated_weights
from ss1bench.report import E2E_SHAPE_SET
from ss1bench.structure import SS1Structure
from ss1bench.timing import do_bench, graphed
from ss1bench.tuning.gpu import normalize_gpu_name

# ---- models -----------------------------------------------------------------------------------


class ModelSpec(NamedTuple):
    """A benchmarked model: its ``transformers`` class, config keyword arguments, and whether it
    is a decoder (then it also has a decode phase and its prefill runs with ``use_cache=False``).

    The config class is the model class's ``config_class``; tests override sizes to build tiny
    variants of the same architecture.
    """

    model_class: str
    config: Mapping[str, Any]
    decoder: bool


MODELS: dict[str, ModelSpec] = {
    "gpt2": ModelSpec("GPT2LMHeadModel", {}, True),  # GPT2Config defaults: 768 hidden, 12 layers, 12 heads
    "gpt2-medium": ModelSpec("GPT2LMHeadModel", {"n_embd": 1024, "n_layer": 24, "n_head": 16}, True),
    "bert-base": ModelSpec("BertModel", {}, False),  # BertConfig defaults: 768 hidden, 12 layers, MLP 3072
    "bert-large": ModelSpec("BertModel", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                          "intermediate_size": 4096}, False),
    # Llama-3.2-1B's shape (its llama3 RoPE scaling changes no timing, so it is left out).
    "llama-1b": ModelSpec("LlamaForCausalLM", {
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
        "tie_word_embeddings": True, "rope_theta": 500000.0}, True),
}
MODEL_NAMES = tuple(MODELS)
#: What each phase times (also written to the run's JSON sidecar).
PHASE_DESCRIPTIONS = {
    "prefill": "one forward over (batch, seq) random token ids, logits for every position "
               "(decoders with use_cache=False); M = batch * seq",
    "decode": "one step of one new token per sequence against a DynamicCache filled by one prefill of seq "
              "tokens, then cropped back to seq tokens (the crop is part of the timed call); M = batch",
}
PHASES = tuple(PHASE_DESCRIPTIONS)

#: Config attributes that bound the position ids; raised to cover the run's positions when smaller
#: (GPT-2's 1024 learned positions cannot hold a decode step after a 1024-token prompt, BERT's 512
#: cannot hold a 1024-token prefill: an out-of-range position is a device-side assert on CUDA).
POSITION_ATTRIBUTES = ("n_positions", "max_position_embeddings")

#: Attention implementation asked for where the model class supports it.
ATTENTION = "sdpa"

#: Defaults of --warmup-ms/--rep-ms: a whole-model call takes milliseconds, so the layer
#: benchmark's 25/100 ms would time a large prefill only a handful of times.
E2E_WARMUP_MS = 100
E2E_REP_MS = 500

PROVIDER_DESCRIPTIONS = {
    "dense": "the Hugging Face model as built from its config (random weights), eval mode, no_grad",
    "ss1_tuned": "a deep copy of the dense model converted with convert_to_ss_linear(copy, c, project=False): "
                 "SSL structure and launch configs from the tuning database when it has them; the layers' "
                 "rotated-weight cache on (cache_rotated_weights, the inference setting) unless the run says "
                 "rotated_cache false",
}
E2E_TIMING = ("triton.testing.do_bench median (p20/p80 spread), L2 flushed before each call; with --cuda-graph "
              "each call is timed eagerly and as a CUDA-graph replay, and the faster is kept (see the row's detail)")
E2E_FLOPS = ("Linear-layer FLOPs per call, 2 * M * weight_params (M = tokens of the call; SS1 layers count "
             "N * K_red weights, so their sketch additions are not counted). Attention scores, softmax, norms "
             "and embeddings are not counted; BERT's pooler runs on one token per sequence but is counted "
             "on every token (under 1% of BERT's linear FLOPs).")


def import_transformers():
    """The ``transformers`` module, or ImportError with a one-line message saying what to install."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(f"ss1bench e2e builds Hugging Face models and needs transformers "
                          f"(pip install transformers): {error}") from None
    return transformers


def phases_of(name: str) -> tuple[str, ...]:
    """Phases timed for a model: prefill, plus decode for decoder models."""
    return PHASES if MODELS[name].decoder else PHASES[:1]


def build_config(name: str, seq: int = 0, overrides: Mapping[str, Any] | None = None):
    """``(model class, config)`` of a model of :data:`MODELS`.

    ``overrides`` replace config keyword arguments (tests pass tiny sizes). The position limit
    (:data:`POSITION_ATTRIBUTES`) is raised to ``seq + 1`` for decoders (a prompt of ``seq`` tokens
    and one decode step) and ``seq`` for encoders when it is smaller.
    """
    transformers = import_transformers()
    spec = MODELS[name]
    model_class = getattr(transformers, spec.model_class)
    config = model_class.config_class(**{**spec.config, **(overrides or {})})
    positions = seq + 1 if spec.decoder else seq
    for attribute in POSITION_ATTRIBUTES:
        if hasattr(config, attribute) and getattr(config, attribute) < positions:
            setattr(config, attribute, positions)
    return model_class, config


def build_model(name: str, device: torch.device | str, dtype: torch.dtype, seq: int = 0,
                overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """The model, random weights, built directly on ``device`` in ``dtype``, in eval mode.

    Built in place rather than built on the CPU and moved: a 1B-parameter model initialises in
    well under a second on a GPU, and an SSL converted from it sees the run's device and dtype
    (which pick its structure in the tuning database). Weights are drawn from a forked RNG seeded
    with ``INPUT_SEED``: the same model every run, and the global RNG untouched. SDPA attention
    where the class supports it (``_from_config`` is what ``AutoModel*.from_config`` calls).
    """
    model_class, config = build_config(name, seq, overrides)
    device = torch.device(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if getattr(model_class, "_supports_sdpa", False):
        kwargs["attn_implementation"] = ATTENTION
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), device:
        torch.manual_seed(INPUT_SEED)
        model = model_class._from_config(config, **kwargs)
    return model.eval()


def model_dims(config) -> tuple[int, int]:
    """``(hidden size, MLP intermediate size)``: the ``K`` and ``N`` columns of e2e rows."""
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return int(hidden), int(intermediate)


def linear_weight_params(model: nn.Module) -> int:
    """Weights (bias excluded) of every linear layer: ``nn.Linear``, HF ``Conv1D``, SSL (compressed).

    A layer whose weight is tied to an embedding (GPT-2's and Llama-3.2's LM head) counts: its
    matrix product runs on every call.
    """
    return sum(module.weight.numel() for module in model.modules()
               if isinstance(module, SSL) or _layer_kind(module) is not None)


def mlp_structure(model: nn.Module, hidden: int, intermediate: int) -> SS1Structure | None:
    """Structure of the first SSL mapping ``hidden -> intermediate`` (the MLP up projection)."""
    return next((module.structure for module in model.modules()
                 if isinstance(module, SSL) and (module.in_features, module.out_features) == (hidden, intermediate)),
                None)


@dataclass(frozen=True)
class ModelStats:
    """What the rows say about one model (dense, or converted at one c)."""

    weight_params: int
    linear_layers: int
    ss1_layers: int
    attention: str
    structure: SS1Structure | None = None

    @classmethod
    def of(cls, model: nn.Module, hidden: int, intermediate: int) -> ModelStats:
        try:
            report = conversion_report(model)
            total, converted = len(report), len(report.converted)
        except ValueError:  # a dense model: no conversion report
            total = sum(1 for module in model.modules() if _layer_kind(module) is not None)
            converted = 0
        attention = str(getattr(model.config, "_attn_implementation", None) or "default")
        return cls(linear_weight_params(model), total, converted, attention,
                   mlp_structure(model, hidden, intermediate))


# ---- work list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """One (model, phase, c) pair of rows: dense and SS1."""

    model: str
    phase: str
    redn_factor: int
    batch: int
    seq: int

    @property
    def tokens(self) -> int:
        """Tokens the timed call processes (the CSV's ``M``)."""
        return self.batch * self.seq if self.phase == "prefill" else self.batch

    @property
    def layer(self) -> str:
        return f"{self.model} {self.phase}"

    def describe(self) -> str:
        shape = (f"batch {self.batch} x seq {self.seq}" if self.phase == "prefill"
                 else f"batch {self.batch} x 1 new token, {self.seq}-token KV cache")
        return f"{self.model:<12} {self.phase:<7} c={self.redn_factor:<2} tokens={self.tokens:<7} ({shape})"


def plan(models: Sequence[str], redn_factors: Sequence[int], batch: int, seq: int) -> list[Work]:
    """Every (model, phase, c), in run order."""
    return [Work(name, phase, c, batch, seq) for name in models for phase in phases_of(name) for c in redn_factors]


def timings_in(work: Sequence[Work]) -> int:
    """Timed calls of a run: the dense model once per (model, phase), SS1 once per (model, phase, c)."""
    return len({(w.model, w.phase) for w in work}) + len(work)


def output_stem(models: Sequence[str], dtype: str, batch: int, seq: int) -> str:
    """File name stem of a run's CSV and sidecar, e.g. ``e2e_gpt2-llama-1b_fp16_b8_s1024``.

    Like ``bench_<sets>_<dtypes>_<modes>``, plus batch and sequence length, which change every row.
    """
    return f"e2e_{'-'.join(models)}_{dtype}_b{batch}_s{seq}"


def meta_weight_counts(name: str, redn_factors: Sequence[int], seq: int = 0,
                       overrides: Mapping[str, Any] | None = None) -> tuple[int, dict[int, tuple[int, int, int]]]:
    """Linear weights of the dense model and, per c, ``(SS1 weights, SS1 layers, linear layers)``.

    Built and converted on the meta device (no memory, no GPU) with the default SS1 structures;
    on a GPU the tuning database may choose other block sizes, which moves SS1 counts slightly.
    """
    dense = build_model(name, "meta", torch.float16, seq, overrides)
    counts = {}
    for c in redn_factors:
        converted = convert_to_ss_linear(copy.deepcopy(dense), c, project=False)
        report = conversion_report(converted)
        counts[c] = (linear_weight_params(converted), len(report.converted), len(report))
    return linear_weight_params(dense), counts


# ---- timing -----------------------------------------------------------------------------------

#: ``timer(call, warmup_ms, rep_ms) -> (median, p20, p80)`` in ms; tests inject a fake one.
Timer = Callable[[Callable[[], object], int, int], Sequence[float]]


def do_bench_timer(call: Callable[[], object], warmup_ms: int, rep_ms: int) -> tuple[float, float, float]:
    """``triton.testing.do_bench`` quantiles (median, p20, p80) of ``call``, as the layer benchmark."""
    median, p20, p80 = do_bench(call, warmup_ms, rep_ms, quantiles=QUANTILES)
    return median, p20, p80


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
        return None, f"eager (CUDA graph capture failed: {_one_line_error(error)})"


def time_call(make_call: Callable[[], Callable[[], object]], device: torch.device, timer: Timer = do_bench_timer,
              warmup_ms: int = E2E_WARMUP_MS, rep_ms: int = E2E_REP_MS,
              cuda_graph: bool = False) -> tuple[Timing, str]:
    """Time the call ``make_call()`` returns, under ``torch.no_grad()``: ``(Timing, timing mode)``.

    The call runs once before timing (Triton compiles, cuBLAS picks algorithms, the tuning
    database is read) and once more for peak memory (CUDA only: the allocator's peak during the
    call minus what was allocated before it). Eager calls are timed; with ``cuda_graph`` the call
    is then captured and its replays timed too, and the faster of the two is kept (the mode says
    which, and why eager when capture failed or the graph was slower). Any failure, building the
    call included, becomes the Timing's one-line status: one failed row never ends the run.
    """
    mode = "eager"
    try:
        with torch.no_grad():
            call = make_call()
            call()
            peak = math.nan
            if device.type == "cuda":
                torch.cuda.synchronize(device)
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
                    mode = captured
                else:
                    graph_quantiles = timer(replay, warmup_ms, rep_ms)
                    if graph_quantiles[0] <= quantiles[0]:
                        quantiles, mode = graph_quantiles, "cuda-graph"
                    else:
                        mode = f"eager (faster than its CUDA graph: {graph_quantiles[0]:.3g} ms)"
            median, p20, p80 = quantiles
        return Timing(median, p20, p80, peak), mode
    except Exception as error:  # a failed timing is a CSV row, not a crashed run
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        return Timing(status=_one_line_error(error)), mode


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


def phase_call(model: nn.Module, phase: str, inputs: Inputs, decoder: bool) -> Callable[[], object]:
    """The timed call of one phase (building a decode step runs its prefill)."""
    if phase == "prefill":
        kwargs = {"use_cache": False} if decoder else {}
        return lambda: model(inputs.prompt, **kwargs)
    if phase == "decode":
        return DecodeStep(model, inputs.prompt, inputs.new_ids)
    raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")


# ---- rows -------------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 and not math.isnan(denominator) else math.nan


def _detail(stats: ModelStats | None, tokens: int, timing: Timing, mode: str, provider: str) -> str:
    parts = []
    if timing.status == "ok":
        parts.append(f"tokens/s={_ratio(tokens, timing.median_ms) * 1e3:.0f}")
        parts.append(f"timing={mode}")
    if stats is not None:
        parts.append(f"attention={stats.attention}")
        if provider == "dense":
            parts.append(f"linear layers={stats.linear_layers} dense")
        else:
            parts.append(f"linear layers={stats.ss1_layers}/{stats.linear_layers} SS1 (project=False)")
    return "; ".join(parts)


def e2e_row(work: Work, gpu: str, dtype: str, provider: str, hidden: int | None, intermediate: int | None,
            stats: ModelStats | None, dense_stats: ModelStats | None, ss1_structure: SS1Structure | None,
            timing: Timing, mode: str, dense_ms: float) -> dict:
    """One CSV row (columns exactly ``RESULT_COLUMNS``; see the module docstring)."""
    m, ms = work.tokens, timing.median_ms
    weights = stats.weight_params if stats is not None else None
    flops = 2 * m * weights if weights is not None else math.nan
    dense_flops = 2 * m * dense_stats.weight_params if dense_stats is not None else math.nan
    ss1 = provider != "dense"
    row = {
        "gpu": gpu, "dtype": dtype, "mode": "fwd", "shape_set": E2E_SHAPE_SET, "layer": work.layer,
        "M": m, "K": hidden, "N": intermediate, "redn_factor": work.redn_factor, "provider": provider,
        "status": timing.status,
        "block_k": ss1_structure.block_k if ss1 and ss1_structure is not None else None,
        "block_n": ss1_structure.block_n if ss1 and ss1_structure is not None else None,
        "k_red": ss1_structure.k_red if ss1_structure is not None else None,
        "detail": _detail(stats, m, timing, mode, provider),
        "weight_params": weights, "flops": flops, "dense_flops": dense_flops,
        "median_ms": ms, "p20_ms": timing.p20_ms, "p80_ms": timing.p80_ms,
        "tflops": _ratio(flops, ms) * 1e-9, "dense_equiv_tflops": _ratio(dense_flops, ms) * 1e-9,
        "dense_ms": dense_ms, "ideal_ms": math.nan, "speedup_vs_dense": _ratio(dense_ms, ms),
        "fraction_of_ideal": math.nan, "peak_mem_mib": timing.peak_mem_mib,
    }
    return row


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def model_rows(name: str, redn_factors: Sequence[int], batch: int, seq: int, dtype_name: str, gpu: str,
               device: torch.device, generator: torch.Generator, timer: Timer = do_bench_timer,
               warmup_ms: int = E2E_WARMUP_MS, rep_ms: int = E2E_REP_MS, cuda_graph: bool = False,
               overrides: Mapping[str, Any] | None = None,
               on_timing: Callable[[str], None] = lambda label: None, rotated_cache: bool = True) -> list[dict]:
    """Rows of one model: the dense model timed once per phase, then each c converted and timed
    (with the SSL layers' rotated-weight cache on unless ``rotated_cache`` is False).

    Rows come out per phase, then c: the dense row (repeated in each c group), then SS1's. A model
    that cannot be built, or a c that cannot be converted, gives rows whose status is the error.
    """
    dtype = TORCH_DTYPES[dtype_name]
    decoder = MODELS[name].decoder
    work = plan([name], redn_factors, batch, seq)
    phases = phases_of(name)
    try:
        dense = build_model(name, device, dtype, seq, overrides)
        hidden, intermediate = model_dims(dense.config)
        inputs = Inputs.random(dense.config.vocab_size, batch, seq, generator, device)
        dense_stats = ModelStats.of(dense, hidden, intermediate)
    except Exception as error:  # e.g. out of memory, or a bad config: every row of the model says why
        dense = None
        _free(device)
        failed = Timing(status=_one_line_error(error))
        for _ in range(timings_in(work)):
            on_timing(f"{name}: model not built")
        return [e2e_row(w, gpu, dtype_name, provider, None, None, None, None, None, failed, "", math.nan)
                for w in work for provider in ("dense", "ss1_tuned")]

    dense_timings = {}
    for phase in phases:
        dense_timings[phase] = time_call(partial(phase_call, dense, phase, inputs, decoder), device, timer,
                                         warmup_ms, rep_ms, cuda_graph)
        _free(device)
        on_timing(f"{name} {phase} dense")

    rows = []
    for c in redn_factors:
        ss1_stats, ss1_timings = None, {}
        model = None
        try:
            model = convert_to_ss_linear(copy.deepcopy(dense), c, project=False)
            cache_rotated_weights(model, rotated_cache)
            ss1_stats = ModelStats.of(model, hidden, intermediate)
            for phase in phases:
                ss1_timings[phase] = time_call(partial(phase_call, model, phase, inputs, decoder), device, timer,
                                               warmup_ms, rep_ms, cuda_graph)
                _free(device)
                on_timing(f"{name} {phase} SS1 c={c}")
        except Exception as error:  # conversion failed (e.g. out of memory for the copy)
            failed = Timing(status=_one_line_error(error))
            for phase in phases:
                if phase not in ss1_timings:
                    ss1_timings[phase] = (failed, "")
                    on_timing(f"{name} {phase} SS1 c={c} (not converted)")
        finally:
            model = None
            _free(device)
        structure = ss1_stats.structure if ss1_stats is not None else None
        for phase in phases:
            item = Work(name, phase, c, batch, seq)
            dense_timing, dense_mode = dense_timings[phase]
            ss1_timing, ss1_mode = ss1_timings[phase]
            rows.append(e2e_row(item, gpu, dtype_name, "dense", hidden, intermediate, dense_stats, dense_stats,
                                structure, dense_timing, dense_mode, dense_timing.median_ms))
            rows.append(e2e_row(item, gpu, dtype_name, "ss1_tuned", hidden, intermediate, ss1_stats, dense_stats,
                                structure, ss1_timing, ss1_mode, dense_timing.median_ms))
    dense = None
    _free(device)
    order = {phase: i for i, phase in enumerate(phases)}
    return sorted(rows, key=lambda row: order[row["layer"].rsplit(" ", 1)[1]])  # stable: c order kept


# ---- the run ----------------------------------------------------------------------------------


def run(models: Sequence[str], redn_factors: Sequence[int], batch: int, seq: int, dtype_name: str, out_dir: Path,
        stem: str, args: dict, *, device: torch.device | None = None, timer: Timer = do_bench_timer,
        warmup_ms: int = E2E_WARMUP_MS, rep_ms: int = E2E_REP_MS, cuda_graph: bool = False,
        echo: Callable[[str], None] = print, overrides: Mapping[str, Mapping[str, Any]] | None = None,
        rotated_cache: bool = True):
    """Time every model; write ``out_dir/stem.csv`` and its JSON sidecar. Returns (csv path, DataFrame).

    ``device`` defaults to the current CUDA device; on any other device the GPU name is ``CPU``
    and peak memory is empty (tests run the whole path on the CPU with a fake ``timer``).
    ``overrides`` maps model names to config overrides. The CSV and sidecar are rewritten after
    every model, so an interrupted run keeps what it measured.
    """
    device = device or torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        gpu = normalize_gpu_name(device_name)
    else:
        device_name, gpu = device.type, device.type.upper()
    database = use_tuning_database(gpu)
    work = plan(models, redn_factors, batch, seq)
    echo(f"{device_name} ({gpu}); tuning database: {database}")
    echo(f"{len(models)} models, {len(work)} (model, phase, c) pairs, {timings_in(work)} timings; "
         f"batch {batch}, seq {seq}, {dtype_name}{', CUDA graphs' if cuda_graph else ''}")
    configs = {name: {"class": MODELS[name].model_class,
                      "config": {**MODELS[name].config, **((overrides or {}).get(name) or {})}} for name in models}

    def e2e_metadata(metadata: dict) -> None:
        for key in ("copy_bandwidth_gbs", "memory_floor"):  # layer-benchmark only
            metadata.pop(key, None)
        metadata.update(timing=E2E_TIMING, flop_counts=E2E_FLOPS, providers=PROVIDER_DESCRIPTIONS,
                        phases=PHASE_DESCRIPTIONS, models=configs,
                        conversion="convert_to_ss_linear(copy, c, project=False)"
                                   + ("; cache_rotated_weights(copy)" if rotated_cache else ""),
                        rotated_cache=rotated_cache)

    results = ResultWriter(RunInfo(gpu, device_name, database, math.nan, args), out_dir, stem, timings_in(work),
                           e2e_metadata)
    generator = torch.Generator(device=device).manual_seed(INPUT_SEED)
    for name in models:
        results.rows.extend(model_rows(name, redn_factors, batch, seq, dtype_name, gpu, device, generator, timer,
                                       warmup_ms, rep_ms, cuda_graph, (overrides or {}).get(name),
                                       results.progress.step, rotated_cache))
        results.flush(complete=False)
    return results.csv_path, results.flush(complete=True)


def summary_table(frame) -> str:
    """One line per (model, phase, c): dense and SS1 medians, speedup and tokens/s of each."""
    import pandas as pd

    dense = {(r["layer"], r["redn_factor"]): r for r in frame[frame["provider"] == "dense"].to_dict("records")}
    lines = []
    for row in frame[frame["provider"] == "ss1_tuned"].to_dict("records"):
        model, phase = str(row["layer"]).rsplit(" ", 1)
        dense_row = dense.get((row["layer"], row["redn_factor"]), {})
        lines.append({
            "model": model, "phase": phase, "c": row["redn_factor"], "tokens": row["M"],
            "dense ms": row["dense_ms"], "SS1 ms": row["median_ms"], "speedup": row["speedup_vs_dense"],
            "dense tok/s": _ratio(row["M"], dense_row.get("median_ms", math.nan)) * 1e3,
            "SS1 tok/s": _ratio(row["M"], row["median_ms"]) * 1e3,
        })
    if not lines:
        return "(no results)"
    formats = {"dense ms": "{:.4g}", "SS1 ms": "{:.4g}", "speedup": "{:.2f}", "dense tok/s": "{:,.0f}",
               "SS1 tok/s": "{:,.0f}"}
    return pd.DataFrame(lines).to_string(index=False, formatters={column: _formatter(spec)
                                                                  for column, spec in formats.items()})


def _formatter(spec: str) -> Callable[[float], str]:
    """``spec.format`` for numbers, ``–`` for NaN (a failed timing)."""
    return lambda value: "–" if math.isnan(value) else spec.format(value)


# ---- command ----------------------------------------------------------------------------------


def _fail(message: str) -> None:
    """One ``error:`` line on stderr and exit code 2 (a missing prerequisite, as ``ss1bench bench``)."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def _dry_run(models: list[str], factors: list[int], batch: int, seq: int, stem: str, out_dir: Path | None) -> None:
    work = plan(models, factors, batch, seq)
    counts = {name: meta_weight_counts(name, factors, seq) for name in models}
    for item in work:
        dense, per_c = counts[item.model]
        ss1, converted, total = per_c[item.redn_factor]
        click.echo(f"{item.describe()}  linear weights {dense:,} dense -> {ss1:,} SS1 "
                   f"({dense / ss1:.2f}x fewer; {converted}/{total} layers SS1)")
    click.echo(f"{len(work)} (model, phase, c) pairs x providers (dense, ss1_tuned); {timings_in(work)} timings; "
               f"SS1 weights with default block sizes (the GPU's tuning database may change them); "
               f"output {out_dir or 'reports/<GPU>'}/{stem}.csv")


@main.command("e2e")
@click.option("--model", "--models", "models", default="gpt2", show_default=True, metavar="NAMES",
              help=f"Comma-separated models: {', '.join(MODEL_NAMES)} (random weights from the config).")
@click.option("--redn-factor", "--redn-factors", "redn_factors", default="4", show_default=True, metavar="C,...",
              help="Reduction factors c, comma-separated (e.g. 2,4,8).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1), help="Sequences per call.")
@click.option("--seq", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Prompt length: tokens per sequence in prefill, KV-cache length in decode.")
@click.option("--dtype", default="fp16", show_default=True, type=click.Choice(DTYPES), help="Model dtype.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder for the CSV and its JSON sidecar (default reports/<GPU>).")
@click.option("--warmup-ms", default=E2E_WARMUP_MS, show_default=True, type=click.IntRange(min=1),
              help="do_bench warm-up time per timing.")
@click.option("--rep-ms", default=E2E_REP_MS, show_default=True, type=click.IntRange(min=1),
              help="do_bench timed repetitions per timing.")
@click.option("--cuda-graph", is_flag=True,
              help="Also time each call as a CUDA-graph replay (no host launch overhead) and keep the faster "
                   "of eager and replay; the row's detail says which.")
@click.option("--rotated-cache/--no-rotated-cache", default=True, show_default=True,
              help="Turn the SSL layers' rotated-weight cache on (the inference setting: one more N x K/c tensor "
                   "per layer, no per-call weight rotation).")
@click.option("--dry-run", is_flag=True, help="List the work and the linear weight counts, and exit (no GPU needed).")
def e2e_command(models, redn_factors, batch, seq, dtype, out_dir, warmup_ms, rep_ms, cuda_graph, rotated_cache,
                dry_run) -> None:
    """Time whole models (GPT-2, BERT, Llama-1B shapes), dense against SS1: prefill and decode."""
    from ss1bench.structure import validate_reduction_factor

    model_list = list(dict.fromkeys(_choices("--model", models, MODEL_NAMES)))
    factors = list(dict.fromkeys(_ints("--redn-factor", redn_factors)))
    for factor in factors:
        try:
            validate_reduction_factor(factor)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--redn-factor") from None
    stem = output_stem(model_list, dtype, batch, seq)
    try:
        import_transformers()
    except ImportError as error:
        _fail(str(error))
    if dry_run:
        _dry_run(model_list, factors, batch, seq, stem, out_dir)
        return
    if not torch.cuda.is_available():
        _fail("ss1bench e2e needs a CUDA GPU and none is visible (use --dry-run to list the work)")

    out = out_dir or Path("reports") / normalize_gpu_name(torch.cuda.get_device_name())
    args = {"models": model_list, "redn_factors": factors, "batch": batch, "seq": seq, "dtype": dtype,
            "warmup_ms": warmup_ms, "rep_ms": rep_ms, "cuda_graph": cuda_graph, "rotated_cache": rotated_cache}
    csv_path, frame = run(model_list, factors, batch, seq, dtype, out, stem, args, warmup_ms=warmup_ms,
                          rep_ms=rep_ms, cuda_graph=cuda_graph, echo=click.echo, rotated_cache=rotated_cache)
    click.echo(summary_table(frame))
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        click.echo(f"{len(failed)} timings failed (status column); first: {failed.iloc[0]['status']}")
    eager = frame[frame["detail"].str.contains("capture failed", regex=False, na=False)]
    if len(eager):
        click.echo(f"{len(eager)} rows fell back to eager timing (CUDA graph capture failed; see detail): "
                   f"their speedups compare unlike timings")
    click.echo(f"wrote {csv_path} and {csv_path.with_suffix('.json')}")


__all__ = ["MODELS", "MODEL_NAMES", "PHASES", "DecodeStep", "ModelSpec", "Work", "build_config", "build_model",
           "do_bench_timer", "e2e_command", "linear_weight_params", "meta_weight_counts", "plan", "run",
           "summary_table", "time_call"]
