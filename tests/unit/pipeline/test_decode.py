from __future__ import annotations

import orjson
import pytest

from tests.unit.conftest import FakeMessage, good_event
from pathlib import Path

import numpy as np

from workers.dev.producer import MALFORMED_KINDS, malformed
from workers.pipeline.decode import Decoder
from workers.schema import EventSchema
from workers.topology import Topology, TopologyError, parse_topology


@pytest.fixture()
def decoder(topology: Topology) -> Decoder:
    return Decoder(topology.input.schema_, topology.input.max_payload_bytes)


def test_good_events_become_columns(decoder: Decoder) -> None:
    msgs = [FakeMessage(orjson.dumps(good_event(i, amount=float(i))), _offset=i) for i in range(5)]
    batch, dead = decoder.decode(msgs)
    assert dead == []
    assert len(batch) == 5
    assert batch.column("amount").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert batch.column("amount").dtype == np.float64
    assert batch.column("event_time_ms").dtype == np.int64
    assert batch.offset.tolist() == [0, 1, 2, 3, 4]
    assert batch.column("event_id")[3] == "e3" and batch.column("trace_id")[0] is None
    nulls = batch.null_mask("trace_id")
    assert nulls is not None and nulls.all()
    assert batch.null_mask("amount") is None  # required fields have no nulls
    assert batch.column("_kafka.key").tolist() == ["k"] * 5  # Kafka metadata reads like a field
    assert batch.column("_kafka.offset").tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (b"\xff\xfe{}", "invalid_encoding"),
        (None, "null_payload"),
        (b"", "empty_payload"),
        (b"  \n", "empty_payload"),
        (orjson.dumps(good_event(amount=-1.0)), "out_of_range:amount"),
        (orjson.dumps(good_event(amount="1")), "wrong_type:amount"),
        (orjson.dumps(good_event(amount=True)), "wrong_type:amount"),
        (orjson.dumps(good_event(event_time_ms=1.5)), "wrong_type:event_time_ms"),
        (orjson.dumps(good_event(card_id="")), "empty:card_id"),
        (orjson.dumps(good_event(country="DEU")), "too_long:country"),
        (orjson.dumps({k: v for k, v in good_event().items() if k != "merchant_id"}),
         "missing_field:merchant_id"),
        (b'{"amount": 1e999}', "invalid_json"),
        (orjson.dumps(good_event(pad="x" * 20000)), "payload_too_large"),
    ],
)
def test_bad_input_is_dead_lettered_with_reason(decoder: Decoder, payload: bytes | None,
                                                reason: str) -> None:
    msgs = [FakeMessage(orjson.dumps(good_event(1)), _offset=1),
            FakeMessage(payload, _key=b"kk", _partition=3, _offset=7)]
    batch, dead = decoder.decode(msgs)
    assert len(batch) == 1 and batch.offset.tolist() == [1]
    assert len(dead) == 1
    d = dead[0]
    assert d.reason == reason
    assert (d.value, d.key, d.partition, d.offset) == (payload, b"kk", 3, 7)
    assert d.detail


def test_every_producer_malformed_kind_is_rejected_with_its_reason(decoder: Decoder, topology: Topology) -> None:
    made = [malformed(good_event(), k, topology.input.schema_, topology.input.max_payload_bytes)
            for k in MALFORMED_KINDS]
    assert all(m is not None for m in made)  # the fraud schema can break every kind
    msgs = [FakeMessage(m[0], _offset=i) for i, m in enumerate(made) if m is not None]
    batch, dead = decoder.decode(msgs)
    assert len(batch) == 0
    assert [d.reason for d in dead] == [m[1] for m in made if m is not None]


def test_integral_float_time_accepted(decoder: Decoder) -> None:
    batch, dead = decoder.decode([FakeMessage(orjson.dumps(good_event(event_time_ms=1e12)))])
    assert dead == [] and batch.column("event_time_ms").tolist() == [10**12]


def test_fast_path_bounds(decoder: Decoder) -> None:
    # 2**70 is valid JSON but does not fit int64; orjson.dumps refuses it, so write JSON by hand.
    big = orjson.dumps(good_event(event_time_ms=0)).replace(b'"event_time_ms":0',
                                                              b'"event_time_ms":' + str(2**70).encode())
    cases = {
        "out_of_range:event_time_ms": big,
        "out_of_range:amount": orjson.dumps(good_event(amount=2_000_000)),
        "wrong_type:event_time_ms": orjson.dumps(good_event(event_time_ms="1")),
    }
    for reason, raw in cases.items():
        _, dead = decoder.decode([FakeMessage(raw)])
        assert [d.reason for d in dead] == [reason]


# ---- a schema with nested objects, booleans, optional fields and allowed values ------------------

LOGIN = """
name: login
version: 1
fields:
  user_id:        {type: string, max_length: 16}
  device.id:      {type: string}
  device.trusted: {type: boolean, required: false}
  geo.country:    {type: string, values: [US, DE, FR]}
  login.success:  {type: boolean}
  login.failed_attempts: {type: integer, min: 0, required: false}
  risk.score:     {type: number, required: false, min: 0, max: 1}
  note:           {type: string, required: false, allow_empty: true}
"""


def _login_decoder() -> Decoder:
    import yaml

    return Decoder(EventSchema.model_validate(yaml.safe_load(LOGIN)), 4096)


def _login(**over: object) -> dict[str, object]:
    ev: dict[str, object] = {"user_id": "u1", "device": {"id": "d1", "trusted": True}, "geo": {"country": "US"},
                             "login": {"success": False, "failed_attempts": 3}, "risk": {"score": 0.5}, "note": ""}
    ev.update(over)
    return ev


def test_nested_fields_booleans_and_nulls_become_typed_columns() -> None:
    d = _login_decoder()
    evs = [_login(), _login(device={"id": "d2"}, login={"success": True}, risk=None, note=None)]
    batch, dead = d.decode([FakeMessage(orjson.dumps(e), _offset=i) for i, e in enumerate(evs)])
    assert dead == []
    assert batch.column("device.id").tolist() == ["d1", "d2"]
    assert batch.column("login.success").dtype == np.bool_
    assert batch.column("login.success").tolist() == [False, True]
    assert batch.column("device.trusted").tolist() == [True, False]  # null -> False, masked
    assert batch.null_mask("device.trusted").tolist() == [False, True]  # type: ignore[union-attr]
    assert batch.column("login.failed_attempts").tolist() == [3, 0]
    assert batch.null_mask("login.failed_attempts").tolist() == [False, True]  # type: ignore[union-attr]
    score = batch.column("risk.score")
    assert score[0] == 0.5 and np.isnan(score[1])  # a null number is NaN
    assert batch.column("note").tolist() == ["", None]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (_login(geo={"country": "GB"}), "not_allowed:geo.country"),
        (_login(device="d1"), "wrong_type:device"),  # a value where an object should be
        (_login(device={"trusted": True}), "missing_field:device.id"),
        (_login(login={"success": "yes"}), "wrong_type:login.success"),
        (_login(login={"success": 1}), "wrong_type:login.success"),  # 1 is not a boolean
        (_login(login={"success": True, "failed_attempts": -1}), "out_of_range:login.failed_attempts"),
        (_login(risk={"score": 1.5}), "out_of_range:risk.score"),
        (_login(user_id=""), "empty:user_id"),
        ({k: v for k, v in _login().items() if k != "geo"}, "missing_field:geo.country"),
    ],
)
def test_nested_schema_rejections_keep_stable_reasons(event: dict[str, object], reason: str) -> None:
    _, dead = _login_decoder().decode([FakeMessage(orjson.dumps(event))])
    assert [x.reason for x in dead] == [reason]


def test_schema_paths_are_checked_at_load() -> None:
    import yaml

    from pydantic import ValidationError

    for bad, msg in [
        ({"a": {"type": "string"}, "a.b": {"type": "string"}}, "cannot be a value and hold"),
        ({"_kafka.key": {"type": "string"}}, "Kafka metadata"),
        ({"a..b": {"type": "string"}}, "not a field path"),
        ({"n": {"type": "number", "max_length": 3}}, "string fields only"),
        ({"s": {"type": "string", "min": 1}}, "number and integer fields only"),
    ]:
        with pytest.raises(ValidationError, match=msg):
            EventSchema.model_validate({"name": "x", "version": 1, "fields": bad})
    assert yaml  # imported for symmetry with the login schema above


def test_topology_refuses_entities_and_echo_that_are_not_fields(topology: Topology) -> None:
    from tests.unit.conftest import ROOT

    text = (ROOT / "topologies" / "fraud.yaml").read_text()
    with pytest.raises(TopologyError, match="entities.card_id"):
        parse_topology(text.replace("  card_id: card_id\n", "  card_id: card_number\n"), Path("t.yaml"))
    with pytest.raises(TopologyError, match="decision.echo"):
        parse_topology(text.replace("echo: [event_id,", "echo: [event_idx,"), Path("t.yaml"))
