"""The event JSON Schema `streamscore schema event` writes for a topology's input."""

from __future__ import annotations

from workers.pipeline.records import event_json_schema
from workers.topology import Topology


def test_integer_bounds_are_integers(topology: Topology) -> None:
    s = event_json_schema(topology.input.schema_)
    ts = s["properties"]["event_time_ms"]
    assert ts["minimum"] == 0 and type(ts["minimum"]) is int
    amount = s["properties"]["amount"]
    assert "minimum" not in amount or isinstance(amount["minimum"], float | int)
