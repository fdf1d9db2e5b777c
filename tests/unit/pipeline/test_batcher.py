from __future__ import annotations

import numpy as np

from workers.pipeline.batcher import MicroBatcher
from workers.events import EventBatch


def make(n: int, start: int = 0) -> EventBatch:
    o = np.array([f"e{i}" for i in range(start, start + n)], dtype=object)
    z = np.zeros(n, dtype=np.int64)
    nulls = np.arange(start, start + n) % 2 == 0  # an optional field: every other row null
    return EventBatch({"event_id": o, "amount": np.zeros(n), "note": np.where(nulls, None, "x").astype(object)},
                      {"note": nulls}, key=np.full(n, None, dtype=object), topic=np.full(n, "t", dtype=object),
                      partition=z, offset=np.arange(start, start + n, dtype=np.int64), received_ns=z, kafka_ts_ms=z)


def test_flush_at_max_batch_and_keeps_order() -> None:
    b = MicroBatcher(max_batch=4, max_wait_ms=1000)
    b.add(make(3, 0), now_ns=0)
    assert b.ready(0) is None
    b.add(make(3, 3), now_ns=0)
    out = b.ready(0)
    assert out is not None and out.offset.tolist() == [0, 1, 2, 3]
    assert out.column("event_id").tolist() == ["e0", "e1", "e2", "e3"]
    assert out.null_mask("note").tolist() == [True, False, True, False]  # type: ignore[union-attr]
    assert len(b) == 2
    assert b.ready(0) is None  # remainder waits for time or size


def test_offer_passes_whole_batches_through_and_keeps_order() -> None:
    b = MicroBatcher(max_batch=4, max_wait_ms=1000)
    whole = make(4, 0)
    assert b.offer(whole, 0) is whole and len(b) == 0  # empty batcher, full batch: as it came
    assert b.offer(make(3, 4), 0) is None and len(b) == 3
    out = b.offer(make(4, 7), 0)  # something pending: it goes first
    assert out is not None and out.offset.tolist() == [4, 5, 6, 7]
    rest = b.ready(0)
    assert rest is None and len(b) == 3
    assert b.offer(make(0), 0) is None  # an empty piece (all dead-lettered) changes nothing
    out = b.ready(2_000_000_000)
    assert out is not None and out.offset.tolist() == [8, 9, 10]


def test_flush_at_max_wait() -> None:
    b = MicroBatcher(max_batch=100, max_wait_ms=5)
    b.add(make(2), now_ns=1_000_000)
    assert b.ready(5_999_999) is None
    assert b.time_left_s(2_000_000) > 0
    out = b.ready(6_000_000)
    assert out is not None and len(out) == 2 and len(b) == 0


def test_flush_when_the_scorer_is_idle_takes_what_is_pending_at_once() -> None:
    b = MicroBatcher(max_batch=100, max_wait_ms=1000)
    small = make(2, 0)
    assert b.offer(small, 0, flush=True) is small and len(b) == 0  # empty batcher: as it came
    assert b.offer(make(3, 2), 0) is None and len(b) == 3  # scorer busy: it waits
    out = b.offer(make(2, 5), 0, flush=True)  # scorer idle: pending and new go together, in order
    assert out is not None and out.offset.tolist() == [2, 3, 4, 5, 6] and len(b) == 0
    assert b.offer(make(0), 0, flush=True) is None and len(b) == 0  # nothing to flush
    b.add(make(1, 7), 0)
    out = b.ready(0, flush=True)
    assert out is not None and out.offset.tolist() == [7]


def test_flush_still_caps_batches_at_max_batch() -> None:
    b = MicroBatcher(max_batch=4, max_wait_ms=1000)
    b.add(make(3, 0), 0)
    out = b.offer(make(3, 3), 0, flush=True)
    assert out is not None and out.offset.tolist() == [0, 1, 2, 3]
    rest = b.ready(0, flush=True)
    assert rest is not None and rest.offset.tolist() == [4, 5] and len(b) == 0


def test_drain_splits_into_max_batches() -> None:
    b = MicroBatcher(max_batch=3, max_wait_ms=1000)
    b.add(make(8), now_ns=0)
    sizes = [len(x) for x in b.drain(0)]
    assert sizes == [3, 3, 2]
    assert b.room() == 3


def test_expired_rows() -> None:
    from workers.pipeline.batcher import expired

    ts = np.array([1000, 5000, 9000], dtype=np.int64)
    assert expired(ts, 0, 10**9).tolist() == [False, False, False]  # 0 = deadlines off
    assert expired(ts, 2000, 6500).tolist() == [True, False, False]
    assert expired(ts, 2000, 12_000).tolist() == [True, True, True]


def test_backpressure_pauses_at_high_and_resumes_at_half() -> None:
    from workers.pipeline.batcher import Backpressure

    bp = Backpressure(max_inflight=4)
    seen = [bp.update(q) for q in (0, 3, 4, 4, 3, 2, 1, 4)]
    assert seen == [False, False, True, True, True, False, False, True]
    assert bp.pauses == 2
