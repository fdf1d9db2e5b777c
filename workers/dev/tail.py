"""``streamscore tail``: the last records of a topology's decisions (or dead letters), as JSON lines.

For a look at what a pipeline decides without a Kafka client of your own; reads with
``isolation.level=read_committed`` and a throw-away consumer group, commits nothing.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from workers.pipeline import deadletter
from workers.settings import Settings
from workers.topology import Topology


def last_records(settings: Settings, topic: str, n: int, timeout_s: float = 10.0) -> list[Any]:
    """Up to ``n`` of the newest messages of ``topic`` (spread over its partitions)."""
    c = Consumer({**settings.kafka_client_config(), "group.id": f"streamscore-tail-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise SystemExit(f"streamscore tail: topic {topic!r} does not exist — run `streamscore setup`")
        parts = list(md.topics[topic].partitions)
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        c.assign([TopicPartition(topic, p, max(lo, hi - n)) for p, (lo, hi) in marks.items()])
        want = sum(min(n, hi - max(lo, hi - n)) for lo, hi in marks.values())
        out: list[Any] = []
        import time

        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            out += [m for m in c.consume(num_messages=500, timeout=0.5) if m.error() is None]
        out.sort(key=lambda m: m.timestamp()[1])
        return out[-n:]
    finally:
        c.close()


def main(topology: Topology, settings: Settings, n: int, dead_letters: bool) -> int:
    topic = topology.dead_letter.topic if dead_letters else topology.output.topic
    for m in last_records(settings, topic, n):
        if dead_letters:
            doc: dict[str, Any] = {"headers": deadletter.parse_headers(m.headers()),
                                   "key": (m.key() or b"").decode("utf-8", "replace"),
                                   "value": (m.value() or b"")[:200].decode("utf-8", "replace")}
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        else:
            sys.stdout.write((m.value() or b"").decode("utf-8", "replace") + "\n")
    return 0
