"""kafka.consumer / kafka.producer checked by librdkafka at load time, reported with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.kafka_props import check_properties
from workers.topology import TopologyError, parse_topology

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "topologies" / "fraud.yaml"


def test_the_example_properties_pass() -> None:
    parse_topology(FRAUD.read_text(), FRAUD)


@pytest.mark.parametrize(("old", "new", "key", "why"), [
    ("fetch.wait.max.ms: 5", "fetch.wait.max.msx: 5", "kafka.consumer.fetch.wait.max.msx", "No such configuration property"),
    ("compression.type: lz4", "compression.type: lz5", "kafka.producer.compression.type", "Invalid value"),
    ("fetch.wait.max.ms: 5", "fetch.wait.max.ms: soon", "kafka.consumer.fetch.wait.max.ms", "Invalid value"),
    ("fetch.wait.max.ms: 5", "linger.ms: 5", "kafka.consumer.linger.ms", "a producer property"),
])
def test_a_bad_property_names_file_line_and_key(old: str, new: str, key: str, why: str) -> None:
    text = FRAUD.read_text().replace(old, new)
    with pytest.raises(TopologyError) as e:
        parse_topology(text, Path("t.yaml"))
    msg = str(e.value)
    assert msg.startswith("t.yaml:") and key in msg and why in msg, msg
    line = int(msg.split(":")[1])
    assert text.splitlines()[line - 1].strip().startswith(new.split(":")[0])


def test_every_bad_key_is_named_at_once() -> None:
    got = check_properties("consumer", {"auto.offset.reset": "sideways", "nope.nope": 1, "fetch.wait.max.ms": 5})
    assert [k for k, _ in got] == ["auto.offset.reset", "nope.nope"]
