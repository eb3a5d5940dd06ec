"""Fine-tune a BERT classifier with SS1 layers: convert, compile, train, evaluate.

The steps a user copies:

1. build the model: ``BertForSequenceClassification.from_pretrained(DIR)`` for a local checkpoint
   (``--checkpoint``), else BERT-base from its config with random weights (``--tiny``: two small
   layers for a CPU run);
2. ``convert_to_ss_linear(model, c, skip_pattern=["classifier"])``: the encoder's projections and
   MLPs (and the pooler) become ``SSL`` layers; a checkpoint's weights are projected onto SS1 (the
   least-squares closest SS1 weight: fine-tuning recovers what the projection loses), random ones
   get a fresh SS1 init; the small classifier head stays dense;
3. ``torch.compile(model)`` (``--compile none`` keeps it eager), then an ordinary training loop:
   AdamW (fused on CUDA), bf16 autocast on CUDA.

The task is synthetic, so nothing is downloaded: a sequence of random tokens starts with one of
64 cue tokens and is labelled 1 when the cue is one of the lower 32. A model that learns reads one
position; accuracy on held-out batches goes from 0.5 towards 1. (A label that depends on the
first token among the whole vocabulary could not be learned: in 300 steps most of BERT's 30522
tokens are never seen in the first position.)

    # on a CPU, in about 15 s:
    python examples/finetune_bert.py --tiny --device cpu --compile none --steps 60 --seq 32 --lr 1e-3
    # on a GPU, BERT-base, compiled:
    python examples/finetune_bert.py --steps 300
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from ss1bench import convert_to_ss_linear

#: Token ids 1..CUES start every sequence; the label says which half of them.
CUES = 64
#: Two small layers: a CPU run in seconds.
TINY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512,
        "vocab_size": 1000}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="local Hugging Face BERT folder to start from (none: random weights, BERT-base)")
    parser.add_argument("--tiny", action="store_true", help="a two-layer model instead of BERT-base")
    parser.add_argument("--redn-factor", type=int, default=4, help="SS1 reduction factor c")
    parser.add_argument("--compile", choices=("none", "default", "reduce-overhead"), default="default",
                        help="torch.compile mode of the model")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--lr", type=float, default=2e-5,
                        help="AdamW learning rate (BERT's usual fine-tuning rate; BERT-base with random weights "
                             "does not learn at 1e-4 without warm-up)")
    parser.add_argument("--log-every", type=int, default=20, help="steps between log lines")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")
    return parser


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """Steps 1 and 2: the converted classifier (fp32 weights) on ``args.device``."""
    from transformers import BertConfig, BertForSequenceClassification

    # The loss is named up front: left None, transformers sets it in the first forward, and the
    # compiled graph, which guards on it, is compiled a second time at the second step.
    task = {"num_labels": 2, "problem_type": "single_label_classification"}
    torch.manual_seed(args.seed)
    if args.checkpoint:
        model = BertForSequenceClassification.from_pretrained(args.checkpoint, **task)
    else:
        model = BertForSequenceClassification(BertConfig(**(TINY if args.tiny else {}), **task))
    model.to(args.device)
    convert_to_ss_linear(model, args.redn_factor, skip_pattern=["classifier"], project=bool(args.checkpoint))
    return model


def batch(vocab: int, args: argparse.Namespace, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (never the padding id 0) after a cue (one of ids 1..CUES), and their labels:
    the cue is one of the lower half."""
    ids = torch.randint(1, vocab, (args.batch, args.seq), generator=generator)
    ids[:, 0] = torch.randint(1, CUES + 1, (args.batch,), generator=generator)
    labels = (ids[:, 0] <= CUES // 2).long()
    return ids.to(args.device), labels.to(args.device)


def accuracy(model, vocab: int, args: argparse.Namespace, batches: int = 4) -> float:
    """Held-out accuracy of the eager model (evaluating through the compiled one would compile an
    eval-mode, no-grad graph too)."""
    generator = torch.Generator().manual_seed(args.seed + 1)  # held out: another stream of batches
    hits = total = 0
    model.eval()
    with torch.no_grad():
        for _ in range(batches):
            ids, labels = batch(vocab, args, generator)
            hits += (model(input_ids=ids).logits.argmax(-1) == labels).sum().item()
            total += labels.numel()
    model.train()
    return hits / total


def main(argv: list[str] | None = None) -> tuple[float, float]:
    """Trains; returns (accuracy before, accuracy after) on held-out batches."""
    args = build_parser().parse_args(argv)
    model = build_model(args)
    vocab = model.config.vocab_size
    forward = model if args.compile == "none" else torch.compile(model, mode=None if args.compile == "default"
                                                                  else args.compile)
    cuda = args.device.startswith("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=cuda)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    generator = torch.Generator().manual_seed(args.seed)
    before = accuracy(model, vocab, args)
    compiling = "" if args.compile == "none" else f"; the first step compiles (mode {args.compile})"
    print(f"held-out accuracy before training: {before:.3f}{compiling}", flush=True)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        if args.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        ids, labels = batch(vocab, args, generator)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = forward(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        if step == 1:
            print(f"step     1  loss {loss.item():.4f}  {time.perf_counter() - start:.1f} s",
                  flush=True)
            start = time.perf_counter()  # steps/s from here on leave the first step's compilation out
        elif step % args.log_every == 0 or step == args.steps:
            print(f"step {step:5d}  loss {loss.item():.4f}  {(step - 1) / (time.perf_counter() - start):.1f} "
                  "steps/s", flush=True)
    after = accuracy(model, vocab, args)
    print(f"held-out accuracy: {before:.3f} before, {after:.3f} after {args.steps} steps "
          f"(SS1 c={args.redn_factor}, compile={args.compile})")
    return before, after


if __name__ == "__main__":
    main()
