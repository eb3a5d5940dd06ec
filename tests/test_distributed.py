"""Training a converted model with PyTorch's own DDP and FSDP2 (``fully_shard``): CPU, gloo, 2 processes.

One spawn of two worker processes trains a converted tiny GPT-2 (c = 4, every Conv1D an SSL; the
tied ``lm_head`` stays dense) under DDP and then under FSDP2, each on its half of the global batch,
and writes what it got to a temporary folder: the parameters after the steps, the losses, the full
state dict of the sharded model, a sharded ``torch.distributed.checkpoint`` (DCP) of it, and what
loading those back into sharded models gave. The tests compare them with one process training the
same model on the whole batch.

The SS1 init is drawn inside a seeded ``fork_rng`` in every process: FSDP2, unlike DDP, does not
broadcast rank 0's weights, and torch seeds each fresh process's global RNG differently, so a model
built from the global RNG would start from different weights on each rank.

A worker that raises fails the test with its traceback (``torch.multiprocessing.spawn`` raises
``ProcessRaisedException`` in the parent and stops the other workers); collectives time out after
``COLLECTIVE_TIMEOUT`` instead of hanging. Cost on a 2-core machine: about 20 s of CPU for the
spawn (most of it two imports of torch and transformers), 10 s for the example's torchrun run,
5 s for the failure test; the wall time grows with whatever else the machine runs.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from conftest import assert_close, one_thread
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.nn.parallel import DistributedDataParallel

from ss1bench import SSL, convert_to_ss_linear

WORLD_SIZE = 2
REDN_FACTOR = 4
VOCAB = 100
SEQ_LEN = 16
GLOBAL_BATCH = 4  # rows; each rank takes GLOBAL_BATCH // WORLD_SIZE of them
#: Two SGD steps with momentum: the second forward reads the weights the first step wrote (FSDP2
#: all-gathers the updated shards) and the second update reads optimizer state kept per shard.
STEPS = 2
LEARNING_RATE = 0.1
MOMENTUM = 0.9
MODEL_SEED = 0
BATCH_SEED = 5
#: The issue's target for fp32: parameters within 1e-6 of one process's. Checked per parameter as a
#: relative error (the suite's one comparison helper), which is stricter than 1e-6 absolute for
#: every parameter whose norm is above 1. Measured (DDP and FSDP2 alike, both ranks): max abs
#: difference 7.5e-9, relative error at most 3.0e-7 on the LayerNorm biases (zero at init, norm
#: ~2e-3 after the steps) and at most 5e-8 elsewhere; the steps move parameters by up to 0.03.
PARAM_RTOL = 1e-6
#: The losses (about 4.6) agree within 2.4e-7, half an fp32 ulp there.
LOSS_RTOL = 1e-6
#: Gloo collectives raise after this long instead of waiting forever on a rank that died.
COLLECTIVE_TIMEOUT = timedelta(seconds=60)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_distributed.py"
EXAMPLE_TIMEOUT_S = 300


# ---- shared by the workers and the single-process reference -----------------------------------


def _tiny_gpt2(seed: int = MODEL_SEED, redn_factor: int = REDN_FACTOR) -> nn.Module:
    """Converted tiny GPT-2 in train mode (dropout off), the same in every process for one ``seed``.

    The SS1 init (``project=False``) draws from the global RNG, so the conversion runs inside the
    seeded ``fork_rng`` too.
    """
    transformers = pytest.importorskip("transformers")  # here, not at import: _failing_worker needs none
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=VOCAB, n_positions=SEQ_LEN,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config)
        convert_to_ss_linear(model, redn_factor, project=False)
    return model.train()


def _global_batch(seed: int = BATCH_SEED) -> torch.Tensor:
    """``(GLOBAL_BATCH, SEQ_LEN)`` token ids."""
    return torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


def _train(model: nn.Module, batch: torch.Tensor) -> list[float]:
    """``STEPS`` SGD steps on ``batch`` (the same batch each step); the loss before each step.

    The loss is the mean over the batch's tokens; every rank holds as many tokens, so DDP's and
    FSDP2's gradient averaging gives the gradient of the global batch's mean loss.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    losses = []
    for _ in range(STEPS):
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _ssl_paths(model: nn.Module) -> list[str]:
    return [path for path, module in model.named_modules() if isinstance(module, SSL)]


# ---- the workers (module level: torch.multiprocessing pickles them by name) ---------------------


def _worker(rank: int, init_method: str, out_dir: Path) -> None:
    """Train under DDP, then under FSDP2; write parameters, losses and checkpoints to ``out_dir``.

    Then both ranks meet at a barrier, drop every model (FSDP2's device meshes hold the process
    group), destroy the group and leave with ``os._exit(0)``, skipping the interpreter's teardown:
    gloo's worker threads can still free tensors there, and a thread that takes the GIL while
    Python finalizes aborts the process (SIGABRT, "terminate called without an active exception";
    pytorch/pytorch#179291). One CI run failed on that abort. A worker that raises leaves through
    ``torch.multiprocessing``'s own handler, traceback and all.
    """
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        _train_and_save(rank, out_dir)
        dist.barrier()
        gc.collect()  # the models' reference cycles, and the meshes and reducers in them
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _train_and_save(rank: int, out_dir: Path) -> None:
    """The worker's runs, in a function of their own so that its models are gone when it returns."""
    batch = _global_batch().chunk(WORLD_SIZE)[rank]

    model = _tiny_gpt2()
    losses = _train(DistributedDataParallel(model), batch)
    torch.save({"losses": losses, "state": model.state_dict()}, out_dir / f"ddp-rank{rank}.pt")

    model = _sharded_tiny_gpt2()
    _check_sharded(model)
    losses = _train(model, batch)
    # Collectives: every rank calls them; the full state dict lands on rank 0 only (cpu_offload).
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    dcp.save(get_model_state_dict(model), checkpoint_id=out_dir / "dcp")
    torch.save({"losses": losses, "state": full if rank == 0 else None}, out_dir / f"fsdp2-rank{rank}.pt")

    # Resuming: the DCP checkpoint into a sharded model built with other weights.
    resumed = _sharded_tiny_gpt2(seed=MODEL_SEED + 1)
    state = get_model_state_dict(resumed)
    dcp.load(state, checkpoint_id=out_dir / "dcp")
    set_model_state_dict(resumed, state)
    state = get_model_state_dict(resumed, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        torch.save(state, out_dir / "fsdp2-resumed-dcp.pt")

    # The full state dict from rank 0 alone (the memory-saving way to resume a large model).
    # Last: a rank whose load fails records the error and the others are not left waiting.
    resumed = _sharded_tiny_gpt2(seed=MODEL_SEED + 1)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    error = None
    try:
        set_model_state_dict(resumed, dict(full) if rank == 0 else {}, options=options)
    except RuntimeError as caught:
        error = str(caught)
    torch.save(error, out_dir / f"fsdp2-broadcast-error-rank{rank}.pt")


def _sharded_tiny_gpt2(seed: int = MODEL_SEED) -> nn.Module:
    """:func:`_tiny_gpt2` under FSDP2: each block sharded, then the whole model."""
    model = _tiny_gpt2(seed)
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    return model


def _check_sharded(model: nn.Module) -> None:
    """Every SSL weight is a DTensor sharded on dim 0, this rank holding its share of the rows."""
    for path in _ssl_paths(model):
        weight = model.get_submodule(path).weight
        if not isinstance(weight, DTensor) or weight.placements != (Shard(0),):
            raise AssertionError(f"{path}.weight is not sharded on dim 0 by fully_shard: {weight!r}")
        rows = -(-weight.shape[0] // WORLD_SIZE)
        if weight.to_local().shape[0] > rows:
            raise AssertionError(f"{path}.weight: local shard {tuple(weight.to_local().shape)} holds more than "
                                 f"{rows} of {weight.shape[0]} rows")


def _failing_worker(rank: int, init_method: str) -> None:
    """Rank 1 raises before it joins the process group, so rank 0 waits in the rendezvous."""
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE,
                            timeout=COLLECTIVE_TIMEOUT)
    dist.destroy_process_group()


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Folder holding what the workers wrote (one spawn for every test of this module)."""
    pytest.importorskip("transformers")  # before the spawn: a worker cannot skip the test
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(_worker, args=(f"file://{out_dir / 'store'}", out_dir), nprocs=WORLD_SIZE, join=True)
    return out_dir


@pytest.fixture(scope="module")
def reference() -> tuple[nn.Module, list[float]]:
    """The same model trained by one process on the whole global batch, and its losses."""
    model = _tiny_gpt2()
    with one_thread():
        losses = _train(model, _global_batch())
    return model, losses


# ---- tests --------------------------------------------------------------------------------------


def _assert_parameters_match(label: str, state: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Every parameter of ``model`` equals ``state``'s within PARAM_RTOL."""
    for name, parameter in model.named_parameters():
        assert name in state, f"{label}: {name} missing from the state dict"
        assert_close(f"{label} {name}", state[name], parameter, rtol=PARAM_RTOL)


def _assert_losses_match(label: str, rank_losses: list[list[float]], expected: list[float]) -> None:
    """The mean of the ranks' losses (each over as many tokens) is the global batch's loss, step by step."""
    means = [sum(values) / len(values) for values in zip(*rank_losses, strict=True)]
    assert_close(f"{label} losses", torch.tensor(means), torch.tensor(expected), rtol=LOSS_RTOL)


def test_ddp_step_matches_single_process(runs, reference):
    model, losses = reference
    results = [torch.load(runs / f"ddp-rank{rank}.pt") for rank in range(WORLD_SIZE)]
    for rank, result in enumerate(results):
        _assert_parameters_match(f"ddp rank {rank}", result["state"], model)
    _assert_losses_match("ddp", [result["losses"] for result in results], losses)
    assert _ssl_paths(model), "the reference model has no SSL layer"


def test_fsdp2_step_matches_single_process(runs, reference):
    model, losses = reference
    results = [torch.load(runs / f"fsdp2-rank{rank}.pt") for rank in range(WORLD_SIZE)]
    _assert_parameters_match("fsdp2", results[0]["state"], model)
    _assert_losses_match("fsdp2", [result["losses"] for result in results], losses)


def _assert_same_outputs(label: str, loaded: nn.Module, model: nn.Module) -> None:
    batch = _global_batch(seed=BATCH_SEED + 1)
    with torch.no_grad():
        assert_close(f"{label} logits", loaded(input_ids=batch).logits, model(input_ids=batch).logits,
                     rtol=PARAM_RTOL)


def test_fsdp2_full_state_dict_loads_into_plain_model(runs, reference):
    """The gathered state dict carries each SSL's structure and loads (strict) into a single-process
    model converted the same way; a model converted with another c refuses it, naming redn_factor."""
    model, _ = reference
    state = torch.load(runs / "fsdp2-rank0.pt")["state"]
    plain = _tiny_gpt2(seed=MODEL_SEED + 1)  # other weights: the load must replace them all
    for path in _ssl_paths(plain):
        layer = plain.get_submodule(path)
        for key in ("redn_factor", "seed", "block_k", "block_n"):
            assert int(state[f"{path}.{key}"]) == getattr(layer, key), f"{path}.{key} in the sharded model's state"

    plain.load_state_dict(state)
    _assert_parameters_match("full state dict", dict(plain.named_parameters()), model)
    _assert_same_outputs("full state dict", plain, model)

    other = _tiny_gpt2(redn_factor=2)
    with pytest.raises(RuntimeError, match="redn_factor=4 but this layer has redn_factor=2"):
        other.load_state_dict(state)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # single-process load on purpose
def test_fsdp2_dcp_checkpoint_loads_into_plain_model(runs, reference):
    """The sharded DCP checkpoint loads in one process without a process group."""
    model, _ = reference
    plain = _tiny_gpt2(seed=MODEL_SEED + 1)
    state = plain.state_dict()
    dcp.load(state, checkpoint_id=runs / "dcp")  # fills state's tensors in place, structure keys too
    plain.load_state_dict(state)
    _assert_parameters_match("dcp", dict(plain.named_parameters()), model)
    _assert_same_outputs("dcp", plain, model)


def test_fsdp2_resumes_from_its_dcp_checkpoint(runs):
    """dcp.load + set_model_state_dict into a sharded model with other weights restores every entry."""
    saved = torch.load(runs / "fsdp2-rank0.pt")["state"]
    resumed = torch.load(runs / "fsdp2-resumed-dcp.pt")
    assert resumed.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(resumed[key], value), f"{key} differs after resuming from the DCP checkpoint"


@pytest.mark.xfail(strict=True, reason="SSL's structure entries are neither parameters nor buffers, and "
                   "set_model_state_dict(broadcast_from_rank0=True) broadcasts only those: the other ranks "
                   "miss redn_factor/seed/block_k/block_n (ss1bench/layer.py; load on every rank meanwhile)")
def test_fsdp2_loads_a_full_state_dict_broadcast_from_rank0(runs):
    errors = {rank: torch.load(runs / f"fsdp2-broadcast-error-rank{rank}.pt") for rank in range(WORLD_SIZE)}
    assert not any(errors.values()), f"set_model_state_dict failed: {errors}"


def test_worker_failure_reaches_the_test(tmp_path):
    """A worker's exception fails the test with its traceback; the rank waiting for it is stopped
    (it would otherwise wait COLLECTIVE_TIMEOUT in the rendezvous)."""
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 fails on purpose"):
        mp.spawn(_failing_worker, args=(f"file://{tmp_path / 'store'}",), nprocs=WORLD_SIZE, join=True)


def test_example_runs_under_torchrun():
    """examples/train_distributed.py under FSDP2: dense then SS1, 2 steps each, 2 processes, gloo.

    One wrap only, to keep the suite quick (a run costs three interpreter starts); the DDP path of
    the example is one line, and the tests above check DDP itself."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD_SIZE}",
               str(EXAMPLE), "--model", "gpt2-tiny", "--wrap", "fsdp2", "--compare", "--steps", "2",
               "--warmup-steps", "1", "--batch", "2", "--seq", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A session of its own, so a run that times out is stopped with its workers.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=EXAMPLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} ran past {EXAMPLE_TIMEOUT_S} s:\n{output[-4000:]}")
    assert process.returncode == 0, f"{' '.join(command)} exited with {process.returncode}:\n{output[-4000:]}"
    assert "ss1/dense tokens/s" in output, f"no comparison line in the output:\n{output[-4000:]}"
