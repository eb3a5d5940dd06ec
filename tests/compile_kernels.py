"""Compile every SS1 Triton kernel for an NVIDIA GPU on a host that has none.

Triton ships ``ptxas``, so ``triton.compile`` can lower a kernel to a cubin for a given target
without a driver. That catches what the CPU interpreter cannot: type and layout errors in the
lowering, unsupported constructs, shared memory over the part's limit. It also reports registers
and spills, the numbers to read before spending GPU time on a kernel change.

    python tests/compile_kernels.py [--arch 90]     # one JSON line per case

``tests/test_kernels_compile.py`` runs it in a subprocess: the kernels must be decorated with the
interpreter off, and the test session turns it on when there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ["TRITON_INTERPRET"] = "0"  # before the kernels are decorated

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ss1bench.kernels import jit as kernels

#: Pointer arguments that are fp32 whatever the input dtype (split-K partials, weight gradient).
FP32_POINTERS = ("partial_ptr", "dw_ptr")

#: Integer arguments that are multiples of 16 for the GPT-2/Llama/BERT layer shapes.
SIZES = ("M", "N", "K", "K_RED")

_S = dict(BK=128, BN=128, VEC=8)  # structural constants of the common GPT-2/Llama structures

#: (kernel, dtype, constexpr values, num_warps, num_stages[, maxnreg]): each algorithm and kind, a
#: few c and tile shapes of the tuning space, every dtype.
CASES = [
    ("_ss1_forward_kernel", "fp16", dict(C=1, **_S, HAS_BIAS=True, TILE_M=128, TILE_N=128, TILE_K=64,
                                         GROUP_M=8, SPLIT_K=1, DOT_PRECISION="ieee"), 8, 3),
    ("_ss1_forward_kernel", "fp16", dict(C=4, **_S, HAS_BIAS=True, TILE_M=64, TILE_N=128, TILE_K=64,
                                         GROUP_M=8, SPLIT_K=1, DOT_PRECISION="ieee"), 4, 3),
    ("_ss1_forward_kernel", "bf16", dict(C=16, **_S, HAS_BIAS=False, TILE_M=16, TILE_N=64, TILE_K=128,
                                         GROUP_M=1, SPLIT_K=4, DOT_PRECISION="ieee"), 4, 3),
    ("_ss1_forward_kernel", "fp32", dict(C=2, **_S, HAS_BIAS=True, TILE_M=64, TILE_N=64, TILE_K=32,
                                         GROUP_M=8, SPLIT_K=1, DOT_PRECISION="tf32"), 4, 3),
    ("_split_k_sum_kernel", "fp16", dict(SPLIT=4, HAS_BIAS=True, BLOCK=1024), 4, 1),
    ("_ss1_resident_forward_kernel", "fp16", dict(C=16, BK=64, BN=128, VEC=8, HAS_BIAS=True, TILE_M=64,
                                                  TILE_N=128, KR=64, DOT_PRECISION="ieee"), 4, 1),
    ("_ss1_resident_forward_kernel", "bf16", dict(C=16, **_S, HAS_BIAS=True, TILE_M=64, TILE_N=128, KR=256,
                                                  DOT_PRECISION="ieee"), 8, 2),
    ("_ss1_gemv_forward_kernel", "fp16", dict(C=8, **_S, HAS_BIAS=True, ROWS=1, TILE_N=64, TILE_K=128,
                                              BLOCK_GATHER=False), 4, 3),
    ("_ss1_gemv_forward_kernel", "bf16", dict(C=2, **_S, HAS_BIAS=False, ROWS=4, TILE_N=32, TILE_K=64,
                                              BLOCK_GATHER=False), 4, 3),
    # the tuner's decode refinement: ptxas's register target lifted (maxnreg)
    ("_ss1_gemv_forward_kernel", "fp16", dict(C=16, BK=16, BN=128, VEC=8, HAS_BIAS=True, ROWS=1, TILE_N=64,
                                              TILE_K=64, BLOCK_GATHER=False), 4, 3, 255),
    # the members gathered as one block, one row and several
    ("_ss1_gemv_forward_kernel", "fp16", dict(C=16, BK=16, BN=128, VEC=8, HAS_BIAS=True, ROWS=1, TILE_N=64,
                                              TILE_K=64, BLOCK_GATHER=True), 2, 3),
    ("_ss1_gemv_forward_kernel", "bf16", dict(C=8, **_S, HAS_BIAS=False, ROWS=4, TILE_N=32, TILE_K=128,
                                              BLOCK_GATHER=True), 4, 3),
    ("_ss1_sketch_kernel", "fp16", dict(C=16, **_S, TILE_M=16, TILE_K=128), 4, 1),
    ("_ss1_sketch_kernel", "fp32", dict(C=2, BK=64, BN=128, VEC=8, TILE_M=32, TILE_K=64), 4, 1),
    ("_ss1_sketch_rotate_kernel", "bf16", dict(C=4, **_S, TILE_M=16, TILE_K=128, ROT_N=32, ROT_K=128), 4, 1),
    ("_ss1_sketch_rotate_bias_kernel", "fp16", dict(C=8, **_S, TILE_M=16, TILE_K=128, ROT_N=32, ROT_K=128), 4, 1),
    ("_ss1_unsketch_kernel", "fp16", dict(C=8, **_S, TILE_M=16, TILE_K=128), 4, 1),
    ("_ss1_unsketch_unrotate_kernel", "bf16", dict(C=4, **_S, TILE_M=16, TILE_K=128, ROT_N=32, ROT_K=128), 4, 1),
    ("_ss1_rotate_kernel", "fp16", dict(C=4, **_S, TILE_N=32, TILE_K=128, INVERSE=False), 4, 1),
    ("_ss1_rotate_kernel", "fp32", dict(C=4, **_S, TILE_N=32, TILE_K=128, INVERSE=True), 4, 1),
    ("_ss1_grad_input_kernel", "fp16", dict(C=4, **_S, TILE_M=64, TILE_N=64, TILE_K=128, GROUP_M=8,
                                            DOT_PRECISION="ieee"), 4, 3),
    ("_ss1_grad_input_kernel", "bf16", dict(C=16, **_S, TILE_M=128, TILE_N=64, TILE_K=64, GROUP_M=8,
                                            DOT_PRECISION="ieee"), 8, 3),
    ("_ss1_grad_weight_kernel", "fp16", dict(C=4, **_S, TILE_M=64, TILE_N=64, TILE_K=64, GROUP_M=8, ATOMIC=False,
                                             DOT_PRECISION="ieee"), 4, 3),
    ("_ss1_grad_weight_kernel", "fp32", dict(C=8, **_S, TILE_M=32, TILE_N=64, TILE_K=64, GROUP_M=8, ATOMIC=True,
                                             DOT_PRECISION="tf32"), 4, 3),
]


def _source(fn, dtype: str, constexprs: dict) -> ASTSource:
    """The kernel with every pointer of ``dtype`` (or fp32), integers i32; pointers, strides and
    sizes 16-divisible, as Triton specializes them at a launch with the usual layer shapes (the
    loads vectorize and pipeline only then)."""
    signature, attrs = {}, {}
    for index, param in enumerate(fn.params):
        name = param.name
        if param.is_constexpr:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in FP32_POINTERS else f"*{dtype}"
            attrs[(index,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if name.startswith("stride") or name in SIZES:
                attrs[(index,)] = [["tt.divisibility", 16]]
    unknown = set(constexprs) - {p.name for p in fn.params if p.is_constexpr}
    missing = {p.name for p in fn.params if p.is_constexpr} - set(constexprs)
    if unknown or missing:
        raise ValueError(f"{fn.__name__}: constexpr values unknown {sorted(unknown)}, missing {sorted(missing)}")
    values = {(fn.arg_names.index(name),): value for name, value in constexprs.items()}
    return ASTSource(fn, signature=signature, constexprs=values, attrs=attrs)


def _resource_usage(cubin: bytes) -> dict:
    """Registers, stack and local memory per thread from ``cuobjdump`` (empty if it is missing)."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run([tool, "--dump-resource-usage", handle.name], capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+).*?STACK:(\d+).*?LOCAL:(\d+)", text)
    return dict(regs=int(found[1]), stack=int(found[2]), local=int(found[3])) if found else {}


def compile_case(name: str, dtype: str, constexprs: dict, num_warps: int, num_stages: int, maxnreg: int | None = None,
                 *, arch: int) -> dict:
    fn = getattr(kernels, name)
    options = dict(num_warps=num_warps, num_stages=num_stages, **({"maxnreg": maxnreg} if maxnreg else {}))
    result = dict(kernel=name, dtype=dtype, **options,
                  **{k: v for k, v in constexprs.items()
                     if k in ("C", "TILE_M", "TILE_N", "TILE_K", "KR", "ROWS", "SPLIT_K")})
    try:
        compiled = triton.compile(_source(fn, dtype, constexprs), target=GPUTarget("cuda", arch, 32),
                                  options=options)
    except Exception as exc:  # reported per case: the caller decides what fails
        return dict(result, ok=False, error=f"{type(exc).__name__}: {str(exc)[:2000]}")
    # signed division and remainder ops: each compiles to a sign fix-up per element, so the
    # index math uses AND and unsigned division instead (kernels/jit.py, _member_columns)
    signed_divmod = len(re.findall(r"arith\.(?:divsi|remsi)\b", compiled.asm["ttir"]))
    return dict(result, ok=True, shared=compiled.metadata.shared, signed_divmod=signed_divmod,
                **_resource_usage(compiled.asm["cubin"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    args = parser.parse_args(argv)
    failed = 0
    for case in CASES:
        result = compile_case(*case, arch=args.arch)
        failed += not result["ok"]
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
