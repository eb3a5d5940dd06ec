"""Autotuning for the SS1 kernels and the per-GPU tuning database.

Layout (pure logic first, device work last, so everything but timing is testable on a CPU):

- :mod:`.gpu`      GPU names -> database names ("NVIDIA H100 80GB HBM3" -> "H100"), ``--gpu`` matching.
- :mod:`.shapes`   model shape sets (gpt2, llama, bert, square), M buckets, ``MxKxN`` parsing.
- :mod:`.space`    candidate launch configs and structures, pruned by shared memory and registers.
- :mod:`.db`       the JSON database: schema, keys, validation, locked atomic merges, lookup order.
- :mod:`.lookup`   the structure advisor and launch-config hook the ``SSL`` layer reads.
- :mod:`.measure`  device side: inputs, the correctness gate, timing, parallel compilation.
- :mod:`.tuner`    the work plan, candidate selection and structure choice; drives a ``measure`` bench.
- :mod:`.commands` ``ss1bench tune`` and ``ss1bench db``.

Importing this package touches no GPU.
"""
