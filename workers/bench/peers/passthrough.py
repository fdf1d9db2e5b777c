"""The ceiling: a minimal confluent-kafka pass-through with the worker's delivery guarantee.

Batch consume -> produce the same key and bytes -> commit an input offset only after every record
consumed before it was acknowledged (at-least-once, like the worker). Same consumer and producer
settings as the topology gives the worker (``kafka.consumer`` / ``kafka.producer``), same batch
size (``batching.max_batch``), commits every 200 ms like the worker. No decoding, no features, no
model: what any Python Kafka consumer pays to move an event. Batching like the worker's (natural
batching): what has arrived, up to ``max_batch``; only when nothing has, a wait of at most
``batching.max_wait_ms`` for the first record.

    python -m workers.bench.peers.passthrough --topology F --input T --output O --dead-letter D \
        --group G --stats PATH
"""

from __future__ import annotations

import signal
import sys
import time
from collections import deque
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from workers.bench.peers.common import bench_topology, peer_parser, write_stats
from workers.pipeline.source import consume_arrived
from workers.settings import get_settings


class _Pending:
    """Offsets of one consumed batch and how many of its records are not yet acknowledged."""

    __slots__ = ("offsets", "left")

    def __init__(self, offsets: dict[tuple[str, int], int], left: int) -> None:
        self.offsets = offsets
        self.left = left


def main(argv: list[str]) -> int:
    args = peer_parser("passthrough", __doc__).parse_args(argv)
    t = bench_topology(args)
    settings = get_settings()
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    c = Consumer({**settings.kafka_client_config(), "group.id": t.input.consumer_group,
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "earliest", **t.kafka.consumer})
    p = Producer({**settings.kafka_client_config(), "enable.idempotence": True, "acks": "all",
                  "linger.ms": 2, **t.kafka.producer})
    pending: deque[_Pending] = deque()
    counts = {"consumed": 0, "acked": 0, "failed": 0, "commits": 0}

    def delivered(batch: _Pending) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            batch.left -= 1
            counts["acked" if err is None else "failed"] += 1
        return cb

    def commit() -> None:
        done: dict[tuple[str, int], int] = {}
        while pending and pending[0].left == 0:
            done.update(pending.popleft().offsets)
        if done:
            c.commit(offsets=[TopicPartition(tp[0], tp[1], o + 1) for tp, o in done.items()],
                     asynchronous=False)
            counts["commits"] += 1

    def on_revoke(consumer: Consumer, parts: list[TopicPartition]) -> None:
        p.flush(30)
        commit()

    c.subscribe([t.input.topic], on_revoke=on_revoke)
    out = t.output.topic
    last_commit = time.monotonic()
    while not stop:
        # What is here now, up to max_batch; if nothing, wait (max_wait_ms) for the first and take
        # what came with it: the worker's natural batching (consume(n, timeout) would wait for n).
        msgs = consume_arrived(c, t.batching.max_batch, max(t.batching.max_wait_ms, 1) / 1000)
        if msgs:
            good = [m for m in msgs if m.error() is None]
            offsets = {(m.topic() or "", m.partition() or 0): m.offset() or 0 for m in good}
            batch = _Pending(offsets, len(good))
            pending.append(batch)
            cb = delivered(batch)
            for m in good:
                while True:
                    try:
                        p.produce(out, m.value(), m.key(), on_delivery=cb)
                        break
                    except BufferError:
                        p.poll(0.05)
            counts["consumed"] += len(good)
        p.poll(0)
        now = time.monotonic()
        if now - last_commit >= 0.2:
            commit()
            last_commit = now
    p.flush(30)
    commit()
    c.close()
    write_stats(args.stats, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
