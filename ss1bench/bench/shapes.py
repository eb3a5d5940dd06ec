"""Benchmark shapes: the tuner's shape sets (``ss1bench.tuning.shapes``) at decode and prefill M.

The tables (layers of GPT-2, Llama-3-8B, BERT, square) live with the tuner so that the benchmark
measures exactly what the tuning database was built for; this module only crosses them with M
values and keeps one row per benchmark shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from ss1bench.tuning.shapes import DEFAULT_M_BUCKETS, SHAPE_SET_NAMES, SHAPE_SETS, parse_shape

#: Rows of x: the tuner's M buckets (decode 1, 16, 64; prefill 4096, 16384), so every benchmark
#: shape has a tuned launch config when the database covers its layer.
DEFAULT_M_VALUES = DEFAULT_M_BUCKETS

__all__ = ["DEFAULT_M_VALUES", "SHAPE_SET_NAMES", "Shape", "parse_shape", "resolve_shapes"]


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: ``x: (m, k)`` times an ``(n, k)`` layer of ``shape_set``."""

    shape_set: str
    layer: str
    m: int
    k: int
    n: int

    @property
    def label(self) -> str:
        return f"{self.m}x{self.k}x{self.n}"


def resolve_shapes(set_names: list[str], custom: list[str], m_values: list[int] | None = None) -> list[Shape]:
    """Shapes of the named sets (each layer at every M) plus custom ``MxKxN`` shapes (set "custom").

    ``m_values`` replaces the sets' M values (custom shapes keep their own M). Repeats within a set
    are dropped; a shape two sets share stays in both (the runner times it once and reports it
    under each set). Raises ValueError for an unknown set or a malformed shape.
    """
    shapes: list[Shape] = []
    for name in set_names:
        if name not in SHAPE_SETS:
            raise ValueError(f"unknown shape set {name!r}; known: {', '.join(SHAPE_SET_NAMES)}")
        for m in m_values or DEFAULT_M_VALUES:
            shapes.extend(Shape(name, layer, m, k, n) for layer, k, n in SHAPE_SETS[name])
    for text in custom:
        m, k, n = parse_shape(text)
        shapes.append(Shape("custom", f"{k}x{n}", m, k, n))
    seen: set[tuple[str, int, int, int]] = set()
    unique = []
    for shape in shapes:
        key = (shape.shape_set, shape.m, shape.k, shape.n)
        if key not in seen:
            seen.add(key)
            unique.append(shape)
    return unique
