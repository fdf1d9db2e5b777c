"""Offset commits never hold the consumer thread while the broker is unreachable.

A synchronous commit waits for the group coordinator (~46 s with the broker down, FACTS.md): the
consumer thread froze, SIGTERM went unanswered and the session timed out. Here the source's
periodic commit must return at once, and the final commit must give up at its deadline.
"""

from __future__ import annotations

import threading
import time

from workers.pipeline.offsets import OffsetTracker
from workers.pipeline.source import KafkaSource
from workers.settings import Settings
from workers.topology import Topology


def _source_without_broker(topology: Topology) -> tuple[KafkaSource, OffsetTracker]:
    # Port 1: nothing listens; every connection is refused, as with a stopped broker.
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    tracker = OffsetTracker()
    src = KafkaSource(topology, settings, tracker, lambda tps: None)
    tracker.register(("transactions", 0), range(10))
    for o in range(10):
        tracker.mark_done(("transactions", 0), o)
    return src, tracker


def _returns_within(fn: object, limit_s: float) -> bool:
    t = threading.Thread(target=fn, daemon=True)  # type: ignore[arg-type]
    t.start()
    t.join(limit_s)
    return not t.is_alive()


def test_periodic_commit_does_not_wait_for_an_unreachable_coordinator(fraud_topology: Topology) -> None:
    src, tracker = _source_without_broker(fraud_topology)
    # Generous limit: the old synchronous commit blocked ~46 s here; an asynchronous one returns
    # in microseconds. This checks that it does not wait, not how fast it is.
    assert _returns_within(src.commit, 15.0), "commit() blocked on the group coordinator"
    assert _returns_within(src.commit, 15.0)
    # sent, not confirmed: still reported as to be committed
    assert tracker.committable() == {("transactions", 0): 10}


def test_final_commit_gives_up_at_its_deadline_and_reports_it(fraud_topology: Topology) -> None:
    src, tracker = _source_without_broker(fraud_topology)
    result: list[bool] = []
    assert _returns_within(lambda: result.append(src.commit_final(time.monotonic() + 1.0)), 15.0)
    assert result == [False]  # not confirmed: the caller must not report it committed
