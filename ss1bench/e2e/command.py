"""``ss1bench e2e``: the run loop (models, compile modes, phases, c) and the Click command, which
:mod:`ss1bench.cli` adds to the ``ss1bench`` group."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click
import torch
from torch._inductor import config as inductor_config

from ss1bench.bench.measure import Timing, one_line_error
from ss1bench.bench.results import ResultWriter, RunInfo, use_tuning_database
from ss1bench.bench.runner import INPUT_SEED
from ss1bench.bench.schema import DTYPES, E2E_FROZEN_SUFFIX
from ss1bench.cli_options import choices, positive_ints
from ss1bench.dtypes import TORCH_DTYPES
from ss1bench.layer import cache_rotated_weights
from ss1bench.tuning.gpu import normalize_gpu_name

from .models import (
    MODEL_NAMES,
    MODELS,
    PHASE_DESCRIPTIONS,
    ModelStats,
    build_model,
    import_transformers,
    meta_weight_counts,
    model_dims,
    phases_of,
    ss1_copy,
)
from .rows import (
    COLUMNS,
    E2E_FLOPS,
    E2E_TIMING,
    PROVIDER_DESCRIPTIONS,
    Work,
    e2e_row,
    output_stem,
    plan,
    summary_table,
    timings_in,
)
from .timing import (
    COMPILE_MODES,
    E2E_REP_MS,
    E2E_WARMUP_MS,
    Compiler,
    Inputs,
    KernelTimer,
    Measurement,
    Timer,
    compile_model,
    cuda_kernel_ms,
    phase_call,
    release,
    side_by_side_timer,
    time_calls,
)

#: ``--dtype`` when not given: fp16 models for inference, bf16 autocast for training steps.
DEFAULT_DTYPE = {False: "fp16", True: "bf16"}


@dataclass(frozen=True)
class Settings:
    """How a run times its calls (see :func:`run`)."""

    timer: Timer = side_by_side_timer
    kernel_timer: KernelTimer = cuda_kernel_ms
    compiler: Compiler = compile_model
    warmup_ms: int = E2E_WARMUP_MS
    rep_ms: int = E2E_REP_MS
    cuda_graph: bool = False
    compile_modes: tuple[str, ...] = ("none",)
    train: bool = False
    rotated_cache: bool = True
    freezing: bool = False


def model_rows(name: str, redn_factors: Sequence[int], batch: int, seq: int, dtype_name: str, gpu: str,
               device: torch.device, generator: torch.Generator, settings: Settings | None = None,
               overrides: Mapping[str, Any] | None = None,
               on_timing: Callable[[str], None] = lambda label: None) -> list[dict]:
    """Rows of one model: for each c, the model converted, then in every (compile mode, phase) the
    dense model's call and the SS1 copy's timed side by side (:func:`time_calls`).

    Inference runs build the model in ``dtype_name``; training runs build it in fp32 and run the
    step under autocast to ``dtype_name`` (none for fp32). SS1 models use the rotated-weight cache
    in eager inference unless ``settings.rotated_cache`` is False. With ``settings.freezing``,
    compiled inference calls (dense and SS1) compile with Inductor's parameter freezing, and their
    rows' ``compile`` is the mode with ``E2E_FROZEN_SUFFIX`` (``default+freezing``). Rows come out
    per compile mode, phase, then c: the dense row, then SS1's. A model that cannot be built gives
    rows whose status is the error; a c that cannot be converted, SS1 rows with the error beside
    dense rows timed alone.
    """
    s = settings or Settings()
    dtype = TORCH_DTYPES[dtype_name]
    autocast = dtype if s.train and dtype != torch.float32 else None
    step = (f"AdamW{' (fused)' if device.type == 'cuda' else ''}, "
            f"{f'{dtype_name} autocast' if autocast else 'no autocast'}, fp32 weights") if s.train else ""
    decoder = MODELS[name].decoder
    work = plan([name], redn_factors, batch, seq, s.compile_modes, s.train)
    phases = {mode: phases_of(name, mode != "none", s.train) for mode in s.compile_modes}
    calls = [(mode, phase) for mode, mode_phases in phases.items() for phase in mode_phases]
    try:
        dense = build_model(name, device, torch.float32 if s.train else dtype, seq, overrides, s.train)
        hidden, intermediate = model_dims(dense.config)
        inputs = Inputs.random(dense.config.vocab_size, batch, seq, generator, device)
        dense_stats = ModelStats.of(dense, hidden, intermediate)
    except Exception as error:  # e.g. out of memory, or a bad config: every row of the model says why
        dense = None
        release(device)
        failed = Measurement(Timing(status=one_line_error(error)))
        for _ in range(timings_in(work)):
            on_timing(f"{name}: model not built")
        return [e2e_row(w, gpu, dtype_name, provider, None, None, None, None, None, failed, math.nan)
                for w in work for provider in ("dense", "ss1_tuned")]

    def frozen(mode: str, phase: str) -> bool:
        return s.freezing and mode != "none" and phase != "train"

    def measure(models: list, mode: str, phase: str) -> list[Measurement]:
        makes = [partial(phase_call, model, phase, inputs, decoder, compile_mode=mode, compiler=s.compiler,
                         autocast_dtype=autocast) for model in models]
        if mode != "none":  # fresh compiles, and no run reaches Dynamo's recompile limit
            torch.compiler.reset()
        # the first call compiles: freezing must be on from there on
        with inductor_config.patch(freezing=frozen(mode, phase)):
            measured = time_calls(makes, device, s.timer, s.warmup_ms, s.rep_ms,
                                  s.cuda_graph and mode == "none" and phase != "train", grad=phase == "train",
                                  kernel_timer=s.kernel_timer, how="eager" if mode == "none" else "compiled")
        for model in models:  # a training step's gradients: not carried into the next timing
            model.zero_grad(set_to_none=True)
        release(device, compiled=mode != "none")
        return measured

    rows = []
    for c in redn_factors:
        measured, structure, ss1_stats, model = {}, None, None, None
        try:
            model = ss1_copy(dense, c, autocast)
            ss1_stats = ModelStats.of(model, hidden, intermediate)
            structure = ss1_stats.structure
        except Exception as error:  # conversion failed (e.g. out of memory for the copy)
            model = None
            release(device)
            failed = Measurement(Timing(status=one_line_error(error)))
        for mode, mode_phases in phases.items():
            if model is not None and not s.train:  # compiled calls do not use the cache: off, so it holds no memory
                cache_rotated_weights(model, s.rotated_cache and mode == "none")
            for phase in mode_phases:
                pair = measure([dense] if model is None else [dense, model], mode, phase)
                measured[mode, phase] = (pair[0], pair[1] if model is not None else failed)
                on_timing(f"{name} {phase} compile={mode} dense")
                on_timing(f"{name} {phase} compile={mode} SS1 c={c}"
                          + ("" if model is not None else " (not converted)"))
        model = None
        release(device)
        for mode, phase in calls:
            # frozen rows say so in their compile column: they are not the same case as unfrozen ones
            item = Work(name, phase, f"{mode}{E2E_FROZEN_SUFFIX}" if frozen(mode, phase) else mode, c, batch, seq)
            dense_result, ss1_result = measured[mode, phase]
            dense_ms = dense_result.timing.median_ms
            rows.append(e2e_row(item, gpu, dtype_name, "dense", hidden, intermediate, dense_stats, dense_stats,
                                structure, dense_result, dense_ms, step))
            rows.append(e2e_row(item, gpu, dtype_name, "ss1_tuned", hidden, intermediate, ss1_stats, dense_stats,
                                structure, ss1_result, dense_ms, step))
    dense = None
    release(device)
    order = {call: i for i, call in enumerate(calls)}
    return sorted(rows, key=lambda row: order[row["compile"].removesuffix(E2E_FROZEN_SUFFIX),
                                              row["layer"].rsplit(" ", 1)[1]])  # c order kept


def run(models: Sequence[str], redn_factors: Sequence[int], batch: int, seq: int, dtype_name: str, out_dir: Path,
        stem: str, args: dict, *, device: torch.device | None = None, echo: Callable[[str], None] = print,
        overrides: Mapping[str, Mapping[str, Any]] | None = None, **settings):
    """Time every model; write ``out_dir/stem.csv`` and its JSON sidecar. Returns (csv path, DataFrame).

    ``settings`` are :class:`Settings` fields (timer, kernel_timer, compiler, warmup_ms, rep_ms,
    cuda_graph, compile_modes, train, rotated_cache, freezing). ``device`` defaults to the current CUDA
    device; on any other device the GPU name is ``CPU``, and peak memory and kernel time are empty
    (tests run the whole path on the CPU with a fake ``timer``). ``overrides`` maps model names to
    config overrides. The CSV and sidecar are rewritten after every model, so an interrupted run
    keeps what it measured.
    """
    s = Settings(**{**settings, "compile_modes": tuple(settings.get("compile_modes", ("none",)))})
    device = device or torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        gpu = normalize_gpu_name(device_name)
    else:
        device_name, gpu = device.type, device.type.upper()
    database = use_tuning_database(gpu)
    work = plan(models, redn_factors, batch, seq, s.compile_modes, s.train)
    echo(f"{device_name} ({gpu}); tuning database: {database}")
    what = (f"training steps (fp32 weights, {dtype_name} autocast)" if s.train and dtype_name != "fp32"
            else "training steps (fp32)" if s.train else dtype_name)
    echo(f"{len(models)} models, {len(work)} (model, compile, phase, c) pairs, {timings_in(work)} timings; "
         f"batch {batch}, seq {seq}, {what}; compile {', '.join(s.compile_modes)}"
         f"{'; CUDA graphs for eager calls' if s.cuda_graph else ''}")
    configs = {name: {"class": MODELS[name].class_name(s.train),
                      "config": {**MODELS[name].config, **((overrides or {}).get(name) or {})}} for name in models}

    def e2e_metadata(metadata: dict) -> None:
        for key in ("copy_bandwidth_gbs", "memory_floor"):  # layer-benchmark only
            metadata.pop(key, None)
        metadata.update(timing=E2E_TIMING, flop_counts=E2E_FLOPS, providers=PROVIDER_DESCRIPTIONS,
                        phases=PHASE_DESCRIPTIONS, models=configs, compile_modes=list(s.compile_modes),
                        train=s.train, rotated_cache=s.rotated_cache, freezing=s.freezing,
                        conversion="convert_to_ss_linear(copy, c, project=False)"
                                   + ("; cache_rotated_weights(copy) for eager inference"
                                      if s.rotated_cache and not s.train else ""))

    results = ResultWriter(RunInfo(gpu, device_name, database, math.nan, args), out_dir, stem, timings_in(work),
                           e2e_metadata, COLUMNS)
    generator = torch.Generator(device=device).manual_seed(INPUT_SEED)
    for name in models:
        results.rows.extend(model_rows(name, redn_factors, batch, seq, dtype_name, gpu, device, generator, s,
                                       (overrides or {}).get(name), results.progress.step))
        results.flush(complete=False)
    return results.csv_path, results.flush(complete=True)


# ---- command ----------------------------------------------------------------------------------


def _fail(message: str) -> None:
    """A missing prerequisite: one line on stderr, ``ss1bench e2e: error: <message>`` (the CLI's
    convention, written here: e2e imports nothing from ``ss1bench.cli``), and exit code 2."""
    click.echo(f"ss1bench e2e: error: {message}", err=True)
    raise SystemExit(2)


def _dry_run(models: list[str], factors: list[int], batch: int, seq: int, compile_modes: list[str], train: bool,
             stem: str, out_dir: Path | None) -> None:
    work = plan(models, factors, batch, seq, compile_modes, train)
    counts = {name: meta_weight_counts(name, factors, seq, train=train) for name in models}
    for item in work:
        dense, per_c = counts[item.model]
        ss1, converted, total = per_c[item.redn_factor]
        click.echo(f"{item.describe()}  linear weights {dense:,} dense -> {ss1:,} SS1 "
                   f"({dense / ss1:.2f}x fewer; {converted}/{total} layers SS1)")
    if not train and any(MODELS[name].decoder for name in models) and any(m != "none" for m in compile_modes):
        click.echo("decode: timed in compile mode none only (eager, or a CUDA graph with --cuda-graph)")
    click.echo(f"{len(work)} (model, compile, phase, c) pairs x providers (dense, ss1_tuned); "
               f"{timings_in(work)} timings; SS1 weights with default block sizes (the GPU's tuning database may "
               f"change them); output {out_dir or 'reports/<GPU>'}/{stem}.csv")


@click.command("e2e")
@click.option("--model", "--models", "models", default="gpt2", show_default=True, metavar="NAMES",
              help=f"Comma-separated models: {', '.join(MODEL_NAMES)} (random weights from the config; "
                   "-padded: GPT-2's vocabulary padded from 50257 to 50304 rows).")
@click.option("--redn-factors", "redn_factors", default=None, metavar="C,...",
              help="Reduction factors c, comma-separated (e.g. 2,4,8).  [default: 4]")
@click.option("--redn-factor", "redn_factor_alias", default=None, hidden=True)  # hidden alias of --redn-factors
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1), help="Sequences per call.")
@click.option("--seq", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Tokens per sequence (prefill, training step); KV-cache length in decode.")
@click.option("--dtype", default=None, type=click.Choice(DTYPES),
              help="Model dtype for inference (default fp16); with --train the autocast dtype (default bf16; "
                   "fp32: no autocast), weights staying fp32.")
@click.option("--compile", "compile_modes", default="none", show_default=True, metavar="MODES",
              help=f"Comma-separated torch.compile modes: {', '.join(COMPILE_MODES)} (none = eager; default = "
                   "torch.compile(model)). Dense and SS1 run in each mode, side by side. Compiled modes time "
                   "prefill or the training step: decode is timed in mode none only.")
@click.option("--train", is_flag=True,
              help="Time training steps instead of inference: forward with labels, loss, backward, AdamW step "
                   "(fused on CUDA), under autocast; only the model is compiled.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder for the CSV and its JSON sidecar (default reports/<GPU>).")
@click.option("--warmup-ms", default=E2E_WARMUP_MS, show_default=True, type=click.IntRange(min=1),
              help="Untimed warm-up time of each call before the timed rounds.")
@click.option("--rep-ms", default=E2E_REP_MS, show_default=True, type=click.IntRange(min=1),
              help="Timed time of each call, spread over the rounds in which dense and SS1 alternate.")
@click.option("--cuda-graph", is_flag=True,
              help="In mode none, also time each inference call as a CUDA-graph replay (no host launch "
                   "overhead) and keep the faster of eager and replay; the row's detail says which.")
@click.option("--rotated-cache/--no-rotated-cache", default=True, show_default=True,
              help="Turn the SSL layers' rotated-weight cache on for eager inference (one more N x K/c tensor "
                   "per layer, no per-call weight rotation).")
@click.option("--freezing", is_flag=True,
              help="Compile inference calls with Inductor's parameter freezing (torch._inductor.config.freezing), "
                   "dense and SS1 alike: parameters become constants, and SS1's weight rotation runs once at "
                   "compile time. Inference only.")
@click.option("--dry-run", is_flag=True, help="List the work and the linear weight counts, and exit (no GPU needed).")
def e2e_command(models, redn_factors, redn_factor_alias, batch, seq, dtype, compile_modes, train, out_dir,
                warmup_ms, rep_ms, cuda_graph, rotated_cache, freezing, dry_run) -> None:
    """Time whole models (GPT-2, BERT, Llama-1B shapes), dense against SS1, eager or compiled:
    prefill and decode, or a training step (--train).

    Each row has the wall time (median; dense and SS1 timed side by side, interleaved in rounds)
    and the GPU kernel time (torch.profiler, CUDA only) of one call, and the first call's seconds
    (compilation included).
    """
    from ss1bench.structure import validate_reduction_factor

    model_list = list(dict.fromkeys(choices("--model", models, MODEL_NAMES)))
    factors = list(dict.fromkeys(positive_ints("--redn-factors", redn_factors or redn_factor_alias or "4")))
    for factor in factors:
        try:
            validate_reduction_factor(factor)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--redn-factors") from None
    modes = list(dict.fromkeys(choices("--compile", compile_modes, COMPILE_MODES)))
    if freezing and train:
        raise click.BadParameter("freezing makes parameters constants: inference only, not with --train",
                                 param_hint="--freezing")
    if freezing and modes == ["none"]:
        raise click.BadParameter("freezing applies to compiled calls: add a --compile mode other than none",
                                 param_hint="--freezing")
    dtype = dtype or DEFAULT_DTYPE[train]
    stem = output_stem(model_list, dtype, batch, seq, modes, train) + ("_freezing" if freezing else "")
    try:
        import_transformers()
    except ImportError as error:
        _fail(str(error))
    if dry_run:
        _dry_run(model_list, factors, batch, seq, modes, train, stem, out_dir)
        return
    if not torch.cuda.is_available():
        _fail("needs a CUDA GPU and none is visible (use --dry-run to list the work)")

    out = out_dir or Path("reports") / normalize_gpu_name(torch.cuda.get_device_name())
    args = {"models": model_list, "redn_factors": factors, "batch": batch, "seq": seq, "dtype": dtype,
            "compile": modes, "train": train, "warmup_ms": warmup_ms, "rep_ms": rep_ms, "cuda_graph": cuda_graph,
            "rotated_cache": rotated_cache, "freezing": freezing}
    csv_path, frame = run(model_list, factors, batch, seq, dtype, out, stem, args, echo=click.echo,
                          warmup_ms=warmup_ms, rep_ms=rep_ms, cuda_graph=cuda_graph, compile_modes=modes,
                          train=train, rotated_cache=rotated_cache, freezing=freezing)
    click.echo(summary_table(frame))
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        click.echo(f"{len(failed)} timings failed (status column); first: {failed.iloc[0]['status']}")
    eager = frame[frame["detail"].str.contains("capture failed", regex=False, na=False)]
    if len(eager):
        click.echo(f"{len(eager)} rows fell back to eager timing (CUDA graph capture failed; see detail): "
                   f"their speedups compare unlike timings")
    click.echo(f"wrote {csv_path} and {csv_path.with_suffix('.json')}")
