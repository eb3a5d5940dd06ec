"""``summary.md``: the sources table, then per GPU the definitions, the headline, the cases
slower than dense where SS1 should win, each shape set's plots and cases and the failed timings,
then the end-to-end section. Every number is a CSV value (or the median/min/max of CSV values,
as labelled), formatted only."""

from __future__ import annotations

import math
from pathlib import Path

from ss1bench.bench.schema import (
    CASE_KEY,
    FLOP_COUNTS,
    MEMORY_FLOOR,
    OPTIONAL_PROVIDERS,
    PEER_PROVIDERS,
    PROVIDER_LABELS,
)

from .common import (
    DECODE_MAX_M,
    E2E_SHAPE_SET,
    MODE_TITLES,
    PREFILL_MIN_M,
    e2e_frame,
    e2e_ss1_rows,
    fmt_mib,
    fmt_ms,
    fmt_ratio,
    fmt_seconds,
    fmt_tflops,
    has_cached,
    is_missing,
    present,
    tuned_providers,
)
from .load import superseded_providers

#: Column headers of the summary's tables (the tests find each table by its header).
HEADLINE_HEADER = ["dtype", "mode", "c", "decode speedup vs dense", "decode fraction of ideal",
                   "prefill speedup vs dense", "prefill fraction of ideal"]
#: The headline's column naming each row's SS1 layer, where the results have ss1_cached rows.
HEADLINE_LAYER_COLUMN = "SS1 layer"
#: ss1_cached's columns of the case table, after SS1's fraction of ideal, where the results have its rows.
CACHED_CASE_COLUMNS = ["SS1 cached ms", "cached speedup", "cached fraction of ideal"]


def _case_cells(row: dict) -> list[str]:
    return [str(row["layer"]), str(row["M"]), str(row["K"]), str(row["N"]), str(row["redn_factor"]),
            fmt_ms(row["dense_ms"]), fmt_ms(row["ideal_ms"])]


def _tuned_cells(row: dict) -> list[str]:
    ok = row["status"] == "ok"
    return [fmt_ms(row["median_ms"]) if ok else "failed",
            f"{fmt_ms(row['p20_ms'])}–{fmt_ms(row['p80_ms'])}" if ok else "–",
            fmt_ratio(row["speedup_vs_dense"]), fmt_ratio(row["fraction_of_ideal"])]


def _throughput_cells(row: dict) -> list[str]:
    return [fmt_tflops(row["tflops"]), fmt_tflops(row["dense_equiv_tflops"]), fmt_mib(row["peak_mem_mib"])]


#: The case table's column groups, in order: (the provider whose row of the case fills them, None
#: for the case's own values, read from its dense row; the headers; the cells of that row). A
#: provider the results have no rows of has no columns; a case without its row has ``–`` there.
CASE_COLUMN_GROUPS = (
    (None, ["layer", "M", "K", "N", "c", "dense ms", "ideal ms"], _case_cells),
    ("ss1_tuned", ["SS1 ms", "SS1 p20–p80 ms", "speedup vs dense", "fraction of ideal"], _tuned_cells),
    ("ss1_cached", CACHED_CASE_COLUMNS,
     lambda row: [fmt_ms(row["median_ms"]), fmt_ratio(row["speedup_vs_dense"]), fmt_ratio(row["fraction_of_ideal"])]),
    ("ss1_heuristic", ["SS1 heuristic ms", "heuristic speedup"],
     lambda row: [fmt_ms(row["median_ms"]), fmt_ratio(row["speedup_vs_dense"])]),
    ("lowrank", ["low-rank speedup"], lambda row: [fmt_ratio(row["speedup_vs_dense"])]),
    ("monarch", ["Monarch speedup"], lambda row: [fmt_ratio(row["speedup_vs_dense"])]),
    ("ss1_tuned", ["SS1 TFLOP/s", "dense-equiv. TFLOP/s", "SS1 peak MiB"], _throughput_cells),
)
#: The case table's header for results with rows of every provider but ``ss1_cached`` (see
#: :func:`case_header`).
CASE_HEADER = [name for provider, names, _ in CASE_COLUMN_GROUPS if provider != "ss1_cached" for name in names]

#: Where the ideal (cuBLAS at K/c, or the memory floor) is at least this much faster than dense,
#: SS1 is expected to beat dense; the report lists the cases where it does not.
EXPECTED_WIN = 1.2
#: A heuristic-against-tuned ratio below this is a case the heuristic loses badly on.
HEURISTIC_FLOOR = 0.70
SLOWER_SUMMARY_HEADER = ["dtype", "mode", "slower than dense", "of which decode", "of which prefill"]
SLOWER_HEADER = ["layer", "dtype", "mode", "M", "K", "N", "c", "dense ms", "SS1 ms", "speedup vs dense",
                 "ideal speedup", "launch configs"]

E2E_HEADER = ["GPU", "dtype", "model", "phase", "compile", "tokens (M)", "c", "dense ms", "SS1 ms",
              "SS1 p20–p80 ms", "speedup vs dense", "dense kernel ms", "SS1 kernel ms", "kernel speedup",
              "wall/kernel dense", "wall/kernel SS1", "first call s dense / SS1", "SS1 tokens/s",
              "linear weights dense", "linear weights SS1", "timing"]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _spread(values) -> str:
    """``median (min–max)`` of the finite values, or ``–``."""
    finite = [float(v) for v in values if not is_missing(v)]
    if not finite:
        return "–"
    finite.sort()
    middle = len(finite) // 2
    median = finite[middle] if len(finite) % 2 else (finite[middle - 1] + finite[middle]) / 2
    return f"{median:.2f} ({finite[0]:.2f}–{finite[-1]:.2f})"


def headline_header(frame) -> list[str]:
    """HEADLINE_HEADER, with HEADLINE_LAYER_COLUMN after c where ``frame`` has ``ss1_cached`` rows."""
    if not has_cached(frame):
        return HEADLINE_HEADER
    return [*HEADLINE_HEADER[:3], HEADLINE_LAYER_COLUMN, *HEADLINE_HEADER[3:]]


def headline_rows(frame) -> list[list[str]]:
    """Per dtype, mode and c: SS1 (database) speedup and fraction of ideal, decode and prefill; where
    ``frame`` has ``ss1_cached`` rows, each row names its layer and the cached layer's row follows
    the plain one's (``fwd`` only: other modes have no cached rows)."""
    providers = tuned_providers(frame)
    ss1 = _ss1_cases(frame, providers)
    rows = []
    for (dtype, mode, c), part in ss1.groupby(["dtype", "mode", "redn_factor"], sort=True):
        for provider in providers:
            own = part[part["provider"] == provider]
            if own.empty:
                continue
            decode = own[own["M"] <= DECODE_MAX_M]
            prefill = own[own["M"] >= PREFILL_MIN_M]
            label = [PROVIDER_LABELS[provider]] if has_cached(frame) else []
            rows.append([dtype, mode, str(c), *label,
                         _spread(decode["speedup_vs_dense"]), _spread(decode["fraction_of_ideal"]),
                         _spread(prefill["speedup_vs_dense"]), _spread(prefill["fraction_of_ideal"])])
    return rows


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


def _case_groups(frame) -> list[tuple]:
    """The CASE_COLUMN_GROUPS ``frame`` has rows for (the case's own columns always)."""
    providers = set(present(frame, tuple(p for p, _, _ in CASE_COLUMN_GROUPS if p is not None)))
    return [group for group in CASE_COLUMN_GROUPS if group[0] is None or group[0] in providers]


def case_header(frame) -> list[str]:
    """The case table's columns for ``frame``: CASE_HEADER, with CACHED_CASE_COLUMNS where it has
    ``ss1_cached`` rows and without the columns of a provider it has no rows of."""
    return [name for _, names, _ in _case_groups(frame) for name in names]


def case_rows(frame) -> list[list[str]]:
    """One row per case (sorted by K, N, M, c), numbers straight from the CSV (columns: ``case_header``)."""
    groups = _case_groups(frame)
    lookup = {(row["provider"], *(row[k] for k in CASE_KEY)): row for row in frame.to_dict("records")}
    cases = frame[frame["provider"] == "dense"].sort_values(["K", "N", "M", "redn_factor"])  # one per case
    rows = []
    for case in cases.to_dict("records"):
        key = tuple(case[k] for k in CASE_KEY)
        cells = []
        for provider, names, cells_of in groups:
            row = case if provider is None else lookup.get((provider, *key))
            cells += cells_of(row) if row is not None else ["–"] * len(names)
        rows.append(cells)
    return rows


def _detail_field(detail, key: str) -> str:
    """The value of ``key=value`` in an e2e ``detail`` (``"; "``-separated), or ``–``."""
    for part in str(detail if not is_missing(detail) else "").split("; "):
        name, _, value = part.partition("=")
        if name == key:
            return value
    return "–"


def _divide(numerator, denominator) -> float:
    return math.nan if is_missing(numerator) or is_missing(denominator) or not denominator else numerator / denominator


def e2e_table_rows(frame) -> list[list[str]]:
    """One row per (GPU, dtype, model, phase, compile mode, tokens, c), in the results' order,
    numbers from the CSV (kernel speedup = dense kernel ms / SS1 kernel ms; wall/kernel = median /
    kernel ms; SS1 tokens/s = M / SS1 time)."""
    frame = e2e_frame(frame)
    key = (*CASE_KEY, "compile")
    dense = {tuple(row[k] for k in key): row for row in frame[frame["provider"] == "dense"].to_dict("records")}
    rows = []
    for row in e2e_ss1_rows(frame).to_dict("records"):
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
            *("–" if is_missing(w) else f"{int(w):,}" for w in weights),
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
    failed = e2e_frame(frame)
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
    left_out = [f"`{name}` rows of `{path.name}`" for path, meta in sources for name in superseded_providers(meta)]
    if left_out:
        lines += ["Left out: " + ", ".join(left_out) + " (measured under an earlier definition of the provider, "
                  "which the file's sidecar records).", ""]
    bench_gpus = sorted(bench["gpu"].astype(str).unique())
    if bench_gpus:
        lines += _definitions(bench)
    if len(bench_gpus) == 1:
        lines += _bench_sections(bench, plots)
    for gpu in bench_gpus if len(bench_gpus) > 1 else []:  # one set of sections per GPU
        lines += _bench_sections(bench[bench["gpu"].astype(str) == gpu], plots, gpu=gpu)
    if len(e2e):
        lines += _e2e_section(e2e, e2e_plots or [])
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _definitions(frame) -> list[str]:
    """The definitions section: the yardsticks, and each provider ``frame`` has rows of."""
    providers = present(frame, OPTIONAL_PROVIDERS)
    peers = [f"**{PROVIDER_LABELS[provider]}**" for provider in PEER_PROVIDERS if provider in providers]
    return ["## Definitions", "",
            "- **dense**: cuBLAS `F.linear` on (M, K) x (N, K) with bias, timed in the same run.",
            "- **ideal**: max(cuBLAS `F.linear` at K/c, memory floor); **fraction of ideal** = ideal time / "
            "SS1 time (1.0 = at the ideal); **speedup vs dense** = dense time / provider time.",
            *(["- **SS1 (tuning database)**: the `SSL` layer as built on this GPU (structure and launch configs "
               "from the tuning database when it has them)."] if "ss1_tuned" in providers else []),
            *(["- **SS1 (heuristic)**: the same `SSL` layer (same structure) with every launch forced to the "
               "heuristic's config learned without this layer shape's records (what a shape the tuning database "
               "does not hold gets)."] if "ss1_heuristic" in providers else []),
            *(["- **SS1 (tuning database, rotated-weight cache)** (*cached* in the tables and plots): the same "
               "layer with `cache_rotated_weight()` on, the inference setting: it keeps its rotated weight (one "
               "more (N, K_red) tensor) and its forward uses the `forward_rotated` launch configs; forward "
               "results only."] if "ss1_cached" in providers else []),
            *([f"- {' and '.join(peers)}: plain PyTorch {'layers' if len(peers) > 1 else 'layer'} with as many "
               "weights as the SS1 layer (to within half a rank step)."] if peers else []),
            f"- Times: `triton.testing.do_bench` median (spread p20–p80), L2 flushed before each call. "
            f"{FLOP_COUNTS}",
            f"- {MEMORY_FLOOR}",
            f"- Decode = M ≤ {DECODE_MAX_M}; prefill = M ≥ {PREFILL_MIN_M}.", ""]


#: Columns of the heuristic-against-tuned table.
HEURISTIC_HEADER = ["dtype", "mode", "regime", "cases", "tuned time / heuristic time (geometric mean)", "worst",
                    f"cases below {HEURISTIC_FLOOR}"]


def heuristic_rows(frame) -> list[list[str]]:
    """Per dtype, mode and regime (decode, prefill): SS1 (database) time over SS1 (heuristic) time in
    the same case, its geometric mean, the worst case and the cases under HEURISTIC_FLOOR (1 = the
    heuristic is as fast as the tuned records). Cases missing either provider are left out."""
    import numpy as np

    ss1 = _ss1_cases(frame, ("ss1_tuned", "ss1_heuristic"))
    if ss1.empty:
        return []
    times = ss1.pivot_table(index=["dtype", "mode", "M", "K", "N", "redn_factor"], columns="provider",
                            values="median_ms").dropna()
    if not {"ss1_tuned", "ss1_heuristic"} <= set(times.columns):
        return []
    ratio = (times["ss1_tuned"] / times["ss1_heuristic"]).rename("ratio").reset_index()
    ratio["regime"] = np.where(ratio["M"] <= DECODE_MAX_M, "decode",
                               np.where(ratio["M"] >= PREFILL_MIN_M, "prefill", "between"))
    rows = []
    for (dtype, mode, regime), part in ratio.groupby(["dtype", "mode", "regime"], sort=True):
        values = part["ratio"]
        rows.append([dtype, mode, regime, str(len(values)), f"{math.exp(np.log(values).mean()):.3f}",
                     f"{values.min():.2f}", str(int((values < HEURISTIC_FLOOR).sum()))])
    return rows


def _bench_sections(frame, plots: dict[tuple[str, str, str, str], list[Path]], gpu: str | None = None) -> list[str]:
    """Headline, per-set plots and cases, and failed timings of layer-benchmark rows (``plots``
    keyed by GPU, shape set, dtype and mode). With ``gpu``, the rows are that GPU's and every
    heading names it (results of several GPUs: one set of sections per GPU)."""
    where = f" on {gpu}" if gpu else ""
    lines = [f"## Headline: SS1 (tuning database){where}", ""]
    headline = headline_rows(frame)
    if headline:
        lines += ["Median over the distinct benchmarked (M, K, N) shapes of all sets (min–max in brackets)."
                  + (" In forward results, the layer with the rotated-weight cache has its own rows."
                     if has_cached(frame) else ""), "", *_md_table(headline_header(frame), headline), ""]
    else:
        lines += ["These results have no timed SS1 (tuning database) rows: the run left `ss1_tuned` out "
                  "(`ss1bench bench --providers`), or every timing of it failed.", ""]
    heuristic = heuristic_rows(frame)
    if heuristic:
        lines += [f"## Heuristic against tuned{where}", "",
                  "SS1 (tuning database) time / SS1 (heuristic) time in the same case (1 = the heuristic, "
                  "learned without the layer shape's own records, is as fast as the tuned records); decode "
                  f"M <= {DECODE_MAX_M}, prefill M >= {PREFILL_MIN_M}.", "",
                  *_md_table(HEURISTIC_HEADER, heuristic), ""]
    summary, cases = slower_than_dense_rows(frame)
    if summary:
        lines += [f"## Slower than dense where the ideal is >= {EXPECTED_WIN}x faster{where}", "",
                  f"Cases (distinct M, K, N, c per dtype and mode) where dense time / ideal time >= {EXPECTED_WIN}, "
                  "i.e. SS1 should win, and SS1 (tuning database) is slower than dense"
                  + ("; mode *fwd (cached)*: the layer with the rotated-weight cache"
                     if has_cached(frame) else "") + ".", "",
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
        lines += [f"<details><summary>All {len(rows)} cases (dense, the ideal and each provider the results "
                  "have)</summary>", "", *_md_table(case_header(part), rows), "", "</details>", ""]
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        lines += [f"## Failed timings{where}", ""]
        lines += _md_table(["dtype", "mode", "M", "K", "N", "c", "provider", "status"],
                           [[str(r.dtype), str(r.mode), str(r.M), str(r.K), str(r.N), str(r.redn_factor),
                             str(r.provider), str(r.status).replace("|", "/")] for r in failed.itertuples()])
        lines.append("")
    return lines
