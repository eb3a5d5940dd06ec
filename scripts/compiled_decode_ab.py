"""Compiled SS1 layers at decode sizes, with and without Inductor's parameter freezing.

Without freezing, a compiled inference call rotates the weight inside its sketch launch on every
call: at decode the weight dominates the traffic, so the call reads the weight and writes its
rotated copy before the product reads it again. Under freezing the rotation runs once at compile
time (``ss1bench::rotate_weight`` folded into a constant), as the eager rotated-weight cache does.
``ss1bench e2e`` times decode eagerly only, so this script measures the layer.

For each layer of ``--shapes`` (shape sets of ``ss1bench tune``), each M of ``--m`` and each c of
``--redn-factors`` it times, under ``torch.no_grad()`` and fp16 unless ``--dtype`` says otherwise:

- ``dense``: ``torch.compile(nn.Linear)``;
- ``ss1``: ``torch.compile(SSL)``;
- ``ss1_frozen``: ``torch.compile(SSL)`` compiled with ``torch._inductor.config.freezing``;
- ``ss1_cached``: the eager SSL with its rotated-weight cache (the e2e decode path).

Every call is captured in a CUDA graph and timed as graph replays (``do_bench`` median, L2
flushed before each replay), so the host's launch cost is not what is measured. Each compiled
call is checked against the float64 reference first (the tuner's gate,
``ss1bench.tuning.gate.compare``, with its tolerances per dtype), and the CSV names the GPU
kernels each call runs (torch.profiler), so a frozen call shows that no rotation is left in it.
Prints a table with ``ss1_frozen / ss1``.

    python3 scripts/compiled_decode_ab.py --shapes gpt2 --m 1,16,64 --redn-factors 4 --out out/decode_ab.csv
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable

import torch
from torch import nn
from torch._inductor import config as inductor_config

from ss1bench import SSL
from ss1bench.dtypes import TORCH_DTYPES
from ss1bench.reference import ss1_forward_reference
from ss1bench.timing import graph_bench_ms, kernel_table
from ss1bench.tuning import gate
from ss1bench.tuning.shapes import SHAPE_SETS

PROVIDERS = ("dense", "ss1", "ss1_frozen", "ss1_cached")


def provider_call(name: str, dense: nn.Linear, layer: SSL, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The call ``name`` times, compiled here by its first call (the caller sets freezing)."""
    if name == "ss1_cached":
        layer.cache_rotated_weight(True)
        return lambda: layer(x)
    layer.cache_rotated_weight(False)
    torch.compiler.reset()  # every call compiles afresh: no other layer's graph, no recompile limit
    compiled = torch.compile(dense if name == "dense" else layer)
    compiled(x)
    return lambda: compiled(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="gpt2", help="shape sets, comma-separated: " + ", ".join(SHAPE_SETS))
    parser.add_argument("--m", default="1,16,64", help="rows per call, comma-separated")
    parser.add_argument("--redn-factors", default="4", help="reduction factors c, comma-separated")
    parser.add_argument("--dtype", default="fp16", choices=sorted(TORCH_DTYPES))
    parser.add_argument("--warmup-ms", type=int, default=5)
    parser.add_argument("--rep-ms", type=int, default=20)
    parser.add_argument("--out", default="compiled_decode_ab.csv")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("compiled_decode_ab.py: error: needs a CUDA GPU")
    dtype = TORCH_DTYPES[args.dtype]
    layers = {(k, n): name for set_name in args.shapes.split(",") for name, k, n in SHAPE_SETS[set_name]}
    generator = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    with torch.no_grad():
        for (k, n), layer_name in layers.items():
            for c in (int(v) for v in args.redn_factors.split(",")):
                dense = nn.Linear(k, n, device="cuda", dtype=dtype)
                layer = SSL(k, n, redn_factor=c, device="cuda", dtype=dtype)
                for m in (int(v) for v in args.m.split(",")):
                    x = torch.randn(m, k, device="cuda", dtype=dtype, generator=generator)
                    times = {}
                    for name in PROVIDERS:
                        # freezing stays on from the compiling call through the timing, as in e2e
                        with inductor_config.patch(freezing=name == "ss1_frozen"):
                            call = provider_call(name, dense, layer, x)
                            if name != "dense":
                                expected = ss1_forward_reference(x.double(), layer.weight.double(),
                                                                 layer.bias.double(), layer.structure)
                                checked = gate.compare(call(), expected, args.dtype)
                                if not checked.passed:
                                    raise SystemExit(f"{layer_name} {m}x{k}x{n} c={c} {name}: {checked.reason}")
                            ms, replayed = graph_bench_ms(call, args.warmup_ms, args.rep_ms)
                            kernels = [kernel for kernel, _, _ in kernel_table(call, repeats=1)]
                        times[name] = ms * 1e3
                        rows.append({"layer": layer_name, "M": m, "K": k, "N": n, "redn_factor": c,
                                     "dtype": args.dtype, "provider": name, "median_us": round(ms * 1e3, 3),
                                     "timing": "graph replay" if replayed else "eager",
                                     "kernels": "; ".join(kernels)})
                    print(f"{layer_name:28s} {m:3d}x{k}x{n} c={c:<2d} " + " ".join(
                        f"{name} {times[name]:7.2f}" for name in PROVIDERS)
                        + f"  frozen/ss1 {times['ss1_frozen'] / times['ss1']:.3f}", flush=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
