"""``delivery: exactly_once``: one Kafka transaction per micro-batch.

The loop, on the consumer thread: consume up to ``max_batch`` messages (waiting at most
``max_wait_ms``) -> begin a transaction -> decode, dead-letter the bad ones and score the rest, all
produced inside it -> ``send_offsets_to_transaction(consumer.position(...),
consumer_group_metadata())`` -> commit. A downstream ``isolation.level=read_committed`` reader sees
each input's decision (or dead letter) exactly once; the input offsets move with the same commit.

Errors, handled as librdkafka documents them (``rd_kafka_commit_transaction``,
``rd_kafka_send_offsets_to_transaction``, examples/eos.c):

- ``retriable()``: the same call again (the operation may still be running in the background);
- ``txn_requires_abort()``: abort, seek the batch's partitions back to its first offsets, redo it
  (a record the broker refused for its size or form is dead-lettered in the redo, not decided:
  ``TransactionalSink.refuse``);
- ``fatal()`` (``_FENCED``: another instance with the same ``transactional.id`` took over, or the
  producer's state is lost): stop at once without committing anything else, so the replacement
  owns the partitions. A fenced worker exits 0 (the hand-over is expected), another fatal error 1.

The ``transactional.id`` is ``<topology id>-<instance_id>`` (settings; the host name when unset):
stable across restarts, so a restarted worker aborts its predecessor's open transaction at
``init_transactions`` instead of leaving read_committed readers waiting for it to time out.
There is no scoring thread in this mode: a transaction covers exactly the batch it commits.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from workers.engines import Engine
from workers.features.base import FeatureReader
from workers.pipeline.decode import DeadLetter
from workers.pipeline.offsets import OffsetTracker
from workers.pipeline.sink import RECORD_ERRORS, BatchAck, KafkaSink, kafka_error
from workers.pipeline.source import KafkaSource
from workers.settings import Settings
from workers.topology import Topology

if TYPE_CHECKING:
    from workers.pipeline.worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")
Position = tuple[str, int, int]  # topic, partition, offset of an input message


class Fenced(RuntimeError):
    """A fatal transactional error: this producer may not write any more."""

    def __init__(self, err: KafkaError) -> None:
        super().__init__(err.str())
        self.fenced = err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                     KafkaError.INVALID_PRODUCER_EPOCH)


class Abort(RuntimeError):
    """The transaction cannot be committed; abort it and redo the batch."""


def transactional_id(topology: Topology, settings: Settings) -> str:
    return f"{topology.id}-{settings.instance_id or socket.gethostname()}"


def call(fn: Callable[[], T], what: str, until: Callable[[], float | None] | None = None) -> T:
    """Run a transactional API call: retry retriable errors (until ``until()``, a
    time.monotonic() deadline or None for no limit), raise ``Abort`` / ``Fenced``."""
    while True:
        try:
            return fn()
        except KafkaException as exc:
            err = kafka_error(exc)
            if err.fatal():
                raise Fenced(err) from None
            if err.txn_requires_abort():
                raise Abort(f"{what}: {err.str()}") from None
            deadline_s = until() if until is not None else None
            if not err.retriable() or (deadline_s is not None and time.monotonic() >= deadline_s):
                raise
            log.warning("%s: %s; retrying", what, err.str())
            time.sleep(0.1)


class TransactionalSink(KafkaSink):
    """The sink inside a transaction: acknowledgements count for the open transaction only (they
    become the worker's counts when it commits); records the broker refused are remembered so the
    redo dead-letters them instead of deciding them again."""

    def __init__(self, topology: Topology, settings: Settings) -> None:
        super().__init__(topology, settings, OffsetTracker(), {
            "transactional.id": transactional_id(topology, settings),
            "enable.idempotence": True,
            "acks": "all",
            # A worker that dies mid-transaction and is not replaced under its instance id holds
            # back read_committed readers and its group's offsets until this runs out (librdkafka's
            # default: 60 s); a batch's transaction takes milliseconds.
            "transaction.timeout.ms": topology.kafka.producer.get("transaction.timeout.ms", 10_000),
        })
        self.refuse: dict[Position, str] = {}  # input position -> why its decision was refused
        self.txn_dead = 0
        self._txn_ms: list[int] = []  # stream times of the open transaction's acknowledged decisions

    def _ack(self, tp: tuple[str, int], offset: int, stream_ms: int | None,
             key: bytes | None = None) -> Any:
        """The delivery callback of a dead letter (decisions: ``_decisions_acked`` per batch)."""
        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self.txn_dead += 1
            # Any failure makes the transaction abortable: commit_transaction reports it.

        return cb

    def _decision_failed(self, i: int, ack: BatchAck, err: KafkaError, topic: str, at_produce: bool) -> None:
        if at_produce:  # dead-lettered inside this transaction, as outside one
            super()._decision_failed(i, ack, err, topic, at_produce)
        elif err.code() in RECORD_ERRORS:  # the transaction aborts; the redo dead-letters it
            self.refuse[(ack.topics[i], ack.partitions[i], ack.offsets[i])] = err.name().lower()

    def _decisions_acked(self, ack: BatchAck) -> None:
        bad, ms = ack.bad, ack.stream_ms
        self._txn_ms.extend(ms if not bad else [ms[i] for i in range(len(ms)) if i not in bad])

    def committed(self) -> None:
        """The open transaction committed: its decisions count, and their end-to-end latency
        (event -> decision visible to read_committed readers) feeds the summary and the
        ``streamscore_e2e_latency_seconds`` histogram. An aborted transaction's do not."""
        self.acked_decisions += len(self._txn_ms)
        self.acked_dead += self.txn_dead
        with self._drain_lock:
            self._acked_ts.extend(self._txn_ms)
        self._txn_ms = []
        self._drain_acks()

    def send_decisions(self, keys: Any, values: Any, topics: Any, partitions: Any, offsets: Any,
                       stream_ms: Any, traceparents: Any = None) -> None:
        if not self.refuse:
            super().send_decisions(keys, values, topics, partitions, offsets, stream_ms, traceparents)
            return
        keep = [i for i, pos in enumerate(zip(topics, partitions, offsets)) if pos not in self.refuse]
        kept = set(keep)
        refused = [DeadLetter(None, keys[i], topics[i], partitions[i], offsets[i],
                              f"decision_refused:{self.refuse[(topics[i], partitions[i], offsets[i])]}",
                              "its decision was refused by the broker in an earlier attempt")
                   for i in range(len(keys)) if i not in kept]
        super().send_decisions([keys[i] for i in keep], [values[i] for i in keep],
                               [topics[i] for i in keep], [partitions[i] for i in keep],
                               [offsets[i] for i in keep], [stream_ms[i] for i in keep],
                               None if traceparents is None else [traceparents[i] for i in keep])
        self.send_dead_letters(refused)

    def begin(self) -> None:
        self.txn_dead = 0
        self._txn_ms = []
        self._producer.begin_transaction()


class ExactlyOnce:
    def __init__(self, worker: Worker, reader: FeatureReader, engine: Engine) -> None:
        self.w = worker
        self.reader = reader
        self.engine = engine
        t, s = worker.topology, worker.settings
        self.sink = TransactionalSink(t, s)
        self.source = KafkaSource(t, s, OffsetTracker(), lambda tps: None)
        self.transactions = 0
        self.aborts = 0

    def _until(self) -> float | None:
        """Retry transactional calls until the stop's grace deadline; no limit while running."""
        return self.w._deadline() if self.w._stop.is_set() else None

    def _timeout(self) -> float:
        """One blocking call's timeout: short, so a stop signal is noticed between calls."""
        d = self._until()
        return 5.0 if d is None else max(0.1, min(5.0, d - time.monotonic()))

    def run(self) -> int:
        w, src, sink = self.w, self.source, self.sink
        w.sink, w.source = sink, src
        fenced = False
        try:
            src.check_broker()
            w.obs.start(src.assignment, w._counts, w._model_now)
            sink.on_acked = w.obs.acked_hook()
            start_by = time.monotonic() + 60.0
            call(lambda: sink.producer.init_transactions(5.0), "init_transactions",
                 lambda: min(start_by, self._until() or start_by))
            src.subscribe()
            log.info("worker %s started (exactly_once, transactional.id %s), consuming %s",
                     w.topology.id, transactional_id(w.topology, w.settings), w.topology.input.topic)
            w.ready.set()
            self._run_loop()
        except Fenced as exc:
            fenced = exc.fenced
            if fenced:
                log.warning("fenced: another worker with transactional.id %s took over; stopping "
                            "without committing (it owns the work now). If two workers on one host "
                            "share it, give each its own STREAMSCORE_INSTANCE_ID.",
                            transactional_id(w.topology, w.settings))
            else:
                w.error = f"fatal producer error: {exc}"
        finally:
            w.obs.stopping()
            w.stats.last_ack_s = time.monotonic()
            src.closing = True  # nothing is open between transactions: a revoke only forgets
            deadline = w._deadline()
            src.close(deadline)
            w.obs.stopped({"consumed": w.stats.consumed, "decisions": sink.acked_decisions,
                           "dead_letters": sink.acked_dead, "transactions": self.transactions,
                           "aborts": self.aborts, "error": w.error}, deadline)
            w.release(self.reader, self.engine, deadline)
        if w._progress:
            w._progress(w)
        if w.error and not fenced:
            log.error("worker stopped with an error: %s", w.error)
            return 1
        return 0

    def _run_loop(self) -> None:
        """The loop on its own thread; this (main) thread stays free for signals. A transactional
        call blocked on an unreachable coordinator returns only after librdkafka's request
        timeout (~10 s): signals are still noticed at once, and at the grace deadline the stop
        goes on without that call (nothing more is committed; the open transaction is aborted
        by the next instance or its timeout)."""
        w = self.w
        failed: list[BaseException] = []

        def loop() -> None:
            try:
                self._loop()
            except BaseException as exc:  # re-raised on the main thread
                failed.append(exc)

        t = threading.Thread(target=loop, name="transactions", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.1)
            if w._stop.is_set() and t.is_alive() and time.monotonic() >= w._deadline():
                w.error = w.error or ("the open transaction could not be finished within the grace "
                                      "period (transaction coordinator unreachable?); its batch is "
                                      "redone after a restart")
                return
        if failed:
            raise failed[0]

    def _loop(self) -> None:
        w, src = self.w, self.source
        b = w.topology.batching
        last_msg = last_progress = time.monotonic()
        while not w._stop.is_set():
            t_consume = time.perf_counter()
            # One transaction per consume: with flush_when_idle, what is here (more arrives while
            # a transaction commits: natural batching); else wait for a full batch.
            msgs = src.consume(b.max_batch, max(b.max_wait_ms, 1) / 1e3, fill=not b.flush_when_idle)
            now = time.monotonic()
            w.obs.loop(0, 0, 0)  # liveness: the loop turns
            if msgs:
                last_msg = now
                if w.stats.first_msg_s is None:
                    w.stats.first_msg_s = now
                if not self._transact(msgs, time.perf_counter() - t_consume):
                    break  # stop asked for while the transaction could not be committed
            elif not src.has_assignment:
                last_msg = now
            if w._progress and now - last_progress >= w._progress_interval_s:
                w._progress(w)
                last_progress = now
            if w._max_events is not None and w.done_count() >= w._max_events:
                break
            if w._idle_exit_s is not None and now - last_msg >= w._idle_exit_s:
                break

    def _transact(self, msgs: list[Message], consume_s: float = 0.0) -> bool:
        """One batch in one transaction. True: committed, or aborted and rewound (the next consume
        redoes it). False: the stop's grace period ran out first (nothing more is committed)."""
        w, sink, consumer = self.w, self.sink, self.source.consumer
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            first.setdefault((m.topic() or "", m.partition() or 0), m.offset() or 0)
        tps = [TopicPartition(t, p) for t, p in first]
        try:
            call(sink.begin, "begin_transaction")
            parents = w.obs.consumed(msgs, consume_s)  # counts (a redone batch again) + traceparents
            t_decode = time.perf_counter()
            batch, dead = w._decoder.decode(msgs)
            batch, dead_parents = w.obs.decoded(msgs, parents, batch, dead, time.perf_counter() - t_decode)
            if dead:
                sink.send_dead_letters(dead, dead_parents)
            if len(batch):
                try:
                    w._score(batch, self.reader, self.engine)
                except Exception as exc:  # every row still gets a (fallback) decision
                    w._score_failed(batch, exc)
            positions = consumer.position(tps)
            group = consumer.consumer_group_metadata()
            call(lambda: sink.producer.send_offsets_to_transaction(positions, group, self._timeout()),
                 "send_offsets_to_transaction", self._until)
            call(lambda: sink.producer.commit_transaction(self._timeout()), "commit_transaction",
                 self._until)
        except Abort as exc:
            self._abort(str(exc), first)
            return True
        except KafkaException as exc:
            if not w._stop.is_set():
                raise
            # The grace period ran out with the broker unreachable: nothing more is committed;
            # the open transaction is aborted by the next instance (same transactional.id).
            w.error = (f"the transaction was not committed within the grace period "
                       f"({kafka_error(exc).str()}); its batch is redone after a restart")
            return False
        self.transactions += 1
        w.stats.consumed += len(msgs)
        sink.committed()
        if dead:
            w.count_dead(dead, to_metrics=False)  # obs.decoded counted them
        for t, p, o in [k for k in sink.refuse if (k[0], k[1]) in first]:
            sink.refuse.pop((t, p, o), None)
        return True

    def _abort(self, why: str, first: dict[tuple[str, int], int]) -> None:
        self.aborts += 1
        log.warning("transaction aborted (%s); redoing its batch", why)
        call(lambda: self.sink.producer.abort_transaction(self._timeout()), "abort_transaction",
             self._until)
        for (t, p), o in first.items():
            try:
                self.source.consumer.seek(TopicPartition(t, p, o))
            except KafkaException as exc:  # revoked meanwhile: its new owner reads it
                log.info("not rewinding %s[%d]: %s", t, p, exc)


def run_exactly_once(worker: Worker, reader: FeatureReader, engine: Engine) -> int:
    return ExactlyOnce(worker, reader, engine).run()

