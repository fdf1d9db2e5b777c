"""OpenTelemetry traces through Kafka headers, one span per micro-batch.

Propagation (always on, cheap): the W3C ``traceparent`` header of each input record is read once
per consumed batch (only records that carry headers are looked at) and travels with its row as the
batch column ``_trace.parent``. Each decision is produced with its event's ``traceparent``
unchanged (its consumers join the event's trace), a dead letter likewise; a decision whose event
had none carries the batch span's context when that span is sampled. With ``decision.trace_id:
true`` the record gets the event's trace id.

Spans (``trace_exporter`` setting, off by default): one span per scored micro-batch named after
the stage id, with span links to the events' parent contexts (a batch has many parents; at most
``OTEL_SPAN_LINK_COUNT_LIMIT``, 128 by default; made only for sampled spans), and a child span per step (features, assemble,
inference, decide, produce) placed by the times the worker measured anyway. Sampling follows the
standard ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``; the OTLP exporter reads
``OTEL_EXPORTER_OTLP_*``; export is batched in the background (``BatchSpanProcessor``, bounded by
``OTEL_BSP_MAX_QUEUE_SIZE``: spans beyond it are dropped, never waited for).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

TRACEPARENT = "traceparent"
TRACE_COLUMN = "_trace.parent"  # a batch column beside the schema's fields: traceparent bytes or None
_TP = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = b"0" * 32
MAX_LINKS = 128

ObjArray = npt.NDArray[np.object_]
Exporter = Literal["none", "otlp", "console"]


def read_parents(messages: Sequence[Any]) -> list[bytes | None] | None:
    """The ``traceparent`` of each message (None: it has none); None when no message has headers."""
    hs = [m.headers() for m in messages]
    if not any(hs):
        return None
    out: list[bytes | None] = [None] * len(hs)
    for i, h in enumerate(hs):
        if h:
            for k, v in h:
                if k == TRACEPARENT:
                    out[i] = v if isinstance(v, bytes) else (v.encode() if isinstance(v, str) else None)
                    break
    return out


def parent_column(n: int, parents: list[bytes | None] | None, messages: Sequence[Any],
                  dead: set[tuple[str, int, int]]) -> ObjArray:
    """The ``_trace.parent`` column of the ``n`` decoded rows (``dead``: the messages decode
    rejected, as (topic, partition, offset), in whose absence rows and messages line up)."""
    col = np.empty(n, dtype=object)
    if parents is None:
        return col
    if dead:
        parents = [p for m, p in zip(messages, parents)
                   if (m.topic(), m.partition(), m.offset()) not in dead]
    col[:] = parents
    return col


def dead_parents(parents: list[bytes | None] | None, messages: Sequence[Any],
                 dead: set[tuple[str, int, int]]) -> dict[tuple[str, int, int], bytes]:
    """``traceparent`` of the rejected messages, by (topic, partition, offset)."""
    if parents is None or not dead:
        return {}
    out: dict[tuple[str, int, int], bytes] = {}
    for m, p in zip(messages, parents):
        if p is not None:
            k = (m.topic(), m.partition(), m.offset())
            if k in dead:
                out[k] = p
    return out


def trace_ids(col: ObjArray | None, n: int) -> list[str | None]:
    """The W3C trace id (32 hex) per row, None where the row has no valid ``traceparent``."""
    out: list[str | None] = [None] * n
    if col is None:
        return out
    for i in np.flatnonzero(col != None).tolist():  # noqa: E711 (elementwise on an object array)
        m = _TP.match(col[i])
        if m is not None and m.group(1) != _ZERO_TRACE:
            out[i] = m.group(1).decode()
    return out


def _links(col: ObjArray | None, max_links: int = MAX_LINKS) -> list[SpanContext]:
    """The distinct valid parent contexts of a batch's rows, at most ``max_links``."""
    if col is None:
        return []
    links: list[SpanContext] = []
    seen: set[bytes] = set()
    for i in np.flatnonzero(col != None).tolist():  # noqa: E711
        v = col[i]
        if v in seen:
            continue
        seen.add(v)
        m = _TP.match(v)
        if m is None or m.group(1) == _ZERO_TRACE:
            continue
        links.append(SpanContext(int(m.group(1), 16), int(m.group(2), 16), is_remote=True,
                                 trace_flags=TraceFlags(int(m.group(3), 16))))
        if len(links) >= max_links:
            break
    return links


def format_traceparent(ctx: SpanContext) -> bytes:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()


class BatchTracer:
    """Spans of one stage's micro-batches. ``enabled`` False: every call is a no-op."""

    def __init__(self, stage: str, exporter: Exporter = "none", *,
                 processor: SpanProcessor | None = None, service_name: str = "streamscore") -> None:
        self.stage = stage
        self.enabled = exporter != "none" or processor is not None
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._max_links = SpanLimits().max_links or MAX_LINKS  # OTEL_SPAN_LINK_COUNT_LIMIT, default 128
        if not self.enabled:
            return
        # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                                  "streamscore.stage": stage}))
        if processor is None:
            processor = BatchSpanProcessor(_exporter(exporter))
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("streamscore.worker")

    def start(self, parents: ObjArray | None, rows: int) -> trace.Span | None:
        """The span of a micro-batch about to be scored, linked to its events' parents."""
        if self._tracer is None:
            return None
        span = self._tracer.start_span(self.stage, attributes={"streamscore.batch.rows": rows},
                                       kind=trace.SpanKind.CONSUMER)
        # Links are made only for a span that is sampled (~5 µs each): at a 1% sampling ratio the
        # other 99% of batches cost a span start and end, not 128 parsed parents.
        if span.is_recording():
            for ctx in _links(parents, self._max_links):
                span.add_link(ctx)
        return span

    def finish(self, span: trace.Span | None, timings_ms: dict[str, float]) -> None:
        """End the batch span, with one child span per step laid end to end from its start."""
        if span is None or self._tracer is None:
            return
        if span.is_recording():
            ctx = trace.set_span_in_context(span)
            t = getattr(span, "start_time", None) or time.time_ns()
            for step, ms in timings_ms.items():
                end = t + int(ms * 1e6)
                self._tracer.start_span(step, context=ctx, start_time=t).end(end_time=end)
                t = end
        span.end()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()  # flushes what is queued


def outgoing(parents: ObjArray | None, n: int, span: trace.Span | None) -> list[bytes | None] | None:
    """``traceparent`` per decision: the event's own, else the batch span's when sampled; None:
    no decision of the batch gets one."""
    own: bytes | None = None
    if span is not None:
        sc = span.get_span_context()
        if sc.is_valid and sc.trace_flags.sampled:
            own = format_traceparent(sc)
    if parents is None or not (parents != None).any():  # noqa: E711
        return None if own is None else [own] * n
    out: list[bytes | None] = parents.tolist()
    if own is not None:
        out = [p if p is not None else own for p in out]
    return out


def _exporter(kind: Exporter) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_* variables


__all__ = ["BatchTracer", "TRACEPARENT", "TRACE_COLUMN", "outgoing", "read_parents",
           "parent_column", "dead_parents", "trace_ids", "format_traceparent"]
