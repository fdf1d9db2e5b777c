"""Limits before decoding, null and empty values, duplicate keys: each dead-lettered with its reason,
keeping the original value (null stays null), key and headers."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.conftest import FakeMessage, good_event
from workers.pipeline.decode import Decoder
from workers.topology import Topology


@pytest.fixture()
def decoder(topology: Topology) -> Decoder:
    return Decoder.of(topology.input)


def _one(decoder: Decoder, m: FakeMessage) -> tuple[int, str | None]:
    batch, dead = decoder.decode([m])
    assert len(batch) + len(dead) == 1
    return len(batch), dead[0].reason if dead else None


def _sized(n: int) -> bytes:
    """A good event padded to exactly ``n`` bytes."""
    base = orjson.dumps(good_event(pad=""))
    return base[:-2] + b"x" * (n - len(base)) + b'"}'


def test_payload_at_the_limit_passes_one_over_is_dead_lettered(decoder: Decoder, topology: Topology) -> None:
    limit = topology.input.max_payload_bytes
    assert len(_sized(limit)) == limit
    assert _one(decoder, FakeMessage(_sized(limit))) == (1, None)
    assert _one(decoder, FakeMessage(_sized(limit - 1))) == (1, None)
    assert _one(decoder, FakeMessage(_sized(limit + 1))) == (0, "payload_too_large")


def test_key_over_the_limit_is_dead_lettered(decoder: Decoder, topology: Topology) -> None:
    limit = topology.input.max_key_bytes
    ev = orjson.dumps(good_event())
    assert _one(decoder, FakeMessage(ev, _key=b"k" * limit)) == (1, None)
    assert _one(decoder, FakeMessage(ev, _key=b"k" * (limit + 1))) == (0, "key_too_large")
    _, dead = decoder.decode([FakeMessage(ev, _key=b"k" * 1_000_000)])
    assert dead[0].key == b"k" * 1_000_000 and dead[0].value == ev  # the original bytes


def test_headers_over_the_limit_are_dead_lettered(decoder: Decoder, topology: Topology) -> None:
    limit = topology.input.max_headers_bytes
    ev = orjson.dumps(good_event())
    fits = [("a", b"x" * (limit - 1))]
    over = [("a", b"x" * limit)]
    assert _one(decoder, FakeMessage(ev, _headers=fits)) == (1, None)  # type: ignore[arg-type]
    assert _one(decoder, FakeMessage(ev, _headers=over)) == (0, "headers_too_large")  # type: ignore[arg-type]


def test_null_value_and_headers_only_keep_key_and_headers(decoder: Decoder) -> None:
    hdrs: list[tuple[str, bytes | None]] = [("trace", b"t1"), ("empty", None)]
    _, dead = decoder.decode([FakeMessage(None, _key=b"card-9"), FakeMessage(None, _key=None, _headers=hdrs)])
    assert [d.reason for d in dead] == ["null_payload", "null_payload"]
    assert dead[0].value is None and dead[0].key == b"card-9"  # null stays null, not b""
    assert dead[1].value is None and dead[1].headers == hdrs


def test_headers_of_any_dead_letter_are_kept(decoder: Decoder) -> None:
    hdrs: list[tuple[str, bytes | None]] = [("h", b"1")]
    _, dead = decoder.decode([FakeMessage(b"{nope", _headers=hdrs)])
    assert dead[0].reason == "invalid_json" and dead[0].headers == hdrs


@pytest.mark.parametrize("raw", [b"", b" ", b"\n\t "])
def test_empty_value_is_empty_payload(decoder: Decoder, raw: bytes) -> None:
    assert _one(decoder, FakeMessage(raw)) == (0, "empty_payload")


@pytest.mark.parametrize("raw", [
    b'{"event_id": "e1", "amount": -1, "card_id": "c1", "merchant_id": "m1", "amount": 5, "currency": "EUR", '
    b'"country": "DE", "device_id": "d1", "event_time_ms": 1700000000000}',
    orjson.dumps(good_event())[:-1] + b', "x": {"a": 1, "a": 2}}',  # nested, in an ignored extra key
    orjson.dumps(good_event())[:-1] + b', "x": [{"a": 1}, {"b": 1, "b": 1}]}',
    orjson.dumps(good_event(note="a:b:c"))[:-1] + b', "card_id": "c2"}',  # colons in strings as well
])
def test_duplicate_keys_are_refused(decoder: Decoder, raw: bytes) -> None:
    assert _one(decoder, FakeMessage(raw)) == (0, "duplicate_key")


@pytest.mark.parametrize("raw", [
    orjson.dumps(good_event(note="12:00:00", url="http://x:80/a")),  # colons in strings only
    orjson.dumps(good_event(nested={"a": {"b": [1, {"c": 2}], "c": 3}})),
    orjson.dumps(good_event(**{"a:b": 1})),  # a colon in a key
])
def test_payloads_without_duplicates_pass(decoder: Decoder, raw: bytes) -> None:
    assert _one(decoder, FakeMessage(raw)) == (1, None)


def test_deep_nesting_is_too_deep(decoder: Decoder) -> None:
    raw = orjson.dumps(good_event())[:-1] + b', "x": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert _one(decoder, FakeMessage(raw)) == (0, "too_deep")
