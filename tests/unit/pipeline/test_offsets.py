from __future__ import annotations

from workers.pipeline.offsets import OffsetTracker


def test_commit_only_contiguous_done_prefix() -> None:
    t = OffsetTracker()
    tp = ("t", 0)
    t.register(tp, [10, 11, 12, 13])
    assert t.committable() == {}
    t.mark_done(tp, 11)
    t.mark_done(tp, 13)
    assert t.committable() == {}  # 10 is still in flight
    t.mark_done(tp, 10)
    assert t.committable() == {tp: 12}
    t.mark_committed({tp: 12})
    assert t.committable() == {}
    t.mark_done(tp, 12)
    assert t.committable() == {tp: 14}
    assert t.in_flight() == 0


def test_partitions_independent_and_forget() -> None:
    t = OffsetTracker()
    t.register(("t", 0), [0, 1])
    t.register(("t", 1), [5])
    t.mark_done(("t", 1), 5)
    assert t.committable() == {("t", 1): 6}
    t.forget([("t", 0)])
    t.mark_done(("t", 0), 0)  # late ack for a revoked partition is ignored
    assert ("t", 0) not in t.committable()
