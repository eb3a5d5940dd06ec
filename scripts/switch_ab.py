"""A/B of a forward + backward switch of ``ss1bench.ops``, on against off, in one run.

Switches: ``save_sketch`` (``ops.SAVE_SKETCH``: the forward's sketch kept for the weight
gradient, off: x kept) and ``bias_grad`` (``ops.BIAS_GRAD_PRODUCT_ROWS``: the bias gradient as
one cuBLAS product with a ones vector from 1024 rows on, off: ``dy.sum(0)`` at every size).
Times forward + backward of the ``ss1_tuned`` layer with the switch on and off side by side, in
the order on, off, off, on per case (the two timings of each side averaged), next to dense and
dense at K/c, as CUDA-graph replays like ``ss1bench bench --cuda-graph``. Same inputs, layers and
ideal as the bench (``ss1bench.bench.runner``).

    python3 scripts/switch_ab.py --switch save_sketch --shapes gpt2 --m 16384 --dtype fp16,bf16 --out ab.csv
"""

from __future__ import annotations

import argparse
import math

import pandas as pd
import torch

from ss1bench import ops
from ss1bench.bench import runner
from ss1bench.bench.shapes import resolve_shapes

#: switch name -> (ops attribute, value when on, value when off)
SWITCHES = {
    "save_sketch": ("SAVE_SKETCH", True, False),
    "bias_grad": ("BIAS_GRAD_PRODUCT_ROWS", ops.BIAS_GRAD_PRODUCT_ROWS, 1 << 62),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switch", choices=sorted(SWITCHES), required=True)
    parser.add_argument("--shapes", default="gpt2")
    parser.add_argument("--m", default="16384", help="comma-separated M values")
    parser.add_argument("--redn-factors", default="2,4,8,16")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--warmup-ms", type=int, default=10)
    parser.add_argument("--rep-ms", type=int, default=30)
    parser.add_argument("--out", required=True, help="CSV of every timing")
    args = parser.parse_args()
    attribute, on_value, off_value = SWITCHES[args.switch]
    device = torch.device("cuda")
    shapes = resolve_shapes(args.shapes.split(","), [], [int(m) for m in args.m.split(",")])
    factors = [int(c) for c in args.redn_factors.split(",")]
    bandwidth = runner.measure_copy_bandwidth(device)
    rows = []
    for dtype_name in args.dtype.split(","):
        dtype = runner.TORCH_DTYPES[dtype_name]
        for shape in shapes:
            generator = torch.Generator(device=device).manual_seed(runner.INPUT_SEED)
            inputs = runner._Inputs(shape.m, shape.n, True, generator, device, dtype)

            def timed(name: str, case, structure, inputs=inputs, dtype=dtype) -> float:
                _, timing = runner._time_provider(name, case, structure, inputs, device, dtype,
                                                  args.warmup_ms, args.rep_ms, cuda_graph=True)
                if timing.status != "ok":
                    raise RuntimeError(f"{name} {case.describe()}: {timing.status}")
                return timing.median_ms

            dense_ms = math.nan
            for c in factors:
                case = runner.Case(shape, c, dtype_name, "fwd+bwd")
                structure = runner.case_structure(case, device, dtype)
                if math.isnan(dense_ms):
                    dense_ms = timed("dense", case, structure)
                reduced_ms = timed("dense_reduced", case, structure)
                times = {True: [], False: []}
                for on in (True, False, False, True):
                    setattr(ops, attribute, on_value if on else off_value)
                    times[on].append(timed("ss1_tuned", case, structure))
                setattr(ops, attribute, on_value)
                floor_bytes = runner.memory_floor_bytes(shape.m, shape.k, shape.n, structure.k_red, dtype.itemsize,
                                                        "fwd+bwd")
                ideal_ms = max(reduced_ms, floor_bytes / bandwidth * 1e3)
                on, off = (sum(times[s]) / 2 for s in (True, False))
                rows.append(dict(switch=args.switch, dtype=dtype_name, layer=shape.layer, M=shape.m, K=shape.k,
                                 N=shape.n, c=c,
                                 k_red=structure.k_red, dense_ms=dense_ms, ideal_ms=ideal_ms, off_ms=off, on_ms=on,
                                 on_over_off=on / off, speedup_off=dense_ms / off, speedup_on=dense_ms / on,
                                 fraction_off=ideal_ms / off, fraction_on=ideal_ms / on,
                                 off_runs=" ".join(f"{t:.4f}" for t in times[False]),
                                 on_runs=" ".join(f"{t:.4f}" for t in times[True])))
                print(f"{dtype_name} {shape.layer:<22} M={shape.m} c={c:<2} dense {dense_ms:.4f} "
                      f"off {off:.4f} on {on:.4f} ms  on/off {on / off:.3f}  "
                      f"fraction {ideal_ms / off:.3f} -> {ideal_ms / on:.3f}", flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out, index=False)
    summary = frame.groupby(["dtype", "c"]).agg(
        on_over_off_median=("on_over_off", "median"), fraction_off_min=("fraction_off", "min"),
        fraction_on_min=("fraction_on", "min"), fraction_off_median=("fraction_off", "median"),
        fraction_on_median=("fraction_on", "median"))
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
