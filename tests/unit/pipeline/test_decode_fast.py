"""decode's fast path (workers/pipeline/decode_fast.py) only accepts what the exact path accepts, with
the same values; everything else reaches the exact path, so dead letters keep their exact reasons."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import ROOT, FakeMessage, good_event
from workers.pipeline import decode_fast
from workers.pipeline.decode import Decoder
from workers.pipeline.decode_fast import UNSET, FastDecoder, key_colons
from workers.schema import EventSchema
from workers.topology import load_topology

FRAUD = load_topology(ROOT / "topologies" / "fraud.yaml").input.schema_
# Every kind of rule the fast path compiles: enum values (one too long to ever pass), empty strings,
# integer bounds written as floats, optional number/boolean/integer, unbounded numbers.
MIXED = EventSchema.model_validate({"name": "mixed", "version": 1, "fields": {
    "kind": {"type": "string", "values": ["a", "bb", "toolong"], "max_length": 3},
    "note": {"type": "string", "allow_empty": True, "max_length": 4, "required": False},
    "n": {"type": "integer", "min": -2.5, "max": 7.5},
    "big": {"type": "integer", "required": False},
    "x": {"type": "number", "required": False},
    "y": {"type": "number", "min": -1, "max": 1},
    "ok": {"type": "boolean", "required": False},
    "odd-key": {"type": "string", "required": False},
}})
ATO = load_topology(ROOT / "topologies" / "ato.yaml").input.schema_
# Objects: a required one (it holds a required field), an optional one with an optional one inside,
# leaves of one object apart in the schema's order.
NESTED = EventSchema.model_validate({"name": "nested", "version": 1, "fields": {
    "d.id": {"type": "string", "max_length": 3},
    "top": {"type": "integer", "required": False},
    "o.x": {"type": "number", "required": False},
    "o.p.q": {"type": "boolean", "required": False},
    "d.os": {"type": "string", "values": ["a", "bb"], "required": False},
    "o.p.r": {"type": "string", "allow_empty": True, "required": False},
}})
SCHEMAS = {"fraud": FRAUD, "mixed": MIXED, "ato": ATO, "nested": NESTED}
BASE: dict[str, dict[str, Any]] = {
    "mixed": {"kind": "a", "n": 1, "y": 0.5},
    "ato": {"event_id": "e1", "user_id": "u1", "ip": "10.0.0.1", "event_time_ms": 5,
            "device": {"id": "d1", "os": "ios"}, "geo": {"country": "DE"},
            "login": {"method": "sso", "success": True, "failed_attempts": 0}},
    "nested": {"d": {"id": "x", "os": "a"}, "o": {"x": 1.5, "p": {"q": True, "r": ""}}},
}

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-10, max_value=10)
                | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1.0, -0.0, 7.5, 2.0**63, 1e400])
                | st.text(max_size=5) | st.sampled_from(["a", "bb", "", "toolong", "EUR", "DE", "x:y", "\\\":"]))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=8)


def _event(schema: EventSchema, draw: st.DrawFn) -> bytes:
    """Mostly valid-looking events: schema fields with plausible or arbitrary values, sometimes a
    field left out, an unknown key added, a key repeated, or odd spacing."""
    which = next(k for k, v in SCHEMAS.items() if v is schema)
    base: dict[str, Any] = good_event() if schema is FRAUD else json.loads(json.dumps(BASE[which]))
    names = sorted({*schema.fields, *(n.split(".")[0] for n in schema.fields),
                    *(n.rsplit(".", 1)[0] for n in schema.fields if n.count(".") == 2)})
    for name in draw(st.lists(st.sampled_from(names), max_size=4)):
        _put(base, name, draw(json_values | st.sampled_from([{}, None, {"id": "y"}, {"p": {}}, {"p": None}])))
    for name in draw(st.lists(st.sampled_from(names), max_size=2)):
        _put(base, name, _DROP)
    pairs = [json.dumps(k) + ":" + json.dumps(v) for k, v in base.items()]
    if draw(st.booleans()):
        extra = draw(st.sampled_from(names) | st.text(max_size=4))
        pairs.insert(draw(st.integers(0, len(pairs))), json.dumps(extra) + ":" + json.dumps(draw(json_values)))
    sep = draw(st.sampled_from([",", ", ", " ,\n"]))
    return ("{" + sep.join(pairs) + "}").encode()


_DROP = object()


def _put(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with _DROP remove) a dotted path; a level that is not an object is left as it is."""
    *objs, leaf = path.split(".")
    for o in objs:
        nxt = obj.get(o)
        if not isinstance(nxt, dict):
            if value is _DROP:
                return
            nxt = obj[o] = {}
        obj = nxt
    if value is _DROP:
        obj.pop(leaf, None)
    else:
        obj[leaf] = value


@st.composite
def events(draw: st.DrawFn) -> tuple[str, bytes]:
    which = draw(st.sampled_from(sorted(SCHEMAS)))
    return which, _event(SCHEMAS[which], draw)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    a = tuple(None if x is UNSET else x for x in a)  # absent optional fields (the columns make them null)
    return len(a) == len(b) and all(
        (x is None and y is None) or (type(x) is type(y) and x == y) or
        (isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool)
         and not isinstance(y, bool) and float(x) == float(y))
        for x, y in zip(a, b))


SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(events())
def test_fast_path_accepts_only_what_the_exact_path_accepts_with_the_same_values(ev: tuple[str, bytes]) -> None:
    which, raw = ev
    exact = Decoder(SCHEMAS[which], 1 << 20)
    fast = FastDecoder.of(SCHEMAS[which])
    assert fast is not None
    row = fast.decode(raw)
    if row is None:
        return  # the exact path decides: test_decoder_answers_as_without_the_fast_path covers it
    assert _same(row, exact._decode_one(raw)), (raw, row)


@SETTINGS
@given(st.lists(events(), min_size=1, max_size=6))
def test_decoder_answers_as_without_the_fast_path(evs: list[tuple[str, bytes]]) -> None:
    for which in SCHEMAS:
        msgs = [FakeMessage(raw, _offset=i) for i, (w, raw) in enumerate(evs) if w == which]
        with_fast = Decoder(SCHEMAS[which], 1 << 20)
        without = Decoder(SCHEMAS[which], 1 << 20)
        without._fast = None
        (b1, d1), (b2, d2) = with_fast.decode(msgs), without.decode(msgs)
        assert [(d.offset, d.reason) for d in d1] == [(d.offset, d.reason) for d in d2]
        assert b1.offset.tolist() == b2.offset.tolist()
        if len(b1) == 0:
            continue
        for name in SCHEMAS[which].fields:
            c1, c2 = b1.column(name), b2.column(name)
            assert c1.dtype == c2.dtype, name
            if c1.dtype == np.float64:  # null numbers are NaN
                assert np.array_equal(c1, c2, equal_nan=True), name
            else:
                assert c1.tolist() == c2.tolist(), name
            m1, m2 = b1.null_mask(name), b2.null_mask(name)
            assert (m1 is None) == (m2 is None) and (m1 is None or np.array_equal(m1, m2))


def test_plain_events_take_the_fast_path() -> None:
    fast = FastDecoder.of(FRAUD)
    assert fast is not None
    raw = orjson.dumps(good_event(3, trace_id="t"))
    assert fast.decode(raw) == ("e3", "c1", "m1", 12.5, "EUR", "DE", "d1", 1_700_000_000_000, "t")
    assert fast.decode(orjson.dumps(good_event(3, trace_id=None)))[-1] is None  # type: ignore[index]
    assert fast.decode(orjson.dumps(good_event(3)))[-1] is UNSET  # type: ignore[index]  # absent
    assert fast.decode(orjson.dumps(good_event(3, event_id="a:b:c"))) is not None  # ':' in a string


@pytest.mark.parametrize("raw", [
    b'{"event_id":"e","event_id":"f","card_id":"c1","merchant_id":"m1","amount":1,"currency":"EUR",'
    b'"country":"DE","device_id":"d","event_time_ms":1}',                        # duplicate key
    orjson.dumps(good_event(unknown=1)),                                          # unknown key
    orjson.dumps(good_event(unknown={"a": 1})),
    orjson.dumps(good_event(event_time_ms=1.0)),                                  # exact path accepts
    orjson.dumps(good_event(event_time_ms=2**63)),                                # past 64 bits
    orjson.dumps(good_event(currency="EURO")),
    orjson.dumps(good_event(amount=True)),
    b"[1]", b"", b"{}", b"\xff",
])
def test_anything_unusual_goes_to_the_exact_path(raw: bytes) -> None:
    fast = FastDecoder.of(FRAUD)
    assert fast is not None and fast.decode(raw) is None


def test_nested_events_take_the_fast_path() -> None:
    fast = FastDecoder.of(NESTED)
    assert fast is not None
    assert fast.decode(b'{"d":{"id":"x","os":"a"},"o":{"x":1.5,"p":{"q":true,"r":""}},"top":3}') == (
        "x", 3, 1.5, True, "a", "")
    row = fast.decode(b'{"d":{"id":"x"},"o":null}')
    assert row is not None and row[0] == "x" and row[2:4] == (None, None) and row[4] is UNSET
    assert fast.decode(b'{"d":{"id":"x"},"o":{"p":{}}}') is not None
    assert fast.decode(b'{"d":{"id":"x","id":"y"}}') is None  # duplicate inside an object
    assert fast.decode(b'{"d":{"id":"x","z":1}}') is None  # unknown key inside an object
    assert fast.decode(b'{"d":null}') is None and fast.decode(b'{"o":{}}') is None  # d.id is required
    ato = FastDecoder.of(ATO)
    assert ato is not None and ato.decode(json.dumps(BASE["ato"]).encode()) is not None


def test_schemas_it_cannot_compile_keep_the_exact_path() -> None:
    never = EventSchema.model_validate({"name": "n", "version": 1, "fields": {
        "c": {"type": "string", "values": ["long"], "max_length": 2}}})
    assert FastDecoder.of(never) is None
    batch, dead = Decoder(never, 1024).decode([FakeMessage(b'{"c":"long"}')])
    assert dead[0].reason == "too_long:c"


def _keys(v: Any) -> int:
    if isinstance(v, dict):
        return len(v) + sum(_keys(x) for x in v.values())
    if isinstance(v, list):
        return sum(_keys(x) for x in v)
    return 0


@settings(max_examples=1000, deadline=None)
@given(json_values | st.dictionaries(st.text(alphabet='\\":ab', max_size=6), st.text(alphabet='\\":ab', max_size=6)))
def test_key_colons_counts_the_keys_of_valid_json(v: Any) -> None:
    raw = json.dumps(v).encode()
    assert key_colons(raw) == _keys(v)


@given(st.binary(max_size=500))
def test_key_colons_never_exceeds_the_colons(raw: bytes) -> None:
    assert 0 <= key_colons(raw) <= raw.count(b":")


def test_the_c_key_colons_is_used_when_built() -> None:
    try:
        from workers.pipeline import _scan as scan
    except ImportError:
        pytest.skip("workers.pipeline._scan not built: bytes.count is used (valid, slower)")
    assert decode_fast.key_colons is scan.key_colons and decode_fast.colons is scan.colons
    assert scan.key_colons(b'{"a\\\\":"\\":", "b": "\\\\\\"::"}') == 2
