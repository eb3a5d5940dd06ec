"""Autotuning for the SS1 kernels and the per-GPU tuning database.

Layout (pure logic first, device work last, so everything but timing is testable on a CPU):

- :mod:`.gpu`         GPU names -> database names ("NVIDIA H100 80GB HBM3" -> "H100"), ``--gpu`` matching.
- :mod:`.shapes`      model shape sets (gpt2, llama, bert, square), M buckets, ``MxKxN`` parsing.
- :mod:`.space`       candidate launch configs and structures, pruned by shared memory and registers.
- :mod:`.keys`        record keys (``fp16/K768/N3072/c4``, ``forward/.../M16``), the nearest M bucket.
- :mod:`.validation`  what a valid database object is.
- :mod:`.records`     one GPU's records in memory (``TuningDatabase``), their JSON form, the merge rule.
- :mod:`.db`          the files: where they are, locked atomic writes, which GPU's files serve a GPU.
- :mod:`.lookup`      the structure advisor and launch-config hook the ``SSL`` layer reads.
- :mod:`.gate`        the correctness gate: a candidate's output against the float64 reference.
- :mod:`.measure`     device side: inputs, the correctness gate, timing, parallel compilation.
- :mod:`.work`        tune options, work items and the plan against the database (resume rules).
- :mod:`.budget`      ``--budget`` order: expected gain per second of tuning.
- :mod:`.selection`   how winners are chosen: the launch config to record, the structure.
- :mod:`.tuner`       drives a ``measure`` bench through an item (screen, refine, confirm, probe).
- :mod:`.outcome`     what an item yields: measurements, results, CSV and summary rows.
- :mod:`.runner`      ``tune`` end to end: plans per GPU, devices, writes, the budget's clock.
- :mod:`.models`      a model's converted layer shapes (``tune --model``).
- :mod:`.results`     the results CSV read back (offline scripts).
- :mod:`.commands`    ``ss1bench tune``; :mod:`.db_commands` ``ss1bench db``.

Importing this package touches no GPU.
"""
