"""Sink stage: decisions and dead letters to Kafka, each acknowledged into the OffsetTracker.

``produce`` never drops: when librdkafka's local queue is full it serves delivery reports and
retries (that is backpressure on the scoring thread), until the worker's stop gives up
(``abandon``: what was not produced by then is not committed, so it is redelivered).

Produce errors are per record, never per batch: a decision that cannot be produced (refused at
``produce()`` or by the broker for its size or form) is dead-lettered on its own with reason
``decision_refused:<error>`` (never decided again: one event, one outcome); a dead letter too large
for the dead-letter topic goes out without its key and value, with their sizes and SHA-256 in
headers. A delivery that fails after librdkafka's own retries for any other reason (the broker
gone for longer than ``message.timeout.ms``) is recorded as fatal: the worker stops without
committing past it, so the event is redelivered after a restart (at-least-once).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import count, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from workers.pipeline import deadletter
from workers.pipeline.decode import DeadLetter
from workers.pipeline.offsets import OffsetTracker
from workers.settings import Settings
from workers.topology import Topology

log = logging.getLogger(__name__)

# Errors that belong to one record (its size or form), not to the broker or the connection.
RECORD_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG, KafkaError.INVALID_MSG_SIZE,
})
ABANDONED = KafkaError(KafkaError._PURGE_QUEUE, "not produced: the worker's stop gave up")
Headers = list[tuple[str, str | bytes | None]]


def kafka_error(exc: KafkaException) -> KafkaError:
    """The KafkaError a KafkaException carries (librdkafka's code), or a generic one."""
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else KafkaError(KafkaError._FAIL, str(exc))


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
    def __init__(self, topology: Topology, settings: Settings, tracker: OffsetTracker,
                 extra_config: dict[str, Any] | None = None) -> None:
        self._topology = topology
        self._tracker = tracker
        conf = {**producer_config(topology, settings), **(extra_config or {})}
        self._producer = Producer(conf, logger=log)
        self._max_message_bytes = deadletter.max_message_bytes(conf)
        self.acked_decisions = 0
        self.acked_dead = 0
        self.refused_decisions = 0  # decisions that could not be produced, dead-lettered instead
        self.e2e_ms: list[float] = []  # Kafka record timestamp -> decision acked, for the summary
        self._e2e_cap = 200_000
        # Record timestamps of decisions acked since the last drain: latency is computed per poll,
        # as one numpy array, not per delivery report. Appended by delivery callbacks on either
        # thread; drained (under the lock) by whichever thread polled.
        self._acked_ts: list[int] = []
        self._drain_lock = threading.Lock()
        self.on_acked: Callable[[npt.NDArray[np.float64]], None] | None = None  # e2e seconds per event
        self._abandoned = threading.Event()
        # Records the broker refused (delivery callbacks): re-routed by the next producing call.
        self._refused: deque[DeadLetter] = deque()

    @property
    def producer(self) -> Producer:
        return self._producer

    def abandon(self) -> None:
        """Stop waiting for room in the producer's queue: the stop's grace period is over."""
        self._abandoned.set()

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, cb: Any,
                 headers: Headers | None = None) -> KafkaError | None:
        """None when queued; else the error of this one record (nothing was queued)."""
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=cb, headers=headers)
                return None
            except BufferError:
                if self._abandoned.is_set():
                    return ABANDONED
                self._producer.poll(0.05)
            except KafkaException as exc:
                return kafka_error(exc)

    def _ack(self, tp: tuple[str, int], offset: int, stream_ms: int | None,
             key: bytes | None = None) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                if err.code() in RECORD_ERRORS:
                    self._refused.append(_refusal(stream_ms is not None, key, tp, offset, err,
                                                  msg.topic() or ""))
                    return
                self._tracker.mark_failed(f"delivery to {msg.topic()} failed: {err}")
                return
            self._done(tp, offset, stream_ms)

        return cb

    def _done(self, tp: tuple[str, int], offset: int, stream_ms: int | None) -> None:
        self._tracker.mark_done(tp, offset)
        if stream_ms is None:
            self.acked_dead += 1
        else:
            self.acked_decisions += 1
            self._acked_ts.append(stream_ms)

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
        """``traceparents``: the W3C header per decision (None: no decision of the batch has one).
        One delivery callback object serves the whole batch (``BatchAck``): no closure and no
        tracker lock per decision."""
        out = self._topology.output.topic
        ack = BatchAck(self, keys, values, topics, partitions, offsets, stream_ms)
        produce = self._producer.produce
        headers: Sequence[Headers | None] = (
            repeat(None) if traceparents is None  # type: ignore[assignment]
            else [[("traceparent", tp)] if tp else None for tp in traceparents])
        for i, (k, v, h) in enumerate(zip(keys, values, headers)):
            try:
                produce(out, v, k, on_delivery=ack, headers=h)
                continue
            except BufferError:
                err = self._produce(out, v, k, ack, h)  # waits for room (or the stop gives up)
            except KafkaException as exc:
                err = kafka_error(exc)
            if err is not None:
                ack.not_produced(i, err)
        ack.sent()
        if ack.refused:
            self.send_dead_letters(ack.refused)
        self.poll(0)

    def _decision_failed(self, i: int, ack: BatchAck, err: KafkaError, topic: str, at_produce: bool) -> None:
        """Row ``i``'s decision was refused by produce() (``at_produce``: dead-lettered by the
        sender after the batch) or reported failed by its delivery report (on the polling thread):
        refused for its size or form -> dead-lettered; otherwise the worker stops uncommitted."""
        tp, offset = (ack.topics[i], ack.partitions[i]), ack.offsets[i]
        if at_produce:
            if err is not ABANDONED:  # the stop gave up: not committed, redelivered
                ack.refused.append(_refusal(True, ack.keys[i], tp, offset, err, topic))
        elif err.code() in RECORD_ERRORS:
            self._refused.append(_refusal(True, ack.keys[i], tp, offset, err, topic))
        else:
            self._tracker.mark_failed(f"delivery to {topic} failed: {err}")

    def _decisions_acked(self, ack: BatchAck) -> None:
        """Every decision of a batch was reported: the acknowledged ones' inputs are done."""
        bad = ack.bad
        rows = range(len(ack.offsets))
        keep = rows if not bad else [i for i in rows if i not in bad]
        self._tracker.mark_done_rows(ack.topics, ack.partitions, ack.offsets, keep)
        with self._drain_lock:
            self.acked_decisions += len(keep)
            ms = ack.stream_ms
            self._acked_ts.extend(ms if not bad else [ms[i] for i in keep])

    def send_dead_letters(self, dead: Sequence[DeadLetter],
                          traceparents: Mapping[tuple[str, int, int], bytes] | None = None) -> None:
        """``traceparents``: the input's W3C header by (topic, partition, offset), copied over."""
        topic = self._topology.dead_letter.topic
        for dl in dead:
            if dl.reason.startswith("decision_refused:"):
                self.refused_decisions += 1
            # Truncated where it would not fit message.max.bytes (deadletter.py), with the input's
            # own headers kept; the input's traceparent added where the input's headers lack it.
            rec = deadletter.record(dl, self._topology.id, self._max_message_bytes)
            hdrs = rec.headers
            tp = traceparents.get((dl.topic, dl.partition, dl.offset)) if traceparents else None
            if tp is not None and not any(k == "traceparent" for k, _ in hdrs):
                hdrs = [*hdrs, ("traceparent", tp)]
            cb = self._ack((dl.topic, dl.partition), dl.offset, None)
            err = self._produce(topic, rec.value, rec.key, cb, hdrs)
            if err is not None and err.code() in RECORD_ERRORS:
                # Refused even so (a smaller topic limit than the producer's): sizes and hashes only.
                err = self._produce(topic, b"", None, cb,
                                    deadletter.headers_for(dl, self._topology.id) + _digest(dl.key, dl.value))
            if err is not None and err is not ABANDONED:
                self._tracker.mark_failed(f"dead letter to {topic} could not be produced: {err}")
        self._producer.poll(0)

    def _reroute(self) -> None:
        """Dead-letter what the broker refused (queued by delivery callbacks)."""
        while self._refused:
            batch: list[DeadLetter] = []
            try:  # the consumer and the scoring thread both poll: either may take them
                while True:
                    batch.append(self._refused.popleft())
            except IndexError:
                pass
            for dl in batch:
                if not dl.reason.startswith("decision_refused:"):  # a refused dead letter
                    self._refused_dead_letter(dl)
            self.send_dead_letters([dl for dl in batch if dl.reason.startswith("decision_refused:")])

    def _refused_dead_letter(self, dl: DeadLetter) -> None:
        topic = self._topology.dead_letter.topic
        hdrs = deadletter.headers_for(dl, self._topology.id) + _digest(dl.key, dl.value)
        err = self._produce(topic, b"", None, self._ack((dl.topic, dl.partition), dl.offset, None),
                            hdrs)
        if err is not None and err is not ABANDONED:
            self._tracker.mark_failed(f"dead letter to {topic} could not be produced: {err}")

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)
        self._drain_acks()
        if self._refused:
            self._reroute()

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = int(self._producer.flush(max(0.0, deadline - time.monotonic())))
            self._drain_acks()
            if not self._refused:
                return left
            self._reroute()

    def purge(self) -> None:
        """Drop what was not delivered (after the grace period): it is not committed either."""
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._producer.poll(0)


def _refusal(decision: bool, key: bytes | None, tp: tuple[str, int], offset: int,
             err: KafkaError, topic: str) -> DeadLetter:
    """The dead letter of a record the producer or broker refused."""
    if decision:
        return DeadLetter(None, key, tp[0], tp[1], offset, f"decision_refused:{err.name().lower()}",
                          f"its decision could not be produced to {topic}: {err.str()}")
    return DeadLetter(None, key, tp[0], tp[1], offset, "dead_letter_refused:" + err.name().lower(),
                      f"the dead letter was refused by {topic}: {err.str()}")


def _digest(key: bytes | None, value: bytes | None) -> Headers:
    out: Headers = []
    for name, b in (("key", key), ("value", value)):
        if b is not None:
            out.append((f"x-dlq-original-{name}-bytes", str(len(b)).encode()))
            out.append((f"x-dlq-original-{name}-sha256", hashlib.sha256(b).hexdigest().encode()))
    return out


class BatchAck:
    """The delivery callback of one batch's decisions, shared by all of them.

    Each report bumps an atomic counter (``itertools.count``: one C call under the GIL, whichever
    of the two polling threads runs it); the report that completes the batch (and the sender's own
    hold, released by ``sent``) hands it to ``KafkaSink._decisions_acked`` once. A failed report
    finds its row by the record's value (rare: refused or undeliverable decisions only)."""

    __slots__ = ("sink", "keys", "values", "topics", "partitions", "offsets", "stream_ms",
                 "bad", "refused", "_count", "_last")

    def __init__(self, sink: KafkaSink, keys: Sequence[bytes | None], values: Sequence[bytes],
                 topics: Sequence[str], partitions: Sequence[int], offsets: Sequence[int],
                 stream_ms: Sequence[int]) -> None:
        self.sink = sink
        self.keys, self.values = keys, values
        self.topics, self.partitions, self.offsets, self.stream_ms = topics, partitions, offsets, stream_ms
        self.bad: set[int] = set()  # rows not acknowledged (refused or failed)
        self.refused: list[DeadLetter] = []  # refused at produce(): dead-lettered by the sender
        self._count = count(1)
        self._last = len(values) + 1  # every row's report + the sender's hold

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            value = msg.value()
            i = next((j for j, v in enumerate(self.values) if v == value and j not in self.bad), None)
            if i is not None:
                self.bad.add(i)
                self.sink._decision_failed(i, self, err, msg.topic() or "", at_produce=False)
        self._tick()

    def not_produced(self, i: int, err: KafkaError) -> None:
        """Row ``i`` was not queued (produce() refused it, or the stop gave up): no report comes."""
        self.bad.add(i)
        self.sink._decision_failed(i, self, err, self.sink._topology.output.topic, at_produce=True)
        self._tick()

    def sent(self) -> None:
        """Every row was handed to produce(): release the sender's hold."""
        self._tick()

    def _tick(self) -> None:
        if next(self._count) == self._last:  # exactly one caller sees the last number
            self.sink._decisions_acked(self)
