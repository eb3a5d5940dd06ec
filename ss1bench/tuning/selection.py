"""How the tuner picks winners from measured times: the launch config recorded for a ``(kind, M)``
pair, and the structure recorded for a layer. Pure functions; :class:`.tuner.Tuner` measures.

- launch config: the fastest confirmed one, except that the plain ``forward`` at decode sizes
  records a one-launch config within a margin of a faster multi-launch ``sketch_gemm``
  (:func:`prefer_single_launch`);
- structure: the lowest geometric-mean time relative to the primary structure, and only when it
  beats the primary by a minimum gain (:func:`choose_structure`).
"""

from __future__ import annotations

import math

from ss1bench.kernels.config import LaunchConfig

from . import space


def launches(kind: str, config: LaunchConfig) -> int:
    """Kernel launches of one eager call: ``sketch_gemm`` is three for the plain ``forward`` (rotate
    the weight, sketch, cuBLAS) and two for the others (pass, cuBLAS); every other algorithm one.

    The tuner times CUDA-graph replays, which hide the host's cost of a launch; an eager call pays
    it. At decode sizes that cost is the kernel's whole time: on the H200 an eager forward of
    64 x 768 x 3072 at c = 16 took 46 us with its ``sketch_gemm`` record (11.2 us in a graph)
    against 8.5 us at c = 8 with a fused one (issue 20). So at decode sizes the plain forward
    records a one-launch config when it is within :attr:`.work.TuneOptions.single_launch_margin` of the
    ``sketch_gemm`` winner (:func:`prefer_single_launch`).
    """
    if config.algorithm != "sketch_gemm":
        return 1
    return 3 if kind == "forward" else 2


def prefers_single_launch(kind: str, m: int) -> bool:
    """Whether :func:`prefer_single_launch` applies to ``(kind, M)``: the plain decode forward."""
    return kind == "forward" and space.is_decode(m)


def prefer_single_launch(ranked: list[tuple[LaunchConfig, float]], kind: str, m: int,
                         margin: float) -> tuple[LaunchConfig, float] | None:
    """The ``(config, ms)`` to record from ``ranked`` (fastest first): the fastest, unless it takes
    more launches than the fastest one-launch entry and that one is within ``margin`` of it (only
    where :func:`prefers_single_launch`). None for an empty list."""
    if not ranked:
        return None
    best = ranked[0]
    if not prefers_single_launch(kind, m) or launches(kind, best[0]) == 1:
        return best
    single = next((entry for entry in ranked if launches(kind, entry[0]) == 1), None)
    if single is not None and single[1] <= best[1] * (1 + margin):
        return single
    return best


def choose_structure(primary: tuple[int, int], per_structure: dict[tuple[int, int], dict[tuple[str, int], float]],
                     min_gain: float) -> tuple[tuple[int, int], dict[tuple[int, int], float]]:
    """Pick a structure from best screening times per ``(kind, M)`` pair.

    Score = geometric mean over the pairs of ``time(structure) / time(primary)``; a structure
    missing any pair the primary has (all its candidates failed) is out. The lowest score wins
    if it is below ``1 - min_gain``; otherwise the primary stays. Ties go to the earlier entry.

    Returns (chosen structure, scores).
    """
    base = per_structure.get(primary, {})
    scores: dict[tuple[int, int], float] = {primary: 1.0} if base else {}
    for structure, times in per_structure.items():
        if structure == primary or not base:
            continue
        if any(pair not in times for pair in base):
            continue
        logs = [math.log(times[pair] / base[pair]) for pair in base]
        scores[structure] = math.exp(sum(logs) / len(logs))
    best = primary
    for structure, score in scores.items():
        if score < scores.get(best, 1.0) and score < 1.0 - min_gain:
            best = structure
    return best, scores
