"""OpenTelemetry traces for every Depot process, and the W3C ``traceparent`` that links them.

:func:`configure_tracing` (called by :func:`depot_common.entrypoint.run_command`, so by every
process) installs the SDK only when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: then
spans are batched to that OTLP/HTTP endpoint and asyncpg is instrumented, :func:`instrument_app`
instruments each FastAPI app and :func:`instrument_s3` each S3 client. Otherwise nothing is
installed and every span below is OpenTelemetry's no-op span, which still carries the trace
context it was given, so the ``traceparent`` still flows (request → outbox → Kafka → consumer)
and log lines still carry its ids.

Kafka is traced by hand, not by the aiokafka instrumentation: the outbox relay publishes in
another process, long after the request, so its ``publish`` span must continue the
``traceparent`` stored with the event (not the relay's own context), and the consumer's
``process`` span must cover handling the record, which happens after the fetch the
instrumentation would trace. S3 is traced through botocore's event hooks because botocore's
instrumentation does not see aiobotocore's asynchronous calls.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.typing import EventDict, WrappedLogger

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
#: The routes no request is traced on: probes and scrapes would drown the traces that matter.
UNTRACED_ROUTES = "/healthz,/readyz,/metrics"

_W3C = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("depot")
_enabled = False


def enabled() -> bool:
    """Whether this process records and exports spans (``OTEL_EXPORTER_OTLP_ENDPOINT`` was set)."""
    return _enabled


def configure_tracing(service: str) -> None:
    """Record spans as ``service`` and export them over OTLP/HTTP, if ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
    (the SDK is imported only then: :mod:`depot_common.trace_export`)."""
    global _enabled
    if _enabled or not os.environ.get(ENDPOINT_VARIABLE):
        return
    from depot_common.trace_export import export_traces

    export_traces(service)
    _enabled = True


def instrument_app(app: Any) -> None:
    """Trace ``app``'s requests (one server span each, named by route), when tracing is on."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=UNTRACED_ROUTES, exclude_spans=["receive", "send"])


def instrument_s3(client: Any) -> None:
    """Trace each call of the aiobotocore ``client`` (``S3.PutObject``…) in the caller's trace, when tracing is on."""
    if not _enabled:
        return
    events = client.meta.events
    events.register("before-call.s3", _s3_call_started)
    events.register("after-call.s3", _s3_call_answered)
    events.register("after-call-error.s3", _s3_call_failed)


_S3_SPAN = "depot.span"


def _s3_attributes(operation: str, method: str) -> dict[str, str]:
    """What every S3 span says of its request, sent by the aiobotocore client or not."""
    return {"rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": operation, "http.request.method": method}


def _s3_call_started(model: Any, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
    operation = model.name
    attributes = _s3_attributes(operation, str(params.get("method", "")))
    context[_S3_SPAN] = _tracer.start_span(f"S3.{operation}", kind=SpanKind.CLIENT, attributes=attributes)


def _s3_call_answered(http_response: Any, context: dict[str, Any], **_: Any) -> None:
    span: Span | None = context.pop(_S3_SPAN, None)
    if span is not None:
        s3_answered(span, http_response.status_code)
        span.end()


def _s3_call_failed(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
    span: Span | None = context.pop(_S3_SPAN, None)
    if span is not None:
        span.record_exception(exception)
        span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        span.end()


@contextmanager
def s3_request(operation: str, method: str) -> Iterator[Span]:
    """The span of an S3 request sent without the aiobotocore client (obstore's PUT and GET),
    named and described as :func:`instrument_s3` names the client's; :func:`s3_answered` records the answer.
    With tracing off it is the current span (a no-op span would be a copy of it, made current for nothing)."""
    if not _enabled:
        yield trace.get_current_span()
        return
    attributes = _s3_attributes(operation, method)
    with _tracer.start_as_current_span(f"S3.{operation}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def s3_answered(span: Span, status_code: int) -> None:
    """Record an S3 answer on ``span`` (an error from status 400 on, as :func:`instrument_s3` does)."""
    span.set_attribute("http.response.status_code", status_code)
    if status_code >= 400:
        span.set_status(Status(StatusCode.ERROR))


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, ``None`` outside any trace."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context:
    """A context whose (remote) parent is ``traceparent``; empty when it is missing or invalid."""
    return _W3C.extract({"traceparent": traceparent} if traceparent else {})


def new_traceparent(trace_id: str | None = None) -> str:
    """A fresh ``traceparent`` (a new span, in ``trace_id`` when given)."""
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


@contextmanager
def request_trace(traceparent: str | None) -> Iterator[None]:
    """Make sure a request is in a trace: the server span when tracing is on, else a non-recording span that
    continues the incoming ``traceparent`` (or starts a trace), so the outbox and the logs still carry it."""
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    parent = trace.get_current_span(context_of(traceparent)).get_span_context()
    span = NonRecordingSpan(
        SpanContext(
            trace_id=parent.trace_id if parent.is_valid else int(secrets.token_hex(16), 16),
            span_id=int(secrets.token_hex(8), 16),
            is_remote=False,
            trace_flags=parent.trace_flags if parent.is_valid else TraceFlags(TraceFlags.SAMPLED),
        )
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def _messaging(operation: str, topic: str, **more: Any) -> dict[str, Any]:
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.destination.name": topic,
        **more,
    }


def start_publish(topic: str, key: str, stored_traceparent: str | None) -> Span:
    """The relay's span for sending one outbox event, child of the ``traceparent`` stored with it."""
    return _tracer.start_span(
        f"publish {topic}",
        context=context_of(stored_traceparent),
        kind=SpanKind.PRODUCER,
        attributes=_messaging("send", topic, **{"messaging.kafka.message.key": key}),
    )


def traceparent_of(span: Span) -> str | None:
    """The ``traceparent`` naming ``span`` (the header the consumer continues from)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


@contextmanager
def consuming(topic: str, partition: int, offset: int, group: str, traceparent: str | None) -> Iterator[Span]:
    """The consumer's span for handling one record, current while it is handled, continuing its ``traceparent``."""
    with trace.use_span(start_consuming(topic, partition, offset, group, traceparent), end_on_exit=True) as span:
        yield span


def start_consuming(topic: str, partition: int, offset: int, group: str, traceparent: str | None) -> Span:
    """The consumer's span for one record, started but not current: a batch handles its records in steps
    (each made current with :func:`within`), and ends every span once the batch committed."""
    return _tracer.start_span(
        f"process {topic}",
        context=context_of(traceparent),
        kind=SpanKind.CONSUMER,
        attributes=_messaging(
            "process",
            topic,
            **{
                "messaging.consumer.group.name": group,
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.offset": offset,
            },
        ),
    )


def within(span: Span) -> Any:
    """A context manager making ``span`` current without ending it (errors raised inside are recorded on it)."""
    return trace.use_span(span, end_on_exit=False)


def add_trace_ids(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """structlog processor: the current span's ``trace_id`` and ``span_id`` on every line logged inside one."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(span_context.trace_id))
        event.setdefault("span_id", trace.format_span_id(span_context.span_id))
    return event
