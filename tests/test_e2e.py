"""``ss1bench e2e`` on the CPU: the work list, the option and prerequisite errors, the model table
(tiny variants of every model, GPT-2's padded vocabulary), the decode and training steps, the whole
timing path with an injected fake timer (eager, every compile mode through a recording compiler,
training steps), ``torch.compile`` for real (``aot_eager``: Inductor on this CPU takes 10-40 s a
model), and ``ss1bench report`` on the CSVs it writes (alone, mixed with a bench CSV, and from
before the compile and kernel-time columns).

Off CUDA the kernel-time column is empty (NaN): torch.profiler's CUDA activity has no kernels to see.
Tests that need it filled inject a kernel timer.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import time
from functools import partial

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from ss1bench.bench.schema import E2E_COLUMNS, RESULT_COLUMNS
from ss1bench.cli import main
from ss1bench.layer import SSL

transformers = pytest.importorskip("transformers")

from ss1bench import e2e  # noqa: E402  (after the importorskip: the package is useless without transformers)
from ss1bench.e2e import command as e2e_command  # noqa: E402
from ss1bench.e2e import models as e2e_models  # noqa: E402
from ss1bench.e2e import timing as e2e_timing  # noqa: E402
from ss1bench.report import E2E_HEADER  # noqa: E402

_GPT2 = {"n_embd": 64, "n_layer": 2, "n_head": 2, "bos_token_id": 1, "eos_token_id": 1}
#: Tiny sizes for every model of the table (same architecture, seconds on a CPU). The padded GPT-2
#: variants keep their real vocabulary (50304 rows): that is what they are about.
TINY = {
    "gpt2": {**_GPT2, "vocab_size": 256},
    "gpt2-padded": _GPT2,
    "gpt2-medium": {**_GPT2, "n_head": 4, "vocab_size": 256},
    "gpt2-medium-padded": {**_GPT2, "n_head": 4},
    "bert-base": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                  "vocab_size": 256},
    "bert-large": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
                   "vocab_size": 256},
    "llama-1b": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "vocab_size": 256},
}
TINY["llama-1b-32k"] = TINY["llama-1b"]
#: One block only: what the compile tests trace (tracing time grows with the blocks).
ONE_BLOCK = {"gpt2": {**TINY["gpt2"], "n_layer": 1},
             "bert-base": {**TINY["bert-base"], "num_hidden_layers": 1}}
CPU = torch.device("cpu")


def _dense_kinds(model: nn.Module) -> list[str]:
    """Paths of the nn.Linear / HF Conv1D layers left in ``model``."""
    return [path for path, module in model.named_modules()
            if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"]


# ---- command line -----------------------------------------------------------------------------


def test_dry_run_lists_the_work_and_weight_counts_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["e2e", "--dry-run", "--model", "gpt2,bert-base", "--redn-factors", "2,4",
                                       "--batch", "2", "--seq", "128"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    work = lines[:-1]
    # gpt2: prefill and decode; BERT (an encoder): prefill only; each at c = 2 and 4, eager.
    assert [line.split()[:4] for line in work] == [
        ["gpt2", "prefill", "compile=none", "c=2"], ["gpt2", "prefill", "compile=none", "c=4"],
        ["gpt2", "decode", "compile=none", "c=2"], ["gpt2", "decode", "compile=none", "c=4"],
        ["bert-base", "prefill", "compile=none", "c=2"], ["bert-base", "prefill", "compile=none", "c=4"]]
    assert all("tokens=256 " in line for line in work if " prefill " in line)  # batch x seq
    assert all("tokens=2 " in line for line in work if " decode " in line)  # one new token per sequence
    # GPT-2 small by hand: 12 blocks of qkv (768 -> 2304), proj (768 -> 768), fc (768 -> 3072), fc-proj
    # (3072 -> 768), plus the tied LM head (50257 x 768), which stays dense.
    h, vocab = 768, 50257
    dense = 12 * (h * 3 * h + h * h + 2 * h * 4 * h) + vocab * h
    # c = 4: K_red = K/4 for every converted layer (768 -> 192, 3072 -> 768, no padding).
    ss1 = 12 * (3 * h * 192 + h * 192 + 4 * h * 192 + h * 768) + vocab * h
    gpt2_c4 = next(line for line in work if line.startswith("gpt2") and "prefill" in line and "c=4" in line)
    assert f"linear weights {dense:,} dense -> {ss1:,} SS1" in gpt2_c4
    assert "48/49 layers SS1" in gpt2_c4
    assert "73/73 layers SS1" in work[-1]  # BERT: every linear layer, the pooler included
    assert lines[-1].startswith("6 (model, compile, phase, c) pairs")
    assert "; 12 timings;" in lines[-1]  # dense and SS1 side by side, once per pair
    assert "e2e_gpt2-bert-base_fp16_b2_s128.csv" in lines[-1]


def test_dry_run_of_compile_modes_and_training_steps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = CliRunner().invoke
    compiled = run(main, ["e2e", "--dry-run", "--model", "gpt2-padded,bert-base", "--compile", "none,reduce-overhead",
                          "--redn-factors", "4", "--batch", "1", "--seq", "16"])
    assert compiled.exit_code == 0, compiled.output
    lines = compiled.output.strip().splitlines()
    assert [line.split()[:3] for line in lines[:5]] == [
        ["gpt2-padded", "prefill", "compile=none"], ["gpt2-padded", "decode", "compile=none"],
        ["gpt2-padded", "prefill", "compile=reduce-overhead"],  # decode: eager only
        ["bert-base", "prefill", "compile=none"], ["bert-base", "prefill", "compile=reduce-overhead"]]
    h = 768
    assert f"linear weights {12 * 12 * h * h + 50304 * h:,} dense" in lines[0]  # the padded LM head
    assert lines[5].startswith("decode: timed in compile mode none only")
    assert lines[6].startswith("5 (model, compile, phase, c) pairs") and "; 10 timings;" in lines[6]
    assert "e2e_gpt2-padded-bert-base_fp16_b1_s16_compile-none-reduce-overhead.csv" in lines[6]

    train = run(main, ["e2e", "--dry-run", "--train", "--model", "gpt2,bert-base", "--redn-factors", "4"])
    assert train.exit_code == 0, train.output
    lines = train.output.strip().splitlines()
    assert [line.split()[:3] for line in lines[:2]] == [["gpt2", "train", "compile=none"],
                                                       ["bert-base", "train", "compile=none"]]
    assert "tokens=8192 " in lines[0]
    # BertForMaskedLM: 72 encoder linears and the head's transform convert, its decoder (tied) stays dense.
    assert "73/74 layers SS1" in lines[1]
    assert "e2e_gpt2-bert-base_bf16_b8_s1024_train.csv" in lines[-1]  # training: bf16 autocast by default


def test_the_command_passes_its_options_to_the_run(monkeypatch):
    seen = {}

    def fake_run(models, redn_factors, batch, seq, dtype, out, stem, args, **settings):
        seen.update(models=models, factors=redn_factors, dtype=dtype, out=out, stem=stem, args=args, **settings)
        return out / f"{stem}.csv", pd.DataFrame(columns=list(e2e.COLUMNS))

    monkeypatch.setattr(e2e_command, "run", fake_run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H200")
    result = CliRunner().invoke(main, ["e2e", "--model", "gpt2-padded", "--redn-factor", "2,4", "--train",
                                       "--compile", "none,reduce-overhead,none", "--batch", "4", "--seq", "64"])
    assert result.exit_code == 0, result.output
    assert (seen["models"], seen["factors"], seen["dtype"]) == (["gpt2-padded"], [2, 4], "bf16")
    assert seen["compile_modes"] == ["none", "reduce-overhead"] and seen["train"] is True
    assert seen["stem"] == "e2e_gpt2-padded_bf16_b4_s64_compile-none-reduce-overhead_train"
    assert str(seen["out"]) == "reports/H200"
    assert seen["args"]["compile"] == ["none", "reduce-overhead"] and seen["args"]["dtype"] == "bf16"
    assert "(no results)" in result.output


def test_timings_count_dense_and_ss1_once_per_pair():
    work = e2e.plan(["gpt2", "bert-base"], [2, 4, 8], batch=1, seq=8)
    assert len(work) == 2 * 3 + 1 * 3
    assert e2e.timings_in(work) == 2 * len(work)  # dense timed beside every SS1 timing
    compiled = e2e.plan(["gpt2", "bert-base"], [2, 4], 1, 8, ["none", "default", "max-autotune"])
    assert len(compiled) == (3 + 2 + 2) * 2  # decode in mode none only
    train = e2e.plan(["gpt2", "bert-base"], [2], 1, 8, ["none", "default"], train=True)
    assert [(w.model, w.phase, w.compile) for w in train] == [
        ("gpt2", "train", "none"), ("gpt2", "train", "default"), ("bert-base", "train", "none"),
        ("bert-base", "train", "default")]
    assert all(w.tokens == 8 for w in train)


def test_without_cuda_exits_2_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["e2e", "--model", "gpt2", "--redn-factors", "4"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("ss1bench e2e: error: ")
    assert "CUDA" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert not list(tmp_path.rglob("*")), "nothing is written"


def test_unknown_model_is_a_usage_error_naming_the_valid_ones():
    result = CliRunner().invoke(main, ["e2e", "--dry-run", "--model", "gpt2,gpt5"])
    assert result.exit_code == 2
    assert "gpt5" in result.output and "Traceback" not in result.output
    for name in e2e.MODEL_NAMES:
        assert name in result.output


@pytest.mark.parametrize("args", [["--redn-factors", "3"], ["--redn-factor", "3"], ["--redn-factors", "x"],
                                  ["--dtype", "fp8"], ["--batch", "0"], ["--seq", "-1"], ["--compile", "fast"],
                                  ["--compile", ""]])
def test_bad_options_exit_2(args):
    result = CliRunner().invoke(main, ["e2e", "--dry-run", *args])
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output


def test_missing_transformers_exits_2_with_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    result = CliRunner().invoke(main, ["e2e", "--dry-run"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("ss1bench e2e: error: ")
    assert "pip install transformers" in result.output


def test_e2e_does_not_import_the_cli():
    """cli.py adds e2e's command; e2e never imports cli (no import cycle)."""
    code = "import sys, ss1bench.e2e; assert 'ss1bench.cli' not in sys.modules, 'e2e imported the cli'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# ---- model table ------------------------------------------------------------------------------


def test_model_table_has_the_published_shapes():
    shapes = {}
    for name in e2e.MODEL_NAMES:
        model_class, config = e2e.build_config(name)
        assert model_class.__name__ == e2e.MODELS[name].model_class
        shapes[name] = (*e2e.model_dims(config), config.num_hidden_layers, config.num_attention_heads)
    assert shapes == {"gpt2": (768, 3072, 12, 12), "gpt2-padded": (768, 3072, 12, 12),
                      "gpt2-medium": (1024, 4096, 24, 16), "gpt2-medium-padded": (1024, 4096, 24, 16),
                      "bert-base": (768, 3072, 12, 12), "bert-large": (1024, 4096, 24, 16),
                      "llama-1b": (2048, 8192, 16, 32), "llama-1b-32k": (2048, 8192, 16, 32)}
    vocab = {name: e2e.build_config(name)[1].vocab_size for name in e2e.MODEL_NAMES if name.startswith("gpt2")}
    assert vocab == {"gpt2": 50257, "gpt2-padded": 50304, "gpt2-medium": 50257, "gpt2-medium-padded": 50304}
    assert 50304 % 64 == 0 and 50257 % 2 == 1  # the point of the padded variants
    _, llama = e2e.build_config("llama-1b")
    assert (llama.num_key_value_heads, llama.vocab_size, llama.tie_word_embeddings) == (8, 128256, True)
    assert e2e.build_config("llama-1b-32k")[1].vocab_size == 32000  # the Llama-1B-size model
    rope = getattr(llama, "rope_parameters", None) or {"rope_theta": getattr(llama, "rope_theta", None)}
    assert rope["rope_theta"] == 500000.0
    assert [name for name in e2e.MODEL_NAMES if e2e.MODELS[name].decoder] == [
        "gpt2", "gpt2-padded", "gpt2-medium", "gpt2-medium-padded", "llama-1b", "llama-1b-32k"]
    train_classes = {name: e2e.build_config(name, train=True)[0].__name__ for name in e2e.MODEL_NAMES}
    assert train_classes["bert-base"] == train_classes["bert-large"] == "BertForMaskedLM"  # a loss to train on
    assert train_classes["gpt2-padded"] == "GPT2LMHeadModel" and train_classes["llama-1b"] == "LlamaForCausalLM"


def test_position_limits_cover_the_run():
    # GPT-2 has 1024 learned positions: a decode step after a 1024-token prompt needs position 1024.
    assert e2e.build_config("gpt2", seq=1024)[1].n_positions == 1025
    assert e2e.build_config("gpt2", seq=100)[1].n_positions == 1024  # never lowered
    assert e2e.build_config("bert-base", seq=1024)[1].max_position_embeddings == 1024  # BERT's default: 512
    assert e2e.build_config("llama-1b", seq=1024)[1].max_position_embeddings == 131072


@pytest.mark.parametrize("name", list(e2e.MODELS))
def test_tiny_models_build_and_convert_to_ssl(name):
    model = e2e.build_model(name, CPU, torch.float32, seq=16, overrides=TINY[name])
    assert type(model).__name__ == e2e.MODELS[name].model_class
    assert not model.training
    assert model.config._attn_implementation == "sdpa"
    dense_paths = _dense_kinds(model)
    assert dense_paths
    dense_weights = e2e.linear_weight_params(model)
    assert dense_weights == sum(model.get_submodule(path).weight.numel() for path in dense_paths)

    from ss1bench import convert_to_ss_linear

    converted = convert_to_ss_linear(model, 2, project=False)
    # Only a tied LM head (GPT-2, Llama-3.2: tie_word_embeddings) stays dense.
    assert _dense_kinds(converted) == (["lm_head"] if e2e.MODELS[name].decoder else [])
    ssl = [module for module in converted.modules() if isinstance(module, SSL)]
    assert len(ssl) == len(dense_paths) - len(_dense_kinds(converted))
    assert e2e.linear_weight_params(converted) < dense_weights
    hidden, intermediate = e2e.model_dims(converted.config)
    structure = e2e.mlp_structure(converted, hidden, intermediate)
    assert structure is not None and structure.redn_factor == 2 and structure.k_red == hidden // 2
    ids = torch.randint(1, 256, (2, 16))
    with torch.no_grad():
        out = converted(ids)
    assert (out.logits if hasattr(out, "logits") else out.last_hidden_state).shape[:2] == (2, 16)
    if name.endswith("-padded"):
        assert out.logits.shape[-1] == 50304


def test_build_model_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    first = e2e.build_model("gpt2", CPU, torch.float32, overrides=TINY["gpt2"])
    assert torch.equal(torch.random.get_rng_state(), before)
    second = e2e.build_model("gpt2", CPU, torch.float32, overrides=TINY["gpt2"])
    assert torch.equal(first.transformer.h[0].mlp.c_fc.weight, second.transformer.h[0].mlp.c_fc.weight)


def test_a_training_copy_is_converted_in_the_autocast_dtype_and_keeps_fp32_weights(monkeypatch):
    dense = e2e.build_model("gpt2", CPU, torch.float32, overrides=TINY["gpt2"], train=True)
    assert dense.training
    seen = []
    convert = e2e_models.convert_to_ss_linear

    def recording(model, c, **kwargs):
        seen.append(next(model.parameters()).dtype)
        return convert(model, c, **kwargs)

    monkeypatch.setattr(e2e_models, "convert_to_ss_linear", recording)
    copy = e2e.ss1_copy(dense, 2, torch.bfloat16)
    assert seen == [torch.bfloat16]  # the tuning database is asked for the dtype the products run in
    assert {p.dtype for p in copy.parameters()} == {torch.float32}
    assert copy.training and not any(isinstance(m, SSL) for m in dense.modules())


# ---- decode and training steps ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "llama-1b"])
def test_decode_step_keeps_the_cache_length_fixed(name):
    model = e2e.build_model(name, CPU, torch.float32, seq=12, overrides=TINY[name])
    generator = torch.Generator().manual_seed(0)
    inputs = e2e.Inputs.random(256, 3, 12, generator, CPU)
    assert int(inputs.prompt.min()) >= 1 and int(inputs.new_ids.min()) >= 1  # never zeros
    with torch.no_grad():
        step = e2e.DecodeStep(model, inputs.prompt, inputs.new_ids)
        assert step.cache.get_seq_length() == 12
        outputs = []
        for _ in range(4):
            outputs.append(step().logits)
            assert step.cache.get_seq_length() == 12
        full = model(torch.cat([inputs.prompt, inputs.new_ids], dim=1), use_cache=False).logits[:, -1:]
    assert outputs[0].shape == (3, 1, 256)
    for logits in outputs[1:]:  # the same cache every step, so the same answer
        torch.testing.assert_close(logits, outputs[0])
    torch.testing.assert_close(outputs[0], full, rtol=1e-4, atol=1e-4)  # and the cache is the prompt's


@pytest.mark.parametrize("name, autocast", [("gpt2", None), ("bert-base", torch.bfloat16)])
def test_a_training_step_updates_every_weight(name, autocast):
    model = e2e.ss1_copy(e2e.build_model(name, CPU, torch.float32, seq=8, overrides=TINY[name], train=True), 2)
    ids = e2e.Inputs.random(256, 2, 8, torch.Generator().manual_seed(0), CPU).prompt
    step = e2e.TrainStep(model, ids, autocast)
    assert not step.optimizer.defaults["fused"]  # fused AdamW on CUDA only
    layers = [layer for layer in model.modules() if isinstance(layer, SSL)]
    before = [layer.weight.detach().clone() for layer in layers]
    loss = step()
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    assert layers and all(layer.weight.grad is not None for layer in layers)
    assert all(not torch.equal(layer.weight, old) for layer, old in zip(layers, before, strict=True))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast computes, weights stay fp32


# ---- timing core ------------------------------------------------------------------------------


class FakeTimer:
    """Stands in for the side-by-side timer: runs each call once and returns a new median per call
    (p20/p80 around it). ``calls`` lists (warmup_ms, rep_ms, number of calls) per timing. With
    ``fail_on``, every timing that includes the ``fail_on``-th distinct call it has seen fails."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail_on = fail_on
        self.values = itertools.count(3)
        self.seen: dict[int, int] = {}

    def __call__(self, calls, warmup_ms, rep_ms):
        self.calls.append((warmup_ms, rep_ms, len(calls)))
        ordinals = [self.seen.setdefault(id(call), len(self.seen) + 1) for call in calls]
        if self.fail_on in ordinals:
            raise RuntimeError("fake timer failed\nsecond line")
        timings = []
        for call in calls:
            call()
            median = 0.5 * next(self.values)
            timings.append((median, 0.9 * median, 1.2 * median))
        return timings


MODELS_RUN = ["gpt2", "bert-base", "llama-1b"]
FACTORS = [2, 4]
BATCH, SEQ = 2, 8


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    timer = FakeTimer()
    args = {"models": MODELS_RUN, "redn_factors": FACTORS}
    stem = e2e.output_stem(MODELS_RUN, "fp32", BATCH, SEQ)
    csv_path, frame = e2e.run(MODELS_RUN, FACTORS, BATCH, SEQ, "fp32", folder, stem, args, device=CPU, timer=timer,
                              warmup_ms=7, rep_ms=11, echo=lambda line: None, overrides=TINY)
    return csv_path, frame, timer


def test_run_writes_the_bench_csv_layout(e2e_run):
    csv_path, frame, timer = e2e_run
    assert csv_path.name == "e2e_gpt2-bert-base-llama-1b_fp32_b2_s8.csv"
    written = pd.read_csv(csv_path)
    assert tuple(written.columns) == e2e.COLUMNS == (*RESULT_COLUMNS, *E2E_COLUMNS) == tuple(frame.columns)
    assert len(frame) == len(written)
    pairs = e2e.plan(MODELS_RUN, FACTORS, BATCH, SEQ)
    assert len(written) == 2 * len(pairs)
    assert list(written["provider"]) == ["dense", "ss1_tuned"] * len(pairs)
    assert set(written["shape_set"]) == {"e2e"} and set(written["mode"]) == {"fwd"}
    assert set(written["status"]) == {"ok"} and set(written["compile"]) == {"none"}
    assert timer.calls == [(7, 11, 2)] * len(pairs)  # dense and SS1 side by side, once per pair
    assert list(written["layer"].str.split().str[0].drop_duplicates()) == MODELS_RUN
    assert written["kernel_ms"].isna().all()  # no CUDA kernels to profile on a CPU
    assert (written["compile_s"] > 0).all()  # the first call's seconds (eager: no compilation)

    # speedup = dense_ms / median_ms, dense_ms = the dense row's median of the same (model, phase, c).
    assert (written["speedup_vs_dense"] - written["dense_ms"] / written["median_ms"]).abs().max() < 1e-12
    for (_, _), group in written.groupby(["layer", "redn_factor"]):
        dense, ss1 = group.iloc[0], group.iloc[1]
        assert dense["provider"] == "dense" and dense["median_ms"] == ss1["dense_ms"] == dense["dense_ms"]
        assert ss1["weight_params"] < dense["weight_params"]
        assert ss1["flops"] == 2 * ss1["M"] * ss1["weight_params"]
        assert ss1["dense_flops"] == dense["flops"]
        assert math.isnan(ss1["ideal_ms"]) and math.isnan(ss1["fraction_of_ideal"])
        assert ss1["k_red"] == dense["k_red"] == ss1["K"] // ss1["redn_factor"]
        assert ss1["block_k"] > 0 and math.isnan(dense["block_k"])
    # the dense model is timed again beside each c
    dense_rows = written[written["provider"] == "dense"]
    assert (dense_rows.groupby("layer")["median_ms"].nunique() == len(FACTORS)).all()


def test_rows_describe_the_model(e2e_run):
    _, frame, _ = e2e_run
    rows = {(r["layer"], r["redn_factor"], r["provider"]): r for r in frame.to_dict("records")}
    gpt2 = rows[("gpt2 prefill", 2, "ss1_tuned")]
    assert (gpt2["M"], gpt2["K"], gpt2["N"]) == (BATCH * SEQ, 64, 256)  # hidden, 4 x hidden
    decode = rows[("llama-1b decode", 4, "dense")]
    assert (decode["M"], decode["K"], decode["N"]) == (BATCH, 64, 128)
    assert ("bert-base decode", 2, "dense") not in rows
    for row in frame.to_dict("records"):
        detail = dict(part.split("=", 1) for part in row["detail"].split("; "))
        assert float(detail["tokens/s"]) == pytest.approx(row["M"] / row["median_ms"] * 1e3, abs=0.5)
        assert detail["timing"] == "eager" and detail["attention"] == "sdpa" and "step" not in detail
    assert rows[("gpt2 decode", 2, "ss1_tuned")]["detail"].endswith("linear layers=8/9 SS1 (project=False)")


def test_run_writes_the_sidecar(e2e_run):
    csv_path, _, _ = e2e_run
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    for key in ("gpu", "torch", "triton", "date", "git_commit", "database", "args", "models", "phases",
                "compile_modes", "train"):
        assert key in meta, key
    assert meta["gpu"] == "CPU" and meta["complete"] is True
    assert meta["args"] == {"models": MODELS_RUN, "redn_factors": FACTORS}
    assert meta["compile_modes"] == ["none"] and meta["train"] is False
    assert meta["models"]["llama-1b"]["config"]["hidden_size"] == 64
    assert set(meta["providers"]) == {"dense", "ss1_tuned"}
    assert "copy_bandwidth_gbs" not in meta  # a layer-benchmark quantity


def test_summary_table_lists_every_pair(e2e_run):
    _, frame, _ = e2e_run
    table = e2e.summary_table(frame).splitlines()
    assert table[0].split() == ["model", "phase", "compile", "c", "tokens", "dense", "ms", "SS1", "ms", "speedup",
                                "dense", "kernel", "ms", "SS1", "kernel", "ms", "SS1", "tok/s"]
    assert len(table) == 1 + len(e2e.plan(MODELS_RUN, FACTORS, BATCH, SEQ))
    assert all(line.split()[-3:-1] == ["–", "–"] for line in table[1:])  # no kernel times off CUDA


def test_failures_become_status_rows_and_the_run_goes_on(tmp_path):
    broken = {**TINY, "gpt2": {**TINY["gpt2"], "n_head": 3}}  # 64 is not a multiple of 3 heads
    timer = FakeTimer(fail_on=2)  # bert-base: SS1 at c=2 (the second call) fails; dense is then timed alone
    _, frame = e2e.run(["gpt2", "bert-base"], [2], 1, 4, "fp32", tmp_path, "e2e_fail", {}, device=CPU, timer=timer,
                       echo=lambda line: None, overrides=broken)
    gpt2 = frame[frame["layer"].str.startswith("gpt2")]
    assert len(gpt2) == 4 and gpt2["status"].str.contains("divisible|head", regex=True).all()
    assert gpt2["median_ms"].isna().all() and gpt2["compile_s"].isna().all()
    bert = frame[frame["layer"] == "bert-base prefill"].set_index("provider")
    assert bert.loc["dense", "status"] == "ok"
    assert "timed alone: timing side by side failed: RuntimeError: fake timer failed" in bert.loc["dense", "detail"]
    assert bert.loc["ss1_tuned", "status"] == "RuntimeError: fake timer failed"
    assert math.isnan(bert.loc["ss1_tuned", "speedup_vs_dense"])

    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(tmp_path / "e2e_fail.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = (out / "summary.md").read_text()
    assert "### Failed end-to-end timings" in summary and "RuntimeError: fake timer failed" in summary


def test_cuda_graph_falls_back_to_eager_and_says_so():
    """On the CPU capture always fails: the eager timing (taken first) is the row's."""
    timer, built = FakeTimer(), []

    def make_call():
        built.append(1)
        return lambda: torch.ones(4).sum()

    measured = e2e.time_call(make_call, CPU, timer, cuda_graph=True)
    assert measured.timing.status == "ok" and measured.timing.median_ms == 1.5
    assert measured.how.startswith("eager (CUDA graph capture failed: ")
    assert len(built) == 1 and len(timer.calls) == 1
    assert math.isnan(measured.kernel_ms) and measured.first_call_s >= 0
    failed = e2e.time_call(lambda: (lambda: 1 / 0), CPU, timer)
    assert failed.timing.status == "ZeroDivisionError: division by zero" and math.isnan(failed.timing.median_ms)


@pytest.mark.parametrize("graph_ms, expect_graph", [(1.0, True), (3.0, False)])
def test_cuda_graph_replay_is_kept_only_when_faster(monkeypatch, graph_ms, expect_graph):
    def timer(calls, warmup_ms, rep_ms):
        assert len(calls) == 2  # the eager call and its replay, side by side
        return [(graph_ms, graph_ms, graph_ms) if call == "replay" else (2.0, 1.9, 2.1) for call in calls]

    profiled = []
    monkeypatch.setattr(e2e_timing, "_capture", lambda call, device: ("replay", "cuda-graph"))
    measured = e2e.time_call(lambda: (lambda: None), CPU, timer, cuda_graph=True,
                             kernel_timer=lambda call, device: profiled.append(call) or 0.5)
    assert measured.timing.median_ms == (graph_ms if expect_graph else 2.0)
    if expect_graph:
        assert measured.how == "cuda-graph" and profiled == ["replay"]  # kernel time of the call kept
    else:
        assert measured.how.startswith("eager (faster than its CUDA graph: 3 ms") and profiled != ["replay"]
    assert measured.kernel_ms == 0.5


def test_side_by_side_timer_interleaves_the_calls_in_rounds(monkeypatch):
    """Every call runs in every round, first in even rounds and last in odd ones, about
    rep_ms / rounds each; the quantiles are of all its timed runs."""
    runs = []

    def timed(call, times):  # a fake clock: call "a" takes 2 ms, "b" 5 ms
        runs.extend([call.name] * times)
        return [call.ms] * times

    def call(name, ms):
        def fn():
            runs.append(f"{name} (warm-up)")
        fn.name, fn.ms = name, ms
        return fn

    monkeypatch.setattr(e2e_timing, "_run_timed", timed)
    a, b = call("a", 2.0), call("b", 5.0)
    timings = e2e.side_by_side_timer([a, b], warmup_ms=10, rep_ms=40, rounds=4)
    assert timings == [(2.0, 2.0, 2.0), (5.0, 5.0, 5.0)]
    # estimates (3 runs each), warm-up (10 ms each), then rounds of 10 ms: a x5, b x2; b first in odd rounds
    assert runs[:6] == ["a"] * 3 + ["b"] * 3 and runs[6:13] == ["a (warm-up)"] * 5 + ["b (warm-up)"] * 2
    rounds = runs[13:]
    assert rounds == (["a"] * 5 + ["b"] * 2 + ["b"] * 2 + ["a"] * 5) * 2


def test_side_by_side_timer_keeps_no_block_s_first_run(monkeypatch):
    """The first run of each block overlaps the other call's GPU tail: it is run, not kept; a block
    has at least two runs, so every round keeps one or more."""
    def timed(call, times):  # the first run of a block reads 100 ms, the rest the call's own time
        return [100.0] + [call.ms] * (times - 1)

    def call(ms):
        fn = lambda: None
        fn.ms = ms
        return fn

    monkeypatch.setattr(e2e_timing, "_run_timed", timed)
    slow = call(50.0)  # longer than a round: still two runs per block
    (fast_median, _, fast_p80), (slow_median, slow_p20, slow_p80) = e2e.side_by_side_timer(
        [call(1.0), slow], warmup_ms=1, rep_ms=40, rounds=4)
    assert (fast_median, fast_p80) == (1.0, 1.0) and slow_median == slow_p20 == slow_p80 == 50.0


def test_side_by_side_timer_runs_real_calls_and_reports_their_spread():
    slept = {"short": 0.002, "long": 0.006}
    calls = [lambda: time.sleep(slept["short"]), lambda: time.sleep(slept["long"])]
    (short, short20, short80), (long, long20, long80) = e2e.side_by_side_timer(calls, 5, 60, rounds=3)
    assert short20 <= short <= short80 and long20 <= long <= long80
    assert 2.0 <= short < long and long >= 6.0


def test_calls_that_fail_together_are_timed_alone_and_keep_their_own_status():
    def timer(calls, warmup_ms, rep_ms):
        if len(calls) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory\ndetails")
        if calls[0]() == "broken":
            raise RuntimeError("only this call fails")
        return [(1.0, 0.9, 1.1)]

    measured = e2e.time_calls([lambda: (lambda: "fine"), lambda: (lambda: "broken"), lambda: 1 / 0], CPU, timer)
    assert measured[0].timing.median_ms == 1.0
    assert measured[0].notes == ["timed alone: timing side by side failed: OutOfMemoryError: CUDA out of memory"]
    assert measured[1].timing.status == "RuntimeError: only this call fails"
    assert measured[2].timing.status == "ZeroDivisionError: division by zero"  # never built: never timed


def test_a_failed_kernel_timing_leaves_the_wall_time():
    def broken(call, device):
        raise RuntimeError("CUPTI unavailable\nmore")

    measured = e2e.time_call(lambda: (lambda: None), CPU, FakeTimer(), kernel_timer=broken)
    assert measured.timing.status == "ok" and measured.timing.median_ms == 1.5
    assert math.isnan(measured.kernel_ms) and measured.notes == ["kernel time failed: RuntimeError: CUPTI unavailable"]


def test_a_training_call_runs_with_gradients_and_inference_without():
    modes = []
    e2e.time_call(lambda: (lambda: modes.append(torch.is_grad_enabled())), CPU, FakeTimer())
    e2e.time_call(lambda: (lambda: modes.append(torch.is_grad_enabled())), CPU, FakeTimer(), grad=True)
    assert modes == [False, False, True, True]  # first call and timer call of each


# ---- compile modes and training runs ----------------------------------------------------------


class RecordingCompiler:
    """Stands in for torch.compile: records each (model, mode), returns a forward that notes whether
    ``torch.compiler.cudagraph_mark_step_begin()`` ran just before it."""

    def __init__(self) -> None:
        self.compiled: list[tuple[str, str]] = []
        self.calls: list[tuple[str, int]] = []
        self.marks = 0

    def mark(self) -> None:
        self.marks += 1

    def __call__(self, model, mode):
        kind = "ss1" if any(isinstance(m, SSL) for m in model.modules()) else "dense"
        self.compiled.append((kind, mode))

        def forward(*args, **kwargs):
            self.calls.append((mode, self.marks))
            self.marks = 0
            return model(*args, **kwargs)

        return forward


def _run(folder, models, modes, dtype="fp32", train=False, **settings):
    stem = e2e.output_stem(models, dtype, BATCH, SEQ, modes, train)
    return e2e.run(models, [2], BATCH, SEQ, dtype, folder, stem, {}, device=CPU, echo=lambda line: None,
                   overrides=ONE_BLOCK, compile_modes=modes, train=train, **settings)


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e_compiled")
    compiler = RecordingCompiler()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.compiler, "cudagraph_mark_step_begin", compiler.mark)
        csv_path, frame = _run(folder, ["gpt2", "bert-base"], list(e2e.COMPILE_MODES), timer=FakeTimer(),
                               compiler=compiler, kernel_timer=lambda call, device: (call(), 0.25)[1])
    return csv_path, frame, compiler


def test_every_compile_mode_times_dense_and_ss1_side_by_side(compiled_run):
    csv_path, frame, compiler = compiled_run
    assert csv_path.name == "e2e_gpt2-bert-base_fp32_b2_s8_compile-none-default-max-autotune-reduce-overhead.csv"
    assert set(frame["status"]) == {"ok"}
    order = list(zip(frame["layer"], frame["compile"], frame["provider"], strict=True))
    assert order == [(layer, mode, provider) for layer, mode in [
        ("gpt2 prefill", "none"), ("gpt2 decode", "none"), ("gpt2 prefill", "default"),
        ("gpt2 prefill", "max-autotune"), ("gpt2 prefill", "reduce-overhead"), ("bert-base prefill", "none"),
        ("bert-base prefill", "default"), ("bert-base prefill", "max-autotune"),
        ("bert-base prefill", "reduce-overhead")] for provider in ("dense", "ss1_tuned")]
    # Each compiled (model, mode) is compiled once, dense and SS1 alike, side by side; eager calls are
    # never compiled.
    assert compiler.compiled == [(kind, mode) for _ in ("gpt2", "bert-base") for mode in e2e.COMPILE_MODES[1:]
                                 for kind in ("dense", "ss1")]
    # CUDA-graph modes start every call with cudagraph_mark_step_begin(); default does not.
    for mode, marks in compiler.calls:
        assert marks == (1 if mode in ("max-autotune", "reduce-overhead") else 0), (mode, marks)
    details = [dict(part.split("=", 1) for part in d.split("; ")) for d in frame["detail"]]
    assert [d["timing"] for d in details] == ["eager" if m == "none" else "compiled" for m in frame["compile"]]
    # speedup: dense and SS1 in the same mode
    for (_, _), group in frame.groupby(["layer", "compile"]):
        dense, ss1 = group.iloc[0], group.iloc[1]
        assert ss1["dense_ms"] == dense["median_ms"]
    assert (frame["kernel_ms"] == 0.25).all()  # the injected kernel timer's value, every row
    assert (frame["compile_s"] > 0).all()


def test_compiled_calls_run_without_the_rotated_weight_cache(monkeypatch, tmp_path):
    switched = []
    real = e2e_command.cache_rotated_weights
    monkeypatch.setattr(e2e_command, "cache_rotated_weights",
                        lambda model, enabled=True: switched.append(enabled) or real(model, enabled))
    _, frame = _run(tmp_path, ["gpt2"], ["none", "default"], timer=FakeTimer(), compiler=RecordingCompiler())
    assert switched == [True, False]  # on for the eager calls, off (no memory held) for the compiled ones
    assert set(frame["status"]) == {"ok"}



@pytest.mark.parametrize("freezing", [True, False])
def test_freezing_is_on_for_compiled_inference_calls_only(tmp_path, freezing):
    """With ``freezing`` the compiled inference calls (dense and SS1) run, from their first
    (compiling) call on, with Inductor's parameter freezing, and the setting is restored after."""
    from torch._inductor import config as inductor_config

    seen = []

    class FreezingCompiler(RecordingCompiler):
        def __call__(self, model, mode):
            forward = super().__call__(model, mode)
            return lambda *args, **kwargs: (seen.append((mode, inductor_config.freezing)), forward(*args, **kwargs))[1]

    csv_path, frame = _run(tmp_path, ["gpt2"], ["none", "default"], timer=FakeTimer(), compiler=FreezingCompiler(),
                           freezing=freezing)
    assert set(frame["status"]) == {"ok"}
    assert {flag for mode, flag in seen if mode == "default"} == {freezing}
    assert inductor_config.freezing is False  # restored after the run
    assert json.loads(csv_path.with_suffix(".json").read_text())["freezing"] is freezing
    # frozen rows name it in their compile column, so a report keeps them apart from unfrozen ones
    assert set(frame["compile"]) == {"none", "default+freezing" if freezing else "default"}


def test_report_keeps_frozen_and_unfrozen_rows_apart(tmp_path):
    """A run with ``freezing`` and one without, reported together: both compiled rows stay (they
    are different cases), in the summary table and in the plot's panels."""
    csvs = [_run(tmp_path / str(freezing), ["gpt2"], ["default"], timer=FakeTimer(), compiler=RecordingCompiler(),
                 freezing=freezing)[0] for freezing in (False, True)]
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", *map(str, csvs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _tables((out / "summary.md").read_text())[tuple(E2E_HEADER)]
    assert sorted(cells[COL["compile"]] for cells in rows) == ["default", "default+freezing"]


@pytest.mark.parametrize("args, message", [
    (["--train", "--compile", "default"], "inference only"),
    (["--compile", "none"], "add a --compile mode"),
])
def test_freezing_is_refused_where_it_does_not_apply(args, message):
    result = CliRunner().invoke(main, ["e2e", "--freezing", "--dry-run", *args])
    assert result.exit_code == 2 and message in result.output, result.output

@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    """Training steps under bf16 autocast (the CPU runs it too), eager."""
    folder = tmp_path_factory.mktemp("e2e_train")
    return _run(folder, ["gpt2", "bert-base"], ["none"], "bf16", train=True, timer=FakeTimer())


def test_training_runs_write_train_rows(train_run):
    csv_path, frame = train_run
    assert csv_path.name == "e2e_gpt2-bert-base_bf16_b2_s8_train.csv"
    assert set(frame["status"]) == {"ok"}, frame["status"]
    assert list(frame["layer"]) == ["gpt2 train"] * 2 + ["bert-base train"] * 2
    assert set(frame["mode"]) == {"fwd+bwd"} and set(frame["dtype"]) == {"bf16"}
    assert (frame["M"] == BATCH * SEQ).all()
    assert (frame["flops"] == 6 * frame["M"] * frame["weight_params"]).all()  # forward + two gradient products
    assert all(d.endswith("step=AdamW, bf16 autocast, fp32 weights") for d in frame["detail"])
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    assert meta["train"] is True and meta["models"]["bert-base"]["class"] == "BertForMaskedLM"
    assert "cache_rotated_weights" not in meta["conversion"]  # training updates the weights every step


@pytest.mark.parametrize("phase, mode", [("prefill", "default"), ("train", "reduce-overhead")])
def test_torch_compile_for_real_on_an_ss1_model(phase, mode):
    """``aot_eager`` traces what Inductor would (Dynamo, AOTAutograd's forward and backward graphs)
    without compiling kernels: the compiled prefill and training step of an SS1 model, as a run
    times them (the dense model's compiled calls are torch's own)."""
    train = phase == "train"
    model = e2e.ss1_copy(e2e.build_model("gpt2", CPU, torch.float32, SEQ, ONE_BLOCK["gpt2"], train=train), 2)
    inputs = e2e.Inputs.random(256, BATCH, SEQ, torch.Generator().manual_seed(0), CPU)
    compiled = []

    def compiler(module, compile_mode):
        compiled.append(compile_mode)
        return torch.compile(module, backend="aot_eager")

    make = partial(e2e.phase_call, model, phase, inputs, True, compile_mode=mode, compiler=compiler)
    measured = e2e.time_call(make, CPU, FakeTimer(), grad=train, how="compiled")
    assert measured.timing.status == "ok", measured.timing.status
    assert compiled == [mode] and measured.first_call_s > 0 and measured.how == "compiled"


def test_dense_and_ss1_compiled_side_by_side_each_run_their_own_graphs():
    """The pair is compiled once before timing (no torch.compiler.reset() between the two models,
    which share their code objects); alternating between them while timing recompiles nothing, and
    each compiled call still computes its own model."""
    from torch._dynamo.utils import counters

    dense = e2e.build_model("gpt2", CPU, torch.float32, SEQ, ONE_BLOCK["gpt2"])
    ss1 = e2e.ss1_copy(dense, 2)
    inputs = e2e.Inputs.random(256, BATCH, SEQ, torch.Generator().manual_seed(0), CPU)
    with torch.no_grad():
        expected = [model(inputs.prompt, use_cache=False).logits for model in (dense, ss1)]
    assert not torch.allclose(expected[0], expected[1])  # two different functions

    seen = {}

    def alternating_timer(calls, warmup_ms, rep_ms):
        graphs = counters["stats"]["unique_graphs"]
        outputs = [[call().logits for call in calls] for _ in range(3)]  # dense, SS1, dense, SS1, ...
        seen.update(new_graphs=counters["stats"]["unique_graphs"] - graphs, outputs=outputs)
        return [(1.0, 1.0, 1.0)] * len(calls)

    torch.compiler.reset()
    def compiler(module, mode):
        return torch.compile(module, backend="aot_eager")

    makes = [partial(e2e.phase_call, model, "prefill", inputs, True, compile_mode="default", compiler=compiler)
             for model in (dense, ss1)]
    measured = e2e.time_calls(makes, CPU, alternating_timer, how="compiled")
    torch.compiler.reset()
    assert [m.timing.status for m in measured] == ["ok", "ok"]
    assert seen["new_graphs"] == 0
    for outputs in seen["outputs"]:
        for got, want in zip(outputs, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---- report -----------------------------------------------------------------------------------


def _tables(markdown: str) -> dict[tuple[str, ...], list[list[str]]]:
    tables, current = {}, None
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if current is None:
                current = tables.setdefault(tuple(cells), [])
            elif not all(re.fullmatch(r"-+", cell) for cell in cells):
                current.append(cells)
        else:
            current = None
    return tables


COL = {name: i for i, name in enumerate(E2E_HEADER)}


def test_report_on_an_e2e_csv(e2e_run, tmp_path):
    csv_path, frame, _ = e2e_run
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(csv_path.parent), "--out", str(out)])  # a folder works
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"e2e_speedup_CPU_fp32.png", "summary.md"}
    assert (out / "e2e_speedup_CPU_fp32.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "## End-to-end models" in summary and "](e2e_speedup_CPU_fp32.png)" in summary
    assert "## Headline" not in summary  # no layer-benchmark rows, no layer-benchmark sections
    rows = _tables(summary)[tuple(E2E_HEADER)]
    ss1 = frame[frame["provider"] == "ss1_tuned"]
    assert len(rows) == len(ss1)
    for cells, row in zip(rows, ss1.to_dict("records"), strict=True):
        assert f"{cells[COL['model']]} {cells[COL['phase']]}" == row["layer"]
        assert cells[COL["compile"]] == "none"
        assert int(cells[COL["c"]]) == row["redn_factor"] and int(cells[COL["tokens (M)"]]) == row["M"]
        assert float(cells[COL["speedup vs dense"]]) == pytest.approx(row["speedup_vs_dense"], abs=0.0051)  # 2 decimals
        assert float(cells[COL["SS1 ms"]]) == pytest.approx(row["median_ms"], rel=1e-3)
        assert int(cells[COL["linear weights SS1"]].replace(",", "")) == row["weight_params"]
        assert cells[COL["timing"]] == "eager"
        # no kernel times off CUDA: every kernel column is empty
        for name in ("dense kernel ms", "SS1 kernel ms", "kernel speedup", "wall/kernel dense", "wall/kernel SS1"):
            assert cells[COL[name]] == "–", name
        dense = frame[(frame["layer"] == row["layer"]) & (frame["redn_factor"] == row["redn_factor"])
                      & (frame["provider"] == "dense")].iloc[0]  # dense is timed beside each c
        first_calls = [float(v) for v in cells[COL["first call s dense / SS1"]].split(" / ")]
        assert first_calls == pytest.approx([dense["compile_s"], row["compile_s"]], rel=1e-2, abs=1e-3)


def test_report_on_compiled_and_training_csvs(compiled_run, train_run, tmp_path):
    (compiled_csv, compiled, _), (train_csv, train) = compiled_run, train_run
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(compiled_csv), str(train_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"e2e_speedup_CPU_fp32.png", "e2e_speedup_CPU_bf16_train.png",
                                               "summary.md"}
    rows = _tables((out / "summary.md").read_text())[tuple(E2E_HEADER)]
    frame = pd.concat([compiled, train])
    ss1 = frame[frame["provider"] == "ss1_tuned"].to_dict("records")
    assert len(rows) == len(ss1)  # one row per compile mode: none dropped as a duplicate of another
    for cells, row in zip(rows, ss1, strict=True):
        assert (cells[COL["phase"]], cells[COL["compile"]]) == (row["layer"].split()[1], row["compile"])
        if cells[COL["phase"]] == "train":
            assert cells[COL["SS1 kernel ms"]] == "–"  # the training run had no kernel timer
            continue
        assert cells[COL["dense kernel ms"]] == cells[COL["SS1 kernel ms"]] == "0.25"
        assert cells[COL["kernel speedup"]] == "1.00"
        assert float(cells[COL["wall/kernel SS1"]]) == pytest.approx(row["median_ms"] / 0.25, abs=0.005)
        assert float(cells[COL["wall/kernel dense"]]) == pytest.approx(row["dense_ms"] / 0.25, abs=0.005)
        assert cells[COL["timing"]] == ("eager" if row["compile"] == "none" else "compiled")


def test_report_reads_e2e_csvs_made_before_the_compile_and_kernel_columns(e2e_run, tmp_path):
    csv_path, frame, _ = e2e_run
    old = tmp_path / "e2e_old.csv"
    pd.read_csv(csv_path).drop(columns=list(E2E_COLUMNS)).to_csv(old, index=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(old), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _tables((out / "summary.md").read_text())[tuple(E2E_HEADER)]
    assert len(rows) == (frame["provider"] == "ss1_tuned").sum()
    assert {cells[COL["compile"]] for cells in rows} == {"none"}  # eager, as every e2e run was then
    assert {cells[COL["first call s dense / SS1"]] for cells in rows} == {"– / –"}


def test_report_on_bench_and_e2e_csvs_together(e2e_run, tmp_path):
    from test_report import _fixture_frame  # the bench fixture of tests/test_report.py

    csv_path, _, _ = e2e_run
    bench = tmp_path / "bench_gpt2_fp16_fwd.csv"
    _fixture_frame().to_csv(bench, index=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(bench), str(csv_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"e2e_speedup_CPU_fp32.png", "summary.md", "speedup_vs_c_gpt2_fp16_fwd_decode.png",
            "peers_gpt2_fp16_fwd_prefill.png"} <= names
    assert not any(name.startswith(("speedup_vs_c_e2e", "peers_e2e", "fraction_of_ideal_e2e")) for name in names)
    summary = (out / "summary.md").read_text()
    assert "## Headline" in summary and "## End-to-end models" in summary
    assert "## e2e shapes" not in summary
    tables = _tables(summary)
    assert len(tables[tuple(E2E_HEADER)]) == len(e2e.plan(MODELS_RUN, FACTORS, BATCH, SEQ))
    headline = next(rows for header, rows in tables.items() if header[:3] == ("dtype", "mode", "c"))
    assert [cells[0] for cells in headline] == ["fp16", "fp16"]  # the bench rows only


@pytest.mark.parametrize("rotated_cache", [True, False])
def test_ss1_models_run_with_the_rotated_weight_cache_unless_turned_off(monkeypatch, tmp_path, rotated_cache):
    switched = []
    real = e2e_command.cache_rotated_weights

    def recording(model, enabled=True):
        switched.append((enabled, real(model, enabled)))
        assert all(layer.caches_rotated_weight == enabled for layer in model.modules() if isinstance(layer, SSL))
        return switched[-1][1]

    monkeypatch.setattr(e2e_command, "cache_rotated_weights", recording)
    stem = e2e.output_stem(["gpt2"], "fp32", BATCH, SEQ)
    csv_path, frame = e2e.run(["gpt2"], [2], BATCH, SEQ, "fp32", tmp_path, stem, {}, device=CPU, timer=FakeTimer(),
                              warmup_ms=1, rep_ms=1, echo=lambda line: None, overrides=TINY,
                              rotated_cache=rotated_cache)
    assert switched == [(rotated_cache, 8)]  # the 8 converted linears of the tiny GPT-2, once
    assert set(frame["status"]) == {"ok"}
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    assert meta["rotated_cache"] is rotated_cache
    assert ("cache_rotated_weights" in meta["conversion"]) is rotated_cache
