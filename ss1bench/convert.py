"""Turn a model's dense linear layers into SS1 layers: ``convert_to_ss_linear``.

    from ss1bench import convert_to_ss_linear, conversion_report
    model = convert_to_ss_linear(model, reduction_factor=4, skip_pattern=["pooler"])
    print(conversion_report(model).to_dataframe())

Converted are ``nn.Linear`` (and subclasses) and Hugging Face ``Conv1D`` (GPT-2's layers, weight
stored ``(in, out)``), found in ``model.named_modules()`` order. Each converted layer gets seed
``init_seed + n``, ``n`` counting converted layers only, so the same model and settings always
give the same SS1 model. The per-layer report (:class:`ConversionReport`) lists every dense layer
the conversion looked at: converted ones with their structure, parameters and projection error,
dense ones with the reason they stayed dense.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import parametrize

from .layer import SSL, choose_structure
from .structure import (
    MAX_BLOCK_K,
    MAX_BLOCK_N,
    MIN_BLOCK,
    REDUCTION_FACTORS,
    SS1Structure,
    default_block_k,
    validate_block,
)

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

#: A path component containing one of these (lower-cased) marks an attention sub-module:
#: GPT-2 ``attn``/``c_attn``, BERT ``attention``, Llama/OPT ``self_attn``, T5 ``SelfAttention`` and
#: ``EncDecAttention``, BERT-decoder ``crossattention``, Falcon/BLOOM ``self_attention``.
ATTENTION_MARKERS = ("attn", "attention")
#: Layer names that are attention projections wherever they sit (checked on the last component).
ATTENTION_LAYER_NAMES = frozenset(
    {"query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value"}
)

#: Why a layer stayed dense (the ``reason`` column of the report).
SKIP_REASONS = {
    "pattern": "its path contains a skip_pattern entry",
    "layer_index": "it sits in a block listed in layer_indices",
    "attention": "it is an attention projection and skip_attention is set",
    "tied": "a parameter is shared with another module",
    "too_small": "the SS1 structure would not make it smaller",
    "unsupported": "the layer cannot be replaced (dtype, parametrization or parent)",
}

_REPORT_ATTRIBUTE = "_ss1_conversion_report"


# ---- report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerReport:
    """One dense layer the conversion looked at.

    Attributes:
        path: module path in ``model.named_modules()`` (the first one for a shared module).
        kind: ``"Linear"`` or ``"Conv1D"``.
        in_features, out_features: the layer's shape; ``shape`` gives ``(in, out)``.
        converted: whether it became an :class:`~ss1bench.SSL`.
        params_before, params_after: weight plus bias elements before and after (equal when dense).
        redn_factor, seed, block_k, block_n: the SS1 structure (None when dense).
        rel_error: ``||W - W_ss1|| / ||W||`` of the projection, NaN when not projected.
        reason: a key of :data:`SKIP_REASONS` when dense, else None.
        detail: one human-readable line on why it stayed dense ("" when converted).
    """

    path: str
    kind: str
    in_features: int
    out_features: int
    converted: bool
    params_before: int
    params_after: int
    redn_factor: int | None = None
    seed: int | None = None
    block_k: int | None = None
    block_n: int | None = None
    rel_error: float = math.nan
    reason: str | None = None
    detail: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """``(in_features, out_features)``."""
        return (self.in_features, self.out_features)


@dataclass(frozen=True)
class ConversionReport:
    """Per-layer outcome of :func:`convert_to_ss_linear`; iterates over :class:`LayerReport` rows."""

    layers: tuple[LayerReport, ...]

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, key: str | int) -> LayerReport:
        """The row for a module path (or, for an int, the row at that position)."""
        if isinstance(key, int):
            return self.layers[key]
        for row in self.layers:
            if row.path == key:
                return row
        raise KeyError(f"no layer {key!r} in the conversion report")

    @property
    def converted(self) -> list[LayerReport]:
        return [row for row in self.layers if row.converted]

    @property
    def skipped(self) -> list[LayerReport]:
        return [row for row in self.layers if not row.converted]

    @property
    def params_before(self) -> int:
        """Weight and bias elements of all reported layers before conversion."""
        return sum(row.params_before for row in self.layers)

    @property
    def params_after(self) -> int:
        return sum(row.params_after for row in self.layers)

    def to_records(self) -> list[dict]:
        return [asdict(row) for row in self.layers]

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per layer, columns as the :class:`LayerReport` fields."""
        import pandas

        columns = list(LayerReport.__dataclass_fields__)
        return pandas.DataFrame(self.to_records(), columns=columns)


def conversion_report(model: nn.Module) -> ConversionReport:
    """The report of the conversions :func:`convert_to_ss_linear` made on ``model``.

    Repeated conversions of one model merge: a path's latest row wins.
    """
    report = getattr(model, _REPORT_ATTRIBUTE, None)
    if report is None:
        raise ValueError(f"{type(model).__name__} has no conversion report: convert it with "
                         "convert_to_ss_linear first")
    return report


# ---- layer discovery ------------------------------------------------------------------------


def _is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face ``Conv1D`` (``y = x @ weight + bias``, weight ``(in, out)``), found by duck typing
    so that ``transformers`` need not be installed."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(getattr(module, "nf", None), int)
            and isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[1] == module.nf)


def _layer_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "Linear"
    if _is_hf_conv1d(module):
        return "Conv1D"
    return None


def _dense_weight(module: nn.Module, kind: str) -> torch.Tensor:
    """The layer's weight as ``(out_features, in_features)`` (a view, not a copy)."""
    return module.weight if kind == "Linear" else module.weight.t()


def block_index(model: nn.Module, path: str) -> int | None:
    """Transformer block index of the module at ``path``: the first integer path component that
    names a child of an ``nn.ModuleList`` (``transformer.h.3.mlp.c_fc`` -> 3,
    ``bert.encoder.layer.3.output.dense`` -> 3, ``model.layers.3.mlp.up_proj`` -> 3); None when the
    module sits in no ``ModuleList``."""
    module = model
    for name in path.split(".") if path else ():
        if isinstance(module, nn.ModuleList) and name.isdigit():
            return int(name)
        module = module._modules[name]
    return None


def is_attention_path(path: str) -> bool:
    """Whether ``path`` names an attention projection (the rule behind ``skip_attention``).

    True when any path component, lower-cased, contains ``"attn"`` or ``"attention"`` (every layer
    inside an attention module: Q, K, V and the output projection, e.g. GPT-2 ``attn.c_attn`` and
    ``attn.c_proj``, BERT ``attention.self.query`` and ``attention.output.dense``, Llama
    ``self_attn.o_proj``), or when the last component is one of :data:`ATTENTION_LAYER_NAMES`.
    Feed-forward layers (BERT ``layer.3.output.dense``, GPT-2 ``mlp.c_proj``) are not attention.
    """
    parts = path.lower().split(".")
    return (any(marker in part for part in parts for marker in ATTENTION_MARKERS)
            or parts[-1] in ATTENTION_LAYER_NAMES)


# ---- argument checks ------------------------------------------------------------------------


def _check_args(model, reduction_factor, layer_indices, init_seed, skip_pattern, block_k, block_n):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, int):
        raise TypeError(f"reduction_factor must be an int, got {type(reduction_factor).__name__}")
    if reduction_factor not in REDUCTION_FACTORS:
        raise ValueError(f"reduction_factor must be a power of two in {list(REDUCTION_FACTORS)}, "
                         f"got {reduction_factor}")
    if isinstance(init_seed, bool) or not isinstance(init_seed, int):
        raise TypeError(f"init_seed must be an int, got {type(init_seed).__name__}")
    indices: set[int] = set()
    if layer_indices is not None:
        if isinstance(layer_indices, int | str) or not isinstance(layer_indices, Iterable):
            raise TypeError(f"layer_indices must be a list of ints, got {layer_indices!r}")
        for index in layer_indices:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"layer_indices must hold non-negative ints, got {index!r}")
            indices.add(index)
    patterns: tuple[str, ...] = ()
    if skip_pattern is not None:
        patterns = (skip_pattern,) if isinstance(skip_pattern, str) else tuple(skip_pattern)
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"skip_pattern must hold non-empty strings, got {pattern!r}")
    if block_k is not None:
        validate_block("block_k", block_k, MAX_BLOCK_K)
    if block_n is not None:
        validate_block("block_n", block_n, MAX_BLOCK_N)
    return indices, patterns


# ---- conversion -----------------------------------------------------------------------------


def convert_to_ss_linear(
    model: nn.Module,
    reduction_factor: int,
    layer_indices: Iterable[int] | None = None,
    skip_attention: bool = False,
    init_seed: int = 42,
    skip_pattern: Iterable[str] | str | None = None,
    project: bool = True,
    block_k: int | None = None,
    block_n: int | None = None,
) -> nn.Module:
    """Replace the model's ``nn.Linear`` and Hugging Face ``Conv1D`` layers by SS1 layers, in place.

    Each replacement is an :class:`~ss1bench.SSL` on the layer's device and dtype, in the same
    train/eval mode and with the same ``requires_grad``. The per-layer outcome is available
    afterwards from :func:`conversion_report`.

    Args:
        model: the model to convert.
        reduction_factor: c, a power of two in 1..32. c = 1 is an exact reparametrisation
            (useful to check a pipeline): every eligible layer converts and computes what it did.
        layer_indices: transformer block indices to LEAVE DENSE (not the ones to convert). A
            layer's block index is the integer path component that follows an ``nn.ModuleList``
            (see :func:`block_index`; encoder and decoder blocks of the same number both match).
            An index that names no block holding a linear layer raises ValueError.
        skip_attention: leave attention projections dense: Q, K, V and the attention output
            projection (the rule is :func:`is_attention_path`).
        init_seed: seed of the first converted layer; each further converted layer gets the next
            integer (``named_modules()`` order; layers left dense take no seed).
        skip_pattern: substrings; a layer whose path contains any of them stays dense (a single
            string counts as one pattern).
        project: True: each weight is the least-squares projection of the dense weight onto SS1
            (:meth:`SS1Structure.project`) and the bias is copied. False: a fresh SS1 initialisation.
        block_k, block_n: structural block sizes for every converted layer; when None each layer
            takes the tuning database's structure for its shape on this GPU, else the defaults
            (``SSL`` does the lookup). A database ``block_k`` that would save nothing is replaced
            by the least-padding default, so the set of converted layers never depends on the GPU.

    Layers that stay dense on their own, with one INFO line each on the ``ss1bench.convert``
    logger: layers with a parameter shared with another module (GPT-2's ``lm_head`` is the token
    embedding), layers too small for the structure (``in_features < 16 * c``, or for c > 1 an
    explicit ``block_k`` under which the compressed weight would not be narrower than the dense
    one), and layers that cannot be swapped (non-float weights, parametrized weights, the
    ``out_proj`` of ``nn.MultiheadAttention``, which reads the weight directly).

    Checkpoints: ``model.state_dict()`` carries each SSL's structure; it loads into the same model
    converted with the same ``reduction_factor``, ``init_seed`` and skip settings (block sizes are
    taken from the checkpoint). A different reduction factor or seed fails the load, naming it.

    A module registered under several paths is converted once and replaced everywhere (it stays
    dense if any of its paths is skipped). Hooks registered on a replaced module are not carried
    over.

    Returns:
        ``model``, converted. (A bare ``nn.Linear`` or ``Conv1D`` cannot be replaced in place; its
        SSL replacement is returned instead.)
    """
    indices, patterns = _check_args(model, reduction_factor, layer_indices, init_seed, skip_pattern,
                                    block_k, block_n)
    paths_of: dict[int, list[str]] = {}
    owners_of: dict[int, list[tuple[int, str]]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        paths_of.setdefault(id(module), []).append(path)
        for parameter in module._parameters.values():
            if parameter is not None:
                owners_of.setdefault(id(parameter), []).append((id(module), path))

    candidates = [(path, module, kind) for path, module in model.named_modules()
                  if (kind := _layer_kind(module)) is not None]
    blocks = {index for _, module, _ in candidates for path in paths_of[id(module)]
              if (index := block_index(model, path)) is not None}
    if missing := sorted(indices - blocks):
        found = f"blocks {sorted(blocks)}" if blocks else "no linear layer inside an nn.ModuleList"
        raise ValueError(f"layer_indices {missing} name no transformer block of this model ({found})")

    seed = init_seed
    rows: list[LayerReport] = []
    for path, module, kind in candidates:
        paths = paths_of[id(module)]
        out_features, in_features = _dense_weight(module, kind).shape
        params = sum(p.numel() for p in module._parameters.values() if p is not None)
        reason, detail = _user_skip(model, paths, indices, patterns, skip_attention)
        if reason is None:
            reason, detail = _forced_skip(model, module, paths, owners_of)
        structure = None
        if reason is None:
            weight = _dense_weight(module, kind)
            structure = _structure_for(path, in_features, out_features, reduction_factor, seed, block_k,
                                       block_n, weight)
            reason, detail = _size_skip(in_features, reduction_factor, structure)
        if reason is not None:
            log = logger.debug if reason in ("pattern", "layer_index", "attention") else logger.info
            log("%s stays dense: %s", path or type(module).__name__, detail)
            rows.append(LayerReport(path, kind, in_features, out_features, False, params, params,
                                    reason=reason, detail=detail))
            continue

        replacement, rel_error = _build_ssl(module, kind, structure, project)
        for each_path in paths:
            if each_path:
                parent_path, _, name = each_path.rpartition(".")
                setattr(model.get_submodule(parent_path), name, replacement)
            else:
                model = replacement
        rows.append(LayerReport(
            path, kind, in_features, out_features, True, params,
            sum(p.numel() for p in replacement.parameters()), structure.redn_factor, structure.seed,
            structure.block_k, structure.block_n, rel_error,
        ))
        seed += 1

    report = _merge(model, getattr(model, _REPORT_ATTRIBUTE, None), rows)
    object.__setattr__(model, _REPORT_ATTRIBUTE, report)
    converted = [row for row in rows if row.converted]
    logger.info("converted %d of %d linear layers to SS1 (c=%d): %d -> %d parameters in them",
                len(converted), len(rows), reduction_factor, sum(r.params_before for r in converted),
                sum(r.params_after for r in converted))
    return model


def _user_skip(model, paths, indices, patterns, skip_attention) -> tuple[str | None, str]:
    for path in paths:
        hit = next((pattern for pattern in patterns if pattern in path), None)
        if hit is not None:
            return "pattern", f"path contains skip_pattern {hit!r}"
        index = block_index(model, path) if path else None
        if index is not None and index in indices:
            return "layer_index", f"block {index} is in layer_indices"
        if skip_attention and is_attention_path(path):
            return "attention", "attention projection (skip_attention=True)"
    return None, ""


def _forced_skip(model, module, paths, owners_of) -> tuple[str | None, str]:
    for name, parameter in module._parameters.items():
        if parameter is None:
            continue
        others = [path for owner, path in owners_of[id(parameter)] if owner != id(module)]
        if others:
            return "tied", f"{name} is shared with {others[0] or type(model).__name__} (tied weights)"
    if not module.weight.is_floating_point():
        return "unsupported", f"weight dtype {module.weight.dtype} is not floating point"
    if parametrize.is_parametrized(module):
        return "unsupported", "weight is parametrized"
    for path in paths:
        if path:
            parent = model.get_submodule(path.rpartition(".")[0])
            if isinstance(parent, nn.MultiheadAttention):
                return "unsupported", "nn.MultiheadAttention reads its out_proj weight directly"
    return None, ""


def _structure_for(path, in_features, out_features, reduction_factor, seed, block_k, block_n,
                   weight) -> SS1Structure:
    """The layer's structure: explicit blocks, else the tuning DB's (through ``choose_structure``).

    A DB ``block_k`` that would leave the compressed weight no narrower than the dense one is
    replaced by the least-padding default, so which layers convert depends on ``(K, c)`` and the
    caller's explicit ``block_k`` only, never on the GPU's database: a checkpoint converted on one
    GPU then loads into a model converted on another.
    """
    structure = choose_structure(in_features, out_features, reduction_factor, seed, block_k, block_n,
                                 weight.dtype, weight.device)
    if block_k is None and reduction_factor > 1 and structure.k_red >= in_features:
        fallback = default_block_k(in_features, reduction_factor)
        logger.info("%s: block_k=%d saves nothing (K_red=%d >= in_features=%d); using block_k=%d",
                    path, structure.block_k, structure.k_red, in_features, fallback)
        structure = SS1Structure(in_features, out_features, reduction_factor, seed, fallback,
                                 structure.block_n)
    return structure


def _size_skip(in_features, reduction_factor, structure) -> tuple[str | None, str]:
    if in_features < reduction_factor * MIN_BLOCK:
        return "too_small", (f"in_features={in_features} < {MIN_BLOCK} * redn_factor "
                             f"({reduction_factor * MIN_BLOCK})")
    if reduction_factor > 1 and structure.k_red >= in_features:
        return "too_small", (f"compressed width K_red={structure.k_red} (block_k={structure.block_k}) "
                             f"is not below in_features={in_features}")
    return None, ""


def _build_ssl(module: nn.Module, kind: str, structure: SS1Structure, project: bool) -> tuple[SSL, float]:
    """SSL replacing ``module`` and the projection's relative error (NaN when not projected)."""
    weight = _dense_weight(module, kind)
    bias = module.bias
    if project:
        layer = SSL.from_dense(weight, bias, structure.redn_factor, structure.seed, structure.block_k,
                               structure.block_n)
    else:
        layer = SSL(structure.in_features, structure.out_features, bias=bias is not None,
                    redn_factor=structure.redn_factor, seed=structure.seed, device=weight.device,
                    dtype=weight.dtype, block_k=structure.block_k, block_n=structure.block_n)
    layer.weight.requires_grad_(module.weight.requires_grad)
    if bias is not None:
        layer.bias.requires_grad_(bias.requires_grad)
    layer.train(module.training)
    rel_error = math.nan
    if project and not weight.is_meta:
        with torch.no_grad():
            dense = weight.float()
            norm = torch.linalg.vector_norm(dense).item()
            error = torch.linalg.vector_norm(dense - layer.dense_weight().float()).item()
            rel_error = error / norm if norm > 0 else (0.0 if error == 0 else math.inf)
    return layer, rel_error


def _merge(model: nn.Module, previous: ConversionReport | None, rows: list[LayerReport]) -> ConversionReport:
    """Rows of an earlier conversion of ``model`` plus the new ones (new wins), in module order."""
    if previous is None:
        return ConversionReport(tuple(rows))
    new_paths = {row.path for row in rows}
    merged = [row for row in previous if row.path not in new_paths] + rows
    order = {path: position for position, (path, _) in enumerate(model.named_modules())}
    merged.sort(key=lambda row: order.get(row.path, len(order)))
    return ConversionReport(tuple(merged))
