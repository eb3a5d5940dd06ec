"""Search space, pruning, GPU names and shape sets (pure logic, no kernels)."""

from __future__ import annotations

import pytest

from ss1bench.kernels.config import (
    RESIDENT_MAX_K_RED,
    LaunchConfig,
    Problem,
    heuristic_config,
    resident_width,
    shared_memory_bytes,
)
from ss1bench.structure import reduced_width
from ss1bench.tuning import gpu as tgpu
from ss1bench.tuning import shapes, space

HOPPER = 227 * 1024  # opt-in shared memory per block on H100/H200


def problem(kind="forward", m=4096, k=768, n=3072, c=8, dtype="fp16") -> Problem:
    bk, bn = space.default_structure(k, c)
    return Problem(kind, m, k, n, c, bk, bn, dtype, "NVIDIA H200")


def test_large_tiles_at_c16_are_rejected_at_227_kib():
    p = problem(c=16)
    big = LaunchConfig(64, 256, 32, num_warps=8, num_stages=3)
    assert shared_memory_bytes(big, p) > HOPPER
    assert space.rejection_reason(big, p, HOPPER).startswith("shared memory")
    candidates = space.launch_candidates(p, HOPPER)
    assert big not in candidates.kept
    assert any(config == big and reason.startswith("shared memory") for config, reason in candidates.rejected)
    assert all(shared_memory_bytes(config, p) <= HOPPER for config in candidates.kept)
    # a smaller limit keeps fewer (each kept one still fits)
    small = space.launch_candidates(p, 99 * 1024)
    assert 0 < len(small.kept) < len(candidates.kept)
    assert all(shared_memory_bytes(config, p) <= 99 * 1024 for config in small.kept)


@pytest.mark.parametrize("kind", ["forward", "forward_rotated", "grad_input", "grad_weight"])
@pytest.mark.parametrize("m", [1, 64, 16384])
def test_candidates_start_with_the_heuristic_and_pass_every_rule(kind, m):
    p = problem(kind=kind, m=m, c=4)
    candidates = space.launch_candidates(p, HOPPER)
    assert candidates.kept[0] == heuristic_config(p, HOPPER)
    assert len(set(candidates.kept)) == len(candidates.kept)
    for config in candidates.kept[1:]:
        assert space.rejection_reason(config, p, HOPPER) is None
    algorithms = {config.algorithm for config in candidates.kept}
    expected = {"fused", "sketch_gemm"}
    forward = kind in ("forward", "forward_rotated")
    if forward and (m == 1 or (m <= space.GEMV_MAX_M and p.k_red <= space.GEMV_ROWS_MAX_K_RED)):
        expected.add("gemv")  # at M = 64 only several rows per program, kept at small K_red only
    if forward and m > 64 and p.k_red <= space.RESIDENT_TUNE_MAX_K_RED:
        expected.add("resident")
    assert algorithms == expected


@pytest.mark.parametrize("m, k, c, expected", [
    (16384, 768, 4, True),     # K_red 192: width 256
    (16384, 3072, 4, False),   # K_red 768: wider than the tuner offers
    (64, 768, 16, False),      # decode: the fused kernel covers it
])
def test_resident_candidates_only_for_narrow_prefill_sketches(m, k, c, expected):
    assert space.RESIDENT_TUNE_MAX_K_RED <= RESIDENT_MAX_K_RED  # never offers what the kernel refuses
    p = problem(m=m, k=k, n=768, c=c)
    resident = [cfg for cfg in space.launch_candidates(p, HOPPER).kept if cfg.algorithm == "resident"]
    assert bool(resident) == expected
    for cfg in resident:
        assert cfg.tile_k == resident_width(p.k_red)  # the whole sketch row in one step
        assert shared_memory_bytes(cfg, p) <= HOPPER


def _gemv_rows(m, c, k=768):
    """The rows per program of the gemv candidates for an M x k -> 3072 forward at c."""
    return {cfg.tile_m for cfg in space.launch_candidates(problem(m=m, k=k, c=c), HOPPER).kept
            if cfg.algorithm == "gemv"}


@pytest.mark.parametrize(("m", "c", "expected"), [
    (1, 8, {1}), (1, 16, {1}),
    (16, 8, {1}),                   # K_red 96: one row per program only
    (16, 16, {1, 2, 4, 8}),         # K_red 48: several rows too
    (64, 16, {4, 8}),               # at most 16 row blocks
    (64, 8, set()),                 # neither: one row per program would be 64 row blocks
    (65, 16, set()), (4096, 16, set()),
])
def test_gemv_candidates_only_for_decode_sizes(m, c, expected):
    assert _gemv_rows(m, c) == expected
    assert all(r <= min(m, space.GEMV_MAX_ROWS) and -(-m // r) <= space.GEMV_MAX_ROW_BLOCKS for r in expected)
    assert not any(cfg.algorithm == "gemv"
                   for cfg in space.launch_candidates(problem(kind="grad_input", m=1, c=8), HOPPER).kept)


def test_register_rule():
    p = problem(c=2)
    assert space.rejection_reason(LaunchConfig(256, 256, 32, 8, 3), p, 10**9).startswith("registers")
    assert space.rejection_reason(LaunchConfig(128, 256, 32, 8, 3), p, 10**9) is None
    assert space.rejection_reason(LaunchConfig(128, 256, 32, 4, 3), p, 10**9).startswith("registers")


def test_tiles_larger_than_the_problem_are_dropped():
    p = problem(m=1, k=768, n=3072, c=16)  # K_red = 48
    candidates = space.launch_candidates(p, HOPPER)
    # one row: tensor-core tiles at their 16-row floor, the GEMV one row per program
    assert all(config.tile_m == (1 if config.algorithm == "gemv" else 16) for config in candidates.kept[1:])
    assert all(config.tile_k <= 64 for config in candidates.kept[1:])


def test_grad_weight_offers_split_m_when_the_grid_is_small():
    p = problem(kind="grad_weight", m=16384, k=768, n=768, c=8)
    splits = {config.split_m for config in space.launch_candidates(p, HOPPER).kept}
    assert max(splits) > 1


def test_refinements_are_new_and_fit():
    p = problem(c=2)
    best = LaunchConfig(128, 128, 32, 8, 3)
    variants = space.refinements(best, p, HOPPER, tried={best})
    assert variants and best not in variants
    assert {v.group_m for v in variants} >= {1, 4, 16}
    assert all(space.rejection_reason(v, p, HOPPER) is None for v in variants)
    assert space.refinements(space.sketch_gemm_config(32, 128, 4), p, HOPPER, set()) == []


@pytest.mark.parametrize("k, n, c", [(768, 3072, 4), (3072, 768, 16), (768, 768, 16), (14336, 4096, 2), (300, 40, 2)])
def test_structure_candidates(k, n, c):
    candidates = space.structure_candidates(k, n, c)
    assert candidates[0] == space.default_structure(k, c)
    k_red = reduced_width(k, c, candidates[0][0])
    for bk, bn in candidates[1:]:
        assert bk <= 128 and bn <= 256
        assert reduced_width(k, c, bk) == k_red  # never a bigger compressed weight than the default
    assert len(set(candidates)) == len(candidates)


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("NVIDIA H100 NVL", "H100"),
    ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100 80GB PCIe", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"), ("NVIDIA L40S", "L40S"), ("NVIDIA GeForce RTX 4090", "RTX4090"),
    ("NVIDIA RTX 6000 Ada Generation", "RTX6000ADA"), ("Tesla V100-SXM2-16GB", "V100"), ("Tesla T4", "T4"),
    ("NVIDIA H100 MIG 1g.10gb", "H100"), ("h200", "H200"), ("rtx4090", "RTX4090"),
])
def test_gpu_names(name, expected):
    assert tgpu.normalize_gpu_name(name) == expected


def test_device_selection(monkeypatch):
    devices = [tgpu.Device(0, "NVIDIA H100 80GB HBM3"), tgpu.Device(1, "NVIDIA H200"), tgpu.Device(2, "NVIDIA H200")]
    monkeypatch.setattr(tgpu, "list_devices", lambda: devices)
    monkeypatch.setattr(tgpu, "current_device_index", lambda: 0)
    assert tgpu.select_devices(None, None) == devices[:1]
    assert tgpu.select_devices("H200", None) == devices[1:2]
    assert tgpu.select_devices("h200", "all") == devices[1:]
    assert tgpu.select_devices(None, "2,0") == [devices[2], devices[0]]
    with pytest.raises(tgpu.DeviceSelectionError, match="cuda:1 NVIDIA H200"):
        tgpu.select_devices("A100", None)
    with pytest.raises(tgpu.DeviceSelectionError, match="no device"):
        tgpu.select_devices(None, "5")
    monkeypatch.setattr(tgpu, "list_devices", lambda: [])
    with pytest.raises(tgpu.NoCudaError):
        tgpu.select_devices("H200", None)


def test_shape_sets_and_custom_shapes():
    layers = shapes.resolve_layers(["gpt2"], ["100x768x3072", "8x300x64"])
    by_shape = {(layer.in_features, layer.out_features): layer for layer in layers}
    assert len(layers) == 9
    assert (768, 2304) in by_shape and (4096, 1024) in by_shape
    assert by_shape[(768, 3072)].m_buckets == (1, 16, 64, 100, 4096, 16384)
    assert by_shape[(300, 64)].m_buckets == (8,)
    llama = {(layer.in_features, layer.out_features) for layer in shapes.resolve_layers(["llama"], [])}
    assert llama == {(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096)}
    for bad in ("12x34", "0x4x4", "axbxc", "1x2x3x4"):
        with pytest.raises(shapes.ShapeError, match="--shape"):
            shapes.parse_shape(bad)
    with pytest.raises(shapes.ShapeError, match="unknown shape set"):
        shapes.resolve_layers(["gpt5"], [])
    assert shapes.parse_m_buckets("4096, 1,16") == (1, 16, 4096)


@pytest.mark.parametrize("n, k, c, tile_k, expected", [
    (768, 768, 2, 128, 1),     # K_red 384: 3 steps of 128, too few to split
    (768, 768, 2, 64, 2),      # 6 steps: 2 programs of 3 steps (4 would leave 1 step each)
    (14336, 4096, 2, 128, 1),  # 224 output tiles already fill the GPU
    (1024, 4096, 4, 128, 4),   # 16 tiles, 8 steps: split 4 -> 64 programs of 2 steps
])
def test_decode_split_k_fills_the_gpu_but_keeps_two_steps_per_program(n, k, c, tile_k, expected):
    from ss1bench.kernels.config import decode_split_k

    p = Problem("forward", 1, k, n, c, *space.default_structure(k, c), "fp16")
    assert decode_split_k(p, 16, 64, tile_k) == expected


def test_decode_candidates_include_a_k_split_and_the_heuristic_uses_one():
    p = problem(kind="forward", m=16, k=3072, n=768, c=2)
    candidates = space.launch_candidates(p, HOPPER)
    assert any(config.split_k > 1 for config in candidates.kept)
    assert heuristic_config(p, HOPPER).split_k > 1
    # one row: the heuristic is the GEMV, its K tile no wider than K_red needs
    one_row = heuristic_config(problem(kind="forward", m=1, k=768, n=768, c=16), HOPPER)
    assert (one_row.algorithm, one_row.tile_k) == ("gemv", 64)
    assert all(config.split_k == 1 for config in space.launch_candidates(problem(m=4096), HOPPER).kept)


@pytest.mark.parametrize("m", [1, 16, 64])
def test_forward_rotated_offers_the_forward_candidates_plus_sketch_tiles_at_decode(m):
    plain = space.launch_candidates(problem(kind="forward", m=m, k=4096, n=4096, c=4), HOPPER).kept
    rotated = space.launch_candidates(problem(kind="forward_rotated", m=m, k=4096, n=4096, c=4), HOPPER).kept
    assert set(plain) <= set(rotated)
    extra = set(rotated) - set(plain)
    assert extra and all(config.algorithm == "sketch_gemm" for config in extra)
    assert {config.tile_k for config in rotated if config.algorithm == "sketch_gemm"} == {16, 32, 64, 128, 256}
    prefill = space.launch_candidates(problem(kind="forward_rotated", m=4096, k=4096, n=4096, c=4), HOPPER).kept
    assert prefill == space.launch_candidates(problem(kind="forward", m=4096, k=4096, n=4096, c=4), HOPPER).kept
