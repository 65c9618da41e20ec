"""The SDK side of tracing: a tracer provider exporting over OTLP/HTTP, asyncpg instrumented, Depot's sampler.

Imported by :func:`depot_common.tracing.configure_tracing` only when ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set, so a process without it never loads the SDK.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


def export_traces(service: str) -> None:
    """Record spans as ``service`` and batch them to ``OTEL_EXPORTER_OTLP_ENDPOINT``.

    The other standard ``OTEL_*`` variables apply (``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``). Without a sampler set,
    every trace is kept except those a database or S3 call would start on its own (a relay's polling,
    a consumer's bookkeeping outside any event), and SQL bookkeeping spans (``BEGIN``, ``COMMIT``,
    savepoints, the pool's reset) are dropped: they are noise, not work anyone asked for.
    """
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else DepotSampler()
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]


#: SQL that is the driver's bookkeeping, not a query of ours: transaction control, the pool's reset.
_SQL_BOOKKEEPING = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"})
_POOL_RESET = "SELECT pg_advisory_unlock_all();"


class DepotSampler(Sampler):
    """Parent-based, always on, less the noise: SQL bookkeeping spans (a third of an upload's spans, and of
    the cost of tracing it) and the traces a client call outside any request would start."""

    def __init__(self) -> None:
        self._parent_based = ParentBased(root=_NoLoneClientSpans())

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT and _is_sql_bookkeeping(name, attributes):
            return SamplingResult(Decision.DROP)
        return self._parent_based.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "DepotSampler"


def _is_sql_bookkeeping(name: str, attributes: Attributes) -> bool:
    if name.rstrip(";").upper() in _SQL_BOOKKEEPING:
        return True
    statement = (attributes or {}).get("db.statement") or (attributes or {}).get("db.query.text")
    return isinstance(statement, str) and statement.startswith(_POOL_RESET)


class _NoLoneClientSpans(Sampler):
    """Root sampler: drop a trace a client call (SQL, S3) would start; keep every other."""

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.DROP if kind is SpanKind.CLIENT else Decision.RECORD_AND_SAMPLE
        return SamplingResult(decision, attributes if decision is Decision.RECORD_AND_SAMPLE else None)

    def get_description(self) -> str:
        return "NoLoneClientSpans"
