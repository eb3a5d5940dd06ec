"""The model-family examples (examples/serve_llama.py, examples/finetune_bert.py) run as their
docstrings say, on CPU with tiny models, and convert what they say they convert."""

from __future__ import annotations

import math
import shlex

import pytest
import torch
from conftest import EXAMPLES, load_script, one_thread

from ss1bench import SSL

pytest.importorskip("transformers")


def documented_cpu_command(module) -> list[str]:
    """The arguments of the docstring's CPU command line."""
    line = next(line for line in module.__doc__.splitlines() if "--device cpu" in line)
    words = shlex.split(line.split("#")[0])
    return words[words.index("--tiny"):]


def test_serve_llama_converts_every_projection_and_serves_both_models():
    example = load_script("serve_llama", EXAMPLES)
    args = example.build_parser().parse_args(documented_cpu_command(example))
    model = example.to_ss1(example.build_model(args), args)
    layers = example.TINY["num_hidden_layers"]
    ssl = [name for name, module in model.named_modules() if isinstance(module, SSL)]
    assert len(ssl) == 7 * layers  # q, k, v, o, gate, up, down per block
    assert not isinstance(model.lm_head, SSL)
    assert all(model.get_submodule(name).caches_rotated_weight for name in ssl)
    with one_thread():
        results = example.main([*documented_cpu_command(example), "--compare"])
    assert set(results) == {"dense", f"ss1 c={args.redn_factor}"}
    for prefill_ms, tokens_per_s in results.values():
        assert math.isfinite(prefill_ms) and prefill_ms > 0
        assert math.isfinite(tokens_per_s) and tokens_per_s > 0


def test_finetune_bert_converts_the_encoder_and_learns_the_task():
    example = load_script("finetune_bert", EXAMPLES)
    args = example.build_parser().parse_args(documented_cpu_command(example))
    model = example.build_model(args)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, SSL)
    assert isinstance(model.bert.encoder.layer[0].intermediate.dense, SSL)
    assert isinstance(model.classifier, torch.nn.Linear) and not isinstance(model.classifier, SSL)
    with one_thread():
        before, after = example.main(documented_cpu_command(example))
    assert 0.3 <= before <= 0.7  # chance on a balanced task
    assert after >= 0.75
