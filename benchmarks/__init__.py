"""Depot benchmarks: ``python -m benchmarks`` (``make bench``).

Every figure is reported next to a baseline measured in the same run on the same
servers, so the ratios mean something on any machine. One module per benchmark:
``upload`` (API against S3), ``memory`` (API during a 1 GiB upload), ``relay`` (outbox
relay against producing directly, and its idle commit→Kafka latency), ``indexer``
(document.stored events indexed per second) and ``pipeline`` (upload acknowledged →
searchable under a steady upload rate). ``stack`` provides the servers and the service
processes, ``events`` realistic events and Kafka helpers, ``load`` the concurrent driver
and one-off timings, ``payload`` distinct bodies (streamed for large ones), ``procfs`` CPU
and memory readings from ``/proc``, ``report`` the tables and the JSON file.
``python -m benchmarks.profiling`` shows where the API's CPU goes under upload load.
"""
