"""The README's CPU example runs as written (the first thing a newcomer copies)."""

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
