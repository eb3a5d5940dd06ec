"""``ss1bench bench`` through click's CliRunner: dry run, no-GPU error, option errors."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from ss1bench.bench.schema import OPTIONAL_PROVIDERS
from ss1bench.cli import main


def test_dry_run_lists_the_work_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["bench", "--dry-run", "--shapes", "llama", "--m", "1,4096",
                                       "--redn-factors", "4,16", "--dtype", "fp16,bf16", "--mode", "fwd,fwd+bwd",
                                       "--shape", "8x300x64"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    work = lines[:-1]
    # 4 llama layers x 2 M + 1 custom shape, x 2 c x 2 dtypes x 2 modes.
    assert len(work) == (4 * 2 + 1) * 2 * 2 * 2
    assert work[0].split()[:2] == ["fp16", "fwd"] and "K=4096" in work[0] and "c=4" in work[0]
    assert any("M=8" in line and "K=300" in line and "N=64" in line and "custom" in line for line in work)
    assert lines[-1].startswith("72 cases")
    for provider in ("dense", "dense_reduced", "memory_floor", "ss1_tuned", "ss1_heuristic", "lowrank", "monarch"):
        assert provider in lines[-1]
    assert "ss1_cached (fwd only)" in lines[-1]
    assert "bench_llama-custom_fp16-bf16_fwd-fwdbwd.csv" in lines[-1]


@pytest.mark.parametrize(("modes", "listed", "timings"), [
    # One shape at c = 2 and 4: dense once, then per c 6 others in fwd (ss1_cached among them), 5 in fwd+bwd.
    ("fwd", "ss1_cached, ss1_heuristic", 1 + 2 * 6),
    ("fwd+bwd", "ss1_tuned, ss1_heuristic", 1 + 2 * 5),
    ("fwd,fwd+bwd", "ss1_cached (fwd only), ss1_heuristic", (1 + 2 * 6) + (1 + 2 * 5)),
])
def test_dry_run_lists_ss1_cached_in_fwd_only(monkeypatch, modes, listed, timings):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["bench", "--dry-run", "--shape", "8x300x64", "--redn-factors", "2,4",
                                       "--mode", modes])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert listed in last and f"; {timings} timings;" in last
    assert ("ss1_cached" in last) == ("fwd" in modes.split(","))


@pytest.mark.parametrize(("modes", "chosen", "listed", "timings"), [
    # One shape at c = 2 and 4: dense once, then per c dense_reduced and the chosen providers.
    ("fwd", "ss1_heuristic,ss1_tuned", "dense, dense_reduced, memory_floor, ss1_tuned, ss1_heuristic", 1 + 2 * 3),
    ("fwd+bwd", "lowrank", "dense, dense_reduced, memory_floor, lowrank", 1 + 2 * 2),
    ("fwd,fwd+bwd", "ss1_cached,monarch", "dense, dense_reduced, memory_floor, ss1_cached (fwd only), monarch",
     (1 + 2 * 3) + (1 + 2 * 2)),
])
def test_providers_chooses_what_is_timed_besides_the_yardsticks(monkeypatch, modes, chosen, listed, timings):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["bench", "--dry-run", "--shape", "8x300x64", "--redn-factors", "2,4",
                                       "--mode", modes, "--providers", chosen])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert f"x providers ({listed});" in last and f"; {timings} timings;" in last
    assert last.endswith(f"_{'-'.join(p for p in OPTIONAL_PROVIDERS if p in chosen.split(','))}.csv")


@pytest.mark.parametrize(("args", "message"), [
    (["--providers", "ss1_tuned,dense"], "dense; choose from ss1_tuned, ss1_cached, ss1_heuristic, lowrank, monarch"),
    (["--providers", "flash"], "flash; choose from"),
    (["--providers", ""], "nothing given"),
    (["--providers", "ss1_cached", "--mode", "fwd,fwd+bwd"], "ss1_cached: not timed in fwd+bwd mode"),
])
def test_bad_providers_are_one_line_errors(args, message):
    result = CliRunner().invoke(main, ["bench", "--dry-run", "--shape", "8x300x64", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("ss1bench bench: error: Invalid value for --providers: ")
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_bench_without_cuda_exits_2_with_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["bench", "--shapes", "gpt2", "--redn-factors", "4"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("ss1bench bench: error: ")
    assert "CUDA" in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_bad_options_exit_2():
    runner = CliRunner()
    for args in (["--shapes", "gpt5"], ["--redn-factors", "3"], ["--dtype", "fp8"], ["--mode", "bwd"],
                 ["--shape", "12x34"], ["--m", "0"]):
        result = runner.invoke(main, ["bench", "--dry-run", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_bench_passes_the_plan_to_the_runner(monkeypatch, tmp_path):
    """With a (pretend) GPU: the command builds the cases, names the output and prints the summary."""
    import pandas as pd

    from ss1bench.bench import runner
    from ss1bench.bench.schema import RESULT_COLUMNS

    seen = {}

    def fake_run(cases, out_dir, stem, args, warmup_ms, rep_ms, echo, cuda_graph=False, providers=None):
        seen.update(cases=cases, out_dir=out_dir, stem=stem, args=args, warmup_ms=warmup_ms, rep_ms=rep_ms,
                    providers=providers)
        return out_dir / f"{stem}.csv", pd.DataFrame(columns=list(RESULT_COLUMNS))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["bench", "--shape", "16x768x3072", "--redn-factors", "2,8", "--dtype", "bf16",
                                       "--mode", "fwd+bwd", "--rep-ms", "40", "--warmup-ms", "5"])
    assert result.exit_code == 0, result.output
    assert [(c.shape.m, c.shape.k, c.shape.n, c.redn_factor, c.dtype, c.mode) for c in seen["cases"]] == [
        (16, 768, 3072, 2, "bf16", "fwd+bwd"), (16, 768, 3072, 8, "bf16", "fwd+bwd")]
    assert str(seen["out_dir"]) == "reports/H200" and seen["stem"] == "bench_custom_bf16_fwdbwd"
    assert (seen["warmup_ms"], seen["rep_ms"]) == (5, 40)
    assert seen["providers"] == seen["args"]["providers"] == list(OPTIONAL_PROVIDERS)  # default: all
    assert "(no results)" in result.output and "wrote reports/H200/bench_custom_bf16_fwdbwd.csv" in result.output

    # Some providers: the runner and the sidecar's args get them in the CSV's order, and the file name
    # says so (a partial run never overwrites a full one).
    result = CliRunner().invoke(main, ["bench", "--shape", "16x768x3072", "--redn-factors", "2", "--dtype", "bf16",
                                       "--providers", "monarch,ss1_heuristic"])
    assert result.exit_code == 0, result.output
    assert seen["providers"] == seen["args"]["providers"] == ["ss1_heuristic", "monarch"]
    assert seen["stem"] == "bench_custom_bf16_fwd_ss1_heuristic-monarch"


def test_recorded_command_keeps_file_names_not_folders():
    from ss1bench.provenance import command_line

    text = command_line(["tune", "--db", "/somewhere/db/H200.json", "--results-csv=/x/y/run.csv", "--shape",
                         "64x512x1024", "--out", "reports/H200/"])
    assert text == "ss1bench tune --db H200.json --results-csv=run.csv --shape 64x512x1024 --out H200"


@pytest.mark.parametrize("module", ["ss1bench.bench.runner", "ss1bench.e2e", "ss1bench.tuning.commands",
                                    "ss1bench.tuning.db_commands", "ss1bench.report", "ss1bench.cli"])
def test_every_entry_module_imports_first(module):
    """No import cycle bites a program that imports one of these before anything else."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
