"""The README as a newcomer uses it: its CPU example runs as written, and its commands, run from the
repository root, import the installed packages (no folder of the checkout hides one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_cpu_example_runs_as_written(capsys):
    pytest.importorskip("transformers")
    text = README.read_text()
    blocks = re.findall(r"On CPU \(runs as written\):\n\n```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "the README's CPU example is missing or ambiguous"
    namespace: dict = {}
    with torch.random.fork_rng(devices=[]):
        exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["y"].shape == (8, 16, 3072)
    assert torch.isfinite(namespace["loss"])
    assert "compression=4.00x" in capsys.readouterr().out


def test_the_main_job_runs_as_written(tmp_path, monkeypatch):
    """The README's main job (a report of the shipped results, no GPU needed) runs as written, in
    the repository root, on every result file the repository ships."""
    from click.testing import CliRunner

    from ss1bench.cli import main

    commands = re.findall(r"^(ss1bench report \S+) --out my-report", README.read_text(), re.M)
    assert len(commands) == 1, "the README's main-job command is missing or ambiguous"
    monkeypatch.chdir(README.parent)
    args = [*commands[0].split()[1:], "--out", str(tmp_path / "my-report")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "my-report" / "summary.md").is_file()


def test_no_folder_of_the_checkout_shadows_an_installed_package():
    """Run from the repository root (``python -m pytest``, ``python -c``, a notebook in the
    checkout), the root is on ``sys.path``, so an importable folder there hides any installed
    package of the same name: a ``kernels/`` folder here once hid Hugging Face's ``kernels``, which
    transformers imports with GPT-2 and BERT."""
    from importlib.metadata import packages_distributions

    installed = packages_distributions()
    ours = {"ss1bench"}
    folders = {path.name for path in README.parent.iterdir() if (path / "__init__.py").is_file()} - ours
    clashes = {name: installed[name] for name in folders if name in installed and set(installed[name]) != ours}
    assert not clashes, f"folders at the repository root shadow installed packages: {clashes}"


#: The README's whole-model table: model cell -> (e2e model name, phase); mode cell -> (compile
#: column, result folder under reports/H200).
_TABLE_MODELS = {
    "GPT-2 (vocab 50304), forward": ("gpt2-padded", "prefill"),
    "GPT-2 (vocab 50304), training step": ("gpt2-padded", "train"),
    "GPT-2, decode step (1024-token KV cache)": ("gpt2-padded", "decode"),
    "GPT-2-medium (vocab 50304), forward": ("gpt2-medium-padded", "prefill"),
    "GPT-2-medium, decode step": ("gpt2-medium-padded", "decode"),
    "GPT-2-medium (vocab 50257), training step": ("gpt2-medium", "train"),
    "Llama-1B shape (vocab 128256), forward": ("llama-1b", "prefill"),
    "Llama-1B shape, forward": ("llama-1b", "prefill"),
    "Llama-1B shape, decode step": ("llama-1b", "decode"),
    "Llama-1B shape, training step": ("llama-1b", "train"),
    "Llama-1B shape, vocab 32000, forward": ("llama-1b-32k", "prefill"),
    "Llama-1B shape, vocab 32000, training step": ("llama-1b-32k", "train"),
}
_TABLE_MODES = {
    "`torch.compile`": ("default", "."),
    "`torch.compile`, parameter freezing": ("default+freezing", "."),
    "`reduce-overhead`": ("reduce-overhead", "."),
    "CUDA graph": ("none", "cuda-graph"),
    "eager": ("none", "."),
}


def _shown_as(value: float, shown: str) -> bool:
    """``value`` printed with as many decimals as ``shown`` has reads ``shown``."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return f"{value:.{decimals}f}" == shown


def test_the_whole_model_table_is_the_shipped_results():
    """Every row of the README's whole-model table (dense and SS1 ms, speedup, kernel ms) reads as
    the shipped e2e results that `ss1bench report` shows for that model, phase and mode."""
    pytest.importorskip("pandas")
    from ss1bench.report.load import load_results

    text = README.read_text()
    header = "| model | mode | dense ms | SS1 ms | speedup | GPU kernel ms dense / SS1 |\n|---|---|---|---|---|---|\n"
    assert text.count(header) == 1, "the README's whole-model table is missing or ambiguous"
    rows = text.split(header)[1].split("\n\n")[0].splitlines()
    assert len(rows) >= 10
    results = {}
    for line in rows:
        model, mode, dense_ms, ss1_ms, speedup, kernels = (cell.strip() for cell in line.strip("|").split("|"))
        mode = mode.removesuffix(" *")  # the footnote marks rows timed by the older timer
        name, phase = _TABLE_MODELS[model]
        compile_mode, folder = _TABLE_MODES[mode]
        if folder not in results:
            results[folder], _ = load_results([README.parent / "reports" / "H200" / folder])
        frame = results[folder]
        match = frame[(frame.shape_set == "e2e") & (frame.layer == f"{name} {phase}") & (frame.compile == compile_mode)]
        by_provider = match.set_index("provider")
        assert sorted(by_provider.index) == ["dense", "ss1_tuned"], line
        dense, ss1 = by_provider.loc["dense"], by_provider.loc["ss1_tuned"]
        dense_kernel, ss1_kernel = kernels.split(" / ")
        assert _shown_as(dense.median_ms, dense_ms) and _shown_as(ss1.median_ms, ss1_ms), line
        assert _shown_as(dense.median_ms / ss1.median_ms, speedup.split("x")[0]), line
        assert _shown_as(dense.kernel_ms, dense_kernel) and _shown_as(ss1.kernel_ms, ss1_kernel), line
