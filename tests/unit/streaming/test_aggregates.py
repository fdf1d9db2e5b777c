"""The aggregation job's core: topologies, decode, windows (fraud velocity equal to training's
``datagen.velocity``; filtered aggregates against a brute force), bounds, and Feast's Redis encoding."""

from __future__ import annotations

import importlib.util
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from examples.fraud import datagen
from workers.topology import TopologyError
from workers.streaming.aggregates import (
    AggregateSpec,
    AggregationConfigError,
    AggregationState,
    AggregationTopology,
    Column,
    DictStore,
    Event,
    EventDecoder,
    WhereSpec,
    load_aggregation_topology,
    parse_aggregation_topology,
)
from workers.streaming.feast_writer import FeastRedisLayout, feast_hash_field, layout_for_view, timestamp_bytes

ROOT = Path(__file__).resolve().parents[3]
MIN = 60_000


@pytest.fixture(scope="module")
def topo() -> AggregationTopology:
    return load_aggregation_topology(ROOT / "topologies" / "velocity.yaml")


@pytest.fixture(scope="module")
def ato() -> AggregationTopology:
    return load_aggregation_topology(ROOT / "topologies" / "ato_velocity.yaml")


@pytest.fixture(scope="module")
def world() -> datagen.World:
    # Dense enough that bursts overlap windows: ~3000 transactions a day over 300 cards.
    return datagen.generate(3, n_cards=300, n_merchants=60, n_txns=30_000, span_days=10)


def txns_of(world: datagen.World, n_partitions: int = 1) -> list[Event]:
    tx = world.transactions
    cards = tx["card_id"].tolist()
    return [
        Event(c, int(t), (float(a), m), int(c[1:]) % n_partitions, i)
        for i, (c, t, a, m) in enumerate(
            zip(cards, tx["event_time_ms"].tolist(), tx["amount"].tolist(), tx["merchant_id"].tolist())
        )
    ]


def truth_of(world: datagen.World, topo: AggregationTopology) -> list[tuple[Any, ...]]:
    tx = world.transactions
    return list(zip(*(tx[f].tolist() for f in topo.features)))


def assert_values(got: tuple[float, ...], want: tuple[Any, ...], where: object) -> None:
    c10, c1h, s1h, d1d = want
    assert (got[0], got[1], got[3]) == (c10, c1h, d1d), where
    assert got[2] == pytest.approx(float(s1h), rel=1e-6, abs=1e-2), where  # truth is float32


# ---- topology ------------------------------------------------------------------------------


def test_topology_file_loads(topo: AggregationTopology) -> None:
    assert topo.features == ("txn_count_10m", "txn_count_1h", "amount_sum_1h", "distinct_merchants_1d")
    # Same per-entry columns, in the same order, as before the job was generic (the changelog's).
    assert topo.columns == (Column("number", "amount"), Column("scalar", "merchant_id"))
    assert (topo.input.key_field, topo.input.event_time_field) == ("card_id", "event_time_ms")
    assert topo.state.max_entries_per_key == 1000
    assert topo.max_window_ms == datagen.WINDOW_1D_MS
    assert topo.aggregates["txn_count_10m"].window_ms == datagen.WINDOW_10M_MS
    assert topo.aggregates["txn_count_1h"].window_ms == datagen.WINDOW_1H_MS
    assert topo.input.topic == "transactions" and topo.feature_view == "card_velocity"
    assert topo.input.consumer_group != "streamscore-fraud"  # its own group, not the scorer's


def test_unknown_key_is_rejected_with_file_line_and_key() -> None:
    text = (ROOT / "topologies" / "velocity.yaml").read_text().replace("  max_batch: 512", "  max_bacth: 512")
    with pytest.raises(TopologyError) as e:
        parse_aggregation_topology(text, Path("v.yaml"))
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "max_bacth" in s)
    assert f"v.yaml:{line}: sink.max_bacth: unknown key" in str(e.value)


# ---- windows == training -------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 3])
def test_values_before_each_event_equal_training(
    world: datagen.World, topo: AggregationTopology, partitions: int
) -> None:
    """Fed the same events in order, the state just before each event is datagen.velocity's row.

    The job's writes are simulated too: stream time reaches the event's time, everything dirty is
    "written" to a dict, and what that dict holds for the card is what the scorer would read.
    """
    state = AggregationState(topo, DictStore())
    redis: dict[str, tuple[float, ...]] = {}
    zeros = (0, 0, 0.0, 0)
    for i, (tx, want) in enumerate(zip(txns_of(world, partitions), truth_of(world, topo))):
        state.advance(tx.partition, tx.t_ms)
        for card, values in state.drain(10_000):
            redis[card] = values
        assert_values(state.values_at(tx.key, tx.t_ms), want, (i, tx))
        assert_values(redis.get(tx.key, zeros), want, (i, tx))
        state.apply([tx])
    assert state.stats.applied == len(world.transactions) and state.stats.capped == 0
    assert state.stats.expired_keys > 0  # cards idle for a day were dropped from the store


@pytest.mark.parametrize("partitions", [1, 3])
def test_ato_values_before_each_login_equal_training(ato: AggregationTopology, partitions: int) -> None:
    """The account-takeover job, fed its example world's logins as wire JSON, equals
    ``examples.ato.datagen.velocity`` just before each login, as read from the simulated Redis."""
    from examples.ato import datagen as ato_datagen

    lg = ato_datagen.generate(3, n_users=300, n_ips=400, n_logins=20_000, span_days=7).logins
    decode = EventDecoder(ato)
    state = AggregationState(ato, DictStore())
    redis: dict[str, tuple[float, ...]] = {}
    wire = zip(*(lg[c].tolist() for c in ("event_id", "user_id", "ip", "event_time_ms", "device.id", "login.success")))
    truth = zip(*(lg[f].tolist() for f in ato.features))
    for i, ((eid, user, ip, t, dev, ok), want) in enumerate(zip(wire, truth)):
        raw = orjson.dumps({"event_id": eid, "user_id": user, "ip": ip, "event_time_ms": t,
                            "device": {"id": dev, "os": "ios"}, "login": {"method": "password", "success": ok}})
        ev = decode(raw, int(user[1:]) % partitions, i)
        assert isinstance(ev, Event), ev
        state.advance(ev.partition, ev.t_ms)
        for key, values in state.drain(10_000):
            redis[key] = values
        assert state.values_at(user, t) == tuple(want), (i, user)
        assert redis.get(user, (0, 0, 0, 0)) == tuple(want), (i, user)
        state.apply([ev])
    assert state.stats.applied == len(lg) and state.stats.capped == 0 and state.stats.expired_keys > 0


def test_value_after_an_event_includes_it(topo: AggregationTopology) -> None:
    """What is written after event k is the window k+1 will see if it comes at the same time."""
    state = AggregationState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Event("c1", t0, (10.0, "m1")), Event("c1", t0 + MIN, (5.5, "m2")), Event("c2", t0, (1.0, "m1"))])
    out = dict(state.drain(100))
    assert out == {"c1": (2, 2, 15.5, 2), "c2": (1, 1, 1.0, 1)}
    assert state.drain(100) == []  # nothing changed since


def test_cards_are_rewritten_when_entries_leave_windows(topo: AggregationTopology) -> None:
    state = AggregationState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Event("c1", t0, (10.0, "m1"))])
    assert dict(state.drain(10)) == {"c1": (1, 1, 10.0, 1)}
    state.apply([Event("other", t0 + 10 * MIN, (1.0, "m9"))])  # stream time moves on
    assert "c1" not in dict(state.drain(10))  # its entry is still inside [t - 10 min, t]
    state.apply([Event("other", t0 + 10 * MIN + 1, (1.0, "m9"))])  # c1's entry leaves the 10 min window
    assert dict(state.drain(10))["c1"] == (0, 1, 10.0, 1)
    state.apply([Event("other", t0 + datagen.HOUR_MS + 1, (1.0, "m9"))])
    assert dict(state.drain(10))["c1"] == (0, 0, 0.0, 1)
    state.apply([Event("other", t0 + datagen.DAY_MS + 1, (1.0, "m9"))])
    assert dict(state.drain(10))["c1"] == (0, 0, 0.0, 0)  # written once more as zeros ...
    assert state.values_at("c1", t0 + datagen.DAY_MS + 1) == (0, 0, 0.0, 0)
    assert state.stats.expired_keys >= 1  # ... and deleted from the store


# ---- bounds and robustness -----------------------------------------------------------------


def test_entries_per_card_are_capped(topo: AggregationTopology) -> None:
    small = topo.model_copy(update={"state": topo.state.model_copy(update={"max_entries_per_key": 10})})
    store = DictStore()
    state = AggregationState(small, store)
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Event("c1", t0 + i, (1.0, f"m{i}")) for i in range(50)])
    st = store.data["c1"]
    assert len(st["t"]) == 10 and all(len(c) == 10 for c in st["c"])
    assert st["t"] == [t0 + i for i in range(40, 50)]  # the newest are kept
    assert state.stats.capped == 40
    assert dict(state.drain(10))["c1"] == (10, 10, 10.0, 10)


def test_old_entries_are_pruned(topo: AggregationTopology) -> None:
    store = DictStore()
    state = AggregationState(topo, store)
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Event("c1", t0 + i * datagen.HOUR_MS, (1.0, "m1")) for i in range(48)])
    assert store.data["c1"]["t"][0] == t0 + 23 * datagen.HOUR_MS  # one day before the newest
    assert len(store.data["c1"]["t"]) == 25


def test_late_and_out_of_order_events(topo: AggregationTopology) -> None:
    state = AggregationState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS + 10 * datagen.DAY_MS
    state.apply([Event("c1", t0, (1.0, "m1")), Event("c1", t0 - 5 * MIN, (2.0, "m2"))])  # within windows
    assert state.values_at("c1", t0) == (2, 2, 3.0, 2)
    state.apply([Event("c1", t0 - datagen.DAY_MS - 1, (4.0, "m3"))])  # older than the longest window
    assert state.stats.late == 1 and state.values_at("c1", t0) == (2, 2, 3.0, 2)


def test_redelivered_offsets_are_not_counted_twice(topo: AggregationTopology) -> None:
    state = AggregationState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS
    batch = [Event("c1", t0 + i, (1.0, "m1"), partition=2, offset=100 + i) for i in range(3)]
    state.apply(batch)
    state.apply(batch)  # a restart before the offsets were committed delivers them again
    assert state.values_at("c1", t0 + 2) == (3, 3, 3.0, 1)
    assert state.stats.replayed == 3


def test_failed_writes_are_requeued_and_restart_reindexes(topo: AggregationTopology) -> None:
    store = DictStore()
    state = AggregationState(topo, store)
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Event("c1", t0, (1.0, "m1"), 0, 1), Event("c2", t0, (2.0, "m1"), 1, 1)])
    rows = state.drain(1)
    assert len(rows) == 1 and state.dirty_count == 1
    state.requeue(card for card, _ in rows)
    assert {c for c, _ in state.drain(10)} == {"c1", "c2"}
    fresh = AggregationState(topo, store)  # a restarted job over the recovered table
    assert fresh.reindex({1}) == 1
    assert dict(fresh.drain(10)) == {"c2": (1, 1, 2.0, 1)}


def test_decode_skips_bad_input_with_a_reason(topo: AggregationTopology) -> None:
    decode = EventDecoder(topo)
    good = {"card_id": "c1", "merchant_id": "m1", "amount": 12.5, "event_time_ms": 1_700_000_000_000}
    ev = decode(orjson.dumps(good), 3, 42)
    assert ev == Event("c1", 1_700_000_000_000, (12.5, "m1"), 3, 42)
    cases = {
        b"{not json": "invalid_json",
        b"[1]": "not_an_object",
        b"": "empty",
        orjson.dumps({**good, "card_id": ""}): "bad_field:card_id",
        orjson.dumps({**good, "card_id": 17}): "bad_field:card_id",
        orjson.dumps({**good, "event_time_ms": "now"}): "bad_field:event_time_ms",
        orjson.dumps({**good, "event_time_ms": True}): "bad_field:event_time_ms",
        orjson.dumps({**good, "event_time_ms": -1}): "bad_field:event_time_ms",
        orjson.dumps({**good, "amount": "12"}): "bad_field:amount",
        orjson.dumps({**good, "amount": True}): "bad_field:amount",  # a boolean is not a number
        orjson.dumps({**good, "amount": None}): "bad_field:amount",
        orjson.dumps(good).replace(b'"amount":12.5', b'"amount":1e999'): "invalid_json",  # orjson refuses inf
        orjson.dumps({k: v for k, v in good.items() if k != "merchant_id"}): "bad_field:merchant_id",
        orjson.dumps({**good, "merchant_id": 1.5}): "bad_field:merchant_id",  # count_distinct: no floats
        orjson.dumps({**good, "merchant_id": {"id": "m1"}}): "bad_field:merchant_id",
    }
    for raw, reason in cases.items():
        assert decode(raw, 0, 0) == reason, raw
    # Sums are of any finite number: nothing here assumes amounts.
    assert decode(orjson.dumps({**good, "amount": -5}), 0, 0) == Event("c1", 1_700_000_000_000, (-5, "m1"), 0, 0)


def test_decode_follows_dotted_paths_and_filters(ato: AggregationTopology) -> None:
    decode = EventDecoder(ato)
    login: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "ip": "10.0.0.1", "event_time_ms": 1_000,
             "device": {"id": "d1", "os": "ios"}, "geo": {"country": "US"},
             "login": {"method": "password", "success": False, "failed_attempts": 2}}
    # Columns: device.id, ip, login.success == false (a 0/1 flag).
    assert decode(orjson.dumps(login), 1, 7) == Event("u1", 1_000, ("d1", "10.0.0.1", 1), 1, 7)
    ok = {**login, "login": {**login["login"], "success": True}}
    assert decode(orjson.dumps(ok), 1, 8) == Event("u1", 1_000, ("d1", "10.0.0.1", 0), 1, 8)
    # A filter's field is never an error: absent, null or another JSON type fails the filter.
    for other in [{**login, "login": {"success": s}} for s in (None, 0, "false", [False])] + [
        {k: v for k, v in login.items() if k != "login"}
    ]:
        ev = decode(orjson.dumps(other), 0, 0)
        assert isinstance(ev, Event) and ev.values[2] == 0, other
    cases = {
        orjson.dumps({**login, "device": {"os": "ios"}}): "bad_field:device.id",
        orjson.dumps({**login, "device": "d1"}): "bad_field:device.id",  # not an object on the path
        orjson.dumps({**login, "device": None}): "bad_field:device.id",
        orjson.dumps({**login, "device": {"id": 0.5}}): "bad_field:device.id",
        orjson.dumps({**login, "ip": ["10.0.0.1"]}): "bad_field:ip",
        orjson.dumps({k: v for k, v in login.items() if k != "user_id"}): "bad_field:user_id",
    }
    for raw, reason in cases.items():
        assert decode(raw, 0, 0) == reason, raw


def test_count_distinct_keeps_json_types_apart(ato: AggregationTopology) -> None:
    """Integers and booleans are distinct values, as in JSON: true is not 1 (Python's set would merge them)."""
    decode = EventDecoder(ato)
    state = AggregationState(ato, DictStore())
    ips: list[object] = [1, True, 1, "1", 0, False, True, 7, 7]
    events = []
    for i, ip in enumerate(ips):
        raw = orjson.dumps({"user_id": "u1", "ip": ip, "event_time_ms": 1_000 + i, "device": {"id": i % 2},
                            "login": {"success": i % 3 != 0}})
        ev = decode(raw, 0, i)
        assert isinstance(ev, Event), ev
        events.append(ev)
    state.apply(events)
    logins, failed, ips_1d, devices_1d = state.values_at("u1", 1_000 + len(ips))
    assert (logins, failed) == (len(ips), 3)
    assert ips_1d == 6  # 1, true, "1", 0, false, 7
    assert devices_1d == 2  # integer device ids 0 and 1


def test_where_filters_only_their_aggregate() -> None:
    text = """
id: w
input: {topic: t, partitions: 1, consumer_group: g, key_field: account.id, event_time_field: meta.ts}
feature_view: fv
aggregates:
  all_10m:     {op: count, window_ms: 600000}
  failed_10m:  {op: count, window_ms: 600000, where: {field: ok, equals: false}}
  eur_sum_10m: {op: sum, field: amount, window_ms: 600000, where: {field: currency, equals: EUR}}
  eur_kinds:   {op: count_distinct, field: kind, window_ms: 600000, where: {field: currency, equals: EUR}}
  level3:      {op: count, window_ms: 600000, where: {field: level, equals: 3}}
"""
    topo = parse_aggregation_topology(text, Path("w.yaml"))
    decode = EventDecoder(topo)
    rows: list[dict[str, object]] = [
        {"ok": False, "currency": "EUR", "amount": 10, "kind": "a", "level": 3},
        {"ok": True, "currency": "EUR", "amount": -2.5, "kind": "b", "level": 3.0},  # numbers compare as numbers
        # Fields whose filters fail are not read, so not checked:
        {"ok": True, "currency": "USD", "amount": "n/a", "kind": None, "level": True},
        {"ok": False, "level": "3"},
    ]
    events = []
    for i, row in enumerate(rows):
        ev = decode(orjson.dumps({"account": {"id": "a1"}, "meta": {"ts": 5_000 + i}, **row}), 0, i)
        assert isinstance(ev, Event), (row, ev)
        events.append(ev)
    # An EUR event whose amount is not a number is skipped: its filter needs the field.
    assert decode(orjson.dumps({"account": {"id": "a1"}, "meta": {"ts": 1}, "currency": "EUR", "amount": "1",
                                "kind": "a"}), 0, 9) == "bad_field:amount"
    state = AggregationState(topo, DictStore())
    state.apply(events)
    assert dict(state.drain(10)) == {"a1": (4, 2, 7.5, 2, 2)}


@pytest.mark.parametrize(
    "agg, message",
    [
        ("{op: count, field: amount, window_ms: 1000}", "takes no field"),
        ("{op: count_distinct, window_ms: 1000}", "needs a field"),
        ("{op: sum, field: 'a..b', window_ms: 1000}", "not a field path"),
        ("{op: sum, field: 'device id', window_ms: 1000}", "not a field path"),
        ("{op: median, field: amount, window_ms: 1000}", "aggregates.x.op"),
        ("{op: count, window_ms: 0}", "aggregates.x.window_ms"),
        ("{op: count, window_ms: 1000, where: {field: ok}}", "aggregates.x.where.equals: Field required"),
        ("{op: count, window_ms: 1000, where: {field: ok, equals: null}}", "equals must be"),
        ("{op: count, window_ms: 1000, where: {field: ok, equals: [1]}}", "equals must be"),
        ("{op: count, window_ms: 1000, where: {field: ok, equals: .inf}}", "equals must be"),
        ("{op: count, window_ms: 1000, where: {field: ok, equal: 1}}", "where.equal: unknown key"),
    ],
)
def test_bad_aggregates_are_rejected(agg: str, message: str) -> None:
    text = (
        "id: v\ninput: {topic: t, partitions: 1, consumer_group: g, key_field: k, event_time_field: ts}\n"
        f"feature_view: fv\naggregates:\n  x: {agg}\n"
    )
    with pytest.raises(TopologyError, match=message):
        parse_aggregation_topology(text, Path("v.yaml"))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("  key_field: card_id ", "  entity_field: card_id ", "input.entity_field: unknown key"),
        ("  key_field: card_id ", "  ", "input.key_field: Field required"),  # no default naming a card field
        ("  event_time_field: event_time_ms ", "  ", "input.event_time_field: Field required"),
        ("  max_entries_per_key:", "  max_entries_per_card:", "state.max_entries_per_card: unknown key"),
        ("  key_field: card_id ", "  key_field: card..id ", "input.key_field"),
    ],
)
def test_input_and_state_keys(old: str, new: str, message: str) -> None:
    text = (ROOT / "topologies" / "velocity.yaml").read_text()
    assert old in text
    with pytest.raises(TopologyError, match=message):
        parse_aggregation_topology(text.replace(old, new), Path("v.yaml"))


def test_where_equals_keeps_its_json_type() -> None:
    def spec(equals: str) -> AggregateSpec:
        text = (
            "id: v\ninput: {topic: t, partitions: 1, consumer_group: g, key_field: k, event_time_field: ts}\n"
            f"feature_view: fv\naggregates:\n  x: {{op: count, window_ms: 1, where: {{field: f, equals: {equals}}}}}\n"
        )
        return parse_aggregation_topology(text, Path("v.yaml")).aggregates["x"]

    assert [spec(e).where for e in ("false", "1", "'1'", "1.5")] == [
        WhereSpec(field="f", equals=False), WhereSpec(field="f", equals=1),
        WhereSpec(field="f", equals="1"), WhereSpec(field="f", equals=1.5),
    ]
    assert [type(w.equals) for w in (spec("true").where, spec("1").where) if w is not None] == [bool, int]


def test_ato_topology_file_loads(ato: AggregationTopology) -> None:
    assert ato.id == "ato-velocity" and ato.feature_view == "user_login_velocity"
    assert (ato.input.topic, ato.input.partitions) == ("logins", 6)
    assert ato.input.consumer_group == "streamscore-ato-velocity"
    assert (ato.input.key_field, ato.input.event_time_field) == ("user_id", "event_time_ms")
    assert ato.features == ("logins_10m", "failed_logins_1h", "distinct_ips_1d", "distinct_devices_1d")
    a = ato.aggregates
    assert (a["logins_10m"].op, a["logins_10m"].window_ms, a["logins_10m"].where) == ("count", 600_000, None)
    assert (a["failed_logins_1h"].op, a["failed_logins_1h"].window_ms) == ("count", 3_600_000)
    assert a["failed_logins_1h"].where == WhereSpec(field="login.success", equals=False)
    assert (a["distinct_ips_1d"].op, a["distinct_ips_1d"].field, a["distinct_ips_1d"].window_ms) == (
        "count_distinct", "ip", 86_400_000)
    assert (a["distinct_devices_1d"].op, a["distinct_devices_1d"].field, a["distinct_devices_1d"].window_ms) == (
        "count_distinct", "device.id", 86_400_000)
    assert ato.max_window_ms == 86_400_000


# ---- filtered windows == a brute force ----------------------------------------------------

_BRUTE = """
id: brute
input: {topic: t, partitions: 2, consumer_group: g, key_field: user.id, event_time_field: ts}
feature_view: fv
aggregates:
  n_10m:             {op: count, window_ms: 600000}
  failed_1h:         {op: count, window_ms: 3600000, where: {field: login.success, equals: false}}
  pw_attempts_1h:    {op: sum, field: login.failed_attempts, window_ms: 3600000,
                      where: {field: login.method, equals: password}}
  amount_1d:         {op: sum, field: amount, window_ms: 86400000}
  ips_1d:            {op: count_distinct, field: ip, window_ms: 86400000}
  failed_devices_1d: {op: count_distinct, field: device.id, window_ms: 86400000,
                      where: {field: login.success, equals: false}}
  level3_10m:        {op: count, window_ms: 600000, where: {field: level, equals: 3}}
"""


def _get(obj: Any, path: str) -> Any:
    for seg in path.split("."):
        if not isinstance(obj, dict) or seg not in obj:
            return None
        obj = obj[seg]
    return obj


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _passes(where: WhereSpec | None, obj: dict[str, Any]) -> bool:
    if where is None:
        return True
    v, e = _get(obj, where.field), where.equals
    if isinstance(e, bool):
        return isinstance(v, bool) and v == e
    if isinstance(e, str):
        return isinstance(v, str) and v == e
    return _is_number(v) and v == e


def _bad_fields(topo: AggregationTopology, obj: dict[str, Any]) -> set[str]:
    """Why the job must skip the event (any of these), or empty: a plain reading of the topology."""
    key, t = _get(obj, topo.input.key_field), _get(obj, topo.input.event_time_field)
    if not isinstance(key, str) or not key:
        return {f"bad_field:{topo.input.key_field}"}
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        return {f"bad_field:{topo.input.event_time_field}"}
    bad = set()
    for a in topo.aggregates.values():
        if a.field is None or not _passes(a.where, obj):
            continue
        v = _get(obj, a.field)
        ok = _is_number(v) if a.op == "sum" else isinstance(v, (str, int))
        if not ok:
            bad.add(f"bad_field:{a.field}")
    return bad


def _brute_values(
    topo: AggregationTopology, entries: list[tuple[int, dict[str, Any]]], as_of: int
) -> tuple[float, ...]:
    out: list[float] = []
    for a in topo.aggregates.values():
        sel = [o for t, o in entries if as_of - a.window_ms <= t <= as_of and _passes(a.where, o)]
        if a.op == "count":
            out.append(len(sel))
        elif a.op == "sum":
            out.append(float(sum(_get(o, a.field or "") for o in sel)))
        else:
            out.append(len({(type(v), v) for v in (_get(o, a.field or "") for o in sel)}))
    return tuple(out)


def _random_logins(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Login-like events with odd values mixed in: absent fields, wrong types, late and out of order."""
    def pick(*choices: object, weights: tuple[float, ...] | None = None) -> Any:
        return rng.choices(choices, weights=weights)[0]

    t, out = 1_704_067_200_000, []
    for i in range(n):
        t += int(rng.expovariate(1 / 90_000))  # ~90 s apart ...
        if rng.random() < 0.004:
            t += rng.randint(2, 30) * 3_600_000  # ... with idle gaps, so keys expire
        ts = t
        r = rng.random()
        if r < 0.1:
            ts -= rng.randint(0, 20 * 60_000)  # out of order within the windows
        elif r < 0.12:
            ts -= 36 * 3_600_000  # late: older than the longest window
        u = rng.randrange(12)
        login: dict[str, Any] = {
            "success": pick(True, False, None, "false", 0, weights=(6, 3, 0.3, 0.3, 0.3)),
            "method": pick("password", "sso", None, weights=(5, 3, 1)),
            "failed_attempts": pick(0, 1, 2, -1, 2.5, True, None, weights=(5, 2, 2, 0.5, 0.5, 0.2, 0.3)),
        }
        ev: dict[str, Any] = {
            "event_id": f"e{i}",
            "user": {"id": f"u{u}"} if rng.random() > 0.01 else {"id": ""},
            "user_id": f"u{u}",
            "ts": ts if rng.random() > 0.005 else str(ts),
            "event_time_ms": ts,
            "ip": pick("10.0.0.1", "10.0.0.2", "10.0.0.3", 1, 0, True, False, 1.5, None,
                       weights=(4, 3, 2, 1, 1, 1, 1, 0.1, 0.1)),
            "device": pick({"id": "d1", "os": "ios"}, {"id": "d2"}, {"id": 7}, {"id": False}, {}, "d1",
                           weights=(4, 3, 1, 1, 0.3, 0.2)),
            # Quarters are exact in binary: sums in any order compare equal.
            "amount": rng.randint(-100, 4000) / 4 if rng.random() > 0.003 else "12",
            "level": pick(3, 3.0, True, "3", 2),
            "login": login,
        }
        if rng.random() < 0.01:
            del ev["login"]
        out.append(ev)
    return out


@pytest.mark.parametrize("which", ["brute", "ato"])
def test_filtered_windows_equal_a_brute_force(ato: AggregationTopology, which: str) -> None:
    """Random events in random micro-batches: after every batch, every key's written values (the
    expiry schedule included) equal a brute force over the events the job accepted."""
    topo = parse_aggregation_topology(_BRUTE, Path("brute.yaml")) if which == "brute" else ato
    rng = random.Random(11)
    events = _random_logins(rng, 2500)
    decode = EventDecoder(topo)
    state = AggregationState(topo, DictStore())
    n_part = 2
    stream_time: dict[int, int] = {}
    entries: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    redis: dict[str, tuple[float, ...]] = {}
    zeros = tuple(0.0 if a.op == "sum" else 0 for a in topo.aggregates.values())
    skipped = late = 0
    i = 0
    while i < len(events):
        batch = events[i:i + rng.randint(1, 25)]
        decoded = []
        for j, obj in enumerate(batch, i):
            key = _get(obj, topo.input.key_field)
            part = int(key[1:]) % n_part if isinstance(key, str) and key else 0
            got = decode(orjson.dumps(obj), part, j)
            bad = _bad_fields(topo, obj)
            if bad:
                assert got in bad, (obj, got)
                skipped += 1
                continue
            assert isinstance(got, Event), (obj, got)
            decoded.append(got)
            t = _get(obj, topo.input.event_time_field)
            stream_time[part] = max(stream_time.get(part, t), t)
            if t < stream_time[part] - topo.max_window_ms:
                late += 1
            else:
                entries.setdefault(key, []).append((t, obj))
        i += len(batch)
        state.apply(decoded)
        for key, values in state.drain(10_000):
            redis[key] = values
        for key, es in entries.items():
            now = stream_time[int(key[1:]) % n_part]
            want = _brute_values(topo, es, now)
            assert redis.get(key, zeros) == want, (i, key)
            assert state.values_at(key, now) == want, (i, key)
    assert state.stats.late == late > 0
    assert skipped > 0 and state.stats.applied + late == len(events) - skipped
    assert state.stats.capped == 0 and state.stats.expired_keys > 0


# ---- Feast's Redis layout ------------------------------------------------------------------


def _feature_repo_view(name: str) -> Any:
    spec = importlib.util.spec_from_file_location("aggregation_test_feature_repo", ROOT / "feature_repo" / "features.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fv = getattr(module, name)
    if not fv.entity_columns:  # `feast apply` infers these; the registry's view has them
        from feast import Field
        from feast.types import String

        fv.entity_columns = [Field(name=e.join_key, dtype=String) for e in module.OBJECTS if e.name in fv.entities]
    return fv


@pytest.fixture(scope="module")
def layout(topo: AggregationTopology) -> FeastRedisLayout:
    return layout_for_view(topo, _feature_repo_view("card_velocity"), "streamscore", 3)


def test_layout_matches_feasts_own_helpers(layout: FeastRedisLayout) -> None:
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    assert layout.value_fields == ("int64_val", "int64_val", "float_val", "int64_val")
    for f in layout.features:
        assert feast_hash_field("card_velocity", f) == _mmh3(f"card_velocity:{f}")
    for card in ["c000017", "cx00ff00ff", "", "ünïcødé-カード", "x" * 300]:
        ek = EntityKey(join_keys=["card_id"], entity_values=[Value(string_val=card)])
        assert layout.redis_key(card) == _redis_key("streamscore", ek, entity_key_serialization_version=3)


def test_hset_payload_round_trips_through_feasts_parser(layout: FeastRedisLayout) -> None:
    from feast.infra.online_stores.redis import RedisOnlineStore

    ts = timestamp_bytes(1_700_000_123.25)
    [(key, mapping)] = layout.hset_commands([("c000017", (3, 7, 123.4567, 2))], ts)
    assert key == layout.redis_key("c000017")
    assert set(mapping) == {*layout.hash_fields, b"_ts:card_velocity"}
    requested = list(layout.features)
    fields: list[bytes | str] = [*layout.hash_fields, "_ts:card_velocity"]
    values = [mapping[f if isinstance(f, bytes) else f.encode()] for f in fields]
    stamp, parsed = RedisOnlineStore()._get_features_for_entity(values, "card_velocity", [*requested, "_ts:card_velocity"])
    assert stamp is not None and stamp.timestamp() == pytest.approx(1_700_000_123.25)
    assert parsed is not None
    assert parsed["txn_count_10m"].int64_val == 3 and parsed["txn_count_1h"].int64_val == 7
    assert parsed["amount_sum_1h"].float_val == pytest.approx(np.float32(123.4567))
    assert parsed["distinct_merchants_1d"].int64_val == 2


def test_view_and_aggregates_must_match(topo: AggregationTopology) -> None:
    fv = _feature_repo_view("card_velocity")
    fewer = topo.model_copy(update={"aggregates": {k: v for k, v in topo.aggregates.items() if k != "txn_count_1h"}})
    with pytest.raises(AggregationConfigError, match="make them match"):
        layout_for_view(fewer, fv, "streamscore", 3)
    swapped = dict(topo.aggregates)
    swapped["amount_sum_1h"], swapped["txn_count_10m"] = topo.aggregates["txn_count_10m"], topo.aggregates["amount_sum_1h"]
    with pytest.raises(AggregationConfigError, match="needs"):
        layout_for_view(topo.model_copy(update={"aggregates": swapped}), fv, "streamscore", 3)
    with pytest.raises(AggregationConfigError, match="got Feast view"):
        layout_for_view(topo, _feature_repo_view("card_profile"), "streamscore", 3)


def test_ato_layout_is_checked_against_its_view(ato: AggregationTopology) -> None:
    """The account-takeover view as feature_repo declares it: Int64 features of entity ``user``."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float32, Int64, String
    from feast.value_type import ValueType

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)

    def view(dtypes: dict[str, Any]) -> Any:
        fv = FeatureView(
            name="user_login_velocity", entities=[user], ttl=timedelta(days=1),
            schema=[Field(name=f, dtype=d) for f, d in dtypes.items()],
            source=FileSource(name="logins_source", path="data/logins.parquet", timestamp_field="event_timestamp"),
        )
        fv.entity_columns = [Field(name="user_id", dtype=String)]  # what `feast apply` infers
        return fv

    layout = layout_for_view(ato, view({f: Int64 for f in ato.features}), "streamscore", 3)
    assert layout.join_key == "user_id" and layout.ttl_s == 86_400
    assert layout.features == ato.features and layout.value_fields == ("int64_val",) * 4
    with pytest.raises(AggregationConfigError, match="needs Int64 or Int32"):
        layout_for_view(ato, view({**{f: Int64 for f in ato.features}, "logins_10m": Float32}), "streamscore", 3)


def test_ato_topology_fits_the_feature_repo_view(ato: AggregationTopology) -> None:
    layout = layout_for_view(ato, _feature_repo_view("user_login_velocity"), "streamscore", 3)
    assert layout.join_key == "user_id" and layout.ttl_s == 86_400
    assert layout.value_fields == ("int64_val",) * 4
