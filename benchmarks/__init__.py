"""Depot benchmarks: ``python -m benchmarks`` (``make bench``).

Every figure is reported next to a baseline measured in the same run on the same
servers, so the ratios mean something on any machine. One module per benchmark
(``upload``, ``memory``); ``stack`` provides the servers and the upload API process,
``load`` the concurrent driver, ``payload`` distinct bodies (streamed for large ones),
``procfs`` CPU and memory readings from ``/proc``, ``report`` the tables and the JSON file.
``python -m benchmarks.profiling`` shows where the API's CPU goes under upload load.
"""
