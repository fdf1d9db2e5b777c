"""Sink stage: decisions and dead letters to Kafka, each acknowledged into the OffsetTracker.

``produce`` never drops: when librdkafka's local queue is full it serves delivery reports and
retries (that is backpressure on the scoring thread). A delivery that fails after librdkafka's own
retries is recorded as fatal: the worker stops without committing past it, so the event is
redelivered after a restart (at-least-once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

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
        conf = producer_config(topology, settings)
        self._producer = Producer(conf, logger=log)
        self._max_message_bytes = deadletter.max_message_bytes(conf)
        self.acked_decisions = 0
        self.acked_dead = 0
        self.e2e_ms: list[float] = []  # Kafka record timestamp -> decision acked, for the summary
        self._e2e_cap = 200_000

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, cb: Any,
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
                if len(self.e2e_ms) < self._e2e_cap:
                    self.e2e_ms.append(time.time_ns() / 1e6 - stream_ms)

        return cb

    def send_decisions(
        self,
        keys: Sequence[bytes | None],
        values: Sequence[bytes],
        topics: Sequence[str],
        partitions: Sequence[int],
        offsets: Sequence[int],
        stream_ms: Sequence[int],
    ) -> None:
        out = self._topology.output.topic
        for k, v, t, p, o, e in zip(keys, values, topics, partitions, offsets, stream_ms):
            self._produce(out, v, k, self._ack((t, p), o, e))
        self._producer.poll(0)

    def send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        topic = self._topology.dead_letter.topic
        for dl in dead:
            # Truncated where it would not fit message.max.bytes (deadletter.py): never raises.
            rec = deadletter.record(dl, self._topology.id, self._max_message_bytes)
            self._produce(topic, rec.value, rec.key, self._ack((dl.topic, dl.partition),
                          dl.offset, None), rec.headers)
        self._producer.poll(0)

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        return int(self._producer.flush(timeout_s))
