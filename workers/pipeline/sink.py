"""Sink stage: decisions and dead letters to Kafka, each acknowledged into the OffsetTracker.

``produce`` never drops: when librdkafka's local queue is full it serves delivery reports and
retries (that is backpressure on the scoring thread). A delivery that fails after librdkafka's own
retries is recorded as fatal: the worker stops without committing past it, so the event is
redelivered after a restart (at-least-once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from confluent_kafka import KafkaError, Message, Producer

from workers.pipeline import deadletter
from workers.pipeline.decode import DeadLetter
from workers.pipeline.offsets import OffsetTracker
from workers.settings import Settings
from workers.topology import Topology

log = logging.getLogger(__name__)


def producer_config(topology: Topology, settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **settings.kafka_client_config(),
        "client.id": f"streamscore-{topology.id}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
    }
    conf.update(topology.kafka.producer)
    return conf


class KafkaSink:
    def __init__(self, topology: Topology, settings: Settings, tracker: OffsetTracker) -> None:
        self._topology = topology
        self._tracker = tracker
        self._producer = Producer(producer_config(topology, settings), logger=log)
        self.acked_decisions = 0
        self.acked_dead = 0
        self.e2e_ms: list[float] = []  # Kafka record timestamp -> decision acked, for the summary
        self._e2e_cap = 200_000
        # Record timestamps of decisions acked since the last drain: latency is computed per poll,
        # as one numpy array, not per delivery report. Appended by delivery callbacks on either
        # thread; drained (under the lock) by whichever thread polled.
        self._acked_ts: list[int] = []
        self._drain_lock = threading.Lock()
        self.on_acked: Callable[[npt.NDArray[np.float64]], None] | None = None  # e2e seconds per event

    def _produce(self, topic: str, value: bytes, key: bytes | None, cb: Any,
                 headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=cb, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _ack(self, tp: tuple[str, int], offset: int, stream_ms: int | None) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._tracker.mark_failed(f"delivery to {msg.topic()} failed: {err}")
                return
            self._tracker.mark_done(tp, offset)
            if stream_ms is None:
                self.acked_dead += 1
            else:
                self.acked_decisions += 1
                self._acked_ts.append(stream_ms)

        return cb

    def _drain_acks(self) -> None:
        acked = self._acked_ts
        if not acked:
            return
        with self._drain_lock:
            n = len(acked)
            ts = np.asarray(acked[:n], dtype=np.float64)
            del acked[:n]  # appends made meanwhile sit past n and stay
        lat_ms = time.time_ns() / 1e6 - ts
        room = self._e2e_cap - len(self.e2e_ms)
        if room > 0:
            self.e2e_ms.extend(lat_ms[:room].tolist())
        if self.on_acked is not None:
            self.on_acked(lat_ms / 1e3)

    def send_decisions(
        self,
        keys: Sequence[bytes | None],
        values: Sequence[bytes],
        topics: Sequence[str],
        partitions: Sequence[int],
        offsets: Sequence[int],
        stream_ms: Sequence[int],
        traceparents: Sequence[bytes | None] | None = None,
    ) -> None:
        """``traceparents``: the W3C header per decision (None: no decision of the batch has one)."""
        out = self._topology.output.topic
        if traceparents is None:
            for k, v, t, p, o, e in zip(keys, values, topics, partitions, offsets, stream_ms):
                self._produce(out, v, k, self._ack((t, p), o, e))
        else:
            for k, v, t, p, o, e, tp in zip(keys, values, topics, partitions, offsets, stream_ms, traceparents):
                self._produce(out, v, k, self._ack((t, p), o, e), [("traceparent", tp)] if tp else None)
        self.poll(0)

    def send_dead_letters(self, dead: Sequence[DeadLetter],
                          traceparents: Mapping[tuple[str, int, int], bytes] | None = None) -> None:
        """``traceparents``: the input's W3C header by (topic, partition, offset), copied over."""
        topic = self._topology.dead_letter.topic
        for dl in dead:
            hdrs = deadletter.headers_for(dl, self._topology.id)
            tp = traceparents.get((dl.topic, dl.partition, dl.offset)) if traceparents else None
            if tp is not None:
                hdrs.append(("traceparent", tp))
            self._produce(topic, dl.value or b"", dl.key, self._ack((dl.topic, dl.partition),
                          dl.offset, None), hdrs)
        self.poll(0)

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)
        self._drain_acks()

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        left = int(self._producer.flush(timeout_s))
        self._drain_acks()
        return left
