"""Training through converted models on CPU: gradients reach every SS1 weight and the loss falls.

The task is deterministic: memorise a fixed set of token sequences whose first token names the
sequence, so every next token is predictable and the loss can go to zero. ln(VOCAB) = 3.47 at
the start; dense and SS1 (c = 4, fresh init) both end below 0.05 in 200 steps of Adam at 3e-3
(measured on a 2-core CPU shared with other jobs: 7-10 ms a step dense, about 30 ms SS1).
"""

from __future__ import annotations

import pytest
import torch
from conftest import one_thread
from torch import nn

from ss1bench import SSL, convert_to_ss_linear

VOCAB = 32
SEQUENCES = 16
SEQ_LEN = 16
STEPS = 200
LEARNING_RATE = 3e-3


def _task(generator: torch.Generator) -> torch.Tensor:
    """``(SEQUENCES, SEQ_LEN)`` token ids; sequence ``i`` starts with token ``i``."""
    tokens = torch.randint(0, VOCAB, (SEQUENCES, SEQ_LEN), generator=generator)
    tokens[:, 0] = torch.arange(SEQUENCES)
    return tokens


def _tiny_gpt2(redn_factor: int | None) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=VOCAB, n_positions=SEQ_LEN,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    if redn_factor is not None:
        convert_to_ss_linear(model, reduction_factor=redn_factor, project=False)
    return model


def _train(redn_factor: int | None, steps: int = STEPS) -> list[float]:
    """Losses of ``steps`` full-batch Adam steps; seeds only a forked copy of the global RNG."""
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(0)
        model = _tiny_gpt2(redn_factor).train()
        tokens = _task(torch.Generator().manual_seed(1))
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        losses = []
        for _ in range(steps):
            loss = model(input_ids=tokens, labels=tokens).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def test_gradients_reach_every_ss1_weight():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _tiny_gpt2(redn_factor=4)
        tokens = _task(torch.Generator().manual_seed(1))
        model(input_ids=tokens, labels=tokens).loss.backward()
    layers = {path: module for path, module in model.named_modules() if isinstance(module, SSL)}
    assert len(layers) == 8
    for path, layer in layers.items():
        for name, parameter in layer.named_parameters():
            assert parameter.grad is not None, f"{path}.{name} got no gradient"
            assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, f"{path}.{name}"


@pytest.mark.parametrize("redn_factor", [None, 4], ids=["dense", "ss1-c4"])
def test_training_lowers_the_loss(redn_factor):
    rng_before = torch.get_rng_state()
    losses = _train(redn_factor)
    assert torch.equal(torch.get_rng_state(), rng_before), "training changed the global RNG"
    start, end = losses[0], sum(losses[-10:]) / 10
    assert start > 3.0, f"initial loss {start:.3f} should be near ln({VOCAB})"
    assert end < 0.3 * start, f"loss fell only from {start:.3f} to {end:.3f} in {len(losses)} steps"
