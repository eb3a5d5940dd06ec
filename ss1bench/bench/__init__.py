"""Benchmarks: SS1 against dense (cuBLAS) and structured peers at equal parameter count.

``schema`` (providers, CSV columns), ``shapes`` (shape sets), ``peers`` (low-rank, Monarch),
``runner`` (the cases, the providers' builders and the run loop), ``measure`` (timing one provider
call), ``results`` (the CSV, its sidecar and the progress line), ``commands`` (``ss1bench bench``
and ``ss1bench report``). Nothing is imported here, so the report can read the schema without torch.
"""
