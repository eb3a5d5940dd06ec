"""The ``ss1_heuristic`` bench provider times what a layer shape the tuning database does not hold
gets: every launch forced to the heuristic learned without the benchmarked shape's own records
(leave-one-shape-out), not the heuristic itself, which answers a shipped shape from that shape's
tuned records. Pure config logic on CPU (the providers are built, nothing is launched)."""

from __future__ import annotations

import pytest
import torch

from ss1bench.bench import runner
from ss1bench.bench.shapes import Shape
from ss1bench.kernels import heuristic
from ss1bench.kernels.config import (
    FALLBACK_SHARED_MEMORY,
    KINDS,
    Problem,
    fallback_config,
    heuristic_config,
    resolve_launch_config,
)
from ss1bench.kernels.ss1 import sketch_pass_config

CPU = torch.device("cpu")
#: Layer shapes (K, N) with records in tuning_db/H200.json: gpt2 mlp.fc, gpt2-medium mlp.fc, llama-8b mlp.up.
SHIPPED = [(768, 3072), (1024, 4096), (4096, 14336)]


def _case(k: int, n: int, m: int, c: int, mode: str = "fwd") -> runner.Case:
    return runner.plan([Shape("custom", f"{k}x{n}", m, k, n)], [c], ["fp16"], [mode])[0]


def _problem(kind: str, case: runner.Case, structure) -> Problem:
    return Problem(kind, case.shape.m, case.shape.k, case.shape.n, case.redn_factor, structure.block_k,
                   structure.block_n, case.dtype, "")


def _leave_one_out(problem: Problem) -> object:
    """What the offline evaluation (scripts/heuristic_eval.py) scores for ``problem``."""
    others = [e for e in heuristic.reference_examples() if e.shape != (problem.in_features, problem.out_features)]
    learned = heuristic.learned_config(problem, FALLBACK_SHARED_MEMORY, examples=others)
    return learned if learned is not None else fallback_config(problem, FALLBACK_SHARED_MEMORY)


def test_examples_without_shape_leave_out_every_record_of_the_shape():
    reference = heuristic.reference_examples()
    shapes = {e.shape for e in reference}
    assert set(SHIPPED) <= shapes, "tuning_db/H200.json is missing or unreadable"
    for k, n in SHIPPED:
        left = heuristic.examples_without_shape(k, n)
        assert left and all(e.shape != (k, n) for e in left)
        own = [e for e in reference if e.shape == (k, n)]
        assert len(left) == len(reference) - len(own)
        assert {e.kind for e in own} >= {"forward", "grad_input", "grad_weight"}  # every kind went
        assert heuristic.examples_without_shape(k, n) is left  # cached
    assert heuristic.examples_without_shape(300, 64) == reference  # a shape without records loses none


def test_the_forced_config_is_the_leave_one_shape_out_pick(monkeypatch):
    """Under the provider's launch context every kind resolves to the leave-one-shape-out pick (the
    examples it learns from never hold the layer's shape); on shipped shapes that pick often differs
    from heuristic_config, which would time the tuned records again."""
    seen = []
    learned = heuristic.learned_config

    def spy(problem, limit, sm_count=None, examples=None):
        seen.append((problem, examples))
        return learned(problem, limit, sm_count, examples)

    monkeypatch.setattr(heuristic, "learned_config", spy)
    differs = 0
    for (k, n), m, c in ((shape, m, c) for shape in SHIPPED for m in (1, 16, 4096) for c in (4, 16)):
        case = _case(k, n, m, c)
        structure = runner.case_structure(case, CPU, torch.float16)
        built = runner.build_provider("ss1_heuristic", case, structure, CPU, torch.float16)
        for kind in KINDS:
            problem = _problem(kind, case, structure)
            seen.clear()
            with built.launch_context():
                forced = resolve_launch_config(problem, FALLBACK_SHARED_MEMORY)
            assert seen and all(examples is not None and examples and all(e.shape != (k, n) for e in examples)
                                for _, examples in seen), (problem, "learned from the layer's own shape")
            assert forced == _leave_one_out(problem), problem
            differs += forced != heuristic_config(problem, FALLBACK_SHARED_MEMORY)
    assert differs >= 10  # 24 of the 72 differ with the shipped H200 records


@pytest.mark.parametrize(("m", "c"), [(1, 4), (16, 4), (4096, 4), (4096, 16)])
def test_the_detail_column_is_what_the_forced_provider_launches(m, c):
    k, n = 4096, 14336
    for mode in ("fwd", "fwd+bwd"):
        case = _case(k, n, m, c, mode)
        structure = runner.case_structure(case, CPU, torch.float16)
        built = runner.build_provider("ss1_heuristic", case, structure, CPU, torch.float16)
        if mode == "fwd":
            expected = f"forward={runner._format_config(_leave_one_out(_problem('forward', case, structure)))}"
        else:  # autograd: the sketch-and-rotate and unsketch passes around cuBLAS, as the launcher picks them
            with built.launch_context():
                passes = [sketch_pass_config(kind, m, structure, torch.float16, CPU)
                          for kind in ("forward_rotated", "grad_input")]
            for kind, config in zip(("forward_rotated", "grad_input"), passes, strict=True):
                forced = _leave_one_out(_problem(kind, case, structure))
                assert config == forced or forced.algorithm != "sketch_gemm"  # a pass tile: the forced one's
            expected = " ".join(f"{step}={runner._format_config(config)}"
                                for step, config in zip(("sketch_rotate", "unsketch"), passes, strict=True))
        assert built.detail == expected, (mode, built.detail)
    case = _case(k, n, m, c)
    tuned = runner.build_provider("ss1_tuned", case, structure, CPU, torch.float16)  # not forced: as resolved
    resolved = resolve_launch_config(_problem("forward", case, structure))
    assert tuned.detail == f"forward={runner._format_config(resolved)}"
