"""The linear layers of a model, for ``ss1bench tune --model``: exactly the shapes its conversion
to SS1 makes SS1 layers, at each reduction factor asked.

A model is a name of ``ss1bench.e2e.models.MODELS`` (``gpt2``, ``llama-1b``, ...) or a path to a
Hugging Face ``config.json`` (or the folder holding it). It is built on the meta device (no
weights, no memory, nothing downloaded: ``transformers`` builds the architecture from the config)
and converted with ``convert_to_ss_linear(model, c, project=False)`` per c; the layers the
conversion reports as converted are the ones whose kernels run, with the count of each shape.
Layers it keeps dense (an LM head tied to the embeddings, one too small for c) are not tuned.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from .shapes import Layer, ShapeError


def _config_path(spec: str) -> Path | None:
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    return path if path.is_file() else None


def build_meta_model(spec: str):
    """``(model on the meta device, label)`` for a model name or a ``config.json`` path.

    Raises:
        ShapeError: neither a known model nor a readable Hugging Face config (one line saying why).
    """
    import torch

    from ss1bench.e2e.models import MODEL_NAMES, build_model, import_transformers

    if spec in MODEL_NAMES:
        try:
            return build_model(spec, "meta", torch.float16), spec
        except ImportError as exc:
            raise ShapeError(str(exc)) from None
    path = _config_path(spec)
    if path is None:
        raise ShapeError(f"--model {spec!r}: neither a known model ({', '.join(MODEL_NAMES)}) nor a path to a "
                         "Hugging Face config.json")
    try:
        transformers = import_transformers()
    except ImportError as exc:
        raise ShapeError(str(exc)) from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        config = transformers.AutoConfig.for_model(**data) if "model_type" in data else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShapeError(f"--model {spec}: cannot read {path} as a Hugging Face config ({exc})") from None
    if config is None:
        raise ShapeError(f"--model {spec}: {path} has no model_type; not a Hugging Face config.json")
    names = [name for name in (getattr(config, "architectures", None) or []) if hasattr(transformers, name)]
    model_class = getattr(transformers, names[0]) if names else transformers.AutoModel
    with torch.device("meta"):
        try:
            model = (model_class._from_config(config) if names else model_class.from_config(config))
        except Exception as exc:  # an architecture this transformers cannot build
            raise ShapeError(f"--model {spec}: transformers cannot build {type(config).__name__} ({exc})") from None
    return model, path.parent.name or str(path)


def model_layers(model, label: str, redn_factors: list[int], m_buckets: tuple[int, ...]) -> list[Layer]:
    """One :class:`~.shapes.Layer` per distinct converted ``(K, N)`` of ``model``, with its count and
    the factors at which it is converted (in order of first appearance)."""
    from ss1bench.convert import conversion_report, convert_to_ss_linear

    found: dict[tuple[int, int], dict] = {}
    for c in redn_factors:
        converted = convert_to_ss_linear(copy.deepcopy(model), c, project=False)
        counts: dict[tuple[int, int], int] = {}
        for row in conversion_report(converted).converted:
            counts[row.shape] = counts.get(row.shape, 0) + 1
        for shape, count in counts.items():
            entry = found.setdefault(shape, {"count": count, "factors": []})
            entry["count"] = max(entry["count"], count)
            entry["factors"].append(c)
    return [Layer(k, n, tuple(m_buckets), (f"{label} x{entry['count']}",), entry["count"], tuple(entry["factors"]))
            for (k, n), entry in found.items()]
