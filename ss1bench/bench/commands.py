"""``ss1bench bench`` and ``ss1bench report``: thin click wrappers over the runner and the report.

Registered on the ``main`` group when ``ss1bench.cli`` imports this module. Heavy imports (torch,
pandas, matplotlib) happen inside the commands, so ``ss1bench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from ss1bench.cli import AliasedOption, fail, main
from ss1bench.cli_options import choices, positive_ints

from .schema import DTYPES, MODES, OPTIONAL_PROVIDERS, PROVIDERS, provider_listing
from .shapes import SHAPE_SET_NAMES


@main.command()
@click.option("--shapes", "shape_sets", default=None, metavar="SETS",
              help=f"Comma-separated shape sets: {', '.join(SHAPE_SET_NAMES)} "
                   "(default gpt2 unless --shape is given).")
@click.option("--shape", "custom_shapes", multiple=True, metavar="MxKxN",
              help="A custom shape, e.g. 4096x768x3072 (repeatable).")
@click.option("--m-buckets", "m_values", cls=AliasedOption, aliases=("--m",), default=None, metavar="M,...",
              help="Replace the shape sets' M values (rows of x), e.g. 1,64,4096 (the name tune uses).")
@click.option("--redn-factors", default="2,4,8,16", show_default=True, help="Reduction factors c.")
@click.option("--dtype", "dtypes", default="fp16", show_default=True, help=f"Comma-separated: {', '.join(DTYPES)}.")
@click.option("--mode", "modes", default="fwd", show_default=True,
              help="fwd, fwd+bwd, or both comma-separated (forward+backward times one forward and "
                   "one backward together; ss1_cached, the inference setting, is timed in fwd only).")
@click.option("--providers", "provider_names", default=None, metavar="NAMES",
              help=f"Time only these SS1 variants and peers, comma-separated: {', '.join(OPTIONAL_PROVIDERS)} "
                   "(default: all). Dense and the ideal (dense at K/c, memory floor) are always timed: every "
                   "speedup and fraction of ideal is measured against them.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder for the CSV and its JSON sidecar (default reports/<GPU>).")
@click.option("--warmup-ms", default=25, show_default=True, type=click.IntRange(min=0),
              help="do_bench warm-up time per timing (ms, >= 0).")
@click.option("--rep-ms", default=100, show_default=True, type=click.IntRange(min=1),
              help="do_bench timed repetitions per timing (ms, >= 1).")
@click.option("--cuda-graph", is_flag=True,
              help="Time calls (forward, or forward+backward) as CUDA-graph replays: no host launch "
                   "overhead, for every provider.")
@click.option("--dry-run", is_flag=True, help="List the work and exit (no GPU needed).")
def bench(shape_sets, custom_shapes, m_values, redn_factors, dtypes, modes, provider_names, out_dir, warmup_ms,
          rep_ms, cuda_graph, dry_run) -> None:
    """Time SS1 against dense (cuBLAS), the ideal, and low-rank/Monarch at equal parameters."""
    from ss1bench.structure import validate_reduction_factor

    from .shapes import resolve_shapes

    set_names = choices("--shapes", shape_sets, SHAPE_SET_NAMES) if shape_sets else (
        [] if custom_shapes else ["gpt2"])
    factors = positive_ints("--redn-factors", redn_factors)
    for factor in factors:
        try:
            validate_reduction_factor(factor)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--redn-factors") from None
    dtype_list = choices("--dtype", dtypes, DTYPES)
    mode_list = choices("--mode", modes, MODES)
    providers = (_chosen_providers(provider_names, mode_list) if provider_names is not None
                 else list(OPTIONAL_PROVIDERS))
    try:
        m_list = positive_ints("--m-buckets", m_values) if m_values else None
        shapes = resolve_shapes(set_names, list(custom_shapes), m_list)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--shape") from None

    from .results import output_stem
    from .runner import plan, timings_in

    cases = plan(shapes, factors, dtype_list, mode_list)
    stem = output_stem(set_names + (["custom"] if custom_shapes else []), dtype_list, mode_list, providers)
    if dry_run:
        for case in cases:
            click.echo(case.describe())
        click.echo(f"{len(cases)} cases x providers ({provider_listing(mode_list, providers)}); "
                   f"{timings_in(cases, providers)} timings; output {out_dir or 'reports/<GPU>'}/{stem}.csv")
        return

    import torch

    if not torch.cuda.is_available():
        fail("needs a CUDA GPU and none is visible (use --dry-run to list the work, or ss1bench report on "
             "existing results)")

    from ss1bench.tuning.gpu import normalize_gpu_name

    from .results import summary_table
    from .runner import run

    out = out_dir or Path("reports") / normalize_gpu_name(torch.cuda.get_device_name())
    args = {"shapes": set_names, "custom_shapes": list(custom_shapes), "m_values": m_values,
            "redn_factors": factors, "dtypes": dtype_list, "modes": mode_list, "providers": providers,
            "warmup_ms": warmup_ms, "rep_ms": rep_ms, "cuda_graph": cuda_graph}
    csv_path, frame = run(cases, out, stem, args, warmup_ms=warmup_ms, rep_ms=rep_ms, echo=click.echo,
                          cuda_graph=cuda_graph, providers=providers)
    click.echo(summary_table(frame))
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        click.echo(f"{len(failed)} provider timings failed (status column); first: {failed.iloc[0]['status']}")
    click.echo(f"wrote {csv_path} and {csv_path.with_suffix('.json')}")


def _chosen_providers(text: str, modes: list[str]) -> list[str]:
    """The optional providers ``--providers`` names, in PROVIDERS order (the CSV's); every mode of
    the run must time one of them (``ss1_cached`` alone has nothing to time in ``fwd+bwd``)."""
    chosen = set(choices("--providers", text, OPTIONAL_PROVIDERS))
    names = [name for name in OPTIONAL_PROVIDERS if name in chosen]
    for mode in modes:
        if not any(p.name in chosen and p.runs_in(mode) for p in PROVIDERS):
            raise click.BadParameter(f"{', '.join(names)}: not timed in {mode} mode (ss1_cached is fwd only); "
                                     "add a provider or drop that mode", param_hint="--providers")
    return names


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the PNGs and summary.md (default: the first result's folder).")
def report(results, out_dir) -> None:
    """Plots and a markdown summary from bench CSVs (files, or folders of bench_*.csv); no GPU needed."""
    from ss1bench.report import ReportError, write_report

    out = out_dir or (results[0] if results[0].is_dir() else results[0].parent)
    try:
        written = write_report(list(results), out)
    except ReportError as error:
        fail(str(error))
    for path in written:
        click.echo(f"wrote {path}")
