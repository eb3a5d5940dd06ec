"""The models ``ss1bench e2e`` times: their specs, how they are built and converted, and what the
rows say about them (weights, layers, the MLP's SS1 structure).

Every model is a Hugging Face class built from its config with random weights (nothing is
downloaded). The SS1 model is a deep copy of the dense one converted with
``convert_to_ss_linear(copy, c, project=False)``: a fresh SS1 initialisation instead of the
least-squares projection of the dense weights. Timing does not depend on the weights' values, and
skipping the projection keeps a 1B-parameter conversion to a fraction of a second.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from ss1bench.bench.runner import INPUT_SEED
from ss1bench.convert import _layer_kind, conversion_report, convert_to_ss_linear
from ss1bench.layer import SSL
from ss1bench.structure import SS1Structure


class ModelSpec(NamedTuple):
    """A benchmarked model: its ``transformers`` class, config keyword arguments, whether it is a
    decoder (then it also has a decode phase and its prefill runs with ``use_cache=False``), and
    the class a training step uses when the inference class has no loss (BERT's encoder alone).

    The config class is the model class's ``config_class``; tests override sizes to build tiny
    variants of the same architecture.
    """

    model_class: str
    config: Mapping[str, Any]
    decoder: bool
    train_class: str | None = None

    def class_name(self, train: bool) -> str:
        return (self.train_class or self.model_class) if train else self.model_class


#: GPT-2's vocabulary padded to a multiple of 64 (nanoGPT's 50304): HF's 50257 rows make the LM
#: head's GEMM, the largest of GPT-2 small, an odd width for cuBLAS.
PADDED_GPT2_VOCAB = 50304

_GPT2_MEDIUM = {"n_embd": 1024, "n_layer": 24, "n_head": 16}

_LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
             "tie_word_embeddings": True, "rope_theta": 500000.0}

MODELS: dict[str, ModelSpec] = {
    "gpt2": ModelSpec("GPT2LMHeadModel", {}, True),  # GPT2Config defaults: 768 hidden, 12 layers, vocab 50257
    "gpt2-padded": ModelSpec("GPT2LMHeadModel", {"vocab_size": PADDED_GPT2_VOCAB}, True),
    "gpt2-medium": ModelSpec("GPT2LMHeadModel", _GPT2_MEDIUM, True),
    "gpt2-medium-padded": ModelSpec("GPT2LMHeadModel", {**_GPT2_MEDIUM, "vocab_size": PADDED_GPT2_VOCAB}, True),
    # BertConfig defaults: 768 hidden, 12 layers, MLP 3072. Training adds the masked-LM head
    # (a 768 -> 768 transform and the decoder tied to the word embeddings) for a loss.
    "bert-base": ModelSpec("BertModel", {}, False, "BertForMaskedLM"),
    "bert-large": ModelSpec("BertModel", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                          "intermediate_size": 4096}, False, "BertForMaskedLM"),
    # Llama-3.2-1B's shape (its llama3 RoPE scaling changes no timing, so it is left out).
    "llama-1b": ModelSpec("LlamaForCausalLM", _LLAMA_1B, True),
    # The same model with Llama-2's 32000-token vocabulary: its LM head (dense in both models) is
    # a quarter of llama-1b's, so the SS1 layers are a larger share of the step.
    "llama-1b-32k": ModelSpec("LlamaForCausalLM", {**_LLAMA_1B, "vocab_size": 32000}, True),
}
MODEL_NAMES = tuple(MODELS)

#: What each phase times (also written to the run's JSON sidecar).
PHASE_DESCRIPTIONS = {
    "prefill": "one forward over (batch, seq) random token ids, logits for every position "
               "(decoders with use_cache=False); M = batch * seq",
    "decode": "one step of one new token per sequence against a DynamicCache filled by one prefill of seq "
              "tokens, then cropped back to seq tokens (the crop is part of the timed call); M = batch; "
              "eager and CUDA-graph timings only (--compile none)",
    "train": "one training step over (batch, seq) random token ids: zero_grad(set_to_none=True), forward with "
             "labels = the ids (causal LMs shift them, BERT's masked-LM head predicts every position) under "
             "autocast, loss.backward(), AdamW step (fused on CUDA); weights fp32; M = batch * seq",
}
PHASES = tuple(PHASE_DESCRIPTIONS)
INFERENCE_PHASES = ("prefill", "decode")

#: Config attributes that bound the position ids; raised to cover the run's positions when smaller
#: (GPT-2's 1024 learned positions cannot hold a decode step after a 1024-token prompt, BERT's 512
#: cannot hold a 1024-token prefill: an out-of-range position is a device-side assert on CUDA).
POSITION_ATTRIBUTES = ("n_positions", "max_position_embeddings")

#: Attention implementation asked for where the model class supports it.
ATTENTION = "sdpa"


def import_transformers():
    """The ``transformers`` module, or ImportError with a one-line message saying what to install."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(f"ss1bench e2e builds Hugging Face models and needs transformers "
                          f"(pip install transformers): {error}") from None
    return transformers


def phases_of(name: str, compiled: bool = False, train: bool = False) -> tuple[str, ...]:
    """Phases timed for a model: ``train`` in a training run; else prefill, plus decode for
    decoder models when the call is not compiled (decode is timed eagerly or as a CUDA graph)."""
    if train:
        return ("train",)
    return INFERENCE_PHASES if MODELS[name].decoder and not compiled else INFERENCE_PHASES[:1]


def build_config(name: str, seq: int = 0, overrides: Mapping[str, Any] | None = None, train: bool = False):
    """``(model class, config)`` of a model of :data:`MODELS` (its training class when ``train``).

    ``overrides`` replace config keyword arguments (tests pass tiny sizes). The position limit
    (:data:`POSITION_ATTRIBUTES`) is raised to ``seq + 1`` for decoders (a prompt of ``seq`` tokens
    and one decode step) and ``seq`` for encoders when it is smaller.
    """
    transformers = import_transformers()
    spec = MODELS[name]
    model_class = getattr(transformers, spec.class_name(train))
    config = model_class.config_class(**{**spec.config, **(overrides or {})})
    positions = seq + 1 if spec.decoder else seq
    for attribute in POSITION_ATTRIBUTES:
        if hasattr(config, attribute) and getattr(config, attribute) < positions:
            setattr(config, attribute, positions)
    return model_class, config


def build_model(name: str, device: torch.device | str, dtype: torch.dtype, seq: int = 0,
                overrides: Mapping[str, Any] | None = None, train: bool = False) -> nn.Module:
    """The model, random weights, built directly on ``device`` in ``dtype``; in train mode (its
    training class) when ``train``, else in eval mode.

    Built in place rather than built on the CPU and moved: a 1B-parameter model initialises in
    well under a second on a GPU, and an SSL converted from it sees the run's device and dtype
    (which pick its structure in the tuning database). Weights are drawn from a forked RNG seeded
    with ``INPUT_SEED``: the same model every run, and the global RNG untouched. SDPA attention
    where the class supports it (``_from_config`` is what ``AutoModel*.from_config`` calls).
    """
    model_class, config = build_config(name, seq, overrides, train)
    device = torch.device(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if getattr(model_class, "_supports_sdpa", False):
        kwargs["attn_implementation"] = ATTENTION
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), device:
        torch.manual_seed(INPUT_SEED)
        model = model_class._from_config(config, **kwargs)
    if MODELS[name].decoder and getattr(model, "loss_type", None) is None:
        # GPT2LMHeadModel's name maps to no loss: transformers falls back to ForCausalLM with a
        # logged warning on every loss, which torch.compile cannot trace (graph breaks in every
        # compiled training step, dense and SS1 alike). Name the loss it uses anyway.
        model.loss_type = "ForCausalLM"
    return model.train(train)


def ss1_copy(dense: nn.Module, redn_factor: int, structure_dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy of ``dense`` converted with ``convert_to_ss_linear(copy, c, project=False)``.

    ``structure_dtype``: the dtype the SSL layers compute in when it is not the weights' (a
    training step under autocast: fp32 weights, bf16 products). The copy is then converted in that
    dtype, so each layer gets the tuning database's structure for it, and cast back.
    """
    model = copy.deepcopy(dense)
    weights_dtype = next(model.parameters()).dtype
    cast = structure_dtype is not None and structure_dtype != weights_dtype
    if cast:
        model.to(structure_dtype)
    model = convert_to_ss_linear(model, redn_factor, project=False)
    return model.to(weights_dtype) if cast else model


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


def meta_weight_counts(name: str, redn_factors: Sequence[int], seq: int = 0,
                       overrides: Mapping[str, Any] | None = None,
                       train: bool = False) -> tuple[int, dict[int, tuple[int, int, int]]]:
    """Linear weights of the dense model and, per c, ``(SS1 weights, SS1 layers, linear layers)``.

    Built and converted on the meta device (no memory, no GPU) with the default SS1 structures;
    on a GPU the tuning database may choose other block sizes, which moves SS1 counts slightly.
    """
    dense = build_model(name, "meta", torch.float16, seq, overrides, train)
    counts = {}
    for c in redn_factors:
        converted = ss1_copy(dense, c)
        report = conversion_report(converted)
        counts[c] = (linear_weight_params(converted), len(report.converted), len(report))
    return linear_weight_params(dense), counts
