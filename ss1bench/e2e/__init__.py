"""``ss1bench e2e``: whole-model time, the dense model against its SS1 conversion, as users run it.

The layer benchmark (``ss1bench bench``) times one linear layer at a time; this command times what
a user of :func:`~ss1bench.convert_to_ss_linear` gets: a whole Hugging Face model (GPT-2 with HF's
vocabulary or padded to 50304, BERT, a Llama-3.2-1B-shaped Llama) built from its config with random
weights (nothing is downloaded), timed dense and converted, side by side in one run, eager or under
``torch.compile`` (dense and SS1 always in the same mode), in one of two kinds of run:

- inference (eval mode, ``no_grad``, the models in the run's dtype):

  - ``prefill``: one forward over ``(batch, seq)`` random token ids (decoders with
    ``use_cache=False``; the LM head computes logits for every position, as ``model(ids)`` does);
  - ``decode`` (decoders, eager only): one step of one new token per sequence against a KV cache
    filled by one prefill of ``seq`` tokens and cropped back to ``seq`` tokens after each step;

- training (``--train``): one step of ``zero_grad``, forward with labels and loss under autocast,
  backward and a fused AdamW step, fp32 weights.

Each row has the wall time (median of the dense and the SS1 model's calls timed side by side,
interleaved in rounds), the GPU kernel time of one call (torch.profiler; CUDA only) and the seconds
of the first, untimed call (compilation included).

Modules: :mod:`.models` (specs, building, conversion, statistics), :mod:`.timing` (the calls and
how they are timed), :mod:`.rows` (work list, CSV rows, summary table), :mod:`.command` (the run
loop and the Click command).
"""

from .command import Settings, e2e_command, model_rows, run
from .models import (
    MODEL_NAMES,
    MODELS,
    PHASES,
    ModelSpec,
    ModelStats,
    build_config,
    build_model,
    linear_weight_params,
    meta_weight_counts,
    mlp_structure,
    model_dims,
    phases_of,
    ss1_copy,
)
from .rows import COLUMNS, Work, output_stem, plan, summary_table, timings_in
from .timing import (
    COMPILE_MODES,
    DecodeStep,
    Inputs,
    Measurement,
    TrainStep,
    cuda_kernel_ms,
    phase_call,
    side_by_side_timer,
    time_call,
    time_calls,
)

__all__ = ["COLUMNS", "COMPILE_MODES", "MODELS", "MODEL_NAMES", "PHASES", "DecodeStep", "Inputs", "Measurement",
           "ModelSpec", "ModelStats", "Settings", "TrainStep", "Work", "build_config", "build_model",
           "cuda_kernel_ms", "e2e_command", "linear_weight_params", "meta_weight_counts",
           "mlp_structure", "model_dims", "model_rows", "output_stem", "phase_call", "phases_of", "plan", "run",
           "side_by_side_timer", "ss1_copy", "summary_table", "time_call", "time_calls", "timings_in"]
