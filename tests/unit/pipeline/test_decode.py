from __future__ import annotations

import orjson
import pytest

from tests.unit.conftest import FakeMessage, good_event
from workers.pipeline.decode import Decoder
from workers.dev.producer import MALFORMED_KINDS, _malformed
from workers.topology import Topology


@pytest.fixture()
def decoder(topology: Topology) -> Decoder:
    return Decoder(topology.input.schema_, topology.input.max_payload_bytes)


def test_good_events_become_columns(decoder: Decoder) -> None:
    msgs = [FakeMessage(orjson.dumps(good_event(i, amount=float(i))), _offset=i) for i in range(5)]
    batch, dead = decoder.decode(msgs)
    assert dead == []
    assert len(batch) == 5
    assert batch.amount.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert batch.offset.tolist() == [0, 1, 2, 3, 4]
    assert batch.event_id[3] == "e3" and batch.trace_id[0] is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (b"\xff\xfe{}", "invalid_encoding"),
        (None, "empty_payload"),
        (orjson.dumps(good_event(amount=-1.0)), "out_of_range:amount"),
        (orjson.dumps(good_event(amount="1")), "wrong_type:amount"),
        (orjson.dumps(good_event(amount=True)), "wrong_type:amount"),
        (orjson.dumps(good_event(event_time_ms=1.5)), "wrong_type:event_time_ms"),
        (orjson.dumps(good_event(card_id="")), "empty:card_id"),
        (orjson.dumps(good_event(country="DEU")), "too_long:country"),
        (orjson.dumps({k: v for k, v in good_event().items() if k != "merchant_id"}),
         "missing_field:merchant_id"),
        (b'{"amount": 1e999}', "invalid_json"),
        (orjson.dumps(good_event(pad="x" * 20000)), "oversize"),
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


def test_every_producer_malformed_kind_is_rejected(decoder: Decoder, topology: Topology) -> None:
    msgs = [FakeMessage(_malformed(good_event(), k, topology.input.max_payload_bytes), _offset=i)
            for i, k in enumerate(MALFORMED_KINDS)]
    batch, dead = decoder.decode(msgs)
    assert len(batch) == 0
    assert len(dead) == len(MALFORMED_KINDS)


def test_integral_float_time_accepted(decoder: Decoder) -> None:
    batch, dead = decoder.decode([FakeMessage(orjson.dumps(good_event(event_time_ms=1e12)))])
    assert dead == [] and batch.event_time_ms.tolist() == [10**12]


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
