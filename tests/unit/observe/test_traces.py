"""traceparent headers in, span links per batch, traceparent and trace id out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from workers.observe import traces

T1, T2 = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
TP1 = f"00-{T1}-00f067aa0ba902b7-01".encode()
TP2 = f"00-{T2}-b7ad6b7169203331-01".encode()


@dataclass
class Msg:
    off: int
    hdrs: list[tuple[str, bytes]] | None = None

    def headers(self) -> Any:
        return self.hdrs

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.off


def test_no_headers_costs_one_pass_and_gives_none() -> None:
    assert traces.read_parents([Msg(0), Msg(1)]) is None
    col = traces.parent_column(2, None, [], set())
    assert col.tolist() == [None, None]


def test_parents_follow_their_rows_past_dead_letters() -> None:
    msgs = [Msg(0, [("traceparent", TP1)]), Msg(1, [("x", b"y")]), Msg(2, [("traceparent", TP2)]), Msg(3)]
    parents = traces.read_parents(msgs)
    assert parents == [TP1, None, TP2, None]
    dead = {("t", 0, 2)}
    assert traces.parent_column(3, parents, msgs, dead).tolist() == [TP1, None, None]
    assert traces.dead_parents(parents, msgs, dead) == {("t", 0, 2): TP2}


def test_trace_ids_skip_invalid_and_all_zero_parents() -> None:
    col = np.empty(4, dtype=object)
    col[:] = [TP1, b"garbage", f"00-{'0' * 32}-00f067aa0ba902b7-01".encode(), None]
    assert traces.trace_ids(col, 4) == [T1, None, None, None]
    assert traces.trace_ids(None, 2) == [None, None]


def test_one_span_per_batch_linked_to_its_parents_with_a_child_per_step() -> None:
    spans = InMemorySpanExporter()
    tracer = traces.BatchTracer("fraud-scorer", processor=SimpleSpanProcessor(spans))
    col = np.empty(3, dtype=object)
    col[:] = [TP1, TP1, None]
    span = tracer.start(col, 3)
    out = traces.outgoing(col, 3, span)
    tracer.finish(span, {"features": 0.5, "inference": 0.2})
    tracer.shutdown()
    done = {s.name: s for s in spans.get_finished_spans()}
    assert set(done) == {"fraud-scorer", "features", "inference"}
    batch = done["fraud-scorer"]
    assert [f"{link.context.trace_id:032x}" for link in batch.links] == [T1]  # one link per distinct parent
    assert done["features"].parent is not None and done["features"].parent.span_id == batch.context.span_id
    assert done["features"].end_time <= done["inference"].start_time
    assert out is not None and out[0] == TP1 and out[1] == TP1
    assert out[2] == traces.format_traceparent(batch.context)  # no parent of its own: the batch's context


def test_tracing_off_still_passes_parents_on() -> None:
    tracer = traces.BatchTracer("s")
    assert not tracer.enabled and tracer.start(None, 1) is None
    col = np.empty(2, dtype=object)
    col[:] = [None, TP2]
    assert traces.outgoing(col, 2, None) == [None, TP2]
    assert traces.outgoing(np.empty(2, dtype=object), 2, None) is None
