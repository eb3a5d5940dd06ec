"""What the report's modules share: the decode/prefill boundaries, the e2e names, the error type,
number formatting, and helpers that pick rows out of a results DataFrame.

Standard library and the torch-free CSV schema only; pandas and numpy are imported inside the
functions that need them.
"""

from __future__ import annotations

import math

from ss1bench.bench.schema import E2E_COLUMNS
from ss1bench.kernels.config import DECODE_MAX_M

#: Prefill/training: at least this many rows (decode: at most ``DECODE_MAX_M``, the boundary the
#: launch-config heuristic and the tuning database's M buckets use).
PREFILL_MIN_M = 1024

MODE_TITLES = {"fwd": "forward", "fwd+bwd": "forward + backward"}

#: ``shape_set`` of ``ss1bench e2e`` rows (whole models; ``layer`` is ``"<model> <phase>"``).
E2E_SHAPE_SET = "e2e"
#: e2e phases in report order with their panel titles (``ss1bench.e2e.PHASES``; not imported: the
#: report stays torch-free).
E2E_PHASE_TITLES = {"prefill": "prefill: one forward over batch × seq tokens",
                    "decode": "decode: one new token per sequence, KV cache of seq tokens",
                    "train": "train: forward, loss, backward, AdamW step over batch × seq tokens"}
E2E_PHASES = tuple(E2E_PHASE_TITLES)
#: e2e ``compile`` modes in report order (``ss1bench.e2e.COMPILE_MODES``); an e2e CSV without the
#: column is eager: ``none``.
E2E_COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")


class ReportError(Exception):
    """Results that cannot be reported (missing file, wrong columns); the message names the file."""


# ---- formatting -------------------------------------------------------------------------------


def is_missing(value) -> bool:
    """None or NaN: a value the CSV leaves empty."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_ms(value) -> str:
    return "–" if is_missing(value) else f"{value:.4g}"


def fmt_ratio(value) -> str:
    return "–" if is_missing(value) else f"{value:.2f}"


def fmt_tflops(value) -> str:
    return "–" if is_missing(value) else f"{value:.1f}"


def fmt_mib(value) -> str:
    return "–" if is_missing(value) else f"{value:.0f}"


def fmt_seconds(value) -> str:
    return "–" if is_missing(value) else f"{value:.3g}"


def rank(known: tuple[str, ...], value: str) -> int:
    """Sort key: ``value``'s position in ``known``, unknown values last."""
    return known.index(value) if value in known else len(known)


def _regime_name(m: int) -> str:
    return "decode" if m <= DECODE_MAX_M else "prefill" if m >= PREFILL_MIN_M else f"M{m}"


def present(frame, providers: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``providers`` that ``frame`` has rows of, in the order given. A run of some of the
    providers (``ss1bench bench --providers``) has no rows of the others: they get no line, bar,
    panel or column, rather than ones that read as failed."""
    names = set(frame["provider"])
    return tuple(provider for provider in providers if provider in names)


def has_cached(frame) -> bool:
    """Whether ``frame`` has ``ss1_cached`` rows (only ``fwd`` results can have them)."""
    return bool(present(frame, ("ss1_cached",)))


def tuned_providers(frame) -> tuple[str, ...]:
    """``ss1_tuned``, then ``ss1_cached``, each where ``frame`` has rows of it: the SS1 layers on the
    tuning database that the plots and tables show."""
    return present(frame, ("ss1_tuned", "ss1_cached"))


def regimes(frame) -> list[tuple[str, int]]:
    """The smallest and the largest M in ``frame`` (one entry if equal), each with its regime name."""
    ms = sorted(int(m) for m in frame["M"].unique())
    picked = [ms[0]] if ms[0] == ms[-1] else [ms[0], ms[-1]]
    names = [_regime_name(m) for m in picked]
    if len(set(names)) < len(names):
        names = [f"M{m}" for m in picked]
    return list(zip(names, picked, strict=True))


# ---- e2e rows ---------------------------------------------------------------------------------


def e2e_frame(frame):
    """e2e rows with every E2E_COLUMNS column (empty where the CSV had none; ``compile`` = ``none``)."""
    import numpy as np

    columns = {column: np.nan for column in E2E_COLUMNS if column not in frame.columns}
    frame = frame.assign(**columns)
    return frame.assign(compile=frame["compile"].map(lambda mode: "none" if is_missing(mode) else str(mode)))


def e2e_ss1_rows(frame):
    """SS1 rows of e2e results (one per case) with ``model`` and ``phase`` split out of ``layer``,
    ``compile`` filled in, and the dense row's kernel time as ``dense_kernel_ms``."""
    frame = e2e_frame(frame)
    key = ["gpu", "dtype", "layer", "compile", "M", "redn_factor"]
    dense = frame[frame["provider"] == "dense"].drop_duplicates(subset=key, keep="last")
    dense = dense[[*key, "kernel_ms"]].rename(columns={"kernel_ms": "dense_kernel_ms"})
    ss1 = frame[frame["provider"] == "ss1_tuned"].merge(dense, on=key, how="left")
    parts = ss1["layer"].astype(str).str.rsplit(" ", n=1)
    ss1 = ss1.assign(model=[p[0] for p in parts], phase=[p[-1] for p in parts])
    return ss1.drop_duplicates(subset=["gpu", "dtype", "model", "phase", "compile", "M", "redn_factor"], keep="last")
