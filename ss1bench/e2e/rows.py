"""What an ``ss1bench e2e`` run times (its work list) and what it writes: one CSV row per call
timed, and the summary table printed at the end.

Per (model, compile mode, phase, c) there are two rows, providers ``dense`` and ``ss1_tuned``,
with the layer benchmark's columns (``schema.RESULT_COLUMNS``, so that ``ss1bench report`` reads
them) and then ``schema.E2E_COLUMNS``:

- ``shape_set`` = ``"e2e"``, ``layer`` = ``"<model> <phase>"`` (phase ``prefill``, ``decode`` or
  ``train``), ``mode`` = ``"fwd"`` (inference) or ``"fwd+bwd"`` (a training step);
- ``dtype`` = the models' dtype; in a training run the autocast dtype (weights are fp32);
- ``M`` = tokens the call processes (``batch * seq``; ``batch`` for decode);
- ``K``, ``N`` = the model's hidden size and MLP intermediate size; ``k_red``, ``block_k`` and
  ``block_n`` describe the SS1 structure of the MLP up projection (``K -> N``), the model's most
  common layer shape (``block_k``/``block_n`` on SS1 rows only, as in the layer benchmark);
- ``weight_params`` = weights (bias excluded) of every linear layer of the model: ``nn.Linear``,
  Hugging Face ``Conv1D`` and, after conversion, SSL's compressed weights; layers that stay dense
  (a tied LM head) count in both;
- ``flops``/``dense_flops`` = linear-layer FLOPs (see :data:`E2E_FLOPS`);
- ``dense_ms`` and ``speedup_vs_dense`` = the dense model's median (same compile mode and phase)
  and dense / this row's median; ``ideal_ms`` and ``fraction_of_ideal`` stay empty (no ideal is
  defined for a whole model);
- ``peak_mem_mib`` = the allocator's peak during one call minus what was allocated before it
  (activations, logits, the decode step's new cache tensors, a training step's gradients);
- ``detail`` = ``tokens/s=...; timing=...; attention=...; linear layers=...`` (tokens/s = M / median;
  training rows add ``step=...``);
- ``compile`` = the ``torch.compile`` mode (``none``: eager; ``default+freezing`` and the like:
  compiled with Inductor's parameter freezing, ``--freezing``); ``kernel_ms`` = GPU kernel time per
  call (torch.profiler; empty off CUDA); ``compile_s`` = seconds of the first, untimed call
  (compilation under a compile mode; Triton JIT and first-use set-up when eager).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ss1bench.bench.measure import Timing
from ss1bench.bench.schema import E2E_COLUMNS, RESULT_COLUMNS
from ss1bench.report import E2E_SHAPE_SET
from ss1bench.structure import SS1Structure

from .models import ModelStats, phases_of
from .timing import KERNEL_REPEATS, ROUNDS, Measurement

#: Columns of an e2e CSV.
COLUMNS = (*RESULT_COLUMNS, *E2E_COLUMNS)

PROVIDER_DESCRIPTIONS = {
    "dense": "the Hugging Face model as built from its config (random weights): eval mode and no_grad for "
             "inference, train mode for a training step",
    "ss1_tuned": "a deep copy of the dense model converted with convert_to_ss_linear(copy, c, project=False): "
                 "SSL structure and launch configs from the tuning database when it has them (a training run "
                 "converts in the autocast dtype, then casts the weights back to fp32); eager inference with "
                 "the layers' rotated-weight cache on (cache_rotated_weights) unless the run says rotated_cache "
                 "false (compiled calls and training steps do not use it)",
}
E2E_TIMING = ("wall ms: median (p20/p80 spread) of the dense and the SS1 model's calls timed side by side, "
              f"interleaved in {ROUNDS} rounds (each round runs each call back to back for rep_ms / {ROUNDS}, at "
              "least twice, alternating which goes first, and keeps all runs but the first of each block, which "
              "overlaps the other call's GPU tail; CUDA events around each call, no synchronization between calls, "
              "no L2 flush), after one untimed "
              "call each (compile_s: its seconds, compilation included), one for peak memory and warmup_ms of "
              "warm-up; with --cuda-graph each eager inference call is timed eagerly and as a CUDA-graph replay "
              "alongside, and the faster is kept (see the row's detail). kernel_ms: GPU kernel self time per "
              f"call summed, torch.profiler, mean of {KERNEL_REPEATS} calls after one warm-up (CUDA only)")
E2E_FLOPS = ("Linear-layer FLOPs per call, 2 * M * weight_params (M = tokens of the call; SS1 layers count "
             "N * K_red weights, so their sketch additions are not counted); a training step counts 3x (forward, "
             "input and weight gradients). Attention scores, softmax, norms, embeddings, the loss and the "
             "optimizer are not counted; BERT's pooler runs on one token per sequence but is counted on every "
             "token (under 1% of BERT's linear FLOPs).")


# ---- work list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """One (model, compile mode, phase, c) pair of rows: dense and SS1."""

    model: str
    phase: str
    compile: str
    redn_factor: int
    batch: int
    seq: int

    @property
    def tokens(self) -> int:
        """Tokens the timed call processes (the CSV's ``M``)."""
        return self.batch if self.phase == "decode" else self.batch * self.seq

    @property
    def layer(self) -> str:
        return f"{self.model} {self.phase}"

    def describe(self) -> str:
        shape = (f"batch {self.batch} x 1 new token, {self.seq}-token KV cache" if self.phase == "decode"
                 else f"batch {self.batch} x seq {self.seq}")
        return (f"{self.model:<18} {self.phase:<7} compile={self.compile:<15} c={self.redn_factor:<2} "
                f"tokens={self.tokens:<7} ({shape})")


def plan(models: Sequence[str], redn_factors: Sequence[int], batch: int, seq: int,
         compile_modes: Sequence[str] = ("none",), train: bool = False) -> list[Work]:
    """Every (model, compile mode, phase, c), in run order."""
    return [Work(name, phase, mode, c, batch, seq) for name in models for mode in compile_modes
            for phase in phases_of(name, mode != "none", train) for c in redn_factors]


def timings_in(work: Sequence[Work]) -> int:
    """Timed calls of a run: the dense model and SS1, side by side, once per pair."""
    return 2 * len(work)


def output_stem(models: Sequence[str], dtype: str, batch: int, seq: int, compile_modes: Sequence[str] = ("none",),
                train: bool = False) -> str:
    """File name stem of a run's CSV and sidecar, e.g. ``e2e_gpt2-llama-1b_fp16_b8_s1024``, with
    ``_compile-<modes>`` when a mode other than eager is timed and ``_train`` for training steps.

    Like ``bench_<sets>_<dtypes>_<modes>``, plus batch and sequence length, which change every row.
    """
    compiled = f"_compile-{'-'.join(compile_modes)}" if list(compile_modes) != ["none"] else ""
    return f"e2e_{'-'.join(models)}_{dtype}_b{batch}_s{seq}{compiled}{'_train' if train else ''}"


# ---- rows -------------------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 and not math.isnan(denominator) else math.nan


def _detail(stats: ModelStats | None, tokens: int, measured: Measurement, provider: str, step: str) -> str:
    parts = []
    if measured.timing.status == "ok":
        parts.append(f"tokens/s={ratio(tokens, measured.timing.median_ms) * 1e3:.0f}")
        parts.append(f"timing={measured.how}")
    if stats is not None:
        parts.append(f"attention={stats.attention}")
        if provider == "dense":
            parts.append(f"linear layers={stats.linear_layers} dense")
        else:
            parts.append(f"linear layers={stats.ss1_layers}/{stats.linear_layers} SS1 (project=False)")
    if step:
        parts.append(f"step={step}")
    return "; ".join(parts + measured.notes)


def e2e_row(work: Work, gpu: str, dtype: str, provider: str, hidden: int | None, intermediate: int | None,
            stats: ModelStats | None, dense_stats: ModelStats | None, ss1_structure: SS1Structure | None,
            measured: Measurement, dense_ms: float, step: str = "") -> dict:
    """One CSV row (columns exactly :data:`COLUMNS`; see the module docstring). ``step``: how a
    training step runs (its ``detail`` entry; empty for inference)."""
    timing: Timing = measured.timing
    m, ms = work.tokens, timing.median_ms
    train = work.phase == "train"
    passes = 6 if train else 2  # multiply-add = 2 FLOPs; a training step = 3 products per weight
    weights = stats.weight_params if stats is not None else None
    flops = passes * m * weights if weights is not None else math.nan
    dense_flops = passes * m * dense_stats.weight_params if dense_stats is not None else math.nan
    ss1 = provider != "dense"
    return {
        "gpu": gpu, "dtype": dtype, "mode": "fwd+bwd" if train else "fwd", "shape_set": E2E_SHAPE_SET,
        "layer": work.layer, "M": m, "K": hidden, "N": intermediate, "redn_factor": work.redn_factor,
        "provider": provider, "status": timing.status,
        "block_k": ss1_structure.block_k if ss1 and ss1_structure is not None else None,
        "block_n": ss1_structure.block_n if ss1 and ss1_structure is not None else None,
        "k_red": ss1_structure.k_red if ss1_structure is not None else None,
        "detail": _detail(stats, m, measured, provider, step),
        "weight_params": weights, "flops": flops, "dense_flops": dense_flops,
        "median_ms": ms, "p20_ms": timing.p20_ms, "p80_ms": timing.p80_ms,
        "tflops": ratio(flops, ms) * 1e-9, "dense_equiv_tflops": ratio(dense_flops, ms) * 1e-9,
        "dense_ms": dense_ms, "ideal_ms": math.nan, "speedup_vs_dense": ratio(dense_ms, ms),
        "fraction_of_ideal": math.nan, "peak_mem_mib": timing.peak_mem_mib,
        "compile": work.compile, "kernel_ms": measured.kernel_ms if timing.status == "ok" else math.nan,
        "compile_s": measured.first_call_s if timing.status == "ok" else math.nan,
    }


# ---- summary ----------------------------------------------------------------------------------


def summary_table(frame) -> str:
    """One line per (model, compile mode, phase, c): dense and SS1 medians, speedup, GPU kernel
    ms of each (``–`` off CUDA) and SS1's tokens/s."""
    import pandas as pd

    key = ("layer", "compile", "redn_factor")
    dense = {tuple(r[k] for k in key): r for r in frame[frame["provider"] == "dense"].to_dict("records")}
    lines = []
    for row in frame[frame["provider"] == "ss1_tuned"].to_dict("records"):
        model, phase = str(row["layer"]).rsplit(" ", 1)
        dense_row = dense.get(tuple(row[k] for k in key), {})
        lines.append({
            "model": model, "phase": phase, "compile": row["compile"], "c": row["redn_factor"], "tokens": row["M"],
            "dense ms": row["dense_ms"], "SS1 ms": row["median_ms"], "speedup": row["speedup_vs_dense"],
            "dense kernel ms": dense_row.get("kernel_ms", math.nan), "SS1 kernel ms": row["kernel_ms"],
            "SS1 tok/s": ratio(row["M"], row["median_ms"]) * 1e3,
        })
    if not lines:
        return "(no results)"
    formats = {"dense ms": "{:.4g}", "SS1 ms": "{:.4g}", "speedup": "{:.2f}", "dense kernel ms": "{:.4g}",
               "SS1 kernel ms": "{:.4g}", "SS1 tok/s": "{:,.0f}"}
    # NaN (a failed timing, or no kernel time off CUDA) prints as na_rep: pandas skips the formatters
    return pd.DataFrame(lines).to_string(index=False, na_rep="–",
                                         formatters={column: spec.format for column, spec in formats.items()})
