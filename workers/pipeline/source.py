"""Source stage: a confluent-kafka consumer read in batches, with explicit commits and pausing.

Auto-commit is off: offsets are committed from the ``OffsetTracker`` only after every decision or
dead letter for them was acknowledged (at-least-once). Commits while running are asynchronous, one
in flight at a time, so a broker outage never blocks the consumer thread (a synchronous commit
waits for the group coordinator: ~46 s while the broker is down); the final commit waits for its
answer no longer than the stop's grace period. Backpressure is explicit: when the scoring stage
falls behind, the assigned partitions are paused (the consumer keeps polling so the group
membership stays alive) and resumed once the queue drains.

Group membership: cooperative-sticky assignment (a rebalance moves only the partitions that
change owner; the others keep flowing), a session timeout from the settings (10 s, not
librdkafka's 45 s) and, when ``instance_id`` is set, static membership: a restarted worker takes
its partitions back at once, without a rebalance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from workers.bounded import call_within
from workers.pipeline.offsets import OffsetTracker
from workers.settings import Settings
from workers.topology import Topology

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    pass


T = TypeVar("T")

# Errors a young broker answers while it is still electing or loading group coordinators.
_COORDINATOR_ERRORS = frozenset({
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
})


def retry_coordinator(fn: Callable[[], T], timeout_s: float = 30.0) -> T:
    """Run a group-coordinator call (commit, committed), retrying while coordinators settle."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code not in _COORDINATOR_ERRORS or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def consumer_config(topology: Topology, settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **settings.kafka_client_config(),
        "group.id": topology.input.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "client.id": f"streamscore-{topology.id}",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        # Never read upstream records of aborted transactions (librdkafka's default, made explicit).
        "isolation.level": "read_committed",
    }
    if settings.instance_id:
        conf["group.instance.id"] = f"{topology.id}-{settings.instance_id}"
    conf.update(topology.kafka.consumer)
    return conf


_error_of = Message.error


def consume_arrived(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Natural batching's consume: up to ``max_messages`` already fetched; if none are, wait up to
    ``timeout_s`` for the first and return it with whatever arrived with it (error records
    included: the caller filters)."""
    msgs = consumer.consume(num_messages=max_messages, timeout=0)
    if not msgs and timeout_s > 0:
        msgs = consumer.consume(num_messages=1, timeout=timeout_s)
        if msgs and max_messages > 1:
            msgs += consumer.consume(num_messages=max_messages - 1, timeout=0)
    return msgs


class KafkaSource:
    def __init__(
        self,
        topology: Topology,
        settings: Settings,
        tracker: OffsetTracker,
        on_revoke: Callable[[list[tuple[str, int]]], None],
    ) -> None:
        self._topology = topology
        self._tracker = tracker
        self._on_revoke_cb = on_revoke
        conf = consumer_config(topology, settings)
        conf["on_commit"] = self._on_commit
        self._consumer = Consumer(conf, logger=log)
        self._assigned: list[TopicPartition] = []
        self.paused = False
        self.errors = 0
        self._bootstrap = settings.kafka_bootstrap
        self._commit_in_flight: dict[tuple[str, int], int] | None = None
        self.commit_failures = 0
        self.closing = False  # set by the final commit: a revoke from close() only forgets

    def check_broker(self, timeout_s: float = 10.0) -> None:
        try:
            md = self._consumer.list_topics(self._topology.input.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise SourceError(
                f"Kafka broker at {self._bootstrap} did not answer within {timeout_s:.0f} s "
                f"({exc}) — is `streamscore dev up` running, or STREAMSCORE_KAFKA_BOOTSTRAP set?"
            ) from None
        t = md.topics.get(self._topology.input.topic)
        if t is None or t.error is not None:
            raise SourceError(
                f"input topic {self._topology.input.topic!r} does not exist on {self._bootstrap}"
                " — create it with `streamscore dev up --topology <file>`"
            )

    def subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topology.input.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Cooperative: ``parts`` are the partitions added to this member's assignment.
        log.info("partitions assigned: %s", sorted((p.topic, p.partition) for p in parts),
                 extra={"fields": {"event": "assigned", "partitions": [p.partition for p in parts]}})
        have = {(p.topic, p.partition) for p in self._assigned}
        # Replaced, never changed in place: assignment() reads it from other threads.
        self._assigned = self._assigned + [p for p in parts if (p.topic, p.partition) not in have]
        if self.paused and parts:
            consumer.pause(parts)

    def _drop(self, tps: list[tuple[str, int]]) -> None:
        self._tracker.forget(tps)
        gone = set(tps)
        self._assigned = [p for p in self._assigned if (p.topic, p.partition) not in gone]

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in parts]
        if not self.closing:
            # Let in-flight work for these partitions finish and commit it before giving them up.
            # Synchronous on purpose: the next owner reads from what is committed here, and the
            # coordinator is up (it runs this rebalance).
            self._on_revoke_cb(tps)
            self.commit_sync(retry_s=10.0)
        self._drop(tps)
        log.info("partitions revoked: %s", sorted(tps),
                 extra={"fields": {"event": "revoked", "partitions": [p for _, p in tps]}})

    def _on_lost(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Lost (session expired): another member may own them already; committing would fail.
        tps = [(p.topic, p.partition) for p in parts]
        self._drop(tps)
        log.warning("partitions lost (session expired): %s; their uncommitted work is redelivered "
                    "to the new owner", sorted(tps))

    def consume(self, max_messages: int, timeout_s: float, fill: bool = False) -> list[Message]:
        """Up to ``max_messages`` that are here now; if none are, wait up to ``timeout_s`` for the
        first and return it with whatever else arrived with it.

        Never waits for a fuller batch (``Consumer.consume(n, timeout)`` waits until it has ``n`` or
        the timeout passed: at low load that is ``timeout`` of latency on every event); how long
        to wait for more is the batcher's call, which knows whether the scorer is busy. ``fill``:
        that wait for a full batch after all (``batching.flush_when_idle: false``).
        """
        if fill:
            msgs = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
        else:
            msgs = consume_arrived(self._consumer, max_messages, timeout_s)
        if not msgs:
            return msgs
        errors = list(map(_error_of, msgs))  # in C: no Python frame per message
        if errors.count(None) == len(errors):
            return msgs  # the common case: no error record in the batch
        good: list[Message] = []
        for m, err in zip(msgs, errors):
            if err is None:
                good.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                self.errors += 1
                log.warning("consumer error: %s", err)
        return good

    def assignment(self) -> list[tuple[str, int]]:
        """The assigned partitions (safe from any thread: the list is replaced, never changed)."""
        return [(p.topic, p.partition) for p in self._assigned]

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    @property
    def has_assignment(self) -> bool:
        return bool(self._assigned)

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            if self._assigned:
                self._consumer.pause(self._assigned)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if self._assigned:
                self._consumer.resume(self._assigned)
                # librdkafka only restarts fetching a resumed partition on its next ~1 s broker
                # tick; seeking to the current position restarts it now (measured: 980 ms -> 2 ms).
                for tp in self._consumer.position(self._assigned):
                    if tp.offset >= 0:
                        self._consumer.seek(tp)

    def commit(self) -> int:
        """Commit what is done, asynchronously: never waits for the broker. One commit is in
        flight at a time; its answer arrives in ``_on_commit`` from a later consume/poll."""
        if self._commit_in_flight is not None:
            return 0
        offsets = self._tracker.committable()
        return len(offsets) if offsets and self._send(offsets) else 0

    def _send(self, offsets: dict[tuple[str, int], int]) -> bool:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            self._commit_failed(exc)
            return False
        self._commit_in_flight = offsets
        return True

    def _on_commit(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        offsets, self._commit_in_flight = self._commit_in_flight, None
        if offsets is None:
            return  # a synchronous commit's answer: commit_sync records it
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            self._commit_failed(err)
            return
        bad = {(p.topic, p.partition) for p in parts if p.error is not None}
        self._tracker.mark_committed({tp: o for tp, o in offsets.items() if tp not in bad})
        if bad:
            self._commit_failed(f"partitions {sorted(bad)}")

    def _commit_failed(self, why: object) -> None:
        # Not fatal: the same offsets (or later ones) go with the next commit.
        self.commit_failures += 1
        if self.commit_failures == 1 or self.commit_failures % 50 == 0:
            log.warning("offset commit failed (%d so far), will retry: %s — is the broker at %s "
                        "reachable?", self.commit_failures, why, self._bootstrap)

    def commit_sync(self, retry_s: float = 0.0) -> int:
        """Commit what is done and wait for the answer (a revoke: there is no next time);
        ``retry_s`` > 0 retries transient coordinator errors for that long."""
        offsets = self._tracker.committable()
        if not offsets:
            return 0
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            retry_coordinator(lambda: self._consumer.commit(offsets=tps, asynchronous=False),
                              timeout_s=retry_s)
        except KafkaException as exc:
            self._commit_failed(exc)
            return 0
        self._tracker.mark_committed(offsets)
        return len(tps)

    def commit_final(self, deadline_s: float) -> bool:
        """The last commit, waiting for its answer until ``deadline_s`` (time.monotonic()).
        True when nothing done is left uncommitted. Input is paused: what a poll returns while
        waiting is not processed (it was never registered, so it is redelivered)."""
        self.closing = True
        if self._assigned:
            self._consumer.pause(self._assigned)
        while True:
            if self._commit_in_flight is None:
                offsets = self._tracker.committable()
                if not offsets:
                    return True
                self._send(offsets)
            left = deadline_s - time.monotonic()
            if left <= 0:
                return False
            self._consumer.poll(min(left, 0.1))  # serves _on_commit

    def close(self, deadline_s: float | None = None) -> bool:
        """Leave the group. With the broker unreachable librdkafka's close waits for it (~10 s
        seen); with ``deadline_s`` (time.monotonic()) it is left running in the background at the
        deadline, and False returned: the process may exit, the group drops it at its session
        timeout."""
        if deadline_s is None:
            self._consumer.close()
            return True
        if not call_within(self._consumer.close, deadline_s - time.monotonic(), "consumer-close"):
            log.warning("the consumer did not leave the group within the grace period (broker "
                        "unreachable?); exiting without waiting: the group drops it at its session "
                        "timeout")
            return False
        return True
