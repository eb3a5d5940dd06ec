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
