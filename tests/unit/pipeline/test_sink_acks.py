"""Decisions are acknowledged per batch (one shared delivery callback): an input is done only when
its decision was acknowledged; refused ones are dead-lettered, never counted as decided."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError

from workers.pipeline.offsets import OffsetTracker
from workers.pipeline.sink import KafkaSink
from workers.settings import Settings
from workers.topology import Topology


class _Msg:
    def __init__(self, topic: str, value: bytes | None) -> None:
        self._topic, self._value = topic, value

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value


class _Producer:
    """Queues produce() calls; poll() delivers them with the errors chosen per value."""

    def __init__(self, errors: dict[bytes, KafkaError] | None = None) -> None:
        self.queued: list[tuple[str, bytes | None, Any]] = []
        self.errors = errors or {}
        self.lock = threading.Lock()

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, on_delivery: Any = None,
                headers: Any = None) -> None:
        with self.lock:
            self.queued.append((topic, value, on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        with self.lock:
            todo, self.queued = self.queued, []
        for topic, value, cb in todo:
            cb(self.errors.get(value or b""), _Msg(topic, value))
        return len(todo)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0


def _sink(topology: Topology, producer: _Producer) -> tuple[KafkaSink, OffsetTracker]:
    tracker = OffsetTracker()
    sink = KafkaSink(topology, Settings(), tracker)
    sink._producer = producer  # type: ignore[assignment]
    return sink, tracker


def _send(sink: KafkaSink, tracker: OffsetTracker, n: int) -> None:
    tracker.register(("tx", 0), range(n))
    sink.send_decisions([b"k%d" % i for i in range(n)], [b"v%d" % i for i in range(n)], ["tx"] * n,
                        [0] * n, list(range(n)), [0] * n)


def test_inputs_are_done_once_every_decision_of_the_batch_is_acknowledged(topology: Topology) -> None:
    p = _Producer()
    sink, tracker = _sink(topology, p)
    p.poll = lambda timeout=0.0: 0  # type: ignore[method-assign]  # nothing delivered yet
    _send(sink, tracker, 5)
    assert tracker.committable() == {} and sink.acked_decisions == 0
    del p.poll  # deliver now
    sink.poll(0)
    assert tracker.committable() == {("tx", 0): 5}
    assert sink.acked_decisions == 5 and len(sink.e2e_ms) == 5


def test_a_refused_decision_is_dead_lettered_and_its_input_done_only_then(topology: Topology) -> None:
    p = _Producer({b"v2": KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")})
    sink, tracker = _sink(topology, p)
    _send(sink, tracker, 4)
    sink.flush(1.0)
    assert sink.acked_decisions == 3 and sink.acked_dead == 1 and sink.refused_decisions == 1
    assert tracker.committable() == {("tx", 0): 4} and not tracker.failed


def test_an_undeliverable_decision_stops_the_worker_uncommitted(topology: Topology) -> None:
    p = _Producer({b"v1": KafkaError(KafkaError._MSG_TIMED_OUT, "broker gone")})
    sink, tracker = _sink(topology, p)
    _send(sink, tracker, 3)
    sink.flush(1.0)
    assert tracker.failed and sink.acked_decisions == 2
    assert tracker.committable() == {("tx", 0): 1}  # not past the failed one


def test_completion_is_counted_once_with_two_threads_polling(topology: Topology) -> None:
    p = _Producer()
    sink, tracker = _sink(topology, p)
    for _ in range(50):
        n = 200
        tracker.register(("tx", 0), range(n))
        gate = threading.Barrier(2)
        saved = p.poll
        p.poll = lambda timeout=0.0: 0  # type: ignore[method-assign]
        sink.send_decisions([None] * n, [b"%d" % i for i in range(n)], ["tx"] * n, [0] * n,
                            list(range(n)), [0] * n)
        p.poll = saved  # type: ignore[method-assign]
        todo, p.queued = p.queued, []
        halves = [todo[::2], todo[1::2]]

        def deliver(part: list[tuple[str, bytes | None, Any]]) -> None:
            gate.wait()
            for topic, value, cb in part:
                cb(None, _Msg(topic, value))

        ts = [threading.Thread(target=deliver, args=(h,)) for h in halves]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        tracker.committable()
        tracker.register(("tx", 0), [])  # keeps the partition
        tracker.forget([("tx", 0)])
    assert sink.acked_decisions == 50 * 200
