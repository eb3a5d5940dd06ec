"""Shape sets to tune: the linear layers of a few models, at decode and prefill batch sizes.

A shape set is a list of distinct ``(K, N)`` layers (``x: (M, K)`` times a ``(N, K)`` weight); the
tuner crosses each with M buckets. The database keys launch configs by M bucket and a layer's
``forward`` uses the nearest tuned bucket (in log2 M), so the buckets only need to cover the
regimes, not every batch size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Decode sizes: one token per sequence, batches of 1..64 sequences. Below 16 rows every forward
#: config uses the smallest M tile (tl.dot's floor), so M = 1 and 16 bracket that regime and 64 is
#: where a second row tile starts to pay.
DECODE_M = (1, 16, 64)
#: Prefill/training sizes the issue names. 32768 is left out of the default buckets: at 16384
#: rows a 128-row tile already gives 128 row tiles (about a full wave per N tile on 132 SMs), so
#: the winner carries over and nearest-bucket lookup sends 32768 to 16384; tuning it would
#: double the prefill timing cost for the 8-minute target. Pass ``--m-buckets`` to add it.
PREFILL_M = (4096, 16384)
ALL_PREFILL_M = (4096, 16384, 32768)
DEFAULT_M_BUCKETS = DECODE_M + PREFILL_M


def _transformer(model: str, hidden: int, ffn: int) -> list[tuple[str, int, int]]:
    return [
        (f"{model} attn.qkv", hidden, 3 * hidden),
        (f"{model} attn.proj", hidden, hidden),
        (f"{model} mlp.fc", hidden, ffn),
        (f"{model} mlp.proj", ffn, hidden),
    ]


#: name -> [(layer, K, N)], from the models' published configs.
SHAPE_SETS: dict[str, list[tuple[str, int, int]]] = {
    # GPT-2 small (d=768) and medium (d=1024): c_attn (fused qkv), attn c_proj, mlp c_fc, mlp c_proj.
    "gpt2": _transformer("gpt2-small", 768, 3072) + _transformer("gpt2-medium", 1024, 4096),
    # Llama-3-8B: d=4096, 8 KV heads of 128 (k/v 4096 -> 1024), SwiGLU width 14336.
    "llama": [
        ("llama3-8b q_proj/o_proj", 4096, 4096),
        ("llama3-8b k_proj/v_proj", 4096, 1024),
        ("llama3-8b gate_proj/up_proj", 4096, 14336),
        ("llama3-8b down_proj", 14336, 4096),
    ],
    # BERT base (768) and large (1024): q/k/v/attention output (d x d), intermediate, output.
    "bert": [
        ("bert-base attention", 768, 768),
        ("bert-base intermediate", 768, 3072),
        ("bert-base output", 3072, 768),
        ("bert-large attention", 1024, 1024),
        ("bert-large intermediate", 1024, 4096),
        ("bert-large output", 4096, 1024),
    ],
    "square": [(f"square {d}", d, d) for d in (1024, 2048, 4096, 8192)],
}
SHAPE_SET_NAMES = tuple(SHAPE_SETS)


class ShapeError(ValueError):
    """A shape set name or ``MxKxN`` text that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Layer:
    """One ``(K, N)`` layer to tune and the M buckets to tune it at.

    ``count``: how many layers of a model have this shape (``tune --model``; it weighs the
    expected gain of tuning it). ``redn_factors``: the only reduction factors to tune it at (those
    at which the model's conversion makes it an SS1 layer); empty: every factor asked for.
    """

    in_features: int
    out_features: int
    m_buckets: tuple[int, ...]
    names: tuple[str, ...]
    count: int = 1
    redn_factors: tuple[int, ...] = ()


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"MxKxN"`` -> ``(M, K, N)``.

    Raises:
        ShapeError: not three positive integers joined by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match:
        raise ShapeError(f"--shape {text!r} is not of the form MxKxN (for example 4096x768x3072)")
    m, k, n = (int(g) for g in match.groups())
    if min(m, k, n) <= 0:
        raise ShapeError(f"--shape {text!r}: M, K and N must be positive")
    return m, k, n


def parse_m_buckets(text: str) -> tuple[int, ...]:
    """``"1,16,4096"`` -> ``(1, 16, 4096)`` (sorted, unique)."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ShapeError(f"--m-buckets {text!r} is not a comma-separated list of integers") from None
    if not values or values[0] <= 0:
        raise ShapeError(f"--m-buckets {text!r}: give positive integers")
    return tuple(values)


def resolve_layers(set_names: list[str], custom: list[str],
                   m_buckets: tuple[int, ...] = DEFAULT_M_BUCKETS) -> list[Layer]:
    """Distinct ``(K, N)`` layers of the named sets (at ``m_buckets``) plus custom ``MxKxN`` shapes.

    A custom shape adds its own M as a bucket of its ``(K, N)`` layer. Order: first appearance.

    Raises:
        ShapeError: unknown set name or malformed custom shape.
    """
    buckets: dict[tuple[int, int], set[int]] = {}
    names: dict[tuple[int, int], list[str]] = {}
    for set_name in set_names:
        if set_name not in SHAPE_SETS:
            raise ShapeError(f"unknown shape set {set_name!r}; known: {', '.join(SHAPE_SET_NAMES)}")
        for layer, k, n in SHAPE_SETS[set_name]:
            buckets.setdefault((k, n), set()).update(m_buckets)
            names.setdefault((k, n), []).append(layer)
    for text in custom:
        m, k, n = parse_shape(text)
        buckets.setdefault((k, n), set()).add(m)
        names.setdefault((k, n), []).append(f"custom {m}x{k}x{n}")
    return [Layer(k, n, tuple(sorted(buckets[(k, n)])), tuple(dict.fromkeys(names[(k, n)]))) for (k, n) in buckets]
