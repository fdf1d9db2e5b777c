"""The bench's load: one pool of pre-serialized events per topology, written to the input topics.

Every system of a run reads the same events: the pool is generated once (the topology's
``dev.events`` generator, seed 7, the events ``setup`` wrote features for) and its bytes and keys
are produced in the same order by the same producer settings, so a system's input topic holds the
same records at the same partitions and offsets as every other system's. Phases past the pool's
end wrap around to its start.

Input and output topics use ``message.timestamp.type=LogAppendTime``: a record's timestamp is when
the broker appended it, so latency measured between them excludes the load producer's own batching
(its ``linger.ms``) and needs no clock inside the systems.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from workers.dev import stack as devstack
from workers.dev.producer import event_key, event_source
from workers.settings import Settings
from workers.topology import Topology

APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


class BenchError(RuntimeError):
    """The bench cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Pool:
    values: list[bytes]
    keys: list[bytes | None]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def mean_bytes(self) -> float:
        return sum(len(v) for v in self.values) / max(1, len(self.values))


def make_pool(topology: Topology, n: int, seed: int = 7) -> Pool:
    """``n`` good events of the topology's generator, as the bytes and keys the producer sends."""
    events = event_source(topology, seed, time.time_ns() // 1_000_000)
    values: list[bytes] = []
    keys: list[bytes | None] = []
    for _ in range(n):
        ev = next(events)
        values.append(orjson.dumps(ev))
        keys.append(event_key(topology, ev))
    return Pool(values, keys)


def create_topics(settings: Settings, topology: Topology, prefix: str) -> tuple[str, str, str]:
    """Fresh input, output and dead-letter topics for one system (append-time stamped)."""
    src, out, dlq = f"{prefix}-in", f"{prefix}-out", f"{prefix}-dlq"
    parts = topology.input.partitions
    devstack.ensure_topics(settings, [
        devstack.TopicSpec(src, parts, APPEND_TIME),
        devstack.TopicSpec(out, topology.output.partitions, APPEND_TIME),
        devstack.TopicSpec(dlq, topology.dead_letter.partitions, APPEND_TIME),
    ])
    return src, out, dlq


class Loader:
    """Produces slices of a pool to a topic, as fast as possible or at a fixed rate."""

    def __init__(self, settings: Settings, pool: Pool) -> None:
        # linger 1 ms: at 1k events/s this still sends about one record per request, so the
        # offered load reaches the broker as it is offered; append time hides the rest.
        self._p = Producer({**settings.kafka_client_config(), "linger.ms": 1, "compression.type": "lz4",
                            "enable.idempotence": True, "acks": "all",
                            "queue.buffering.max.messages": 1_000_000})
        self._pool = pool
        self.next = 0  # the pool position the next record comes from
        self.failed = 0

    def _cb(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def _send(self, topic: str, count: int) -> None:
        values, keys, n = self._pool.values, self._pool.keys, len(self._pool)
        produce, cb = self._p.produce, self._cb
        i = self.next
        for _ in range(count):
            j = i % n
            while True:
                try:
                    produce(topic, values[j], keys[j], on_delivery=cb)
                    break
                except BufferError:
                    self._p.poll(0.01)
            i += 1
        self.next = i

    def fill(self, topic: str, count: int, tick: Callable[[], None] | None = None) -> None:
        """``count`` records as fast as the producer goes; returns once all are acknowledged."""
        left = count
        while left > 0:
            step = min(left, 20_000)
            self._send(topic, step)
            left -= step
            self._p.poll(0)
            if tick:
                tick()
        self.flush()

    def paced(self, topic: str, rate: float, duration_s: float, tick: Callable[[], None]) -> int:
        """Offer ``rate`` records/s for ``duration_s``; ``tick`` is called about every 0.25 s."""
        total = int(rate * duration_s)
        sent = 0
        t0 = time.monotonic()
        last_tick = t0
        while sent < total:
            now = time.monotonic()
            due = min(total, int((now - t0) * rate) + 1) - sent
            if due > 0:
                self._send(topic, due)
                sent += due
            self._p.poll(0)
            if now - last_tick >= 0.25:
                tick()
                last_tick = now
            time.sleep(0.0005)
        self.flush()
        return sent

    def flush(self) -> None:
        try:
            left = self._p.flush(60)
        except KafkaException as exc:
            raise BenchError(f"the load producer failed: {exc}") from None
        if left or self.failed:
            raise BenchError(f"the load producer could not deliver {left + self.failed} records; "
                             "is the broker healthy? (`streamscore dev status`)")
