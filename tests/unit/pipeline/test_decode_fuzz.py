"""Property-based fuzzing (hypothesis) of decode and validation: whatever the bytes, every message
ends as exactly one event or one dead letter with a documented reason and its original bytes;
valid events always pass with their values; a duplicated key is always refused."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import FakeMessage, good_event
from workers.pipeline.decode import Decoder
from workers.topology import Topology, load_topology
from tests.unit.conftest import ROOT

TOPOLOGY: Topology = load_topology(ROOT / "topologies" / "fraud.yaml")
DECODER = Decoder.of(TOPOLOGY.input)

# The dead-letter reasons of README "Record schemas" (decode_error means a decoder bug: never).
REASON = re.compile(
    r"^(payload_too_large|key_too_large|headers_too_large|null_payload|empty_payload|invalid_json|"
    r"invalid_encoding|not_an_object|too_deep|duplicate_key|"
    r"(missing_field|wrong_type|empty|too_long|not_allowed|out_of_range|not_finite):[a-z_.]+)$")

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=20)


def dumps(v: Any) -> bytes:
    """JSON text of ``v`` (the standard library's: it writes integers of any size, escapes lone
    surrogates), so decode also meets what orjson could not have written."""
    return json.dumps(v).encode()


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(msgs: list[FakeMessage]) -> None:
    batch, dead = DECODER.decode(msgs)
    assert len(batch) + len(dead) == len(msgs)
    by_offset = {m.offset(): m for m in msgs}
    for d in dead:
        assert REASON.match(d.reason), d.reason
        m = by_offset[d.offset]
        assert (d.value, d.key) == (m.value(), m.key())  # the original bytes, null stays null
        assert d.headers == m.headers()


@SETTINGS
@given(st.lists(st.tuples(st.none() | st.binary(max_size=300), st.none() | st.binary(max_size=50)),
                min_size=1, max_size=8))
def test_arbitrary_bytes_never_crash(values: list[tuple[bytes | None, bytes | None]]) -> None:
    _check([FakeMessage(v, _key=k, _offset=i) for i, (v, k) in enumerate(values)])


@SETTINGS
@given(json_values)
def test_arbitrary_json_never_crashes(value: Any) -> None:
    _check([FakeMessage(dumps(value), _offset=0)])


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(TOPOLOGY.input.schema_.fields)), json_values, max_size=4))
def test_any_field_values_are_validated_never_crash(over: dict[str, Any]) -> None:
    _check([FakeMessage(dumps(good_event(**over)), _offset=0)])


@SETTINGS
@given(amount=st.floats(min_value=0, max_value=1_000_000), card=st.text(min_size=1, max_size=64),
       ts=st.integers(min_value=0, max_value=2**63 - 1), extra=st.dictionaries(st.text(max_size=8).filter(
           lambda k: k not in TOPOLOGY.input.schema_.fields), json_values, max_size=3))
def test_valid_events_pass_with_their_values(amount: float, card: str, ts: int, extra: dict[str, Any]) -> None:
    ev = {**good_event(amount=amount, card_id=card, event_time_ms=ts), **extra}  # an extra "i" is a key, not good_event(i)
    batch, dead = DECODER.decode([FakeMessage(dumps(ev))])
    assert dead == [] and len(batch) == 1
    assert batch.column("amount")[0] == amount and batch.column("card_id")[0] == card
    assert batch.column("event_time_ms")[0] == ts


@SETTINGS
@given(field=st.sampled_from(sorted(good_event())), value=json_values,
       first=st.booleans())
def test_a_duplicated_key_is_always_refused(field: str, value: Any, first: bool) -> None:
    body = orjson.dumps(good_event())[1:-1]
    dup = dumps(field) + b":" + dumps(value)
    raw = b"{" + (dup + b"," + body if first else body + b"," + dup) + b"}"
    batch, dead = DECODER.decode([FakeMessage(raw)])
    assert len(batch) == 0 and dead[0].reason == "duplicate_key"
