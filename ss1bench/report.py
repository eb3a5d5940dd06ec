"""``ss1bench report``: PNG plots and a markdown summary from ``ss1bench bench`` CSVs.

Runs offline on any machine (no GPU, no torch): it reads the CSVs (and their JSON sidecars),
imports matplotlib lazily with the Agg backend, and writes, per dtype and mode:

- ``speedup_vs_c_<dtype>_<mode>_<regime>.png``: speedup vs dense across c, one panel per layer
  shape, with the ideal speedup (dense / ideal) drawn; regimes are the smallest M (decode) and
  the largest M (prefill) in the results;
- ``speedup_vs_m_<dtype>_<mode>.png``: SS1's speedup vs M from decode to prefill, per c, with
  the ideal dashed;
- ``fraction_of_ideal_<dtype>_<mode>.png``: heatmap of ideal / SS1 time, tuned and heuristic;
- ``peers_<dtype>_<mode>_<regime>.png``: SS1 against low-rank and Monarch at equal parameters;

and ``summary.md`` with the headline figures, the tables and the plots. Every number in the
summary is a CSV value (or the median/min/max of CSV values, as labelled), formatted only.

SS1 with the rotated-weight cache (``ss1_cached``: ``fwd`` results made since it exists) gets a
line of its own in both speedup plots and rows and columns of its own in the summary's headline
and case tables, where the results have it; results without it read as before.

Rows of ``ss1bench e2e`` (``shape_set`` ``"e2e"``: whole models, not layers) have no ideal and no
peers; they get their own plot, ``e2e_speedup_<gpu>_<dtype>.png`` (``..._train.png`` for training
steps: speedup vs c per model, phase and compile mode, with the GPU kernel-time speedup marked), and
an "End-to-end models" section in the summary (wall and kernel times side by side). Their own
columns (``schema.E2E_COLUMNS``: compile mode, kernel time, first-call time) are optional: e2e CSVs
made before them read as eager, without kernel times. Bench and e2e CSVs mix freely.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from ss1bench.bench.schema import (
    CASE_KEY,
    DTYPES,
    E2E_COLUMNS,
    E2E_KEY,
    FLOP_COUNTS,
    MEMORY_FLOOR,
    MODES,
    PROVIDER_LABELS,
    RESULT_COLUMNS,
    mode_slug,
)

#: Decode: at most this many rows (one token per sequence, batches up to 64; the kernels'
#: config heuristic uses the same boundary). Prefill/training: at least PREFILL_MIN_M rows.
DECODE_MAX_M = 64
PREFILL_MIN_M = 1024

#: Line and bar styles per provider, fixed so every plot reads the same.
STYLE = {
    "ss1_tuned": {"color": "#1f77b4", "marker": "o", "linestyle": "-"},
    "ss1_cached": {"color": "#08306b", "marker": "D", "linestyle": "-."},
    "ss1_heuristic": {"color": "#6baed6", "marker": "s", "linestyle": "--"},
    "lowrank": {"color": "#ff7f0e", "marker": "^", "linestyle": "-"},
    "monarch": {"color": "#2ca02c", "marker": "v", "linestyle": "-"},
    "ideal": {"color": "black", "marker": None, "linestyle": "--"},
}
MODE_TITLES = {"fwd": "forward", "fwd+bwd": "forward + backward"}

#: ``shape_set`` of ``ss1bench e2e`` rows (whole models; ``layer`` is ``"<model> <phase>"``).
E2E_SHAPE_SET = "e2e"
#: e2e phases in report order with their panel titles (``ss1bench.e2e.PHASES``; not imported: the
#: report stays torch-free).
E2E_PHASE_TITLES = {"prefill": "prefill: one forward over batch × seq tokens",
                    "decode": "decode: one new token per sequence, KV cache of seq tokens",
                    "train": "train: forward, loss, backward, AdamW step over batch × seq tokens"}
E2E_PHASES = tuple(E2E_PHASE_TITLES)
#: e2e ``compile`` modes in report order (``ss1bench.e2e.COMPILE_MODES``); e2e CSVs without the
#: column were all eager: ``none``.
E2E_COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")
#: Result files a folder argument expands to.
RESULT_GLOBS = ("bench_*.csv", "e2e_*.csv")


class ReportError(Exception):
    """Results that cannot be reported (missing file, wrong columns); the message names the file."""


# ---- loading ----------------------------------------------------------------------------------


def result_files(paths: list[Path]) -> list[Path]:
    """CSV files named by ``paths``: files as given, folders expanded to their ``bench_*.csv`` and
    ``e2e_*.csv``."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = [file for pattern in RESULT_GLOBS for file in sorted(path.glob(pattern))]
            if not found:
                raise ReportError(f"{path}: no {' or '.join(RESULT_GLOBS)} files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ReportError(f"{path}: no such file or folder")
    return files


def load_results(paths: list[Path]):
    """(DataFrame of every row, [(csv path, sidecar metadata or None)]).

    Rows repeated across files (same case and provider) keep the last file's.
    """
    import pandas as pd

    frames, sources = [], []
    for path in result_files(paths):
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as error:
            raise ReportError(f"{path}: cannot read as CSV ({error})") from None
        missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
        if missing:
            raise ReportError(f"{path}: not an ss1bench bench CSV (missing columns: {', '.join(missing)})")
        _check_complete(path)
        frame = _numeric(path, frame)
        sidecar = path.with_suffix(".json")
        metadata = None
        if sidecar.is_file():
            try:
                metadata = json.loads(sidecar.read_text())
            except ValueError as error:
                raise ReportError(f"{sidecar}: not valid JSON ({error})") from None
        frames.append(frame[[*RESULT_COLUMNS, *(c for c in E2E_COLUMNS if c in frame.columns)]])
        sources.append((path, metadata))
    frame = pd.concat(frames, ignore_index=True)
    key = [*CASE_KEY, "provider", *(c for c in E2E_KEY if c in frame.columns)]  # e2e: one row per compile mode
    frame = frame.drop_duplicates(subset=key, keep="last").reset_index(drop=True)
    if frame.empty:
        raise ReportError("the results hold no rows")
    return frame, sources


#: Columns that hold numbers (empty where not measured); anything else there is a damaged file.
NUMERIC_COLUMNS = ("M", "K", "N", "redn_factor", "block_k", "block_n", "k_red", "weight_params", "flops",
                   "dense_flops", "median_ms", "p20_ms", "p80_ms", "tflops", "dense_equiv_tflops", "dense_ms",
                   "ideal_ms", "speedup_vs_dense", "fraction_of_ideal", "peak_mem_mib")


def _check_complete(path: Path) -> None:
    """Every row has the header's number of fields and the file ends with a line break (a file cut
    off in mid-row, e.g. by a run killed while writing, is refused rather than read short)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            for row in reader:
                if row and len(row) != len(header):
                    raise ReportError(f"{path}: line {reader.line_num} has {len(row)} fields, the header "
                                      f"{len(header)}: the file is truncated or damaged")
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) not in (b"\n", b"\r"):
                    raise ReportError(f"{path}: the last line ends in mid-row: the file is truncated")
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ReportError(f"{path}: cannot read as CSV ({error})") from None


def _numeric(path: Path, frame):
    """``frame`` with NUMERIC_COLUMNS as numbers; ReportError naming the first value that is not one."""
    import pandas as pd

    for column in NUMERIC_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & values.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ReportError(f"{path}: line {row + 2}, column {column}: {frame[column].iloc[row]!r} is not a "
                              "number")
        frame = frame.assign(**{column: values})
    return frame


# ---- formatting -------------------------------------------------------------------------------


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_ms(value) -> str:
    return "–" if _missing(value) else f"{value:.4g}"


def fmt_ratio(value) -> str:
    return "–" if _missing(value) else f"{value:.2f}"


def fmt_tflops(value) -> str:
    return "–" if _missing(value) else f"{value:.1f}"


def fmt_mib(value) -> str:
    return "–" if _missing(value) else f"{value:.0f}"


def _shape_title(k: int, n: int, layer: str) -> str:
    return f"{layer}\nK={k} → N={n}"


def _file_tag(shape_set: str, dtype: str, mode: str) -> str:
    return f"{shape_set}_{dtype}_{mode_slug(mode)}"


def _context(gpu: str, shape_set: str, dtype: str, mode: str) -> str:
    return f"{gpu}, {shape_set} shapes, {dtype}, {MODE_TITLES[mode]}"


def _rank(known: tuple[str, ...], value: str) -> int:
    return known.index(value) if value in known else len(known)


def _regime_name(m: int) -> str:
    return "decode" if m <= DECODE_MAX_M else "prefill" if m >= PREFILL_MIN_M else f"M{m}"


def _has_cached(frame) -> bool:
    """Whether ``frame`` has ``ss1_cached`` rows (only ``fwd`` results made since it exists do)."""
    return bool((frame["provider"] == "ss1_cached").any())


def _tuned_providers(frame) -> tuple[str, ...]:
    """``ss1_tuned``, then ``ss1_cached`` where ``frame`` has rows of it: the SS1 layers on the
    tuning database that the plots and tables show."""
    return ("ss1_tuned", "ss1_cached") if _has_cached(frame) else ("ss1_tuned",)


def _regimes(frame) -> list[tuple[str, int]]:
    """The smallest and the largest M in ``frame`` (one entry if equal), each with its regime name."""
    ms = sorted(int(m) for m in frame["M"].unique())
    picked = [ms[0]] if ms[0] == ms[-1] else [ms[0], ms[-1]]
    names = [_regime_name(m) for m in picked]
    if len(set(names)) < len(names):
        names = [f"M{m}" for m in picked]
    return list(zip(names, picked, strict=True))


# ---- plots ------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 9,
                         "figure.dpi": 110, "savefig.dpi": 110})
    return plt


#: Smallest figure width (inches): two-line titles and a legend row fit without clipping.
MIN_FIGURE_WIDTH = 9.0


def _figure(plt, nrows: int, ncols: int, width: float, height: float, **kwargs):
    """A constrained-layout figure at least MIN_FIGURE_WIDTH wide; returns (fig, axes grid)."""
    return plt.subplots(nrows, ncols, figsize=(max(width, MIN_FIGURE_WIDTH), height), squeeze=False,
                        layout="constrained", **kwargs)


def _grid(plt, count: int, ncols_max: int = 4, panel=(3.6, 2.9)):
    ncols = min(count, ncols_max)
    nrows = math.ceil(count / ncols)
    fig, axes = _figure(plt, nrows, ncols, panel[0] * ncols, panel[1] * nrows + 1.3)
    flat = axes.ravel()
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _log_axis(ax, axis: str, ticks=None) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    set_scale("log", base=2 if axis == "x" and ticks is not None else 10)
    target = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None:
        target.set_ticks(list(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _speedup_axis(ax, values) -> None:
    """Log y axis with plain-number ticks spanning ``values`` and 1 (dense)."""
    finite = [v for v in values if not _missing(v) and v > 0] + [1.0]
    low, high = min(finite), max(finite)
    ax.set_yscale("log")
    ax.set_ylim(low / 1.4, high * 1.4)
    candidates = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    ticks = [t for t in candidates if low / 1.4 <= t <= high * 1.4]
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(1.0, color="0.55", linewidth=1, linestyle=":", zorder=0)
    ax.grid(True, which="major", axis="y", color="0.9", linewidth=0.6)


def _layer_shapes(frame) -> list[tuple[int, int, str]]:
    shapes = frame[["K", "N", "layer"]].drop_duplicates(subset=["K", "N"])
    return [(int(r.K), int(r.N), str(r.layer)) for r in shapes.itertuples()]


def _finish(fig, plt, what: str, context: str, path: Path, handles=None, labels=None, ncol=None) -> Path:
    """Two-line title (what, then GPU/set/dtype/mode), legend row below the panels, save, close."""
    fig.suptitle(f"{what}\n{context}", fontsize=11)
    if handles:
        width = fig.get_size_inches()[0]
        longest = max(len(label) for label in labels)
        fit = max(1, int(width / (0.3 + 0.075 * longest)))  # legend columns that fit the width
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol or len(handles), fit),
                   frameon=False)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_speedup_vs_c(plt, frame, context: str, tag: str, regime: str, m: int, out: Path) -> Path:
    part = frame[frame["M"] == m]
    shapes = _layer_shapes(part)
    fig, axes = _grid(plt, len(shapes))
    handles = {}
    for ax, (k, n, layer) in zip(axes, shapes, strict=True):
        cell = part[(part["K"] == k) & (part["N"] == n)]
        values = []
        for provider in (*_tuned_providers(part), "ss1_heuristic", "lowrank", "monarch"):
            rows = cell[cell["provider"] == provider].sort_values("redn_factor")
            (line,) = ax.plot(rows["redn_factor"], rows["speedup_vs_dense"], label=PROVIDER_LABELS[provider],
                              **STYLE[provider])
            handles.setdefault(PROVIDER_LABELS[provider], line)
            values.extend(rows["speedup_vs_dense"])
        ideal = cell[cell["provider"] == "ss1_tuned"].sort_values("redn_factor")
        ideal_speedup = ideal["dense_ms"] / ideal["ideal_ms"]
        (line,) = ax.plot(ideal["redn_factor"], ideal_speedup, label="ideal (dense / ideal time)",
                          **STYLE["ideal"])
        handles.setdefault("ideal (dense / ideal time)", line)
        values.extend(ideal_speedup)
        _log_axis(ax, "x", ticks=sorted(cell["redn_factor"].unique()))
        _speedup_axis(ax, values)
        ax.set_title(_shape_title(k, n, layer))
        ax.set_xlabel("reduction factor c")
        ax.set_ylabel("speedup vs dense (×)")
    what = f"Speedup vs dense (cuBLAS) across c at M={m} ({regime}); dotted line = dense"
    return _finish(fig, plt, what, context, out / f"speedup_vs_c_{tag}_{regime}.png",
                   list(handles.values()), list(handles))


#: Legend names of the SS1 lines of the speedup-vs-M plot (one colour per c; the style tells them apart).
SPEEDUP_VS_M_NAMES = {"ss1_tuned": "SS1", "ss1_cached": "SS1 cached"}


def plot_speedup_vs_m(plt, frame, context: str, tag: str, out: Path) -> Path:
    shapes = _layer_shapes(frame)
    factors = sorted(frame["redn_factor"].unique())
    providers = _tuned_providers(frame)
    colors = plt.get_cmap("viridis")([i / max(len(factors) - 1, 1) * 0.85 for i in range(len(factors))])
    fig, axes = _grid(plt, len(shapes))
    handles = {}
    for ax, (k, n, layer) in zip(axes, shapes, strict=True):
        cell = frame[(frame["K"] == k) & (frame["N"] == n) & frame["provider"].isin(providers)]
        values = []
        for color, c in zip(colors, factors, strict=True):
            for provider in providers:
                rows = cell[(cell["redn_factor"] == c) & (cell["provider"] == provider)].sort_values("M")
                (line,) = ax.plot(rows["M"], rows["speedup_vs_dense"], **{**STYLE[provider], "color": color})
                handles.setdefault(f"{SPEEDUP_VS_M_NAMES[provider]} c={c}", line)
                values.extend(rows["speedup_vs_dense"])
            rows = cell[(cell["redn_factor"] == c) & (cell["provider"] == "ss1_tuned")].sort_values("M")
            ideal = rows["dense_ms"] / rows["ideal_ms"]
            (ideal_line,) = ax.plot(rows["M"], ideal, color=color, linestyle="--", linewidth=1)
            handles.setdefault(f"ideal c={c} (dashed)", ideal_line)
            values.extend(ideal)
        _log_axis(ax, "x", ticks=sorted(cell["M"].unique()))
        ax.tick_params(axis="x", labelrotation=45)
        _speedup_axis(ax, values)
        ax.set_title(_shape_title(k, n, layer))
        ax.set_xlabel("M (rows of x: tokens)")
        ax.set_ylabel("speedup vs dense (×)")
    # Column-major legend: each column groups the SS1 lines at one c with its ideal (one row, where
    # it fits, with SS1 alone; one column per c with the cached layer too).
    order = [key for c in factors
             for key in (*(f"{SPEEDUP_VS_M_NAMES[p]} c={c}" for p in providers), f"ideal c={c} (dashed)")]
    what = "SS1 (tuning database) speedup vs dense from decode to prefill; dotted line = dense"
    if "ss1_cached" in providers:
        what += "\nSS1 cached (dash-dot): the same layer with the rotated-weight cache"
    return _finish(fig, plt, what, context, out / f"speedup_vs_m_{tag}.png", [handles[key] for key in order],
                   order, ncol=2 * len(factors) if len(providers) == 1 else len(factors))


def plot_fraction_heatmap(plt, frame, context: str, tag: str, out: Path) -> Path:
    import numpy as np

    factors = sorted(frame["redn_factor"].unique())
    order = {(k, n): i for i, (k, n, _) in enumerate(_layer_shapes(frame))}  # the shape sets' order
    cases = frame[["K", "N", "M", "layer"]].drop_duplicates(subset=["K", "N", "M"])
    cases = cases.assign(order=[order[(k, n)] for k, n in zip(cases["K"], cases["N"], strict=True)])
    cases = cases.sort_values(["order", "M"])
    labels = [f"{r.layer} ({r.K}→{r.N})  M={r.M}" for r in cases.itertuples()]
    boundaries = [i - 0.5 for i, (a, b) in enumerate(zip(cases["order"], cases["order"].iloc[1:], strict=False), 1)
                  if a != b]
    panels = ("ss1_tuned", "ss1_heuristic")
    fig, axes = _figure(plt, 1, len(panels), 4.0 + 1.0 * len(factors) * len(panels) + 1.5,
                        max(3.6, 1.6 + 0.26 * len(labels)), sharey=True)
    image = None
    for ax, provider in zip(axes[0], panels, strict=True):
        part = frame[frame["provider"] == provider].set_index(["K", "N", "M", "redn_factor"])["fraction_of_ideal"]
        grid = np.full((len(labels), len(factors)), np.nan)
        for i, r in enumerate(cases.itertuples()):
            for j, c in enumerate(factors):
                grid[i, j] = part.get((r.K, r.N, r.M, c), np.nan)
        image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                value = grid[i, j]
                text = "failed" if np.isnan(value) else f"{value:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if not np.isnan(value) and value > 0.6 else "white")
        for y in boundaries:
            ax.axhline(y, color="white", linewidth=2)
        ax.set_xticks(range(len(factors)), [str(c) for c in factors])
        ax.set_xlabel("reduction factor c")
        ax.set_title(PROVIDER_LABELS[provider])
    axes[0][0].set_yticks(range(len(labels)), labels)
    fig.colorbar(image, ax=list(axes[0]), label="fraction of ideal\n(ideal time / SS1 time)", shrink=0.8,
                 aspect=30)
    return _finish(fig, plt, "Fraction of ideal (1.0 = at the ideal; values above 1 are shown at full colour)",
                   context, out / f"fraction_of_ideal_{tag}.png")


def plot_peers(plt, frame, context: str, tag: str, regime: str, m: int, out: Path) -> Path:
    import numpy as np

    part = frame[frame["M"] == m]
    factors = sorted(part["redn_factor"].unique())
    shapes = _layer_shapes(part)
    providers = ("ss1_tuned", "lowrank", "monarch")
    fig, axes = _figure(plt, 1, len(factors), 2.2 + 2.6 * len(factors), 2.2 + 0.55 * len(shapes), sharey=True)
    bar = 0.8 / len(providers)
    positions = np.arange(len(shapes))
    for ax, c in zip(axes[0], factors, strict=True):
        values = []
        for index, provider in enumerate(providers):
            rows = part[(part["provider"] == provider) & (part["redn_factor"] == c)].set_index(["K", "N"])
            speedups = [rows["speedup_vs_dense"].get((k, n), np.nan) for k, n, _ in shapes]
            offsets = positions + (index - (len(providers) - 1) / 2) * bar
            ax.barh(offsets, speedups, height=bar, color=STYLE[provider]["color"], label=PROVIDER_LABELS[provider])
            for y, value in zip(offsets, speedups, strict=True):
                if np.isnan(value):
                    ax.text(0.02, y, f"{PROVIDER_LABELS[provider]}: failed", va="center", fontsize=7,
                            color=STYLE[provider]["color"], transform=ax.get_yaxis_transform())
            values.extend(speedups)
        ax.axvline(1.0, color="0.3", linewidth=1, linestyle=":")
        finite = [v for v in values if not np.isnan(v)] + [1.0]
        ax.set_xlim(0, max(finite) * 1.12)
        ax.set_title(f"c = {c}")
        ax.set_xlabel("speedup vs dense (×)")
        ax.grid(True, axis="x", color="0.9", linewidth=0.6)
    axes[0][0].set_yticks(positions, [f"{layer}\n{k}→{n}" for k, n, layer in shapes])
    axes[0][0].invert_yaxis()  # first shape on top (the axes share y)
    handles, labels = axes[0][0].get_legend_handles_labels()
    what = f"SS1 vs low-rank and Monarch at equal parameter count, M={m} ({regime}); dotted line = dense"
    return _finish(fig, plt, what, context, out / f"peers_{tag}_{regime}.png", handles, labels)


def _e2e_frame(frame):
    """e2e rows with every E2E_COLUMNS column (empty where the CSV had none; ``compile`` = ``none``)."""
    import numpy as np

    columns = {column: np.nan for column in E2E_COLUMNS if column not in frame.columns}
    frame = frame.assign(**columns)
    return frame.assign(compile=frame["compile"].map(lambda mode: "none" if _missing(mode) else str(mode)))


def _e2e_rows(frame):
    """SS1 rows of e2e results (one per case) with ``model`` and ``phase`` split out of ``layer``,
    ``compile`` filled in, and the dense row's kernel time as ``dense_kernel_ms``."""
    frame = _e2e_frame(frame)
    key = ["gpu", "dtype", "layer", "compile", "M", "redn_factor"]
    dense = frame[frame["provider"] == "dense"].drop_duplicates(subset=key, keep="last")
    dense = dense[[*key, "kernel_ms"]].rename(columns={"kernel_ms": "dense_kernel_ms"})
    ss1 = frame[frame["provider"] == "ss1_tuned"].merge(dense, on=key, how="left")
    parts = ss1["layer"].astype(str).str.rsplit(" ", n=1)
    ss1 = ss1.assign(model=[p[0] for p in parts], phase=[p[-1] for p in parts])
    return ss1.drop_duplicates(subset=["gpu", "dtype", "model", "phase", "compile", "M", "redn_factor"], keep="last")


def _e2e_panel_title(phase: str, mode: str) -> str:
    return E2E_PHASE_TITLES.get(phase, phase) + ("\neager" if mode == "none" else f"\ntorch.compile mode={mode}")


def plot_e2e_speedup(plt, frame, context: str, tag: str, out: Path) -> Path:
    """Bars of SS1's end-to-end speedup over the dense model: one panel per (compile mode, phase)
    (a row per mode), one bar group per model (and tokens per call), one bar per c, the value
    written on each bar; a black tick marks the GPU kernel-time speedup where it was measured."""
    import numpy as np

    ss1 = _e2e_rows(frame)
    phases = sorted(ss1["phase"].unique(), key=lambda phase: _rank(E2E_PHASES, phase))
    modes = sorted(ss1["compile"].unique(), key=lambda mode: _rank(E2E_COMPILE_MODES, mode))
    factors = sorted(ss1["redn_factor"].unique())
    colors = plt.get_cmap("viridis")([i / max(len(factors) - 1, 1) * 0.85 for i in range(len(factors))])
    most_groups = max(len(ss1[ss1["phase"] == phase][["model", "M"]].drop_duplicates()) for phase in phases)
    panel_width = max(3.6, 1.0 + most_groups * (0.5 + 0.32 * len(factors)))
    fig, axes = _figure(plt, len(modes), len(phases), panel_width * len(phases), 0.6 + 3.8 * len(modes),
                        sharey=True)
    bar = 0.8 / len(factors)
    highest = 1.0
    for (row, mode), (column, phase) in itertools.product(enumerate(modes), enumerate(phases)):
        ax = axes[row][column]
        part = ss1[(ss1["phase"] == phase) & (ss1["compile"] == mode)]
        if part.empty:  # decode is timed eagerly only
            ax.set_visible(False)
            continue
        groups = list(dict.fromkeys(zip(part["model"], part["M"], strict=True)))
        positions = np.arange(len(groups))
        for index, (color, c) in enumerate(zip(colors, factors, strict=True)):
            by_group = part[part["redn_factor"] == c].set_index(["model", "M"])
            values = [float(by_group["speedup_vs_dense"].get(group, np.nan)) for group in groups]
            kernel = [float((by_group["dense_kernel_ms"] / by_group["kernel_ms"]).get(group, np.nan))
                      for group in groups]
            offsets = positions + (index - (len(factors) - 1) / 2) * bar
            ax.bar(offsets, np.nan_to_num(values), width=bar, color=color, label=f"SS1 c = {c}")
            if not np.isnan(kernel).all():
                ax.scatter(offsets, kernel, marker="_", s=(bar * 60) ** 2, color="black", zorder=3,
                           label="GPU kernel-time speedup")
            for x, value in zip(offsets, values, strict=True):
                text = "failed" if np.isnan(value) else f"{value:.2f}"
                ax.text(x, 0 if np.isnan(value) else value, text, ha="center", va="bottom", fontsize=7,
                        rotation=90 if len(factors) > 3 else 0)
            highest = max([highest, *(v for v in values + kernel if not np.isnan(v))])
        ax.axhline(1.0, color="0.3", linewidth=1, linestyle=":")
        ax.set_xticks(positions, [f"{model}\n{m} tokens" for model, m in groups])
        ax.set_title(_e2e_panel_title(phase, mode))
        ax.set_xlabel("model (tokens per call)")
        if column == 0:
            ax.set_ylabel("speedup vs dense model (×)")
        ax.grid(True, axis="y", color="0.9", linewidth=0.6)
    axes[0][0].set_ylim(0, highest * 1.25)  # the panels share y
    labels: dict[str, object] = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    what = "End-to-end speedup of the SS1 model over the dense model (dense time / SS1 time); dotted line = dense"
    return _finish(fig, plt, what, context, out / f"e2e_speedup_{tag}.png", list(labels.values()), list(labels))


# ---- markdown ---------------------------------------------------------------------------------


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _spread(values) -> str:
    """``median (min–max)`` of the finite values, or ``–``."""
    finite = [float(v) for v in values if not _missing(v)]
    if not finite:
        return "–"
    finite.sort()
    middle = len(finite) // 2
    median = finite[middle] if len(finite) % 2 else (finite[middle - 1] + finite[middle]) / 2
    return f"{median:.2f} ({finite[0]:.2f}–{finite[-1]:.2f})"


def headline_header(frame) -> list[str]:
    """HEADLINE_HEADER, with HEADLINE_LAYER_COLUMN after c where ``frame`` has ``ss1_cached`` rows."""
    if not _has_cached(frame):
        return HEADLINE_HEADER
    return [*HEADLINE_HEADER[:3], HEADLINE_LAYER_COLUMN, *HEADLINE_HEADER[3:]]


def headline_rows(frame) -> list[list[str]]:
    """Per dtype, mode and c: SS1 (database) speedup and fraction of ideal, decode and prefill; where
    ``frame`` has ``ss1_cached`` rows, each row names its layer and the cached layer's row follows
    the plain one's (``fwd`` only: other modes have no cached rows)."""
    providers = _tuned_providers(frame)
    ss1 = _ss1_cases(frame, providers)
    rows = []
    for (dtype, mode, c), part in ss1.groupby(["dtype", "mode", "redn_factor"], sort=True):
        for provider in providers:
            own = part[part["provider"] == provider]
            if own.empty:
                continue
            decode = own[own["M"] <= DECODE_MAX_M]
            prefill = own[own["M"] >= PREFILL_MIN_M]
            label = [PROVIDER_LABELS[provider]] if len(providers) > 1 else []
            rows.append([dtype, mode, str(c), *label,
                         _spread(decode["speedup_vs_dense"]), _spread(decode["fraction_of_ideal"]),
                         _spread(prefill["speedup_vs_dense"]), _spread(prefill["fraction_of_ideal"])])
    return rows


#: Where the ideal (cuBLAS at K/c, or the memory floor) is at least this much faster than dense,
#: SS1 is expected to beat dense; the report lists the cases where it does not.
EXPECTED_WIN = 1.2
SLOWER_SUMMARY_HEADER = ["dtype", "mode", "slower than dense", "of which decode", "of which prefill"]
SLOWER_HEADER = ["layer", "dtype", "mode", "M", "K", "N", "c", "dense ms", "SS1 ms", "speedup vs dense",
                 "ideal speedup", "launch configs"]


def _ss1_cases(frame, providers: tuple[str, ...] = ("ss1_tuned",)):
    """Timed rows of ``providers`` (default SS1 (database)), one per provider and distinct case: a
    shape two sets share counts once."""
    ss1 = frame[frame["provider"].isin(providers) & (frame["status"] == "ok")]
    return ss1.drop_duplicates(subset=["gpu", "dtype", "mode", "M", "K", "N", "redn_factor", "provider"])


def _expected_wins(frame, providers: tuple[str, ...] = ("ss1_tuned",)):
    """SS1 rows of ``providers``, one per distinct case, where dense / ideal >= EXPECTED_WIN."""
    ss1 = _ss1_cases(frame, providers)
    return ss1[ss1["dense_ms"] / ss1["ideal_ms"] >= EXPECTED_WIN]


def slower_than_dense_rows(frame) -> tuple[list[list[str]], list[list[str]]]:
    """(per dtype and mode: ``slower / expected wins``, decode and prefill counts, and the same for
    the rotated-weight cache's rows where there are any (mode ``fwd (cached)``); the slower cases of
    SS1 (database), sorted by speedup) among the cases the ideal says SS1 should win."""
    import pandas as pd

    expected = _expected_wins(frame)
    slower = expected[expected["speedup_vs_dense"] < 1]
    summary = []
    cached = _expected_wins(frame, ("ss1_cached",)).assign(mode=lambda part: part["mode"] + " (cached)")
    for (dtype, mode), part in pd.concat([expected, cached]).groupby(["dtype", "mode"], sort=True):
        lost = part[part["speedup_vs_dense"] < 1]
        summary.append([dtype, mode, f"{len(lost)} of {len(part)}", str(int((lost["M"] <= DECODE_MAX_M).sum())),
                        str(int((lost["M"] >= PREFILL_MIN_M).sum()))])
    cases = [[str(r.layer), str(r.dtype), str(r.mode), str(r.M), str(r.K), str(r.N), str(r.redn_factor),
              fmt_ms(r.dense_ms), fmt_ms(r.median_ms), fmt_ratio(r.speedup_vs_dense),
              fmt_ratio(r.dense_ms / r.ideal_ms), str(r.detail).replace("|", "; ")]
             for r in slower.sort_values(["speedup_vs_dense", "dtype", "mode"]).itertuples()]
    return summary, cases


HEADLINE_HEADER = ["dtype", "mode", "c", "decode speedup vs dense", "decode fraction of ideal",
                   "prefill speedup vs dense", "prefill fraction of ideal"]
#: The headline's column naming each row's SS1 layer, where the results have ss1_cached rows.
HEADLINE_LAYER_COLUMN = "SS1 layer"
CASE_HEADER = ["layer", "M", "K", "N", "c", "dense ms", "ideal ms", "SS1 ms", "SS1 p20–p80 ms",
               "speedup vs dense", "fraction of ideal", "SS1 heuristic ms", "heuristic speedup",
               "low-rank speedup", "Monarch speedup", "SS1 TFLOP/s", "dense-equiv. TFLOP/s", "SS1 peak MiB"]
#: ss1_cached's columns of the case table, after SS1's fraction of ideal, where the results have its rows.
CACHED_CASE_COLUMNS = ["SS1 cached ms", "cached speedup", "cached fraction of ideal"]
_CACHED_AT = CASE_HEADER.index("fraction of ideal") + 1


def case_header(frame) -> list[str]:
    """CASE_HEADER, with CACHED_CASE_COLUMNS where ``frame`` has ``ss1_cached`` rows."""
    if not _has_cached(frame):
        return CASE_HEADER
    return [*CASE_HEADER[:_CACHED_AT], *CACHED_CASE_COLUMNS, *CASE_HEADER[_CACHED_AT:]]


def case_rows(frame) -> list[list[str]]:
    """One row per case (sorted by K, N, M, c), numbers straight from the CSV (columns: ``case_header``)."""
    cached = _has_cached(frame)
    lookup = {(row["provider"], *(row[k] for k in CASE_KEY)): row for row in frame.to_dict("records")}
    tuned = frame[frame["provider"] == "ss1_tuned"].sort_values(["K", "N", "M", "redn_factor"])
    rows = []
    for row in tuned.to_dict("records"):
        key = tuple(row[k] for k in CASE_KEY)

        def other(provider: str, column: str, key=key):
            found = lookup.get((provider, *key))
            return found[column] if found is not None else math.nan

        ok = row["status"] == "ok"
        rows.append([
            str(row["layer"]), str(row["M"]), str(row["K"]), str(row["N"]), str(row["redn_factor"]),
            fmt_ms(row["dense_ms"]), fmt_ms(row["ideal_ms"]),
            fmt_ms(row["median_ms"]) if ok else "failed",
            f"{fmt_ms(row['p20_ms'])}–{fmt_ms(row['p80_ms'])}" if ok else "–",
            fmt_ratio(row["speedup_vs_dense"]), fmt_ratio(row["fraction_of_ideal"]),
            fmt_ms(other("ss1_heuristic", "median_ms")), fmt_ratio(other("ss1_heuristic", "speedup_vs_dense")),
            fmt_ratio(other("lowrank", "speedup_vs_dense")), fmt_ratio(other("monarch", "speedup_vs_dense")),
            fmt_tflops(row["tflops"]), fmt_tflops(row["dense_equiv_tflops"]), fmt_mib(row["peak_mem_mib"]),
        ])
        if cached:
            rows[-1][_CACHED_AT:_CACHED_AT] = [fmt_ms(other("ss1_cached", "median_ms")),
                                               fmt_ratio(other("ss1_cached", "speedup_vs_dense")),
                                               fmt_ratio(other("ss1_cached", "fraction_of_ideal"))]
    return rows


E2E_HEADER = ["GPU", "dtype", "model", "phase", "compile", "tokens (M)", "c", "dense ms", "SS1 ms",
              "SS1 p20–p80 ms", "speedup vs dense", "dense kernel ms", "SS1 kernel ms", "kernel speedup",
              "wall/kernel dense", "wall/kernel SS1", "first call s dense / SS1", "SS1 tokens/s",
              "linear weights dense", "linear weights SS1", "timing"]


def _detail_field(detail, key: str) -> str:
    """The value of ``key=value`` in an e2e ``detail`` (``"; "``-separated), or ``–``."""
    for part in str(detail if not _missing(detail) else "").split("; "):
        name, _, value = part.partition("=")
        if name == key:
            return value
    return "–"


def _divide(numerator, denominator) -> float:
    return math.nan if _missing(numerator) or _missing(denominator) or not denominator else numerator / denominator


def fmt_seconds(value) -> str:
    return "–" if _missing(value) else f"{value:.3g}"


def e2e_table_rows(frame) -> list[list[str]]:
    """One row per (GPU, dtype, model, phase, compile mode, tokens, c), in the results' order,
    numbers from the CSV (kernel speedup = dense kernel ms / SS1 kernel ms; wall/kernel = median /
    kernel ms; SS1 tokens/s = M / SS1 time)."""
    frame = _e2e_frame(frame)
    key = (*CASE_KEY, "compile")
    dense = {tuple(row[k] for k in key): row for row in frame[frame["provider"] == "dense"].to_dict("records")}
    rows = []
    for row in _e2e_rows(frame).to_dict("records"):
        ok = row["status"] == "ok"
        dense_row = dense.get(tuple(row[k] for k in key), {})
        weights = [dense_row.get("weight_params"), row["weight_params"]]
        dense_kernel = dense_row.get("kernel_ms", math.nan)
        first_calls = [dense_row.get("compile_s", math.nan), row["compile_s"]]
        rows.append([
            str(row["gpu"]), str(row["dtype"]), str(row["model"]), str(row["phase"]), str(row["compile"]),
            str(row["M"]), str(row["redn_factor"]), fmt_ms(row["dense_ms"]),
            fmt_ms(row["median_ms"]) if ok else "failed",
            f"{fmt_ms(row['p20_ms'])}–{fmt_ms(row['p80_ms'])}" if ok else "–",
            fmt_ratio(row["speedup_vs_dense"]), fmt_ms(dense_kernel), fmt_ms(row["kernel_ms"]),
            fmt_ratio(_divide(dense_kernel, row["kernel_ms"])), fmt_ratio(_divide(row["dense_ms"], dense_kernel)),
            fmt_ratio(_divide(row["median_ms"], row["kernel_ms"])),
            " / ".join(fmt_seconds(value) for value in first_calls),
            "–" if not ok else f"{row['M'] / row['median_ms'] * 1e3:,.0f}",
            *("–" if _missing(w) else f"{int(w):,}" for w in weights),
            _detail_field(row["detail"], "timing").replace("|", "/"),
        ])
    return rows


def _e2e_section(frame, plots: list[Path]) -> list[str]:
    lines = ["## End-to-end models", "",
             "Made by `ss1bench e2e`: whole Hugging Face models built from their configs (random weights), "
             "dense against the same model converted with `convert_to_ss_linear` (every eligible linear layer; "
             "a tied LM head stays dense), timed in the same run and the same **compile** mode (`none`: eager; "
             "else `torch.compile(model, mode=...)`). **prefill**: one forward over batch × seq "
             "tokens; **decode**: one new token per sequence against a KV cache of seq tokens; **train**: one "
             "training step (forward with labels, loss, backward, AdamW step; fp32 weights, autocast to the "
             "dtype). **tokens (M)**: tokens per call; **speedup vs dense** = dense time / SS1 time; "
             "**kernel ms**: GPU kernel time per call (torch.profiler; – where not measured, e.g. on a CPU); "
             "**wall/kernel** = wall time / kernel time (1.0 = no host overhead); **first call s**: seconds of "
             "the first, untimed call (compilation included); **SS1 tokens/s** = M / SS1 time; "
             "**linear weights**: weights of all linear layers (SS1: compressed). There is no ideal end to end.",
             ""]
    for path in plots:
        lines += [f"![{path.stem}]({path.name})", ""]
    lines += [*_md_table(E2E_HEADER, e2e_table_rows(frame)), ""]
    failed = _e2e_frame(frame)
    failed = failed[failed["status"] != "ok"]
    if len(failed):
        lines += ["### Failed end-to-end timings", ""]
        lines += _md_table(["GPU", "dtype", "model and phase", "compile", "c", "provider", "status"],
                           [[str(r.gpu), str(r.dtype), str(r.layer), str(r.compile), str(r.redn_factor),
                             str(r.provider), str(r.status).replace("|", "/")] for r in failed.itertuples()])
        lines.append("")
    return lines


def _sources_table(sources) -> list[str]:
    header = ["results", "GPU", "torch", "triton", "date (UTC)", "git commit", "tuning database",
              "copy bandwidth GB/s", "complete"]
    rows = []
    for path, meta in sources:
        meta = meta or {}
        rows.append([f"`{path.name}`", str(meta.get("device_name", "–")), str(meta.get("torch", "–")),
                     str(meta.get("triton", "–")), str(meta.get("date", "–")),
                     f"`{str(meta.get('git_commit') or '–')[:12]}`", str(meta.get("database", "–")),
                     str(meta.get("copy_bandwidth_gbs", "–")), str(meta.get("complete", "–"))])
    return _md_table(header, rows)


def write_summary(frame, sources, plots: dict[tuple[str, str, str, str], list[Path]], out: Path,
                  e2e_plots: list[Path] | None = None) -> Path:
    """``summary.md``: sources, then the layer benchmark (headline, per-set sections, failures) when
    ``frame`` has bench rows, then the end-to-end section when it has e2e rows."""
    gpus = ", ".join(sorted(frame["gpu"].astype(str).unique()))
    is_e2e = frame["shape_set"] == E2E_SHAPE_SET
    bench, e2e = frame[~is_e2e], frame[is_e2e]
    commands = " and ".join(name for name, part in (("`ss1bench bench`", bench), ("`ss1bench e2e`", e2e))
                            if len(part))
    lines = [f"# SS1 benchmark report: {gpus}", "",
             f"Made by `ss1bench report` from {commands} results; every number below is a CSV value "
             "(or, in the headline, the median and range of CSV values).", ""]
    lines += [*_sources_table(sources), ""]
    bench_gpus = sorted(bench["gpu"].astype(str).unique())
    if len(bench_gpus) == 1:
        lines += _bench_sections(bench, plots)
    for index, gpu in enumerate(bench_gpus if len(bench_gpus) > 1 else []):  # one set of sections per GPU
        lines += _bench_sections(bench[bench["gpu"].astype(str) == gpu], plots, gpu=gpu, definitions=index == 0)
    if len(e2e):
        lines += _e2e_section(e2e, e2e_plots or [])
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _bench_sections(frame, plots: dict[tuple[str, str, str, str], list[Path]], gpu: str | None = None,
                    definitions: bool = True) -> list[str]:
    """Definitions, headline, per-set plots and cases, and failed timings of layer-benchmark rows
    (``plots`` keyed by GPU, shape set, dtype and mode). With ``gpu``, the rows are that GPU's and
    every heading names it (results of several GPUs: one set of sections per GPU)."""
    where = f" on {gpu}" if gpu else ""
    lines = [] if not definitions else ["## Definitions", "",
             "- **dense**: cuBLAS `F.linear` on (M, K) x (N, K) with bias, timed in the same run.",
             "- **ideal**: max(cuBLAS `F.linear` at K/c, memory floor); **fraction of ideal** = ideal time / "
             "SS1 time (1.0 = at the ideal); **speedup vs dense** = dense time / provider time.",
             "- **SS1 (tuning database)**: the `SSL` layer as built on this GPU (structure and launch configs "
             "from the tuning database when it has them); **SS1 (heuristic)**: the same layer with every "
             "launch forced to the default heuristic config.",
             *(["- **SS1 (tuning database, rotated-weight cache)** (*cached* in the tables and plots): the same "
                "layer with `cache_rotated_weight()` on, the inference setting: it keeps its rotated weight (one "
                "more (N, K_red) tensor) and its forward uses the `forward_rotated` launch configs; forward "
                "results only."] if _has_cached(frame) else []),
             "- **low-rank** and **Monarch**: plain PyTorch layers with as many weights as the SS1 layer "
             "(to within half a rank step).",
             f"- Times: `triton.testing.do_bench` median (spread p20–p80), L2 flushed before each call. "
             f"{FLOP_COUNTS}",
             f"- {MEMORY_FLOOR}",
             f"- Decode = M ≤ {DECODE_MAX_M}; prefill = M ≥ {PREFILL_MIN_M}.", ""]
    lines += [f"## Headline: SS1 (tuning database){where}", "",
              "Median over the distinct benchmarked (M, K, N) shapes of all sets (min–max in brackets)."
              + (" In forward results, the layer with the rotated-weight cache has its own rows."
                 if _has_cached(frame) else ""), ""]
    lines += [*_md_table(headline_header(frame), headline_rows(frame)), ""]
    summary, cases = slower_than_dense_rows(frame)
    if summary:
        lines += [f"## Slower than dense where the ideal is >= {EXPECTED_WIN}x faster{where}", "",
                  f"Cases (distinct M, K, N, c per dtype and mode) where dense time / ideal time >= {EXPECTED_WIN}, "
                  "i.e. SS1 should win, and SS1 (tuning database) is slower than dense"
                  + ("; mode *fwd (cached)*: the layer with the rotated-weight cache"
                     if _has_cached(frame) else "") + ".", "",
                  *_md_table(SLOWER_SUMMARY_HEADER, summary), ""]
        if cases:
            lines += [f"<details><summary>The {len(cases)} slower cases, worst first</summary>", "",
                      *_md_table(SLOWER_HEADER, cases), "", "</details>", ""]
    gpus = set(frame["gpu"].astype(str))
    for (plot_gpu, shape_set, dtype, mode), paths in plots.items():
        if plot_gpu not in gpus:
            continue
        part = frame[(frame["shape_set"] == shape_set) & (frame["dtype"] == dtype) & (frame["mode"] == mode)]
        lines += [f"## {shape_set} shapes, {dtype}, {MODE_TITLES[mode]}{where}", ""]
        for path in paths:
            lines += [f"![{path.stem}]({path.name})", ""]
        rows = case_rows(part)
        lines += [f"<details><summary>All {len(rows)} cases (SS1 rows of the CSV, with dense, ideal and the "
                  "peers)</summary>", "", *_md_table(case_header(part), rows), "", "</details>", ""]
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        lines += [f"## Failed timings{where}", ""]
        lines += _md_table(["dtype", "mode", "M", "K", "N", "c", "provider", "status"],
                           [[str(r.dtype), str(r.mode), str(r.M), str(r.K), str(r.N), str(r.redn_factor),
                             str(r.provider), str(r.status).replace("|", "/")] for r in failed.itertuples()])
        lines.append("")
    return lines


# ---- entry point ------------------------------------------------------------------------------


def write_report(paths: list[Path], out: Path) -> list[Path]:
    """Read the results and write every plot and ``summary.md`` into ``out``; returns the paths.

    All or nothing: the results are read and checked first (a damaged CSV, a non-numeric value:
    :class:`ReportError`, nothing written), the files are made in a temporary folder inside ``out``
    and moved into ``out`` once all of them exist. Results of several GPUs get one set of plots
    (file names prefixed with the GPU) and summary sections per GPU.
    """
    frame, sources = load_results(paths)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ss1bench-report-", dir=out))
    except OSError as error:
        raise ReportError(f"{out}: cannot write the report there ({error.strerror or error})") from None
    try:
        written = _write_files(frame, sources, staging)
        published = []
        for path in written:
            os.replace(path, out / path.name)
            published.append(out / path.name)
        return published
    except OSError as error:
        raise ReportError(f"{out}: cannot write the report there ({error.strerror or error})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_files(frame, sources, out: Path) -> list[Path]:
    """Every plot and ``summary.md`` of ``frame`` into ``out``; returns the paths."""
    plt = _pyplot()
    plots: dict[tuple[str, str, str, str], list[Path]] = {}
    is_e2e = frame["shape_set"] == E2E_SHAPE_SET
    bench, e2e = frame[~is_e2e], frame[is_e2e]
    several_gpus = bench["gpu"].astype(str).nunique() > 1
    set_order = {name: i for i, name in enumerate(dict.fromkeys(bench["shape_set"]))}
    groups = sorted(bench.groupby([bench["gpu"].astype(str), "shape_set", "dtype", "mode"], sort=False),
                    key=lambda item: (item[0][0], set_order[item[0][1]], _rank(DTYPES, item[0][2]),
                                      _rank(MODES, item[0][3])))
    for (gpu, shape_set, dtype, mode), part in groups:
        context, tag = _context(gpu, shape_set, dtype, mode), _file_tag(shape_set, dtype, mode)
        if several_gpus:
            tag = f"{gpu}_{tag}"
        written = plots.setdefault((gpu, shape_set, dtype, mode), [])
        for regime, m in _regimes(part):
            written.append(plot_speedup_vs_c(plt, part, context, tag, regime, m, out))
        if part["M"].nunique() > 1:
            written.append(plot_speedup_vs_m(plt, part, context, tag, out))
        written.append(plot_fraction_heatmap(plt, part, context, tag, out))
        for regime, m in _regimes(part):
            written.append(plot_peers(plt, part, context, tag, regime, m, out))
    e2e_plots = []
    e2e = e2e.assign(train=e2e["layer"].astype(str).str.endswith(" train"))
    e2e_groups = sorted(e2e.groupby(["gpu", "dtype", "train"], sort=False),
                        key=lambda item: (str(item[0][0]), _rank(DTYPES, item[0][1]), item[0][2]))
    for (gpu, dtype, train), part in e2e_groups:
        if (part["provider"] == "ss1_tuned").any():
            what = "training step (fp32 weights, autocast to the dtype)" if train else "inference (no_grad)"
            e2e_plots.append(plot_e2e_speedup(plt, part, f"{gpu}, {dtype}, {what}",
                                              f"{gpu}_{dtype}{'_train' if train else ''}", out))
    summary = write_summary(frame, sources, plots, out, e2e_plots)
    return [path for group in plots.values() for path in group] + e2e_plots + [summary]
