"""Serve a Llama-family model with SS1 layers: convert, cache the rotated weights, compile, generate.

The steps a user copies:

1. build the model: ``LlamaForCausalLM.from_pretrained(DIR)`` for a local checkpoint (``--checkpoint``),
   else from a config with random weights (the Llama-1B shape with Llama-2's 32000-token vocabulary;
   ``--tiny`` for a two-layer CPU run);
2. ``convert_to_ss_linear(model, c, skip_pattern=["lm_head"])``: every projection of every block
   becomes an ``SSL`` layer; a checkpoint's weights are projected onto SS1 (least squares; plan
   to fine-tune after), random ones get a fresh SS1 init;
3. ``cache_rotated_weights(model)``: eager calls (decode) skip the per-call weight rotation;
4. ``torch.compile(model, mode=...)`` for the prefill (``--compile none`` keeps it eager);
5. ``model.generate(...)``: greedy decoding, eager, reusing the same converted layers.

It prints the prefill time (compiled, after warm-up) and the decode tokens/s, for the SS1 model and,
with ``--compare``, for the dense model on the same prompt. ``ss1bench e2e`` is the benchmark; this
is the recipe.

    # on a CPU, in seconds:
    python examples/serve_llama.py --tiny --device cpu --compile none --batch 2 --prompt-len 16 --new-tokens 8
    # on a GPU, the Llama-1B shape in fp16, dense against SS1:
    python examples/serve_llama.py --compare
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from ss1bench import cache_rotated_weights, convert_to_ss_linear

#: Llama-3.2-1B's shape with Llama-2's 32000-token vocabulary (the LM head stays dense).
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 32000, "tie_word_embeddings": True}
#: Two small blocks: a CPU run in seconds.
TINY = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="local Hugging Face model folder to load (none: random weights from a config)")
    parser.add_argument("--tiny", action="store_true", help="a two-layer model instead of the Llama-1B shape")
    parser.add_argument("--redn-factor", type=int, default=4, help="SS1 reduction factor c")
    parser.add_argument("--compile", choices=("none", "default", "reduce-overhead"), default="default",
                        help="torch.compile mode of the prefill")
    parser.add_argument("--batch", type=int, default=8, help="prompts per call")
    parser.add_argument("--prompt-len", type=int, default=1024, help="tokens per prompt")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per prompt")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="model dtype (fp32 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    parser.add_argument("--compare", action="store_true", help="also time the dense model (before conversion)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the prompt")
    return parser


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """The dense model in ``args.dtype`` on ``args.device``, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = DTYPES[args.dtype] if args.device != "cpu" else torch.float32
    if args.checkpoint:
        model = LlamaForCausalLM.from_pretrained(args.checkpoint, torch_dtype=dtype)
    else:
        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(LlamaConfig(**(TINY if args.tiny else LLAMA_1B)))
    return model.to(args.device, dtype).eval()


def to_ss1(model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """Steps 2 and 3: the model converted in place, rotated weights cached for eager calls."""
    convert_to_ss_linear(model, args.redn_factor, skip_pattern=["lm_head"], project=bool(args.checkpoint))
    cache_rotated_weights(model)
    return model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def serve(name: str, model: torch.nn.Module, prompt: torch.Tensor, args: argparse.Namespace) -> tuple[float, float]:
    """(prefill ms, decode tokens/s): steps 4 and 5."""
    prefill = model if args.compile == "none" else torch.compile(model, mode=None if args.compile == "default"
                                                                  else args.compile)
    with torch.no_grad():
        start = time.perf_counter()
        prefill(prompt, use_cache=False)  # the first call compiles
        _sync(args.device)
        print(f"{name}: first prefill {time.perf_counter() - start:.1f} s (compile={args.compile})", flush=True)
        for _ in range(2):
            prefill(prompt, use_cache=False)
        _sync(args.device)
        start = time.perf_counter()
        prefill(prompt, use_cache=False)
        _sync(args.device)
        prefill_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                             min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
        _sync(args.device)
        decode_s = time.perf_counter() - start
    generated = out.shape[1] - prompt.shape[1]
    return prefill_ms, args.batch * generated / decode_s


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    args = build_parser().parse_args(argv)
    dense = build_model(args)
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(1, dense.config.vocab_size, (args.batch, args.prompt_len), generator=generator)
    prompt = prompt.to(args.device)
    results = {}
    if args.compare:
        results["dense"] = serve("dense", dense, prompt, args)
        torch.compiler.reset()
    ss1 = to_ss1(dense if not args.compare else copy.deepcopy(dense), args)
    name = f"ss1 c={args.redn_factor}"
    results[name] = serve(name, ss1, prompt, args)
    print(f"{'model':10s} {'prefill ms':>10s} {'decode tok/s':>12s}   (batch {args.batch}, prompt "
          f"{args.prompt_len}, {args.new_tokens} new tokens, prefill compile={args.compile})")
    for name, (prefill_ms, tokens_per_s) in results.items():
        print(f"{name:10s} {prefill_ms:10.2f} {tokens_per_s:12,.0f}")
    return results


if __name__ == "__main__":
    main()
