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
    assert t.entities == {"card_id": "card_id", "merchant_id": "merchant_id"}
    assert t.batching.max_batch == 256
    assert t.decision.verdicts == ("approve", "review", "decline")
    assert [r.name for r in t.decision.rules] == ["amount_beyond_training", "amount_far_above_card_usual"]
    assert t.decision.schema_.tag == "decision.v1"
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


def test_any_event_field_is_accepted_and_bad_references_are_named() -> None:
    text = FRAUD.read_text().replace("      trace_id:", "      colour: {type: string, required: false}\n      device.os: {type: string}\n      trace_id:")
    t = parse_topology(text, Path("t.yaml"))  # fields the core never heard of are fine
    assert t.input.schema_.type_of("device.os") == "string"
    with pytest.raises(TopologyError, match=r"decision.rules.*amount.*is a number|is not one of verdicts"):
        parse_topology(FRAUD.read_text().replace("      verdict: review\n", "      verdict: hold\n", 1), Path("t.yaml"))
    with pytest.raises(TopologyError, match="dev.key_field"):
        parse_topology(FRAUD.read_text().replace("key_field: card_id", "key_field: card"), Path("t.yaml"))
    with pytest.raises(TopologyError, match="must be a required string or integer"):
        parse_topology(text.replace("  card_id: card_id\n", "  card_id: colour\n"), Path("t.yaml"))


def test_connection_settings_not_allowed_in_topology() -> None:
    text = FRAUD.read_text().replace("    linger.ms: 2", "    linger.ms: 2\n    bootstrap.servers: x:1")
    with pytest.raises(TopologyError, match="set by streamscore"):
        parse_topology(text, Path("t.yaml"))


def test_missing_file_message() -> None:
    with pytest.raises(TopologyError, match="no such topology file"):
        load_topology("nope.yaml")


def test_cached_views_list_becomes_tuple() -> None:
    t = load_topology(FRAUD)
    assert t.features is not None and t.features.reader == "redis_fast"
    assert t.features.cached_views == ("merchant_risk",)


def test_fast_reader_settings_only_with_the_fast_reader() -> None:
    t = load_topology(FRAUD)
    assert t.features is not None and (t.features.parser, t.features.command) == ("auto", "auto")
    text = FRAUD.read_text().replace("  cached_views:", "  parser: hiredis\n  command: hmget\n  cached_views:")
    f = parse_topology(text, Path("t.yaml")).features
    assert f is not None and (f.parser, f.command) == ("hiredis", "hmget")
    with pytest.raises(TopologyError, match="apply to reader: redis_fast only"):
        parse_topology(text.replace("reader: redis_fast", "reader: feast_sdk"), Path("t.yaml"))
    with pytest.raises(TopologyError, match="parser"):
        parse_topology(text.replace("parser: hiredis", "parser: fast"), Path("t.yaml"))
    with pytest.raises(TopologyError, match="native parser only"):
        parse_topology(text.replace("command: hmget", "command: hgetall"), Path("t.yaml"))


@pytest.mark.parametrize("name", ["fraud.yaml", "ato.yaml"])
def test_example_topologies_fit_their_models(name: str) -> None:
    from workers.model.fit import check_fit
    from workers.model.manifest import load_manifest

    t = load_topology(ROOT / "topologies" / name)
    check_fit(load_manifest(ROOT / "models", t.model.name, t.model.version), t)
