"""``write_report``: read the results, draw every plot, write ``summary.md``, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ss1bench.bench.schema import DTYPES, MODES, PEER_PROVIDERS, mode_slug

from .common import E2E_SHAPE_SET, MODE_TITLES, ReportError, present, rank, regimes, tuned_providers
from .load import load_results
from .plots import (
    HEATMAP_PROVIDERS,
    plot_e2e_speedup,
    plot_fraction_heatmap,
    plot_peers,
    plot_speedup_vs_c,
    plot_speedup_vs_m,
    pyplot,
)
from .summary import write_summary


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
    """Every plot and ``summary.md`` of ``frame`` into ``out``; returns the paths. A plot whose
    providers the results have no rows of (a run of some providers) is not drawn: the speedup-vs-M
    plot needs an SS1 layer on the tuning database, the heatmap ``ss1_tuned`` or ``ss1_heuristic``,
    the peers plot a peer."""
    plt = pyplot()
    plots: dict[tuple[str, str, str, str], list[Path]] = {}
    is_e2e = frame["shape_set"] == E2E_SHAPE_SET
    bench, e2e = frame[~is_e2e], frame[is_e2e]
    several_gpus = bench["gpu"].astype(str).nunique() > 1
    set_order = {name: i for i, name in enumerate(dict.fromkeys(bench["shape_set"]))}
    groups = sorted(bench.groupby([bench["gpu"].astype(str), "shape_set", "dtype", "mode"], sort=False),
                    key=lambda item: (item[0][0], set_order[item[0][1]], rank(DTYPES, item[0][2]),
                                      rank(MODES, item[0][3])))
    for (gpu, shape_set, dtype, mode), part in groups:
        context, tag = _context(gpu, shape_set, dtype, mode), _file_tag(shape_set, dtype, mode)
        if several_gpus:
            tag = f"{gpu}_{tag}"
        written = plots.setdefault((gpu, shape_set, dtype, mode), [])
        for regime, m in regimes(part):
            written.append(plot_speedup_vs_c(plt, part, context, tag, regime, m, out))
        if part["M"].nunique() > 1 and tuned_providers(part):
            written.append(plot_speedup_vs_m(plt, part, context, tag, out))
        if present(part, HEATMAP_PROVIDERS):
            written.append(plot_fraction_heatmap(plt, part, context, tag, out))
        if present(part, PEER_PROVIDERS):
            for regime, m in regimes(part):
                written.append(plot_peers(plt, part, context, tag, regime, m, out))
    e2e_plots = []
    e2e = e2e.assign(train=e2e["layer"].astype(str).str.endswith(" train"))
    e2e_groups = sorted(e2e.groupby(["gpu", "dtype", "train"], sort=False),
                        key=lambda item: (str(item[0][0]), rank(DTYPES, item[0][1]), item[0][2]))
    for (gpu, dtype, train), part in e2e_groups:
        if (part["provider"] == "ss1_tuned").any():
            what = "training step (fp32 weights, autocast to the dtype)" if train else "inference (no_grad)"
            e2e_plots.append(plot_e2e_speedup(plt, part, f"{gpu}, {dtype}, {what}",
                                              f"{gpu}_{dtype}{'_train' if train else ''}", out))
    summary = write_summary(frame, sources, plots, out, e2e_plots)
    return [path for group in plots.values() for path in group] + e2e_plots + [summary]


def _file_tag(shape_set: str, dtype: str, mode: str) -> str:
    return f"{shape_set}_{dtype}_{mode_slug(mode)}"


def _context(gpu: str, shape_set: str, dtype: str, mode: str) -> str:
    return f"{gpu}, {shape_set} shapes, {dtype}, {MODE_TITLES[mode]}"
