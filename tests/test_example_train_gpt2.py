"""``examples/train_gpt2.py`` without training: its --help, its final table (CPU) and the loss its model names."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_gpt2.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_gpt2_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_every_option_has_help_and_its_default(example):
    parser = example.build_parser()
    options = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    assert options
    for action in options:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        assert "%(default)" in parser.formatter_class(prog="x")._get_help_string(action), action.option_strings
    text = " ".join(parser.format_help().split())
    assert text.count("(default: ") == len(options)


def test_help_gives_the_cpu_command(example):
    text = example.build_parser().format_help()
    assert "python examples/train_gpt2.py --device cpu --steps 6" in text
    assert "--dtype bf16" in text  # and the GPU one


def test_the_final_table_says_n_a_on_cpu_and_which_figures_are_which(example):
    results = [example.RunResult("dense", 110_000, 6, 4.79, 400.0, math.nan),
               example.RunResult("ss1 c=4", 40_000, 6, 4.81, 380.0, math.nan)]
    lines = example.summary_lines(results)
    assert "model params" in lines[0] and "tokens/s" in lines[0]
    for row in lines[1:3]:
        assert row.split()[-1] == "n/a" and "nan" not in row
    assert "0.95x" in lines[2]
    assert "after --warmup-steps" in lines[-1] and "per interval" in lines[-1]


def test_the_model_names_a_loss_transformers_knows(example):
    """GPT2LMHeadModel's class name maps to no loss in transformers 5.x, which then warns on the
    first step ("loss_type=None ... unrecognized") before falling back to the causal-LM loss: the
    example names that loss itself."""
    pytest.importorskip("transformers")
    loss_utils = pytest.importorskip("transformers.loss.loss_utils")
    args = example.build_parser().parse_args(["--device", "cpu", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
                                              "--vocab", "64", "--seq", "16"])
    model = example.build_model("dense", args)
    assert model.loss_type in loss_utils.LOSS_MAPPING
