"""``ss1bench report`` on a small fixture CSV with the runner's exact columns: every file is
written and the summary's numbers are the CSV's. A second fixture adds ``ss1_cached`` rows (fwd)
and fwd+bwd rows (which have none): the cached layer gets its own lines and table rows there only.
A third is a run of some providers (``ss1bench bench --providers``): the absent ones get no line,
bar, panel, column or definition."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ss1bench import report
from ss1bench.bench.schema import (
    CASE_KEY,
    PROVIDER_LABELS,
    PROVIDERS,
    RESULT_COLUMNS,
    SUPERSEDED_DEFINITIONS,
    YARDSTICKS,
)
from ss1bench.cli import main
from ss1bench.report import (
    CACHED_CASE_COLUMNS,
    CASE_HEADER,
    EXPECTED_WIN,
    HEADLINE_HEADER,
    SLOWER_HEADER,
    SLOWER_SUMMARY_HEADER,
)

LAYERS = [("gpt2-small mlp.fc", 768, 3072), ("gpt2-small mlp.proj", 3072, 768)]
M_VALUES = [16, 4096]
FACTORS = [2, 4]


def _fixture_frame(cached: bool = False, modes: tuple[str, ...] = ("fwd",)) -> pd.DataFrame:
    """Plausible timings with every derived column computed as the runner does; ``ss1_cached`` rows
    only with ``cached`` (results made before it existed have none) and, as the runner writes them,
    only in fwd cases."""
    rows = []
    for mode, (index, (layer, k, n)) in ((mode, item) for mode in modes for item in enumerate(LAYERS)):
        for m in M_VALUES:
            dense = 2 * m * n * k / 500e12 * 1e3 + 0.011
            for c in FACTORS:
                k_red = k // c
                floor = 2 * (m * k + n * k_red + n + m * n) / 4.2e12 * 1e3
                reduced = dense / c + 0.004
                ideal = max(reduced, floor)
                times = {"dense": dense, "dense_reduced": reduced, "memory_floor": floor,
                         "ss1_tuned": ideal / (0.45 + 0.1 * index + 0.05 * c), "ss1_heuristic": ideal / 0.3,
                         "ss1_cached": ideal / (0.6 + 0.1 * index + 0.05 * c + 0.01 * math.log2(m)),
                         "lowrank": reduced * 1.25, "monarch": reduced * 1.9}
                for provider in PROVIDERS:
                    if not provider.runs_in(mode) or (provider.name == "ss1_cached" and not cached):
                        continue
                    ms = times[provider.name]
                    ss1 = provider.name.startswith("ss1")
                    flops = math.nan if provider.name == "memory_floor" else 2 * m * n * k_red
                    status = "ok"
                    if (provider.name, m, k, c) == ("monarch", 16, 768, 4):  # one failed timing
                        status, ms = "RuntimeError: out of memory", math.nan
                    rows.append({
                        "gpu": "H200", "dtype": "fp16", "mode": mode, "shape_set": "gpt2", "layer": layer,
                        "M": m, "K": k, "N": n, "redn_factor": c, "provider": provider.name, "status": status,
                        "block_k": 64 if ss1 else None, "block_n": 128 if ss1 else None, "k_red": k_red,
                        "detail": "forward=128x128x64/w8/s3/g8" if ss1 else "", "weight_params": n * k_red,
                        "flops": flops, "dense_flops": 2 * m * n * k, "median_ms": ms,
                        "p20_ms": ms * 0.97 if provider.measured else math.nan,
                        "p80_ms": ms * 1.04 if provider.measured else math.nan,
                        "tflops": flops / ms * 1e-9, "dense_equiv_tflops": 2 * m * n * k / ms * 1e-9,
                        "dense_ms": dense, "ideal_ms": ideal, "speedup_vs_dense": dense / ms,
                        "fraction_of_ideal": ideal / ms,
                        "peak_mem_mib": 20.0 + index if provider.measured else math.nan,
                    })
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def _panels(fig) -> list[dict]:
    """What each titled panel of ``fig`` draws: its lines' data (``(x, y)``, every line, the dotted
    dense line included), its bars (``(bar centre, length, face colour)``) and its images' values."""
    import numpy as np

    return [{"title": ax.get_title(),
             "lines": [([float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()])
                       for line in ax.get_lines()],
             "bars": [(patch.get_y() + patch.get_height() / 2, float(patch.get_width()), patch.get_facecolor())
                      for patch in ax.patches],
             "images": [np.ma.filled(np.ma.asarray(image.get_array(), dtype=float), np.nan)
                        for image in ax.get_images()]}
            for ax in fig.axes if ax.get_visible() and ax.get_title()]


def _write_report(folder, frame: pd.DataFrame, stem: str):
    """Write ``frame`` as ``stem.csv`` (+ sidecar) and run ``ss1bench report`` on it; returns (out folder,
    CLI output, legends: per PNG name, each legend label with its handle's style and first-panel data,
    and under ``"_panels"`` what every panel draws, :func:`_panels`)."""
    frame.to_csv(folder / f"{stem}.csv", index=False)
    (folder / f"{stem}.json").write_text(json.dumps({
        "device_name": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "date": "2026-01-01T00:00:00+00:00",
        "git_commit": "0123456789abcdef", "database": "shipped tuning_db/H200.json", "copy_bandwidth_gbs": 4230.0,
        "complete": True}))
    legends, real_finish = {}, report.plots._finish

    def finish(fig, plt, what, context, path, handles=None, labels=None, ncol=None):
        legends[path.name] = {label: {"linestyle": handle.get_linestyle(), "marker": handle.get_marker(),
                                      "x": [float(v) for v in handle.get_xdata()],
                                      "y": [float(v) for v in handle.get_ydata()]}
                              for label, handle in zip(labels or [], handles or [], strict=True)
                              if hasattr(handle, "get_xdata")}
        legends[path.name]["_order"] = list(labels or [])
        legends[path.name]["_panels"] = _panels(fig)
        return real_finish(fig, plt, what, context, path, handles, labels, ncol)

    out = folder / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report.plots, "_finish", finish)
        result = CliRunner().invoke(main, ["report", str(folder / f"{stem}.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output, legends


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """Results without ss1_cached rows (made before it existed)."""
    frame = _fixture_frame()
    out, output, legends = _write_report(tmp_path_factory.mktemp("report"), frame, "bench_gpt2_fp16_fwd")
    return out, frame, output, legends


@pytest.fixture(scope="module")
def cached_report_dir(tmp_path_factory):
    """Results with ss1_cached rows in fwd, and fwd+bwd results (which have none)."""
    frame = _fixture_frame(cached=True, modes=("fwd", "fwd+bwd"))
    out, output, legends = _write_report(tmp_path_factory.mktemp("report_cached"), frame,
                                         "bench_gpt2_fp16_fwd-fwdbwd")
    return out, frame, output, legends


def _some_providers(frame: pd.DataFrame, providers: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` as a run of ``providers`` (and the yardsticks every run times) writes it."""
    return frame[frame["provider"].isin([*YARDSTICKS, *providers])].reset_index(drop=True)


@pytest.fixture(scope="module")
def partial_report_dir(tmp_path_factory):
    """Results of ``ss1bench bench --providers ss1_tuned,ss1_heuristic``: no peers, no cached layer."""
    frame = _some_providers(_fixture_frame(), ("ss1_tuned", "ss1_heuristic"))
    out, output, legends = _write_report(tmp_path_factory.mktemp("report_partial"), frame,
                                         "bench_gpt2_fp16_fwd_ss1_tuned-ss1_heuristic")
    return out, frame, output, legends


def test_report_writes_every_file(report_dir):
    out, _, output, _ = report_dir
    tag = "gpt2_fp16_fwd"
    expected = {f"speedup_vs_c_{tag}_decode.png", f"speedup_vs_c_{tag}_prefill.png", f"speedup_vs_m_{tag}.png",
                f"fraction_of_ideal_{tag}.png", f"peers_{tag}_decode.png", f"peers_{tag}_prefill.png", "summary.md"}
    assert {p.name for p in out.iterdir()} == expected
    for name in expected:
        assert (out / name).stat().st_size > 1000, name
        assert f"wrote {out / name}" in output
    summary = (out / "summary.md").read_text()
    for name in expected - {"summary.md"}:
        assert f"]({name})" in summary, f"{name} is not embedded"
    for text in ("NVIDIA H200", "2.11.0", "3.6.0", "`0123456789ab`", "shipped tuning_db/H200.json", "4230.0"):
        assert text in summary


def _tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
    tables, current = [], None
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if current is None:
                current = (cells, [])
                tables.append(current)
            elif not all(re.fullmatch(r"-+", cell) for cell in cells):
                current[1].append(cells)
        else:
            current = None
    return tables


def _close(text: str, value: float, decimals: int | None = None, digits: int | None = None) -> bool:
    """``text`` is ``value`` printed with ``decimals`` places or ``digits`` significant digits."""
    if math.isnan(value):
        return text == "–"
    number = float(text)
    if decimals is not None:
        return abs(number - value) <= 0.5 * 10 ** -decimals + 1e-12
    return abs(number - value) <= 0.5 * 10 ** (math.floor(math.log10(abs(value))) - digits + 1) * (1 + 1e-9)


def test_summary_numbers_equal_the_csv(report_dir):
    out, frame, _, _ = report_dir
    tables = _tables((out / "summary.md").read_text())
    cases = next(rows for header, rows in tables if header == CASE_HEADER)
    assert len(cases) == len(LAYERS) * len(M_VALUES) * len(FACTORS)
    col = {name: i for i, name in enumerate(CASE_HEADER)}
    for cells in cases:
        m, k, n, c = (int(cells[col[name]]) for name in ("M", "K", "N", "c"))
        rows = frame[(frame["M"] == m) & (frame["K"] == k) & (frame["N"] == n) & (frame["redn_factor"] == c)]
        by = rows.set_index("provider")
        ss1 = by.loc["ss1_tuned"]
        assert cells[col["layer"]] == ss1["layer"]
        assert _close(cells[col["dense ms"]], ss1["dense_ms"], digits=4)
        assert _close(cells[col["ideal ms"]], ss1["ideal_ms"], digits=4)
        assert _close(cells[col["SS1 ms"]], ss1["median_ms"], digits=4)
        low, high = cells[col["SS1 p20–p80 ms"]].split("–")
        assert _close(low, ss1["p20_ms"], digits=4) and _close(high, ss1["p80_ms"], digits=4)
        assert _close(cells[col["speedup vs dense"]], ss1["speedup_vs_dense"], decimals=2)
        assert _close(cells[col["fraction of ideal"]], ss1["fraction_of_ideal"], decimals=2)
        assert _close(cells[col["SS1 heuristic ms"]], by.loc["ss1_heuristic", "median_ms"], digits=4)
        assert _close(cells[col["heuristic speedup"]], by.loc["ss1_heuristic", "speedup_vs_dense"], decimals=2)
        assert _close(cells[col["low-rank speedup"]], by.loc["lowrank", "speedup_vs_dense"], decimals=2)
        assert _close(cells[col["Monarch speedup"]], by.loc["monarch", "speedup_vs_dense"], decimals=2)
        assert _close(cells[col["SS1 TFLOP/s"]], ss1["tflops"], decimals=1)
        assert _close(cells[col["dense-equiv. TFLOP/s"]], ss1["dense_equiv_tflops"], decimals=1)
        assert _close(cells[col["SS1 peak MiB"]], ss1["peak_mem_mib"], decimals=0)

    headline = next(rows for header, rows in tables if header == HEADLINE_HEADER)
    ss1 = frame[frame["provider"] == "ss1_tuned"]
    assert [int(cells[2]) for cells in headline] == FACTORS
    for cells in headline:
        part = ss1[ss1["redn_factor"] == int(cells[2])]
        for index, (regime, column) in enumerate([(16, "speedup_vs_dense"), (16, "fraction_of_ideal"),
                                                  (4096, "speedup_vs_dense"), (4096, "fraction_of_ideal")]):
            values = part[part["M"] == regime][column]
            match = re.fullmatch(r"(\S+) \((\S+)–(\S+)\)", cells[3 + index])
            assert match, cells[3 + index]
            for text, value in zip(match.groups(), (values.median(), values.min(), values.max()), strict=True):
                assert _close(text, value, decimals=2), (cells, column)

    failed = next(rows for header, rows in tables if "status" in header)
    assert failed == [["fp16", "fwd", "16", "768", "3072", "4", "monarch", "RuntimeError: out of memory"]]


def test_slower_than_dense_cases_are_counted_from_the_csv(report_dir):
    out, frame, _, _ = report_dir
    tables = _tables((out / "summary.md").read_text())
    ss1 = frame[frame["provider"] == "ss1_tuned"]
    expected = ss1[ss1["dense_ms"] / ss1["ideal_ms"] >= EXPECTED_WIN]
    slower = expected[expected["speedup_vs_dense"] < 1]
    assert 0 < len(slower) < len(expected)  # the fixture has both kinds
    summary = next(rows for header, rows in tables if header == SLOWER_SUMMARY_HEADER)
    decode = int((slower["M"] <= 64).sum())
    assert summary == [["fp16", "fwd", f"{len(slower)} of {len(expected)}", str(decode), str(len(slower) - decode)]]
    cases = next(rows for header, rows in tables if header == SLOWER_HEADER)
    assert len(cases) == len(slower)
    speedups = [float(cells[SLOWER_HEADER.index("speedup vs dense")]) for cells in cases]
    assert speedups == sorted(speedups) and max(speedups) < 1


CACHED = PROVIDER_LABELS["ss1_cached"]
SPEEDUP_VS_C_LABELS = [PROVIDER_LABELS[p] for p in ("ss1_tuned", "ss1_heuristic", "lowrank", "monarch")] + [
    "ideal (dense / ideal time)"]
SPEEDUP_VS_M_LABELS = [label for c in FACTORS for label in (f"SS1 c={c}", f"ideal c={c} (dashed)")]


def _spread_matches(text: str, values) -> bool:
    """``text`` is ``median (min–max)`` of ``values`` at two decimals."""
    match = re.fullmatch(r"(\S+) \((\S+)–(\S+)\)", text)
    return bool(match) and all(_close(t, v, decimals=2) for t, v in
                               zip(match.groups(), (values.median(), values.min(), values.max()), strict=True))


def test_results_without_cached_rows_read_as_before(report_dir):
    """No ss1_cached rows: no cached line, column, row or definition anywhere."""
    out, _, _, legends = report_dir
    summary = (out / "summary.md").read_text()
    assert "rotated-weight cache" not in summary and "cached" not in summary
    headers = [header for header, _ in _tables(summary)]
    assert HEADLINE_HEADER in headers and CASE_HEADER in headers
    for regime in ("decode", "prefill"):
        assert legends[f"speedup_vs_c_gpt2_fp16_fwd_{regime}.png"]["_order"] == SPEEDUP_VS_C_LABELS
    assert legends["speedup_vs_m_gpt2_fp16_fwd.png"]["_order"] == SPEEDUP_VS_M_LABELS


def test_cached_layer_has_its_own_lines_in_fwd_plots(cached_report_dir):
    out, frame, _, legends = cached_report_dir
    assert {"speedup_vs_c_gpt2_fp16_fwdbwd_decode.png", "speedup_vs_m_gpt2_fp16_fwdbwd.png"} <= {
        p.name for p in out.iterdir()}
    first_layer = (frame["K"] == LAYERS[0][1]) & (frame["N"] == LAYERS[0][2]) & (frame["mode"] == "fwd")
    cached = frame[first_layer & (frame["provider"] == "ss1_cached")]
    for regime, m in (("decode", 16), ("prefill", 4096)):
        legend = legends[f"speedup_vs_c_gpt2_fp16_fwd_{regime}.png"]
        assert legend["_order"] == [SPEEDUP_VS_C_LABELS[0], CACHED, *SPEEDUP_VS_C_LABELS[1:]]
        rows = cached[cached["M"] == m].sort_values("redn_factor")
        assert legend[CACHED]["x"] == list(rows["redn_factor"])
        assert legend[CACHED]["y"] == pytest.approx(list(rows["speedup_vs_dense"]))
        tuned = legend[SPEEDUP_VS_C_LABELS[0]]
        assert (legend[CACHED]["linestyle"], legend[CACHED]["marker"]) != (tuned["linestyle"], tuned["marker"])
        assert legends[f"speedup_vs_c_gpt2_fp16_fwdbwd_{regime}.png"]["_order"] == SPEEDUP_VS_C_LABELS
    legend = legends["speedup_vs_m_gpt2_fp16_fwd.png"]
    assert legend["_order"] == [label for c in FACTORS
                                for label in (f"SS1 c={c}", f"SS1 cached c={c}", f"ideal c={c} (dashed)")]
    for c in FACTORS:
        rows = cached[cached["redn_factor"] == c].sort_values("M")
        assert legend[f"SS1 cached c={c}"]["x"] == list(rows["M"])
        assert legend[f"SS1 cached c={c}"]["y"] == pytest.approx(list(rows["speedup_vs_dense"]))
        assert legend[f"SS1 cached c={c}"]["linestyle"] != legend[f"SS1 c={c}"]["linestyle"]
    assert legends["speedup_vs_m_gpt2_fp16_fwdbwd.png"]["_order"] == SPEEDUP_VS_M_LABELS


# ---- every plotted value is the CSV's: lines, bars and heatmap cells of every panel ----

MODE_OF_SLUG = {"fwd": "fwd", "fwdbwd": "fwd+bwd"}
DENSE_LINE = ("dense (dotted, at 1)", [0.0, 1.0], [1.0, 1.0])


def _panel_shape(title: str) -> tuple[int, int]:
    match = re.search(r"K=(\d+) → N=(\d+)", title)
    assert match, title
    return int(match[1]), int(match[2])


def _assert_lines(where: str, lines: list, expected: list) -> None:
    """``lines`` (``(x, y)`` each) are exactly the ``expected`` ``(name, x, y)`` series, in any order."""
    left = list(lines)
    for name, x, y in expected:
        x, y = [float(v) for v in x], [float(v) for v in y]
        found = next((i for i, (lx, ly) in enumerate(left)
                      if lx == pytest.approx(x, rel=1e-12) and ly == pytest.approx(y, rel=1e-12, nan_ok=True)), None)
        assert found is not None, f"{where}: no line plots {name} (x={x}, y={y}); lines not matched yet: {left}"
        left.pop(found)
    assert not left, f"{where}: lines that plot no series of the CSV: {left}"


def _ideal(rows: pd.DataFrame) -> pd.Series:
    """The ideal speedup of ``ss1_tuned`` rows: dense time / ideal time."""
    return rows["dense_ms"] / rows["ideal_ms"]


@pytest.mark.parametrize("fixture", ["report_dir", "cached_report_dir", "partial_report_dir"])
def test_every_line_of_the_speedup_plots_is_the_csv(fixture, request):
    _, frame, _, legends = request.getfixturevalue(fixture)
    checked = 0
    for name, legend in legends.items():
        by_c = re.fullmatch(r"speedup_vs_c_gpt2_fp16_(\w+?)_(decode|prefill)\.png", name)
        by_m = re.fullmatch(r"speedup_vs_m_gpt2_fp16_(\w+)\.png", name)
        if not (by_c or by_m):
            continue
        mode = MODE_OF_SLUG[(by_c or by_m)[1]]
        part = frame[frame["mode"] == mode]
        for panel in legend["_panels"]:
            k, n = _panel_shape(panel["title"])
            cell = part[(part["K"] == k) & (part["N"] == n)]
            expected = [DENSE_LINE]
            if by_c:
                cell = cell[cell["M"] == (16 if by_c[2] == "decode" else 4096)]
                for provider in ("ss1_tuned", "ss1_cached", "ss1_heuristic", "lowrank", "monarch"):
                    rows = cell[cell["provider"] == provider].sort_values("redn_factor")
                    if len(rows):  # ss1_cached: only where the results have it
                        expected.append((provider, rows["redn_factor"], rows["speedup_vs_dense"]))
                tuned = cell[cell["provider"] == "ss1_tuned"].sort_values("redn_factor")
                expected.append(("ideal", tuned["redn_factor"], _ideal(tuned)))
            else:
                for c in FACTORS:
                    for provider in ("ss1_tuned", "ss1_cached"):
                        rows = cell[(cell["provider"] == provider) & (cell["redn_factor"] == c)].sort_values("M")
                        if len(rows):
                            expected.append((f"{provider} c={c}", rows["M"], rows["speedup_vs_dense"]))
                    tuned = cell[(cell["provider"] == "ss1_tuned") & (cell["redn_factor"] == c)].sort_values("M")
                    expected.append((f"ideal c={c}", tuned["M"], _ideal(tuned)))
            _assert_lines(f"{name} K={k} N={n}", panel["lines"], expected)
            checked += 1
    modes = frame["mode"].nunique()
    assert checked == modes * len(LAYERS) * 3  # two speedup-vs-c plots and one speedup-vs-M plot per mode


@pytest.mark.parametrize("fixture", ["report_dir", "cached_report_dir"])
def test_every_bar_of_the_peer_plots_is_the_csv(fixture, request):
    from matplotlib.colors import to_rgba

    from ss1bench.report import STYLE

    _, frame, _, legends = request.getfixturevalue(fixture)
    checked = 0
    for name, legend in legends.items():
        match = re.fullmatch(r"peers_gpt2_fp16_(\w+?)_(decode|prefill)\.png", name)
        if not match:
            continue
        part = frame[(frame["mode"] == MODE_OF_SLUG[match[1]]) & (frame["M"] == (16 if match[2] == "decode" else 4096))]
        for panel in legend["_panels"]:
            c = int(panel["title"].removeprefix("c = "))
            providers = {to_rgba(STYLE[p]["color"]): p for p in ("ss1_tuned", "lowrank", "monarch")}
            drawn = {(round(centre), providers[tuple(color)]): length for centre, length, color in panel["bars"]}
            expected = {}
            for index, (_, k, n) in enumerate(LAYERS):
                for provider in providers.values():
                    row = part[(part["K"] == k) & (part["N"] == n) & (part["redn_factor"] == c)
                               & (part["provider"] == provider)]
                    expected[(index, provider)] = float(row["speedup_vs_dense"].iloc[0])
            assert drawn.keys() == expected.keys(), (name, c)
            for key, value in expected.items():
                assert drawn[key] == pytest.approx(value, rel=1e-12, nan_ok=True), (
                    f"{name} c={c} {key}: bar of {drawn[key]}, the CSV's speedup_vs_dense is {value}")
            checked += 1
    assert checked == frame["mode"].nunique() * 2 * len(FACTORS)


@pytest.mark.parametrize("fixture", ["report_dir", "cached_report_dir", "partial_report_dir"])
def test_every_heatmap_cell_is_the_csv_fraction_of_ideal(fixture, request):
    import numpy as np

    _, frame, _, legends = request.getfixturevalue(fixture)
    checked = 0
    for name, legend in legends.items():
        match = re.fullmatch(r"fraction_of_ideal_gpt2_fp16_(\w+)\.png", name)
        if not match:
            continue
        part = frame[frame["mode"] == MODE_OF_SLUG[match[1]]]
        for panel in legend["_panels"]:
            provider = next(p for p in ("ss1_tuned", "ss1_heuristic") if PROVIDER_LABELS[p] == panel["title"])
            (image,) = panel["images"]
            # rows: the layers in the shape set's order, each over M ascending; columns: c ascending
            expected = [[float(part[(part["provider"] == provider) & (part["K"] == k) & (part["N"] == n)
                                    & (part["M"] == m) & (part["redn_factor"] == c)]["fraction_of_ideal"].iloc[0])
                         for c in FACTORS] for _, k, n in LAYERS for m in M_VALUES]
            assert image == pytest.approx(np.array(expected), rel=1e-12), (
                f"{name} {provider}: cells {image.tolist()}, the CSV's fraction_of_ideal {expected}")
            checked += 1
    assert checked == frame["mode"].nunique() * 2


def test_cached_layer_has_its_own_rows_and_columns_in_the_summary(cached_report_dir):
    out, frame, _, _ = cached_report_dir
    summary = (out / "summary.md").read_text()
    assert f"- **{CACHED}**" in summary and "`cache_rotated_weight()`" in summary
    tables = _tables(summary)
    headline_header = [*HEADLINE_HEADER[:3], "SS1 layer", *HEADLINE_HEADER[3:]]
    headline = next(rows for header, rows in tables if header == headline_header)
    assert [(cells[1], cells[2], cells[3]) for cells in headline] == [
        *(("fwd", str(c), label) for c in FACTORS for label in (PROVIDER_LABELS["ss1_tuned"], CACHED)),
        *(("fwd+bwd", str(c), PROVIDER_LABELS["ss1_tuned"]) for c in FACTORS)]
    for cells in headline:
        provider = "ss1_cached" if cells[3] == CACHED else "ss1_tuned"
        part = frame[(frame["provider"] == provider) & (frame["mode"] == cells[1])
                     & (frame["redn_factor"] == int(cells[2]))]
        for text, (m, column) in zip(cells[4:], [(16, "speedup_vs_dense"), (16, "fraction_of_ideal"),
                                                 (4096, "speedup_vs_dense"), (4096, "fraction_of_ideal")],
                                     strict=True):
            assert _spread_matches(text, part[part["M"] == m][column]), (cells, column)

    case_header = [*CASE_HEADER[:CASE_HEADER.index("fraction of ideal") + 1], *CACHED_CASE_COLUMNS,
                   *CASE_HEADER[CASE_HEADER.index("fraction of ideal") + 1:]]
    fwd_cases = next(rows for header, rows in tables if header == case_header)
    fwdbwd_cases = next(rows for header, rows in tables if header == CASE_HEADER)  # no cached rows: no columns
    assert len(fwd_cases) == len(fwdbwd_cases) == len(LAYERS) * len(M_VALUES) * len(FACTORS)
    col = {name: i for i, name in enumerate(case_header)}
    for cells in fwd_cases:
        m, k, c = (int(cells[col[name]]) for name in ("M", "K", "c"))
        by = frame[(frame["mode"] == "fwd") & (frame["M"] == m) & (frame["K"] == k)
                   & (frame["redn_factor"] == c)].set_index("provider")
        assert _close(cells[col["SS1 ms"]], by.loc["ss1_tuned", "median_ms"], digits=4)
        assert _close(cells[col["SS1 cached ms"]], by.loc["ss1_cached", "median_ms"], digits=4)
        assert _close(cells[col["cached speedup"]], by.loc["ss1_cached", "speedup_vs_dense"], decimals=2)
        assert _close(cells[col["cached fraction of ideal"]], by.loc["ss1_cached", "fraction_of_ideal"], decimals=2)
        assert _close(cells[col["heuristic speedup"]], by.loc["ss1_heuristic", "speedup_vs_dense"], decimals=2)


def test_a_run_of_some_providers_reports_only_those(partial_report_dir):
    """No peer rows: no peers plot, no peer line, column or definition, and nothing reads as failed
    (the fixture's one failed timing is a Monarch one, which this run did not make)."""
    out, frame, _, legends = partial_report_dir
    tag = "gpt2_fp16_fwd"
    assert {p.name for p in out.iterdir()} == {f"speedup_vs_c_{tag}_decode.png", f"speedup_vs_c_{tag}_prefill.png",
                                               f"speedup_vs_m_{tag}.png", f"fraction_of_ideal_{tag}.png",
                                               "summary.md"}
    for regime in ("decode", "prefill"):
        assert legends[f"speedup_vs_c_{tag}_{regime}.png"]["_order"] == [
            PROVIDER_LABELS["ss1_tuned"], PROVIDER_LABELS["ss1_heuristic"], "ideal (dense / ideal time)"]
    assert [panel["title"] for panel in legends[f"fraction_of_ideal_{tag}.png"]["_panels"]] == [
        PROVIDER_LABELS["ss1_tuned"], PROVIDER_LABELS["ss1_heuristic"]]
    summary = (out / "summary.md").read_text()
    assert "failed" not in summary and "**low-rank**" not in summary and "**Monarch**" not in summary
    assert ("- **SS1 (heuristic)**: the same `SSL` layer (same structure) with every launch forced to the "
            "heuristic's config learned without this layer shape's records") in summary
    tables = _tables(summary)
    header = [name for name in CASE_HEADER if name not in ("low-rank speedup", "Monarch speedup")]
    cases = next(rows for table_header, rows in tables if table_header == header)
    assert len(cases) == len(LAYERS) * len(M_VALUES) * len(FACTORS)
    assert all(cell != "–" for cells in cases for cell in cells)  # every provider shown has every case
    col = {name: i for i, name in enumerate(header)}
    for cells in cases:
        m, k, c = (int(cells[col[name]]) for name in ("M", "K", "c"))
        by = frame[(frame["M"] == m) & (frame["K"] == k) & (frame["redn_factor"] == c)].set_index("provider")
        assert _close(cells[col["SS1 ms"]], by.loc["ss1_tuned", "median_ms"], digits=4)
        assert _close(cells[col["heuristic speedup"]], by.loc["ss1_heuristic", "speedup_vs_dense"], decimals=2)
    assert next(rows for table_header, rows in tables if table_header == HEADLINE_HEADER)


@pytest.mark.parametrize("providers", [("ss1_heuristic",), ("lowrank", "monarch"), ("ss1_cached",)])
def test_results_without_ss1_tuned_rows_are_reported_without_it(tmp_path, providers):
    """No SS1 (tuning database) rows: the headline says so, the case table has no SS1 columns, and
    the plots made of its rows alone (speedup vs M, the heatmap without the heuristic) are not drawn."""
    frame = _some_providers(_fixture_frame(cached=True, modes=("fwd", "fwd+bwd")), providers)
    out, _, legends = _write_report(tmp_path, frame, "bench_gpt2_fp16_fwd-fwdbwd_some")
    names = {p.name for p in out.iterdir()}
    assert any(name.startswith("speedup_vs_c_") for name in names)
    assert any(name.startswith("speedup_vs_m_") for name in names) == ("ss1_cached" in providers)
    assert any(name.startswith("fraction_of_ideal_") for name in names) == ("ss1_heuristic" in providers)
    assert any(name.startswith("peers_") for name in names) == ("lowrank" in providers)
    for name, legend in legends.items():
        if name.startswith("speedup_vs_c_"):  # the chosen providers that ran in the mode, and the ideal
            mode = "fwd" if "_fwd_" in name else "fwd+bwd"
            shown = [PROVIDER_LABELS[p] for p in providers if p != "ss1_cached" or mode == "fwd"]
            assert legend["_order"] == [*shown, "ideal (dense / ideal time)"]
    summary = (out / "summary.md").read_text()
    assert "These results have no timed SS1 (tuning database) rows" in summary or "ss1_cached" in providers
    assert ("## Failed timings" in summary) == ("monarch" in providers)  # the fixture's failed timing
    for header, rows in _tables(summary):
        if header[:7] == CASE_HEADER[:7]:
            assert "SS1 ms" not in header and "SS1 TFLOP/s" not in header
            assert all(len(cells) == len(header) for cells in rows)


def test_report_rejects_a_csv_without_the_columns(tmp_path):
    bad = tmp_path / "bench_bad.csv"
    pd.DataFrame({"M": [1], "K": [2]}).to_csv(bad, index=False)
    result = CliRunner().invoke(main, ["report", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.startswith(f"ss1bench report: error: {bad}: not an ss1bench bench CSV")
    assert result.output.count("\n") == 1


def test_report_reads_a_folder(tmp_path):
    with pytest.raises(Exception, match="no bench_"):
        from ss1bench.report import result_files

        result_files([tmp_path])
    (tmp_path / "bench_x.csv").write_text("a\n1\n")
    from ss1bench.report import result_files

    assert result_files([tmp_path]) == [tmp_path / "bench_x.csv"]


def test_slower_than_dense_counts_the_cached_layer_apart(cached_report_dir):
    out, frame, _, _ = cached_report_dir
    tables = _tables((out / "summary.md").read_text())
    summary = {tuple(cells[:2]): cells[2:] for cells in next(rows for header, rows in tables
                                                             if header == SLOWER_SUMMARY_HEADER)}
    for provider, mode in (("ss1_tuned", "fwd"), ("ss1_cached", "fwd (cached)"), ("ss1_tuned", "fwd+bwd")):
        rows = frame[(frame["provider"] == provider) & (frame["mode"] == mode.split(" ")[0])]
        expected = rows[rows["dense_ms"] / rows["ideal_ms"] >= EXPECTED_WIN]
        slower = expected[expected["speedup_vs_dense"] < 1]
        decode = int((slower["M"] <= 64).sum())
        assert summary[("fp16", mode)] == [f"{len(slower)} of {len(expected)}", str(decode), str(len(slower) - decode)]
    assert ("fp16", "fwd+bwd (cached)") not in summary  # the cache has forward rows only


# ---- results that cannot be reported as they are ------------------------------------------------------


def _csv(folder, frame: pd.DataFrame, name: str = "bench_gpt2_fp16_fwd.csv"):
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def _report(*args: str):
    return CliRunner().invoke(main, ["report", *args])


def _assert_one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("ss1bench report: error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    for part in parts:
        assert part in result.output, (part, result.output)


def test_results_of_two_gpus_get_one_set_of_sections_each(tmp_path):
    h200 = _fixture_frame()
    a100 = h200.assign(gpu="A100", median_ms=h200["median_ms"] * 1.5)
    out = tmp_path / "out"
    result = _report(str(_csv(tmp_path, h200)), str(_csv(tmp_path, a100, "bench_a100.csv")), "--out", str(out))
    assert result.exit_code == 0, result.output
    names = {path.name for path in out.iterdir()}
    for gpu in ("A100", "H200"):
        assert f"fraction_of_ideal_{gpu}_gpt2_fp16_fwd.png" in names
        assert f"speedup_vs_c_{gpu}_gpt2_fp16_fwd_decode.png" in names
    summary = (out / "summary.md").read_text()
    headings = [line for line in summary.splitlines() if line.startswith("## ")]
    assert headings.count("## Definitions") == 1
    for gpu in ("A100", "H200"):
        assert f"## Headline: SS1 (tuning database) on {gpu}" in headings
        assert f"## gpt2 shapes, fp16, forward on {gpu}" in headings
        assert f"![fraction_of_ideal_{gpu}_gpt2_fp16_fwd](fraction_of_ideal_{gpu}_gpt2_fp16_fwd.png)" in summary


def test_a_non_numeric_value_is_one_line_and_nothing_is_written(tmp_path):
    frame = _fixture_frame()
    frame["median_ms"] = frame["median_ms"].astype(object)
    frame.loc[3, "median_ms"] = "abc"
    out = tmp_path / "out"
    result = _report(str(_csv(tmp_path, frame)), "--out", str(out))
    _assert_one_line_error(result, "line 5, column median_ms: 'abc' is not a number")
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize("cut", ["mid-row", "mid-field"])
def test_a_csv_truncated_in_mid_row_is_refused(tmp_path, cut):
    path = _csv(tmp_path, _fixture_frame())
    text = path.read_text()
    path.write_text(text[: len(text) - (200 if cut == "mid-row" else 3)])  # the last field keeps "2"
    out = tmp_path / "out"
    result = _report(str(path), "--out", str(out))
    _assert_one_line_error(result, str(path), "truncated")
    assert not out.exists()


def test_an_unwritable_out_is_one_line(tmp_path):
    path = _csv(tmp_path, _fixture_frame())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _report(str(path), "--out", str(blocker / "out"))
    _assert_one_line_error(result, "cannot write the report there")


def test_a_failure_while_plotting_leaves_nothing_half_written(tmp_path, monkeypatch):
    path = _csv(tmp_path, _fixture_frame())
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("an earlier file")

    def broken(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report.write, "plot_peers", broken)  # after the speedup and heatmap plots
    with pytest.raises(RuntimeError, match="plot failed"):
        report.write_report([path], out)
    assert [p.name for p in out.iterdir()] == ["kept.txt"]


def test_repeated_rows_keep_the_most_recent_run(tmp_path):
    """Two runs time the same cases: the newer run's rows win whatever the files' names, and a
    file without a sidecar counts as the oldest."""
    frame = _fixture_frame()
    newer, older, bare = frame.copy(), frame.copy(), frame.copy()
    newer["median_ms"], older["median_ms"], bare["median_ms"] = 1.0, 2.0, 3.0
    for name, rows, date in (("bench_a.csv", newer, "2026-12-03T10:00:00+00:00"),
                             ("bench_b.csv", older, "2026-11-01T10:00:00+00:00"),
                             ("bench_c.csv", bare, None)):
        rows.to_csv(tmp_path / name, index=False)
        if date is not None:
            (tmp_path / name).with_suffix(".json").write_text(json.dumps({"date": date}))
    loaded, sources = report.load_results([tmp_path])
    assert len(loaded) == len(frame.drop_duplicates([*CASE_KEY, "provider"]))
    assert set(loaded.median_ms) == {1.0}
    assert [path.name for path, _ in sources] == ["bench_c.csv", "bench_b.csv", "bench_a.csv"]


def test_rows_of_a_superseded_provider_definition_are_left_out(tmp_path):
    """A run whose sidecar records an earlier definition of ``ss1_heuristic`` (the full learned
    heuristic, which picks the shape's own records) keeps its other rows; its heuristic rows are
    left out and the summary says which; a run with today's definition keeps them."""
    frame = _fixture_frame()
    current = {p.name: p.description for p in PROVIDERS}
    old = {**current, "ss1_heuristic": SUPERSEDED_DEFINITIONS["ss1_heuristic"][0]}
    frame.to_csv(tmp_path / "bench_old.csv", index=False)
    (tmp_path / "bench_old.json").write_text(json.dumps({"date": "2026-11-01T10:00:00+00:00", "providers": old}))
    loaded, _ = report.load_results([tmp_path])
    assert "ss1_heuristic" not in set(loaded.provider) and "ss1_tuned" in set(loaded.provider)
    out = tmp_path / "out"
    assert _report(str(tmp_path / "bench_old.csv"), "--out", str(out)).exit_code == 0
    text = (out / "summary.md").read_text()
    assert "Left out: `ss1_heuristic` rows of `bench_old.csv`" in text and "## Heuristic against tuned" not in text
    (tmp_path / "bench_old.json").write_text(json.dumps({"date": "2026-11-01T10:00:00+00:00", "providers": current}))
    assert "ss1_heuristic" in set(report.load_results([tmp_path])[0].provider)


def test_heuristic_against_tuned_table_is_the_csv_ratio(report_dir):
    """The summary's heuristic table: per regime, the geometric mean, worst value and count under the
    floor of SS1 (database) time / SS1 (heuristic) time, case by case from the CSV."""
    out, frame, _, _ = report_dir
    rows = frame[frame.provider.isin(["ss1_tuned", "ss1_heuristic"])].drop_duplicates([*CASE_KEY, "provider"])
    times = rows.pivot_table(index=["mode", "M", "K", "N", "redn_factor"], columns="provider", values="median_ms")
    ratio = (times.ss1_tuned / times.ss1_heuristic).reset_index(name="ratio")
    (_, table), = [t for t in _tables((out / "summary.md").read_text()) if t[0][:3] == ["dtype", "mode", "regime"]]
    assert table, "no heuristic rows"
    for cells in table:
        regime = ratio[ratio.M <= 64] if cells[2] == "decode" else ratio[ratio.M >= 1024]
        part = regime[regime["mode"] == cells[1]].ratio
        assert int(cells[3]) == len(part)
        assert _close(cells[4], math.exp(np.log(part).mean()), decimals=3)
        assert _close(cells[5], part.min(), decimals=2) and int(cells[6]) == int((part < 0.70).sum())
