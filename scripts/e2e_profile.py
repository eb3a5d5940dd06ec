"""Where the time of an e2e prefill goes: GPU kernel time by category (torch.profiler).

Splits one prefill forward of each model (dense, and SS1 at each c) into linear-layer kernels
(cuBLAS GEMMs, the SS1 Triton kernels) and everything else (attention, norms, activations,
the LM head's GEMM is counted as linear). The linear share bounds what SS1 can gain end to end.

    python scripts/e2e_profile.py --model gpt2,bert-base --redn-factor 4 --out profile.csv
"""

from __future__ import annotations

import argparse
import copy

import pandas as pd
import torch

from ss1bench import convert_to_ss_linear
from ss1bench.e2e import MODELS, Inputs, build_model, phase_call
from ss1bench.timing import kernel_table

GEMM_MARKERS = ("gemm", "xmma", "cutlass", "sm90", "gemv", "splitkreduce")


def category(name: str) -> str:
    lower = name.lower()
    if "_ss1_" in lower:
        return "ss1 triton"
    if any(marker in lower for marker in GEMM_MARKERS) and "flash" not in lower and "fmha" not in lower:
        return "gemm (cuBLAS)"
    if "flash" in lower or "fmha" in lower or "attention" in lower:
        return "attention"
    return "other"


def kernel_times(call, repeats: int = 3) -> dict[str, float]:
    """GPU microseconds per call by category (mean over ``repeats`` calls, after one warm-up)."""
    totals: dict[str, float] = {}
    with torch.no_grad():
        for name, time_us, _ in kernel_table(call, repeats):
            key = category(name)
            totals[key] = totals.get(key, 0.0) + time_us
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2,bert-base")
    parser.add_argument("--redn-factor", default="4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--out", default="e2e_profile.csv")
    args = parser.parse_args()
    device = torch.device("cuda")
    rows = []
    for name in args.model.split(","):
        dense = build_model(name, device, torch.float16, args.seq)
        generator = torch.Generator(device=device).manual_seed(0)
        inputs = Inputs.random(dense.config.vocab_size, args.batch, args.seq, generator, device)
        variants = [("dense", dense)] + [
            (f"ss1 c={c}", convert_to_ss_linear(copy.deepcopy(dense), int(c), project=False))
            for c in args.redn_factor.split(",")]
        for label, model in variants:
            times = kernel_times(phase_call(model, "prefill", inputs, MODELS[name].decoder))
            total = sum(times.values())
            for key, value in sorted(times.items()):
                rows.append({"model": name, "variant": label, "category": key, "gpu_ms": value / 1e3,
                             "share": value / total})
        del variants, dense
        torch.cuda.empty_cache()
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out, index=False)
    print(frame.pivot_table(index=["model", "variant"], columns="category", values="gpu_ms").round(3).to_string())


if __name__ == "__main__":
    main()
