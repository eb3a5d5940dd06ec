"""The report's plots: speedup vs c, speedup vs M, fraction-of-ideal heatmaps, SS1 against its
peers, and end-to-end speedups. Each ``plot_*`` takes the pyplot module (:func:`pyplot`), the rows
of one plot, its context line and file tag, and returns the PNG it wrote.

matplotlib (Agg backend) and numpy are imported on first use, never at import time.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from ss1bench.bench.schema import E2E_FROZEN_SUFFIX, PEER_PROVIDERS, PROVIDER_LABELS

from .common import (
    E2E_COMPILE_MODES,
    E2E_PHASE_TITLES,
    E2E_PHASES,
    e2e_ss1_rows,
    is_missing,
    present,
    rank,
    tuned_providers,
)

#: Line and bar styles per provider, fixed so every plot reads the same.
STYLE = {
    "ss1_tuned": {"color": "#1f77b4", "marker": "o", "linestyle": "-"},
    "ss1_cached": {"color": "#08306b", "marker": "D", "linestyle": "-."},
    "ss1_heuristic": {"color": "#6baed6", "marker": "s", "linestyle": "--"},
    "lowrank": {"color": "#ff7f0e", "marker": "^", "linestyle": "-"},
    "monarch": {"color": "#2ca02c", "marker": "v", "linestyle": "-"},
    "ideal": {"color": "black", "marker": None, "linestyle": "--"},
}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), with the report's font sizes and dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 9,
                         "figure.dpi": 110, "savefig.dpi": 110})
    return plt


#: The panels of the fraction-of-ideal heatmap (each where the results have its rows).
HEATMAP_PROVIDERS = ("ss1_tuned", "ss1_heuristic")
#: The bars of the peers plot, each where the results have its rows; the plot is drawn where they
#: have a peer's.
PEERS_PLOT_PROVIDERS = ("ss1_tuned", *PEER_PROVIDERS)


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
    finite = [v for v in values if not is_missing(v) and v > 0] + [1.0]
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


def _shape_title(k: int, n: int, layer: str) -> str:
    return f"{layer}\nK={k} → N={n}"


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


def _ideal_rows(cell):
    """The ``dense`` rows of ``cell``: every case has one (a yardstick), and every row of a case
    carries the case's dense and ideal times."""
    return cell[cell["provider"] == "dense"]


def plot_speedup_vs_c(plt, frame, context: str, tag: str, regime: str, m: int, out: Path) -> Path:
    part = frame[frame["M"] == m]
    shapes = _layer_shapes(part)
    providers = present(part, (*tuned_providers(part), "ss1_heuristic", *PEER_PROVIDERS))
    fig, axes = _grid(plt, len(shapes))
    handles = {}
    for ax, (k, n, layer) in zip(axes, shapes, strict=True):
        cell = part[(part["K"] == k) & (part["N"] == n)]
        values = []
        for provider in providers:
            rows = cell[cell["provider"] == provider].sort_values("redn_factor")
            (line,) = ax.plot(rows["redn_factor"], rows["speedup_vs_dense"], label=PROVIDER_LABELS[provider],
                              **STYLE[provider])
            handles.setdefault(PROVIDER_LABELS[provider], line)
            values.extend(rows["speedup_vs_dense"])
        ideal = _ideal_rows(cell).sort_values("redn_factor")
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
    providers = tuned_providers(frame)
    colors = plt.get_cmap("viridis")([i / max(len(factors) - 1, 1) * 0.85 for i in range(len(factors))])
    fig, axes = _grid(plt, len(shapes))
    handles = {}
    for ax, (k, n, layer) in zip(axes, shapes, strict=True):
        shape_rows = frame[(frame["K"] == k) & (frame["N"] == n)]
        cell = shape_rows[shape_rows["provider"].isin(providers)]
        values = []
        for color, c in zip(colors, factors, strict=True):
            for provider in providers:
                rows = cell[(cell["redn_factor"] == c) & (cell["provider"] == provider)].sort_values("M")
                (line,) = ax.plot(rows["M"], rows["speedup_vs_dense"], **{**STYLE[provider], "color": color})
                handles.setdefault(f"{SPEEDUP_VS_M_NAMES[provider]} c={c}", line)
                values.extend(rows["speedup_vs_dense"])
            rows = _ideal_rows(shape_rows)
            rows = rows[rows["redn_factor"] == c].sort_values("M")
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
    panels = present(frame, HEATMAP_PROVIDERS)
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
    providers = present(part, PEERS_PLOT_PROVIDERS)
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
    peers = " and ".join(PROVIDER_LABELS[p] for p in providers if p in PEER_PROVIDERS)
    what = (f"{'SS1 vs ' if 'ss1_tuned' in providers else ''}{peers} at equal parameter count, M={m} ({regime}); "
            "dotted line = dense")
    return _finish(fig, plt, what, context, out / f"peers_{tag}_{regime}.png", handles, labels)


def _e2e_panel_title(phase: str, mode: str) -> str:
    base, frozen = mode.removesuffix(E2E_FROZEN_SUFFIX), mode.endswith(E2E_FROZEN_SUFFIX)
    how = "eager" if mode == "none" else f"torch.compile mode={base}" + (", parameter freezing" if frozen else "")
    return f"{E2E_PHASE_TITLES.get(phase, phase)}\n{how}"


def plot_e2e_speedup(plt, frame, context: str, tag: str, out: Path) -> Path:
    """Bars of SS1's end-to-end speedup over the dense model: one panel per (compile mode, phase)
    (a row per mode), one bar group per model (and tokens per call), one bar per c, the value
    written on each bar; a black tick marks the GPU kernel-time speedup where it was measured."""
    import numpy as np

    ss1 = e2e_ss1_rows(frame)
    phases = sorted(ss1["phase"].unique(), key=lambda phase: rank(E2E_PHASES, phase))
    modes = sorted(ss1["compile"].unique(), key=lambda mode: rank(E2E_COMPILE_MODES, mode))
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
