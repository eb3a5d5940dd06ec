"""What a benchmark results CSV holds: providers, columns and the definitions behind them.

Shared by the runner (which writes the CSV) and the report (which only reads it), so this module
imports nothing heavier than the standard library: the report runs offline, on any machine.

One CSV row is one provider timed on one case ``(M, K, N, c, dtype, mode)``. Every case carries
its own ``dense``, ``dense_reduced`` and ``memory_floor`` rows, so each group of rows with the same
case key reads on its own (the dense layer does not depend on c: it is timed once per shape and
its row is repeated in each c group of that shape).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

MODES = ("fwd", "fwd+bwd")
#: The names of ``ss1bench.dtypes.TORCH_DTYPES`` (spelled out: this module imports no torch).
DTYPES = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class Provider:
    """One thing timed (or derived) per case.

    ``name`` is the CSV value, ``label`` the legend text, ``measured`` False for rows computed
    from other measurements (no timing of their own), ``modes`` the modes it has rows in (a case
    of another mode has no row of it).
    """

    name: str
    label: str
    measured: bool
    description: str
    modes: tuple[str, ...] = MODES

    def runs_in(self, mode: str) -> bool:
        return mode in self.modes


PROVIDERS: tuple[Provider, ...] = (
    Provider("dense", "dense (cuBLAS)", True,
             "F.linear on (M, K) x (N, K) with bias: the layer SS1 replaces"),
    Provider("dense_reduced", "dense at K/c (compute ideal)", True,
             "F.linear on (M, ceil(K/c)) x (N, ceil(K/c)) with bias: the GEMM SS1 reduces to"),
    Provider("memory_floor", "memory floor", False,
             "bytes SS1 must move (see MEMORY_FLOOR) at the copy bandwidth measured in the run"),
    Provider("ss1_tuned", "SS1 (tuning database)", True,
             "SSL layer as a user gets it: structure and launch configs from the tuning database "
             "when it has them, else the heuristic"),
    Provider("ss1_cached", "SS1 (tuning database, rotated-weight cache)", True,
             "the ss1_tuned layer (same structure) with cache_rotated_weight() on, the inference setting: "
             "the rotated weight is kept between calls and the forward uses forward_rotated launch configs; "
             "timed in fwd mode only (in fwd+bwd mode it is not run: training updates the weight every step)",
             modes=("fwd",)),
    Provider("ss1_heuristic", "SS1 (heuristic)", True,
             "the same SSL layer (same structure) with every launch forced to the heuristic's config learned "
             "without this layer shape's records (what a shape the tuning database does not hold gets)"),
    Provider("lowrank", "low-rank", True,
             "two linears K -> r -> N, r chosen so the weight count equals SS1's"),
    Provider("monarch", "Monarch", True,
             "two block-diagonal factors with a transpose permutation between them, "
             "sized so the weight count equals SS1's"),
)
#: Earlier definitions of a provider whose rows measured something else than it means now (a
#: results file's sidecar records the definition its run used): the report leaves such rows out.
SUPERSEDED_DEFINITIONS = {
    # before the bench left the layer shape's own records out of the heuristic, it forced the full
    # learned heuristic, which picks the shape's own tuned records (or, earlier, the fixed rule)
    "ss1_heuristic": ("the same SSL layer (same structure) with every launch forced to heuristic_config",),
}
PROVIDER_NAMES = tuple(p.name for p in PROVIDERS)
PROVIDER_LABELS = {p.name: p.label for p in PROVIDERS}
SS1_PROVIDERS = ("ss1_tuned", "ss1_cached", "ss1_heuristic")
PEER_PROVIDERS = ("lowrank", "monarch")
#: Timed (or derived) in every case, whatever else is: every row's speedup is against the dense
#: time and its fraction of ideal against the ideal (max of dense at K/c and the memory floor).
YARDSTICKS = ("dense", "dense_reduced", "memory_floor")
#: The providers a run may leave out (``ss1bench bench --providers``): the SS1 layers and the peers.
OPTIONAL_PROVIDERS = tuple(p.name for p in PROVIDERS if p.name not in YARDSTICKS)


def _chosen(provider: Provider, selected: Collection[str] | None) -> bool:
    """A yardstick, or one of the ``selected`` optional providers (None: all of them)."""
    return selected is None or provider.name in YARDSTICKS or provider.name in selected


def providers_in(mode: str, selected: Collection[str] | None = None) -> tuple[Provider, ...]:
    """The providers that have a row in every case of ``mode``, in PROVIDERS order: the yardsticks
    and the optional providers of ``selected`` (None: all of them)."""
    return tuple(p for p in PROVIDERS if p.runs_in(mode) and _chosen(p, selected))


def provider_listing(modes: list[str], selected: Collection[str] | None = None) -> str:
    """The providers a run of ``modes`` writes rows for (the yardsticks and ``selected``, see
    :func:`providers_in`), comma-separated; one that runs in only some of the modes says which,
    e.g. ``ss1_cached (fwd only)``."""
    names = []
    for p in PROVIDERS:
        if not _chosen(p, selected):
            continue
        in_run = [mode for mode in dict.fromkeys(modes) if p.runs_in(mode)]
        if in_run:
            names.append(p.name if set(in_run) == set(modes) else f"{p.name} ({', '.join(in_run)} only)")
    return ", ".join(names)


#: Columns of the results CSV, in order. A case is identified by CASE_KEY.
RESULT_COLUMNS: tuple[str, ...] = (
    "gpu",                  # normalized GPU name (H200, A100, ...)
    "dtype",                # fp16 | bf16 | fp32
    "mode",                 # fwd | fwd+bwd
    "shape_set",            # gpt2 | llama | bert | square | custom
    "layer",                # which layer of the set the (K, N) pair is, e.g. "gpt2-small mlp.fc"
    "M",                    # rows of x (tokens)
    "K",                    # in_features
    "N",                    # out_features
    "redn_factor",          # c
    "provider",             # one of PROVIDER_NAMES
    "status",               # "ok", or a one-line error (then the timing columns are empty)
    "block_k",              # SS1 structure (SS1 rows only)
    "block_n",
    "k_red",                # SS1 compressed width (every row: the case's SS1 layer)
    "detail",               # provider settings: launch configs, rank, Monarch blocks
    "weight_params",        # weights of this provider (bias excluded; all providers have N biases)
    "flops",                # this provider's own FLOPs per call (see FLOP_COUNTS)
    "dense_flops",          # the dense layer's FLOPs for the same case and mode
    "median_ms",            # do_bench median
    "p20_ms",               # do_bench 20th percentile (spread: p20..p80)
    "p80_ms",               # do_bench 80th percentile
    "tflops",               # flops / median time, TFLOP/s
    "dense_equiv_tflops",   # dense_flops / median time, TFLOP/s (what a dense layer would need)
    "dense_ms",             # the case's dense median
    "ideal_ms",             # max(dense_reduced median, memory floor)
    "speedup_vs_dense",     # dense_ms / median_ms
    "fraction_of_ideal",    # ideal_ms / median_ms
    "peak_mem_mib",         # torch.cuda.max_memory_allocated during one call minus the allocation before
)
CASE_KEY = ("gpu", "dtype", "mode", "shape_set", "layer", "M", "K", "N", "redn_factor")

#: Columns ``ss1bench e2e`` writes after RESULT_COLUMNS. Optional for readers: layer-benchmark CSVs
#: and e2e CSVs made before them do not have them (read a missing ``compile`` as ``none``).
E2E_COLUMNS: tuple[str, ...] = (
    "compile",              # torch.compile mode of the call: none (eager) | default | max-autotune | reduce-overhead,
                            # with E2E_FROZEN_SUFFIX when compiled with Inductor's parameter freezing
    "kernel_ms",            # GPU kernel time per call (torch.profiler, kernels' self time summed); empty off CUDA
    "compile_s",            # seconds of the first, untimed call: compilation under a compile mode
)
#: What tells two e2e rows of the same CASE_KEY and provider apart.
E2E_KEY = ("compile",)
#: Appended to ``compile`` for calls compiled with Inductor's parameter freezing (``e2e --freezing``).
E2E_FROZEN_SUFFIX = "+freezing"

#: Quantiles timed by do_bench: the median and the spread around it.
QUANTILES = (0.5, 0.2, 0.8)

FLOP_COUNTS = (
    "Forward FLOPs, multiply-add = 2: dense 2·M·N·K; dense at K/c 2·M·N·ceil(K/c); "
    "SS1 2·M·N·K_red (its GEMM; the sketch's M·K additions are not counted); "
    "low-rank and Monarch 2·M·h·(K+N) (h = rank, or Monarch's per-block width). "
    "Forward+backward: 3x the forward (input and weight gradients each cost one more GEMM). "
    "`tflops` divides a provider's own FLOPs by its time; `dense_equiv_tflops` divides the dense "
    "layer's FLOPs by it (the throughput a dense layer would need to match)."
)
MEMORY_FLOOR = (
    "Memory floor, in elements of the dtype: forward moves x (M·K) + Wc (N·K_red) + bias (N) + "
    "y (M·N); forward+backward adds dy (M·N) + x (M·K) + Wc (N·K_red) read and dx (M·K) + "
    "dWc (N·K_red) + dbias (N) written. Bytes over the copy bandwidth measured once per run "
    "(a device-to-device copy, bytes read + written)."
)


def mode_slug(mode: str) -> str:
    """``fwd`` / ``fwdbwd``: the mode as it appears in file names."""
    return mode.replace("+", "")
