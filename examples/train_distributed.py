"""Train a model dense or SS1-converted under DDP or FSDP2 (torchrun) and print the global tokens/s.

The model is a Hugging Face causal LM built from its config (random weights, nothing is
downloaded): the shapes of ``ss1bench e2e`` (gpt2, gpt2-medium, llama-1b, ...), or a tiny GPT-2 or
Llama for smoke runs. The SS1 model is that model converted with ``convert_to_ss_linear(model, c,
project=False)`` (a fresh SS1 init; the tied LM head stays dense), converted in the autocast dtype
so its layers get the tuning database's structure for the dtype they compute in, then cast back to
fp32 weights.

Each rank trains on its own random token ids: ``--batch`` rows of ``--seq`` tokens per step (so the
global batch is ``--batch`` x the number of processes), forward with ``labels`` = the ids, backward,
AdamW (fused on CUDA), under bf16 autocast on CUDA (fp32 on CPU). The first ``--warmup-steps``
steps (compilation, allocator warm-up) are not timed; tokens/s counts every rank's tokens over the
slowest rank's time.

Wrapping (docs/distributed.md says more):

- ddp: ``DistributedDataParallel(model)``; with ``--compile``, ``torch.compile`` of the DDP module
  (Dynamo splits the graph at DDP's gradient buckets so communication overlaps the backward).
- fsdp2: ``fully_shard`` on each transformer block, then on the whole model (parameters are
  sharded DTensors; each block is all-gathered for its forward and backward); with ``--compile``,
  each block is compiled before it is sharded (torchtitan's recipe), with static ints and one
  graph per block allowed: each SS1 block has its own structure (seeds), so its own graph, and the
  warm-up compiles every block.

Every rank builds the same weights (seeded): FSDP2 does not broadcast rank 0's, and torch seeds
each process's global RNG differently.

GPUs (2 x H200, GPT-2-medium, SS1 at c = 4 against dense, compiled, FSDP2):

    torchrun --nproc-per-node 2 examples/train_distributed.py --model gpt2-medium --wrap fsdp2 \\
        --compile --compare

CPU smoke run (gloo, 2 processes, seconds):

    torchrun --nproc-per-node 2 examples/train_distributed.py --model gpt2-tiny --wrap ddp \\
        --compare --steps 2 --warmup-steps 1 --batch 2 --seq 16

Without torchrun (``python examples/train_distributed.py ...``) it runs as a single process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import math
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from ss1bench import conversion_report
from ss1bench.e2e.models import MODELS, build_model, ss1_copy

#: Tiny shapes for smoke runs: (model of ss1bench e2e, config overrides). Every layer is wide
#: enough (in_features >= 16 * c up to c = 4) to convert.
TINY_MODELS = {
    "gpt2-tiny": ("gpt2", {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 128, "bos_token_id": 0,
                           "eos_token_id": 0}),
    "llama-tiny": ("llama-1b", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 128,
                                "max_position_embeddings": 64}),
}
#: Causal LMs of ss1bench e2e (BERT's masked-LM training is left to ``ss1bench e2e``).
CAUSAL_MODELS = tuple(name for name, spec in MODELS.items() if spec.decoder)
MODEL_CHOICES = (*CAUSAL_MODELS, *TINY_MODELS)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
WRAPS = ("ddp", "fsdp2")
#: Distinct batches of token ids per rank, cycled through (made once, before timing).
DATA_BATCHES = 4


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help, and the module docstring (with its commands) as written."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--model", choices=MODEL_CHOICES, default="gpt2",
                        help="model shape (random weights); *-tiny ones are for CPU smoke runs")
    parser.add_argument("--wrap", choices=WRAPS, default="ddp", help="data-parallel engine")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile: the DDP module, or each block before fully_shard")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dense", action="store_true", help="time the dense model only (no conversion)")
    which.add_argument("--compare", action="store_true",
                       help="time dense, then SS1, in the same process group, and print their ratio")
    parser.add_argument("--redn-factor", type=int, default=4, help="SS1 reduction factor c (power of two, 1..32)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--warmup-steps", type=int, default=5,
                        help="untimed steps before them (compilation, Triton autotuning, allocator)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step on each rank")
    parser.add_argument("--seq", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--dtype", choices=("auto", *AUTOCAST_DTYPES), default="auto",
                        help="autocast dtype (weights and optimizer stay fp32); auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--lr", type=float, default=6e-4, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the SS1 init (the same on every rank), the data and dropout; the dense "
                             "weights come from ss1bench e2e's fixed seed")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: cuda:LOCAL_RANK when CUDA is available, else cpu")
    parser.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto",
                        help="process group backend; auto: nccl on CUDA, gloo on CPU")
    parser.add_argument("--csv", default=None,
                        help="append one row per model to this CSV (written by rank 0; header when new)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "seq"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    return args


# ---- process group --------------------------------------------------------------------------------


def setup(args: argparse.Namespace) -> torch.device:
    """Join the process group (torchrun's environment, or a world of one) and pick this rank's device."""
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = args.backend if args.backend != "auto" else ("nccl" if use_cuda else "gloo")
    if "RANK" in os.environ:  # launched by torchrun
        dist.init_process_group(backend, device_id=device if use_cuda else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return device


def log(message: str) -> None:
    if dist.get_rank() == 0:
        print(message, flush=True)


# ---- model ----------------------------------------------------------------------------------------


def make_model(variant: str, args: argparse.Namespace, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
    """The dense or SS1 model on ``device``, fp32 weights, train mode, the same on every rank."""
    name, overrides = TINY_MODELS.get(args.model, (args.model, None))
    model = build_model(name, device, torch.float32, args.seq, overrides, train=True)
    if getattr(model, "loss_type", "") is None:  # GPT2LMHeadModel: transformers warns, then uses this one
        model.loss_type = "ForCausalLM"
    if variant == "ss1":
        # convert_to_ss_linear(project=False) draws the SS1 init from the global RNG.
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(args.seed)
            converted = ss1_copy(model, args.redn_factor, structure_dtype=compute_dtype)
        del model
        model = converted
    return model


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks (Hugging Face's ``_no_split_modules`` classes: GPT2Block, LlamaDecoderLayer)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [module for module in model.modules() if type(module).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(model).__name__} names no transformer block class in _no_split_modules")
    return blocks


def wrap(model: nn.Module, args: argparse.Namespace, device: torch.device) -> nn.Module:
    """``model`` under DDP or FSDP2, compiled when asked; returns the module to call."""
    if args.wrap == "ddp":
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return torch.compile(wrapped) if args.compile else wrapped
    blocks = transformer_blocks(model)
    if args.compile:
        # Each SSL layer's structure (its seed above all) reaches the graph as Python ints, and
        # every block's layers have their own seeds, so each block needs its own graph. Dynamo
        # gives FSDP-managed modules' attributes automatic dynamic ints: after the first
        # recompile the seed would become a SymInt, which the kernels' traced op cannot take (its
        # structure cache hashes the ints). Static ints, and room for one graph per block, instead.
        torch._dynamo.config.automatic_dynamic_shapes = False
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, len(blocks))
    for block in blocks:
        if args.compile:
            block.compile()  # in place: the module keeps its identity, fully_shard wraps it next
        fully_shard(block)
    fully_shard(model)
    return model


# ---- training -------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    variant: str  # dense or ss1
    label: str
    params: int
    tokens_per_s: float
    step_ms: float
    loss: float
    peak_memory_gib: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_over_ranks(value: float, device: torch.device) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()


def run(variant: str, args: argparse.Namespace, device: torch.device, compute_dtype: torch.dtype) -> RunResult:
    """Build, wrap and train one model; tokens/s over every rank's timed steps."""
    torch.manual_seed(args.seed + dist.get_rank())  # dropout: reproducible, different on each rank
    model = make_model(variant, args, device, compute_dtype)
    params = sum(p.numel() for p in model.parameters())
    label = f"ss1 c={args.redn_factor}" if variant == "ss1" else "dense"
    if variant == "ss1":
        report = conversion_report(model)
        log(f"[{label}] {len(report.converted)} of {len(report)} linear layers converted; "
            f"{report.params_before / 1e6:.2f} M -> {report.params_after / 1e6:.2f} M parameters in them")
    trained = wrap(model, args, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  fused=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(args.seed + 1 + dist.get_rank())
    data = torch.randint(0, model.config.vocab_size, (DATA_BATCHES, args.batch, args.seq), generator=generator,
                         device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, loss = train(trained, optimizer, data, args, device, compute_dtype)
    tokens = dist.get_world_size() * args.batch * args.seq * args.steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    return RunResult(variant, label, params, tokens / seconds, 1e3 * seconds / args.steps, loss,
                     _max_over_ranks(peak, device))


def train(trained: nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor, args: argparse.Namespace,
          device: torch.device, compute_dtype: torch.dtype) -> tuple[float, float]:
    """Warm-up steps, then timed steps: ``(the slowest rank's seconds, the last step's mean loss)``.

    ``data``: ``(DATA_BATCHES, batch, seq)`` token ids, cycled through.
    """
    autocast = (torch.autocast(device.type, dtype=compute_dtype) if compute_dtype != torch.float32
                else contextlib.nullcontext())

    def step(index: int) -> torch.Tensor:
        batch = data[index % DATA_BATCHES]
        with autocast:
            loss = trained(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for index in range(args.warmup_steps):
        step(index)
    _sync(device)
    dist.barrier()
    start = time.perf_counter()
    for index in range(args.steps):
        loss = step(args.warmup_steps + index)
    _sync(device)
    seconds = _max_over_ranks(time.perf_counter() - start, device)
    dist.all_reduce(loss, op=dist.ReduceOp.SUM)
    return seconds, loss.item() / dist.get_world_size()


def release(args: argparse.Namespace, device: torch.device) -> None:
    """Free what the last run left (its model, optimizer and compiled graphs) before the next one."""
    gc.collect()
    if args.compile:
        torch._dynamo.reset()  # the next model compiles from scratch, as it would in its own run
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write_csv(path: str, args: argparse.Namespace, device: torch.device, results: list[RunResult]) -> None:
    """Append the runs to ``path``: the run's settings, then each model's figures."""
    settings = {
        "model": args.model, "wrap": args.wrap, "compile": args.compile, "world_size": dist.get_world_size(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "redn_factor": args.redn_factor, "batch_per_rank": args.batch,
        "seq": args.seq, "dtype": args.dtype, "warmup_steps": args.warmup_steps, "steps": args.steps,
    }
    rows = [{**settings, **dataclasses.asdict(result)} for result in results]
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> list[RunResult]:
    args = parse_args(argv)
    device = setup(args)
    try:
        if args.dtype == "auto":
            args.dtype = "bf16" if device.type == "cuda" else "fp32"
        compute_dtype = AUTOCAST_DTYPES[args.dtype]
        variants = ["dense", "ss1"] if args.compare else ["dense"] if args.dense else ["ss1"]
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        log(f"{args.model}: {args.wrap}{' compiled' if args.compile else ''}, {dist.get_world_size()} x "
            f"{device_name} ({dist.get_backend()}), batch {args.batch} x seq {args.seq} per rank, "
            f"{'autocast ' + str(compute_dtype).removeprefix('torch.') if compute_dtype != torch.float32 else 'fp32'}, "
            f"{args.warmup_steps} warm-up + {args.steps} timed steps")
        results = []
        for variant in variants:
            results.append(run(variant, args, device, compute_dtype))
            release(args, device)
        log(f"\n{'model':<10} {'params':>10} {'tokens/s':>12} {'step ms':>9} {'loss':>8} {'peak GiB':>9}")
        for r in results:
            log(f"{r.label:<10} {r.params / 1e6:>9.2f}M {r.tokens_per_s:>12.0f} {r.step_ms:>9.1f} {r.loss:>8.4f} "
                f"{r.peak_memory_gib:>9.2f}")
        if args.compare:
            dense, ss1 = results
            log(f"ss1/dense tokens/s: {ss1.tokens_per_s / dense.tokens_per_s:.3f}x")
        if args.csv and dist.get_rank() == 0:
            write_csv(args.csv, args, device, results)
        return results
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
