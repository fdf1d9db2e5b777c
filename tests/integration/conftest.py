"""Integration fixtures: the REAL local Kafka broker and Redis, started once per session.

If the stack cannot start, the fixture raises and every integration test errors: in CI a missing
broker is a failure, never a skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from workers.dev import stack as devstack
from workers.settings import Settings, get_settings
from workers.pipeline.source import retry_coordinator
from workers.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack() -> Settings:
    settings = get_settings()
    devstack.up(settings)
    return settings


@pytest.fixture(scope="session")
def fraud_topology() -> Topology:
    return load_topology(ROOT / "topologies" / "fraud.yaml")


@pytest.fixture(scope="session")
def feature_store(stack: Settings, fraud_topology: Topology) -> Settings:
    """The fraud example's Feast data in Redis (`streamscore setup --topology topologies/fraud.yaml`)."""
    from workers.features.feast_repo import setup_features

    setup_features(stack, fraud_topology, seed=7)
    return stack


@pytest.fixture(scope="session")
def ato_store(stack: Settings) -> Settings:
    """The account-takeover example's Feast data in Redis (`streamscore setup --topology topologies/ato.yaml`)."""
    from workers.features.feast_repo import setup_features

    setup_features(stack, load_topology(ROOT / "topologies" / "ato.yaml"), seed=7)
    return stack


def fresh_topics(stack: Settings, base: Topology) -> Topology:
    """``base`` on fresh, uniquely named topics and consumer group (created)."""
    s = uuid.uuid4().hex[:8]
    t = base.model_copy(update={
        "input": base.input.model_copy(update={"topic": f"it-{s}-tx", "consumer_group": f"it-{s}"}),
        "output": base.output.model_copy(update={"topic": f"it-{s}-decisions"}),
        "dead_letter": base.dead_letter.model_copy(update={"topic": f"it-{s}-dlq"}),
    })
    devstack.ensure_topics(stack, [
        devstack.TopicSpec(t.input.topic, t.input.partitions),
        devstack.TopicSpec(t.output.topic, t.output.partitions),
        devstack.TopicSpec(t.dead_letter.topic, t.dead_letter.partitions),
    ])
    return t


@pytest.fixture()
def it_topology(stack: Settings, fraud_topology: Topology) -> Topology:
    """The fraud topology on fresh, uniquely named topics and consumer group."""
    return fresh_topics(stack, fraud_topology)


@pytest.fixture()
def ato_topology(stack: Settings) -> Topology:
    """The account-takeover topology on fresh, uniquely named topics and consumer group."""
    return fresh_topics(stack, load_topology(ROOT / "topologies" / "ato.yaml"))


def read_all(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every message currently in ``topic`` (up to the high watermarks), with headers."""
    c = Consumer({**settings.kafka_client_config(), "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        want = sum(ends.values())
        out: list[Any] = []
        import time

        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None:
                    out.append(m)
        return out
    finally:
        c.close()


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    c = Consumer({**settings.kafka_client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        res = retry_coordinator(
            lambda: c.committed([TopicPartition(topic, p) for p in parts], timeout=10))
        return {tp.partition: tp.offset for tp in res}
    finally:
        c.close()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({**settings.kafka_client_config(), "group.id": "x", "enable.auto.commit": False})
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


@pytest.fixture()
def kafka_reader(stack: Settings) -> Iterator[Any]:
    yield lambda topic: read_all(stack, topic)
