"""``summary.md``: the sources table, then per GPU the definitions, the headline, the cases
slower than dense where SS1 should win, each shape set's plots and cases and the failed timings,
then the end-to-end section. Every number is a CSV value (or the median/min/max of CSV values,
as labelled), formatted only."""

from __future__ import annotations

import math
from pathlib import Path

from ss1bench.bench.schema import CASE_KEY, FLOP_COUNTS, MEMORY_FLOOR, PROVIDER_LABELS

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
    tuned_providers,
)

#: Column headers of the summary's tables (the tests find each table by its header).
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

#: Where the ideal (cuBLAS at K/c, or the memory floor) is at least this much faster than dense,
#: SS1 is expected to beat dense; the report lists the cases where it does not.
EXPECTED_WIN = 1.2
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
            label = [PROVIDER_LABELS[provider]] if len(providers) > 1 else []
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


def case_header(frame) -> list[str]:
    """CASE_HEADER, with CACHED_CASE_COLUMNS where ``frame`` has ``ss1_cached`` rows."""
    if not has_cached(frame):
        return CASE_HEADER
    return [*CASE_HEADER[:_CACHED_AT], *CACHED_CASE_COLUMNS, *CASE_HEADER[_CACHED_AT:]]


def case_rows(frame) -> list[list[str]]:
    """One row per case (sorted by K, N, M, c), numbers straight from the CSV (columns: ``case_header``)."""
    cached = has_cached(frame)
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
                "results only."] if has_cached(frame) else []),
             "- **low-rank** and **Monarch**: plain PyTorch layers with as many weights as the SS1 layer "
             "(to within half a rank step).",
             f"- Times: `triton.testing.do_bench` median (spread p20–p80), L2 flushed before each call. "
             f"{FLOP_COUNTS}",
             f"- {MEMORY_FLOOR}",
             f"- Decode = M ≤ {DECODE_MAX_M}; prefill = M ≥ {PREFILL_MIN_M}.", ""]
    lines += [f"## Headline: SS1 (tuning database){where}", "",
              "Median over the distinct benchmarked (M, K, N) shapes of all sets (min–max in brackets)."
              + (" In forward results, the layer with the rotated-weight cache has its own rows."
                 if has_cached(frame) else ""), ""]
    lines += [*_md_table(headline_header(frame), headline_rows(frame)), ""]
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
