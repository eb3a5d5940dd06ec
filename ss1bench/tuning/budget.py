"""The order of work under ``tune --budget``: expected gain per second of tuning, most first.

An item's gain is the time per model step that tuning it is expected to save (a roofline estimate
of each pair's call, times the shortfall of running it untuned, times the layers of that shape);
its cost is its measurement count (:func:`.work.estimate_units`) at :data:`SECONDS_PER_UNIT`. The
estimates only rank layers against each other.
"""

from __future__ import annotations

from ss1bench.structure import reduced_width

from . import space
from .work import TuneOptions, WorkItem, estimate_units

#: Seconds one measurement (gate + time) takes, before a run has measured its own: 244 s for 3,726
#: candidates in the H200's cold-cache gpt2 tune (issue 20), compiles included.
SECONDS_PER_UNIT = 0.065
#: Expected (tuned time / untuned time) per kind and regime (decode True): what a layer runs at
#: without its own records, i.e. with the nearest tuned shape's or the learned heuristic's config.
#: Leave-one-shape-out geometric means of scripts/heuristic_eval.py on the H200's records
#: (reports/H200/heuristic_vs_tuned.csv); they weigh the expected gain of tuning a layer.
EXPECTED_UNTUNED_RATIO = {
    ("forward", True): 0.98, ("forward", False): 0.985,
    ("forward_rotated", True): 0.98, ("forward_rotated", False): 0.985,  # prefill: the forward's
    ("grad_input", True): 0.96, ("grad_input", False): 0.96,
    ("grad_weight", True): 0.94, ("grad_weight", False): 0.99,
}
#: Nominal device for :func:`predicted_ms` (H200: HBM3e bandwidth, dense fp16 tensor-core rate,
#: a launch's floor).
NOMINAL_BYTES_PER_S, NOMINAL_FLOPS, NOMINAL_LAUNCH_S = 4.0e12, 7.0e14, 5e-6


def predicted_ms(kind: str, m: int, item: WorkItem) -> float:
    """Roofline time of one ``kind`` call at ``m`` rows (the larger of the bytes each kernel moves
    at :data:`NOMINAL_BYTES_PER_S` and its GEMM at :data:`NOMINAL_FLOPS`, plus a launch): only to
    rank layers against each other."""
    k, n = item.in_features, item.out_features
    k_red = reduced_width(k, item.redn_factor, item.primary[0])
    size = 4 if item.dtype == "fp32" else 2
    elements = {"forward": m * k + n * k_red + m * n, "forward_rotated": m * k + n * k_red + m * n,
                "grad_input": m * n + n * k_red + m * k, "grad_weight": m * n + m * k + n * k_red}[kind]
    seconds = max(elements * size / NOMINAL_BYTES_PER_S, 2 * m * n * k_red / NOMINAL_FLOPS) + NOMINAL_LAUNCH_S
    return seconds * 1e3


def expected_gain_ms(item: WorkItem) -> float:
    """Milliseconds per model step (one call of each pair to tune, for each of the ``count`` layers
    of this shape) that tuning ``item`` is expected to save over running it untuned."""
    gain = 0.0
    for kind, m in item.todo:
        ratio = EXPECTED_UNTUNED_RATIO.get((kind, space.is_decode(m)), 0.9)
        gain += predicted_ms(kind, m, item) * (1 / ratio - 1)
    return gain * item.count


def order_by_gain(items: list[WorkItem], shared_memory_limit: int, sm_count: int,
                  options: TuneOptions) -> list[WorkItem]:
    """Items by expected gain per second of tuning (:func:`expected_gain_ms` over
    :func:`estimate_units`), most first: a budget spent in this order buys the most speed first.
    Items that only need a structure search (no launch pair to tune) come last."""
    def rate(item: WorkItem) -> float:
        units = max(estimate_units(item, options, shared_memory_limit, sm_count), 1)
        return expected_gain_ms(item) / units

    return sorted(items, key=rate, reverse=True)

