"""Every Triton kernel compiles for the H100/H200 (sm_90) on this host, GPU or not.

The interpreter tests check what the kernels compute; this checks that they lower to a cubin
(Triton ships ptxas), within the part's shared memory. ``tests/compile_kernels.py`` does the
compiling in a subprocess, where the kernels are decorated with the interpreter off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton

from ss1bench.kernels import ss1 as kernels
from ss1bench.tuning.gpu import KNOWN_SHARED_MEMORY

SCRIPT = Path(__file__).with_name("compile_kernels.py")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"

#: Opt-in shared memory per block of the H100/H200 (sm_90, the target compiled for).
SM90_SHARED_MEMORY = KNOWN_SHARED_MEMORY["H200"]


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    if not PTXAS.exists():
        pytest.skip("this Triton has no bundled ptxas")
    env = dict(os.environ, TRITON_INTERPRET="0")
    run = subprocess.run([sys.executable, str(SCRIPT), "--arch", "90"], capture_output=True, text=True,
                         env=env, timeout=900)
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert results, f"no results (exit {run.returncode}):\n{run.stderr[-3000:]}"
    return results


def test_every_kernel_compiles_for_sm90(compiled):
    failures = [f"{r['kernel']} {r['dtype']} c={r.get('C')}: {r['error']}" for r in compiled if not r["ok"]]
    assert not failures, "\n".join(failures)


def test_every_kernel_is_covered(compiled):
    names = {name for name in dir(kernels) if name.startswith("_ss1_") or name == "_split_k_sum_kernel"}
    names = {name for name in names if name.endswith("_kernel")}
    assert names, "no kernels found in ss1bench.kernels.ss1"
    assert names <= {r["kernel"] for r in compiled}, f"not compiled: {sorted(names - {r['kernel'] for r in compiled})}"


def test_shared_memory_within_the_part(compiled):
    over = [(r["kernel"], r["dtype"], r["shared"]) for r in compiled if r["ok"] and r["shared"] > SM90_SHARED_MEMORY]
    assert not over, f"over {SM90_SHARED_MEMORY} B of shared memory: {over}"


def test_index_math_does_not_grow_with_c(compiled):
    """The sketch's index math is per member: with signed ``//`` and ``%`` it cost a sign fix-up per
    element and member, about half of a small-M kernel's instructions. Every kernel now has the
    same number of signed divisions and remainders (its grid arithmetic) at every c."""
    counts: dict[str, set[int]] = {}
    for r in compiled:
        if r["ok"] and r.get("C") is not None and r.get("SPLIT_K", 1) == 1:
            counts.setdefault(r["kernel"], set()).add(r["signed_divmod"])
    assert counts, "no kernel compiled at a reduction factor"
    growing = {name: sorted(found) for name, found in counts.items() if len(found) > 1}
    assert not growing, f"signed division/remainder counts differ across c: {growing}"
