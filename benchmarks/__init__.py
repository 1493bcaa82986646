"""The performance harness behind ``make bench`` (``python -m benchmarks.run``).

Modules: ``videos`` (generated, cached inputs), ``floor`` (plain PyAV decoding), ``pipeline``
(``tsp extract`` as a subprocess, start-up measured apart), ``baseline`` (the reference's
per-clip reads, re-created), ``memory`` (peak memory of a process tree), ``e2e`` (extraction
with a network against the network alone), ``profiling`` (cProfile of the decoding side) and
``report`` (the table, ``bench-out/results.json`` and ``bench-out/results.md``).

Nothing here imports ``tests``: the harness runs from a plain checkout.
"""
