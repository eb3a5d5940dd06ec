"""Train GPT-2 dense vs SS1 on synthetic tokens and log loss and tokens/s.

Both models are built from a ``GPT2Config`` (random weights, nothing downloaded) with the same
seed and see the same batches. The SS1 one is ``convert_to_ss_linear(model, c)``: its Conv1D
layers become SSL layers with a fresh init (``--project`` projects the dense init instead); the
tied ``lm_head`` stays dense.

The data is a fixed random Markov chain: every token is followed by one of ``--branching``
tokens, uniformly. The loss starts near ln(vocab) and can fall to ln(branching) (1.39 for 4),
so both the learning and its speed are visible in a few minutes.

What it logs: every ``--log-every`` steps the loss and the *interval* tokens/s (tokens trained
since the previous log line over its wall time); at the end of each model the median interval
tokens/s. The final table's tokens/s is the *overall* figure: every step after the
``--warmup-steps`` steps, total tokens over total time. Parameter counts: per converted model, the
weights and biases of its linear layers before and after conversion (the layers
``convert_to_ss_linear`` looked at, the ones left dense included), then the whole model's
parameters (embeddings too), which the table's "model params" repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ss1bench import conversion_report, convert_to_ss_linear

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: The commands of ``--help`` (kept in one place with the module doc above).
EXAMPLES = """\
examples:
  GPU (GPT-2 small, a few minutes per model):
    python examples/train_gpt2.py --redn-factor 4 --minutes 3 --batch 8 --seq 1024 --dtype bf16

  CPU smoke test (about 20 s, most of it importing transformers):
    python examples/train_gpt2.py --device cpu --steps 6 --batch 2 --seq 32 --n-layer 2 --n-embd 64 \\
        --vocab 128 --dtype fp32 --log-every 2
"""

log = logging.getLogger("train_gpt2")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option's help; the examples epilog kept as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--redn-factor", type=int, default=4, help="SS1 reduction factor c")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per model (stops at --minutes too; none: --minutes alone)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock minutes per model (none: 3 when --steps is not given, else no limit)")
    parser.add_argument("--warmup-steps", type=int, default=5,
                        help="first steps left out of tokens/s (Triton compiles, allocator warms up)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq", type=int, default=1024, help="tokens per sequence (and GPT-2's n_positions)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                        help="autocast dtype (fp32: no autocast); weights and optimizer stay fp32")
    parser.add_argument("--n-layer", type=int, default=12, help="transformer blocks (GPT-2 small: 12)")
    parser.add_argument("--n-embd", type=int, default=768, help="hidden size (GPT-2 small: 768)")
    parser.add_argument("--n-head", type=int, default=None, help="attention heads (none: n_embd // 64, at least 1)")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary size (GPT-2: 50257)")
    parser.add_argument("--branching", type=int, default=4,
                        help="successors per token in the synthetic data (the loss floor is ln of it)")
    parser.add_argument("--lr", type=float, default=6e-4, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    parser.add_argument("--models", default="dense,ss1", help="comma list of dense and ss1, run in order")
    parser.add_argument("--skip-attention", action="store_true", help="leave attention projections dense")
    parser.add_argument("--project", action="store_true", help="project the dense init instead of a fresh one")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default here: cuda when a GPU is visible, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init, the data and the batch order")
    parser.add_argument("--log-every", type=int, default=20, help="steps between log lines")
    parser.add_argument("--csv", default=None, help="write one row per log line to this file (none: no file)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps is None and args.minutes is None:
        args.minutes = 3.0
    args.n_head = args.n_head or max(1, args.n_embd // 64)
    models = args.models.split(",")
    if not models or any(name not in ("dense", "ss1") for name in models):
        parser.error(f"--models takes a comma list of dense and ss1, got {args.models!r}")
    args.models = models
    if args.n_embd % args.n_head:
        parser.error(f"--n-embd {args.n_embd} is not a multiple of --n-head {args.n_head}")
    return args


# ---- data -------------------------------------------------------------------------------------


def markov_pool(args: argparse.Namespace, batches: int = 32) -> torch.Tensor:
    """``(batches * batch, seq)`` token ids from a fixed random chain, made on the device."""
    generator = torch.Generator(device=args.device).manual_seed(args.seed + 1)
    successors = torch.randint(0, args.vocab, (args.vocab, args.branching), generator=generator,
                               device=args.device)
    rows = batches * args.batch
    tokens = torch.empty(rows, args.seq, dtype=torch.int64, device=args.device)
    tokens[:, 0] = torch.randint(0, args.vocab, (rows,), generator=generator, device=args.device)
    for position in range(1, args.seq):
        choice = torch.randint(0, args.branching, (rows, 1), generator=generator, device=args.device)
        tokens[:, position] = successors[tokens[:, position - 1]].gather(1, choice).squeeze(1)
    return tokens


# ---- model ------------------------------------------------------------------------------------


def build_model(name: str, args: argparse.Namespace) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, vocab_size=args.vocab,
                        n_positions=args.seq, bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # same dense init for both models
        model = GPT2LMHeadModel(config)
        if getattr(model, "loss_type", None) is None:
            # transformers maps GPT2LMHeadModel's name to no loss and warns before falling back to
            # the causal-LM loss; name that loss.
            model.loss_type = "ForCausalLM"
        if name == "ss1":
            convert_to_ss_linear(model, args.redn_factor, skip_attention=args.skip_attention,
                                 project=args.project)
    return model.to(args.device).train()


# ---- training ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    name: str
    params: int
    steps: int
    final_loss: float
    tokens_per_s: float
    peak_memory_gib: float


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def train(name: str, args: argparse.Namespace, pool: torch.Tensor, writer) -> RunResult:
    model = build_model(name, args)
    label = f"ss1 c={args.redn_factor}" if name == "ss1" else "dense"
    params = sum(p.numel() for p in model.parameters())
    if name == "ss1":
        report = conversion_report(model)
        log.info("[%s] linear layers: %d converted, %d left dense; their weights and biases %d -> %d", label,
                 len(report.converted), len(report.skipped), report.params_before, report.params_after)
    log.info("[%s] model parameters (all, embeddings included): %.2f M", label, params / 1e6)

    device_type = torch.device(args.device).type
    dtype = DTYPES[args.dtype]
    autocast = (torch.autocast(device_type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
    batch_order = torch.Generator().manual_seed(args.seed + 2)  # same batches for every model
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    tokens_per_step = args.batch * args.seq
    deadline = None if args.minutes is None else time.perf_counter() + 60 * args.minutes
    losses, rates, step = [], [], 0
    timed_steps, timed_seconds = 0, 0.0
    interval_start, interval_steps = time.perf_counter(), 0

    def record(loss: torch.Tensor) -> None:
        """Log the interval that ends at ``step``; intervals holding a warm-up step are not timed."""
        nonlocal timed_steps, timed_seconds, interval_start, interval_steps
        losses.append(loss.item())  # .item() waits for the step
        _sync(args.device)
        now = time.perf_counter()
        rate = interval_steps * tokens_per_step / (now - interval_start)
        if step - interval_steps >= args.warmup_steps:
            timed_steps += interval_steps
            timed_seconds += now - interval_start
            rates.append(rate)
        log.info("[%s] step %5d  loss %.4f  %9.0f tokens/s (this interval)", label, step, losses[-1], rate)
        if writer is not None:
            writer.writerow({"model": label, "step": step, "loss": losses[-1], "tokens_per_s": rate})
        interval_start, interval_steps = now, 0

    loss = None
    while (args.steps is None or step < args.steps) and (deadline is None or time.perf_counter() < deadline):
        rows = torch.randint(0, pool.shape[0], (args.batch,), generator=batch_order).to(args.device)
        batch = pool[rows]
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        interval_steps += 1
        if step == args.warmup_steps or step % args.log_every == 0:
            record(loss)
    if interval_steps and loss is not None:
        record(loss)

    final_loss = losses[-1] if losses else math.nan
    tokens_per_s = timed_steps * tokens_per_step / timed_seconds if timed_seconds else math.nan
    if rates:
        log.info("[%s] median interval %.0f tokens/s (after warm-up)", label, statistics.median(rates))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device_type == "cuda" else math.nan
    del model, optimizer
    if device_type == "cuda":
        torch.cuda.empty_cache()
    return RunResult(label, params, step, final_loss, tokens_per_s, peak)


def main(argv: list[str] | None = None) -> list[RunResult]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.info("GPT-2 n_layer=%d n_embd=%d n_head=%d vocab=%d, batch %d x seq %d, %s on %s; floor ln(%d) = %.3f",
             args.n_layer, args.n_embd, args.n_head, args.vocab, args.batch, args.seq, args.dtype,
             args.device, args.branching, math.log(args.branching))
    pool = markov_pool(args)
    results = []
    with contextlib.ExitStack() as stack:
        writer = None
        if args.csv:
            handle = stack.enter_context(open(args.csv, "w", newline=""))
            writer = csv.DictWriter(handle, fieldnames=["model", "step", "loss", "tokens_per_s"])
            writer.writeheader()
        for name in args.models:
            results.append(train(name, args, pool, writer))

    print("\n" + "\n".join(summary_lines(results)))
    return results


def summary_lines(results: list[RunResult]) -> list[str]:
    """The final table: one row per model, then what its columns are."""
    dense = next((r for r in results if r.name == "dense"), None)
    lines = [f"{'model':<10} {'model params':>12} {'steps':>7} {'loss':>8} {'tokens/s':>11} {'speedup':>8} "
             f"{'peak GiB':>9}"]
    for r in results:
        speedup = r.tokens_per_s / dense.tokens_per_s if dense and dense.tokens_per_s else math.nan
        speedup_text = "-" if math.isnan(speedup) else f"{speedup:.2f}x"
        tokens = "n/a" if math.isnan(r.tokens_per_s) else f"{r.tokens_per_s:.0f}"
        peak = "n/a" if math.isnan(r.peak_memory_gib) else f"{r.peak_memory_gib:.2f}"
        lines.append(f"{r.name:<10} {r.params / 1e6:>11.2f}M {r.steps:>7} {r.final_loss:>8.4f} {tokens:>11} "
                     f"{speedup_text:>8} {peak:>9}")
    lines.append("tokens/s: every step after --warmup-steps, total tokens / total time (the log's figures are "
                 "per interval); speedup: over dense; peak GiB: CUDA only (n/a on CPU)")
    return lines


if __name__ == "__main__":
    main()
