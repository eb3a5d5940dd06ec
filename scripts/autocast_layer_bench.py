"""One layer in the training setting: float32 parameters under bf16 (or fp16) autocast, as a
training step runs SSL and nn.Linear (run on the GPU host).

    python scripts/autocast_layer_bench.py [--shapes gpt2] [--m 8192] [--redn-factors 4] [--dtype bf16]

For each layer shape of the sets (K -> N at M rows) and each c, times the forward and the forward +
backward of ``SSL`` against ``nn.Linear`` and the ideal (``nn.Linear`` at K/c), all under autocast,
as the layer bench times a provider (``ss1bench.bench.measure.time_module``: ``do_bench`` medians of
CUDA-graph replays, GPU time, and of eager calls, the host included; L2 flushed, gradients dropped
before each call), each call in its own autocast region. Under autocast SSL's sketch pass writes the
sketch, the rotated weight and the bias in the compute dtype in one launch, where nn.Linear casts
its weight and bias in two. Prints one row per case: median ms, SSL's speedup over nn.Linear and
its fraction of the ideal.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ss1bench import SSL
from ss1bench.bench.measure import Built, time_module
from ss1bench.bench.shapes import resolve_shapes
from ss1bench.dtypes import TORCH_DTYPES

WARMUP_MS, REP_MS = 10, 40


class Autocast(nn.Module):
    """``layer`` called inside its own autocast region, as in a training step: the region ends
    with the call, so autocast's cache of parameter casts does not outlive it. (Entered once
    around all timed calls, the cache would cast nn.Linear's weight once for every call, and a
    backward captured in a CUDA graph would reach the cast made by the eager warm-up.)"""

    def __init__(self, layer: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.layer, self.dtype = layer, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=self.dtype):
            return self.layer(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="gpt2")
    parser.add_argument("--m", type=int, default=8192, help="rows of x (batch x sequence)")
    parser.add_argument("--redn-factors", default="4")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    args = parser.parse_args()
    dtype = TORCH_DTYPES[args.dtype]
    torch.manual_seed(0)
    layer_shapes = sorted({(s.k, s.n) for s in resolve_shapes(args.shapes.split(","), [], [args.m])})
    print(f"{'K':>5} {'N':>5} {'c':>3} {'mode':>8} {'timing':>6} {'linear ms':>9} {'ideal ms':>9} "
          f"{'SSL ms':>8} {'speedup':>7} {'of ideal':>8}")
    for k, n in layer_shapes:
        for c in (int(v) for v in args.redn_factors.split(",")):
            layers = {"linear": nn.Linear(k, n, device="cuda"), "ideal": nn.Linear(k // c, n, device="cuda"),
                      "ssl": SSL(k, n, redn_factor=c, seed=1, device="cuda")}
            for training in (False, True):
                times = {}
                for name, layer in layers.items():
                    width = layer.in_features if isinstance(layer, nn.Linear) else k
                    # the bench's provider timing; only the module is read here
                    built = Built(Autocast(layer, dtype), width, 0, 0)
                    x = torch.randn(args.m, width, device="cuda")
                    dy = torch.randn(args.m, n, device="cuda", dtype=dtype) if training else None
                    times[name] = [time_module(built, x, dy, WARMUP_MS, REP_MS, cuda_graph=graph).median_ms
                                   for graph in (True, False)]
                for index, timing in enumerate(("graph", "eager")):
                    linear, ideal, ssl = (times[name][index] for name in ("linear", "ideal", "ssl"))
                    print(f"{k:>5} {n:>5} {c:>3} {'fwd+bwd' if training else 'fwd':>8} {timing:>6} "
                          f"{linear:9.4f} {ideal:9.4f} {ssl:8.4f} {linear / ssl:7.2f} {ideal / ssl:8.2f}")


if __name__ == "__main__":
    main()
