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

SS1 with the rotated-weight cache (``ss1_cached``, ``fwd`` results only) gets a line of its own in
both speedup plots and rows and columns of its own in the summary's headline and case tables,
where the results have it; results without it get neither. The same holds for every provider a
run may leave out (``ss1bench bench --providers``): one the results have no rows of gets no line,
bar, heatmap panel, table column or definition (never a cell that reads as failed), and a plot
with nothing of its own left is not drawn (speedup vs M without an SS1 layer on the tuning
database, the heatmap without ``ss1_tuned`` and ``ss1_heuristic``, the peers plot without a peer).

Rows of ``ss1bench e2e`` (``shape_set`` ``"e2e"``: whole models, not layers) have no ideal and no
peers; they get their own plot, ``e2e_speedup_<gpu>_<dtype>.png`` (``..._train.png`` for training
steps: speedup vs c per model, phase and compile mode, with the GPU kernel-time speedup marked), and
an "End-to-end models" section in the summary (wall and kernel times side by side). Their own
columns (``schema.E2E_COLUMNS``: compile mode, kernel time, first-call time) are optional: an e2e
CSV without them reads as eager, without kernel times. Bench and e2e CSVs mix freely.

Modules: :mod:`.load` (reading and checking the CSVs), :mod:`.plots`, :mod:`.summary` (the
markdown), :mod:`.write` (:func:`write_report`: all of it, all or nothing), :mod:`.common`
(constants, formatting and row helpers they share).
"""

from .common import (
    DECODE_MAX_M,
    E2E_COMPILE_MODES,
    E2E_PHASES,
    E2E_SHAPE_SET,
    PREFILL_MIN_M,
    ReportError,
)
from .load import load_results, result_files
from .plots import (
    STYLE,
    plot_e2e_speedup,
    plot_fraction_heatmap,
    plot_peers,
    plot_speedup_vs_c,
    plot_speedup_vs_m,
)
from .summary import (
    CACHED_CASE_COLUMNS,
    CASE_HEADER,
    E2E_HEADER,
    EXPECTED_WIN,
    HEADLINE_HEADER,
    HEADLINE_LAYER_COLUMN,
    SLOWER_HEADER,
    SLOWER_SUMMARY_HEADER,
    case_header,
    case_rows,
    e2e_table_rows,
    headline_header,
    headline_rows,
    slower_than_dense_rows,
    write_summary,
)
from .write import write_report

__all__ = [
    "CACHED_CASE_COLUMNS", "CASE_HEADER", "DECODE_MAX_M", "E2E_COMPILE_MODES", "E2E_HEADER", "E2E_PHASES",
    "E2E_SHAPE_SET", "EXPECTED_WIN", "HEADLINE_HEADER", "HEADLINE_LAYER_COLUMN", "PREFILL_MIN_M", "SLOWER_HEADER",
    "SLOWER_SUMMARY_HEADER", "STYLE", "ReportError", "case_header", "case_rows", "e2e_table_rows", "headline_header",
    "headline_rows", "load_results", "plot_e2e_speedup", "plot_fraction_heatmap", "plot_peers",
    "plot_speedup_vs_c", "plot_speedup_vs_m", "result_files", "slower_than_dense_rows", "write_report",
    "write_summary",
]
