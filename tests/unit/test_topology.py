from __future__ import annotations

from pathlib import Path

import pytest

from workers.topology import TopologyError, load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "topologies" / "fraud.yaml"


def test_fraud_topology_loads_frozen() -> None:
    t = load_topology(FRAUD)
    assert t.id == "fraud-scorer"
    assert t.input.partitions == 6
    assert t.entities == {"card": "card_id", "merchant": "merchant_id"}
    assert t.batching.max_batch == 256
    with pytest.raises(Exception):
        t.batching.max_batch = 3  # type: ignore[misc]


def test_unknown_key_names_file_line_and_key() -> None:
    text = FRAUD.read_text().replace("  timeout_ms: 50", "  timeout_ms: 50\n  readr: x")
    with pytest.raises(TopologyError) as e:
        parse_topology(text, Path("t.yaml"))
    msg = str(e.value)
    assert "t.yaml:" in msg and "features.readr" in msg and "unknown key" in msg
    line = int(msg.split(":")[1])
    assert text.splitlines()[line - 1].strip().startswith("readr")


def test_wrong_type_rejected() -> None:
    text = FRAUD.read_text().replace("max_batch: 256", 'max_batch: "256"')
    with pytest.raises(TopologyError, match=r"batching.max_batch"):
        parse_topology(text, Path("t.yaml"))


def test_policy_order_and_unknown_event_field() -> None:
    text = FRAUD.read_text().replace("  fallback_verdict:", "  review_at: 0.95\n  decline_at: 0.9\n  fallback_verdict:")
    with pytest.raises(TopologyError, match="review_at must be <= decline_at"):
        parse_topology(text, Path("t.yaml"))
    text = FRAUD.read_text().replace("      trace_id:", "      colour: {type: string}\n      trace_id:")
    with pytest.raises(TopologyError, match="unknown event field"):
        parse_topology(text, Path("t.yaml"))


def test_connection_settings_not_allowed_in_topology() -> None:
    text = FRAUD.read_text().replace("    linger.ms: 2", "    linger.ms: 2\n    bootstrap.servers: x:1")
    with pytest.raises(TopologyError, match="set by streamscore"):
        parse_topology(text, Path("t.yaml"))


def test_missing_file_message() -> None:
    with pytest.raises(TopologyError, match="no such topology file"):
        load_topology("nope.yaml")


def test_cached_views_list_becomes_tuple() -> None:
    t = load_topology(FRAUD)
    assert t.features.reader == "redis_fast"
    assert t.features.cached_views == ("merchant_risk",)


def test_fast_reader_settings_only_with_the_fast_reader() -> None:
    t = load_topology(FRAUD)
    assert (t.features.parser, t.features.command) == ("auto", "auto")
    text = FRAUD.read_text().replace("  cached_views:", "  parser: hiredis\n  command: hmget\n  cached_views:")
    f = parse_topology(text, Path("t.yaml")).features
    assert (f.parser, f.command) == ("hiredis", "hmget")
    with pytest.raises(TopologyError, match="apply to reader: redis_fast only"):
        parse_topology(text.replace("reader: redis_fast", "reader: feast_sdk"), Path("t.yaml"))
    with pytest.raises(TopologyError, match="parser"):
        parse_topology(text.replace("parser: hiredis", "parser: fast"), Path("t.yaml"))
    with pytest.raises(TopologyError, match="native parser only"):
        parse_topology(text.replace("command: hmget", "command: hgetall"), Path("t.yaml"))
