"""Counting outcomes per input message: every consumed message must end as exactly one decision
or one dead letter.

Messages are identified by where they sit in the input topic, ``(partition, offset)``, which
needs no field of the event schema: a decision carries ``source.partition/offset``, a dead letter
the ``x-dlq-source-partition/offset`` headers. ``lost`` = input messages with no outcome;
``duplicated`` = with more than one; ``contradictory`` = with outcomes that disagree (two
different verdicts, or a decision and a dead letter).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from workers.pipeline import deadletter
from workers.settings import Settings

Position = tuple[int, int]  # (partition, offset) in the input topic


@dataclass
class Outcomes:
    """What the output topics hold, per input position."""

    decisions: dict[Position, list[str]] = field(default_factory=lambda: defaultdict(list))  # verdicts
    dead: dict[Position, list[str]] = field(default_factory=lambda: defaultdict(list))  # reasons


@dataclass(frozen=True)
class Counts:
    sent: int
    decided: int
    dead_lettered: int
    lost: int
    duplicated: int
    contradictory: int


def _consumer(settings: Settings, read_committed: bool) -> Consumer:
    return Consumer({**settings.kafka_client_config(), "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "isolation.level": "read_committed" if read_committed else "read_uncommitted"})


def end_offsets(settings: Settings, topic: str, read_committed: bool = False) -> dict[int, int]:
    c = _consumer(settings, read_committed)
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def read_topic(settings: Settings, topic: str, *, read_committed: bool = False, timeout_s: float = 60.0) -> list[Any]:
    """Every message of ``topic`` up to its end (the last stable offset for read_committed)."""
    c = _consumer(settings, read_committed)
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Any] = []
        done = {p for p, e in ends.items() if e == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is not None:
                    continue
                out.append(m)
                off, part = m.offset(), m.partition()
                if off is not None and part is not None and off + 1 >= ends[part]:
                    done.add(part)
            # read_committed: aborted records and transaction markers never arrive; stop at the end
            for p in parts:
                if p not in done:
                    pos = c.position([TopicPartition(topic, p)])[0].offset
                    if pos >= ends[p]:
                        done.add(p)
        return out
    finally:
        c.close()


def outcomes(settings: Settings, decisions_topic: str, dead_letter_topic: str, *,
             read_committed: bool = False) -> Outcomes:
    out = Outcomes()
    for m in read_topic(settings, decisions_topic, read_committed=read_committed):
        rec = orjson.loads(m.value())
        src = rec["source"]
        out.decisions[(int(src["partition"]), int(src["offset"]))].append(str(rec["verdict"]))
    for m in read_topic(settings, dead_letter_topic, read_committed=read_committed):
        h = deadletter.parse_headers(m.headers())
        pos = (int(h[deadletter.SOURCE_PARTITION]), int(h[deadletter.SOURCE_OFFSET]))
        out.dead[pos].append(h[deadletter.REASON])
    return out


def count(input_ends: dict[int, int], got: Outcomes, input_starts: dict[int, int] | None = None) -> Counts:
    """Counts over the input positions ``[start, end)`` of every partition."""
    starts = input_starts or {}
    sent = lost = dup = contra = decided = dead = 0
    for p, end in input_ends.items():
        for o in range(starts.get(p, 0), end):
            sent += 1
            d, x = got.decisions.get((p, o), []), got.dead.get((p, o), [])
            decided += bool(d)
            dead += bool(x) and not d
            n = len(d) + len(x)
            if n == 0:
                lost += 1
            elif n > 1:
                dup += 1
                if len(set(d)) > 1 or (d and x):
                    contra += 1
    return Counts(sent, decided, dead, lost, dup, contra)
