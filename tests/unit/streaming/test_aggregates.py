"""Velocity windows (equal to training's ``datagen.velocity``), bounds, and Feast's Redis encoding."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from examples.fraud import datagen
from workers.topology import TopologyError
from workers.streaming.aggregates import (
    DictStore,
    FeastRedisLayout,
    Txn,
    VelocityConfigError,
    VelocityState,
    VelocityTopology,
    decode_event,
    feast_hash_field,
    layout_for_view,
    load_velocity_topology,
    parse_velocity_topology,
    timestamp_bytes,
)

ROOT = Path(__file__).resolve().parents[3]
MIN = 60_000


@pytest.fixture(scope="module")
def topo() -> VelocityTopology:
    return load_velocity_topology(ROOT / "topologies" / "velocity.yaml")


@pytest.fixture(scope="module")
def world() -> datagen.World:
    # Dense enough that bursts overlap windows: ~3000 transactions a day over 300 cards.
    return datagen.generate(3, n_cards=300, n_merchants=60, n_txns=30_000, span_days=10)


def txns_of(world: datagen.World, n_partitions: int = 1) -> list[Txn]:
    tx = world.transactions
    cards = tx["card_id"].tolist()
    return [
        Txn(c, int(t), (float(a), m), int(c[1:]) % n_partitions, i)
        for i, (c, t, a, m) in enumerate(
            zip(cards, tx["event_time_ms"].tolist(), tx["amount"].tolist(), tx["merchant_id"].tolist())
        )
    ]


def truth_of(world: datagen.World, topo: VelocityTopology) -> list[tuple[Any, ...]]:
    tx = world.transactions
    return list(zip(*(tx[f].tolist() for f in topo.features)))


def assert_values(got: tuple[float, ...], want: tuple[Any, ...], where: object) -> None:
    c10, c1h, s1h, d1d = want
    assert (got[0], got[1], got[3]) == (c10, c1h, d1d), where
    assert got[2] == pytest.approx(float(s1h), rel=1e-6, abs=1e-2), where  # truth is float32


# ---- topology ------------------------------------------------------------------------------


def test_topology_file_loads(topo: VelocityTopology) -> None:
    assert topo.features == ("txn_count_10m", "txn_count_1h", "amount_sum_1h", "distinct_merchants_1d")
    assert topo.columns == ("amount", "merchant_id")
    assert topo.max_window_ms == datagen.WINDOW_1D_MS
    assert topo.aggregates["txn_count_10m"].window_ms == datagen.WINDOW_10M_MS
    assert topo.aggregates["txn_count_1h"].window_ms == datagen.WINDOW_1H_MS
    assert topo.input.topic == "transactions" and topo.feature_view == "card_velocity"
    assert topo.input.consumer_group != "streamscore-fraud"  # its own group, not the scorer's


def test_unknown_key_is_rejected_with_file_line_and_key() -> None:
    text = (ROOT / "topologies" / "velocity.yaml").read_text().replace("  max_batch: 512", "  max_bacth: 512")
    with pytest.raises(TopologyError) as e:
        parse_velocity_topology(text, Path("v.yaml"))
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "max_bacth" in s)
    assert f"v.yaml:{line}: sink.max_bacth: unknown key" in str(e.value)


@pytest.mark.parametrize(
    "agg, message",
    [
        ("{op: sum, field: merchant_id, window_ms: 1000}", "numeric field"),
        ("{op: count, field: amount, window_ms: 1000}", "takes no field"),
        ("{op: count_distinct, window_ms: 1000}", "needs a field"),
        ("{op: sum, field: nope, window_ms: 1000}", "not an event field"),
        ("{op: median, field: amount, window_ms: 1000}", "aggregates.x.op"),
    ],
)
def test_bad_aggregates_are_rejected(agg: str, message: str) -> None:
    text = f"id: v\ninput: {{topic: t, partitions: 1, consumer_group: g}}\nfeature_view: fv\naggregates:\n  x: {agg}\n"
    with pytest.raises(TopologyError, match=message):
        parse_velocity_topology(text, Path("v.yaml"))


# ---- windows == training -------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 3])
def test_values_before_each_event_equal_training(
    world: datagen.World, topo: VelocityTopology, partitions: int
) -> None:
    """Fed the same events in order, the state just before each event is datagen.velocity's row.

    The job's writes are simulated too: stream time reaches the event's time, everything dirty is
    "written" to a dict, and what that dict holds for the card is what the scorer would read.
    """
    state = VelocityState(topo, DictStore())
    redis: dict[str, tuple[float, ...]] = {}
    zeros = (0, 0, 0.0, 0)
    for i, (tx, want) in enumerate(zip(txns_of(world, partitions), truth_of(world, topo))):
        state.advance(tx.partition, tx.t_ms)
        for card, values in state.drain(10_000):
            redis[card] = values
        assert_values(state.values_at(tx.card, tx.t_ms), want, (i, tx))
        assert_values(redis.get(tx.card, zeros), want, (i, tx))
        state.apply([tx])
    assert state.stats.applied == len(world.transactions) and state.stats.capped == 0
    assert state.stats.expired_cards > 0  # cards idle for a day were dropped from the store


def test_value_after_an_event_includes_it(topo: VelocityTopology) -> None:
    """What is written after event k is the window k+1 will see if it comes at the same time."""
    state = VelocityState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Txn("c1", t0, (10.0, "m1")), Txn("c1", t0 + MIN, (5.5, "m2")), Txn("c2", t0, (1.0, "m1"))])
    out = dict(state.drain(100))
    assert out == {"c1": (2, 2, 15.5, 2), "c2": (1, 1, 1.0, 1)}
    assert state.drain(100) == []  # nothing changed since


def test_cards_are_rewritten_when_entries_leave_windows(topo: VelocityTopology) -> None:
    state = VelocityState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Txn("c1", t0, (10.0, "m1"))])
    assert dict(state.drain(10)) == {"c1": (1, 1, 10.0, 1)}
    state.apply([Txn("other", t0 + 10 * MIN, (1.0, "m9"))])  # stream time moves on
    assert "c1" not in dict(state.drain(10))  # its entry is still inside [t - 10 min, t]
    state.apply([Txn("other", t0 + 10 * MIN + 1, (1.0, "m9"))])  # c1's entry leaves the 10 min window
    assert dict(state.drain(10))["c1"] == (0, 1, 10.0, 1)
    state.apply([Txn("other", t0 + datagen.HOUR_MS + 1, (1.0, "m9"))])
    assert dict(state.drain(10))["c1"] == (0, 0, 0.0, 1)
    state.apply([Txn("other", t0 + datagen.DAY_MS + 1, (1.0, "m9"))])
    assert dict(state.drain(10))["c1"] == (0, 0, 0.0, 0)  # written once more as zeros ...
    assert state.values_at("c1", t0 + datagen.DAY_MS + 1) == (0, 0, 0.0, 0)
    assert state.stats.expired_cards >= 1  # ... and deleted from the store


# ---- bounds and robustness -----------------------------------------------------------------


def test_entries_per_card_are_capped(topo: VelocityTopology) -> None:
    small = topo.model_copy(update={"state": topo.state.model_copy(update={"max_entries_per_card": 10})})
    store = DictStore()
    state = VelocityState(small, store)
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Txn("c1", t0 + i, (1.0, f"m{i}")) for i in range(50)])
    st = store.data["c1"]
    assert len(st["t"]) == 10 and all(len(c) == 10 for c in st["c"])
    assert st["t"] == [t0 + i for i in range(40, 50)]  # the newest are kept
    assert state.stats.capped == 40
    assert dict(state.drain(10))["c1"] == (10, 10, 10.0, 10)


def test_old_entries_are_pruned(topo: VelocityTopology) -> None:
    store = DictStore()
    state = VelocityState(topo, store)
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Txn("c1", t0 + i * datagen.HOUR_MS, (1.0, "m1")) for i in range(48)])
    assert store.data["c1"]["t"][0] == t0 + 23 * datagen.HOUR_MS  # one day before the newest
    assert len(store.data["c1"]["t"]) == 25


def test_late_and_out_of_order_events(topo: VelocityTopology) -> None:
    state = VelocityState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS + 10 * datagen.DAY_MS
    state.apply([Txn("c1", t0, (1.0, "m1")), Txn("c1", t0 - 5 * MIN, (2.0, "m2"))])  # within windows
    assert state.values_at("c1", t0) == (2, 2, 3.0, 2)
    state.apply([Txn("c1", t0 - datagen.DAY_MS - 1, (4.0, "m3"))])  # older than the longest window
    assert state.stats.late == 1 and state.values_at("c1", t0) == (2, 2, 3.0, 2)


def test_redelivered_offsets_are_not_counted_twice(topo: VelocityTopology) -> None:
    state = VelocityState(topo, DictStore())
    t0 = datagen.WORLD_EPOCH_MS
    batch = [Txn("c1", t0 + i, (1.0, "m1"), partition=2, offset=100 + i) for i in range(3)]
    state.apply(batch)
    state.apply(batch)  # a restart before the offsets were committed delivers them again
    assert state.values_at("c1", t0 + 2) == (3, 3, 3.0, 1)
    assert state.stats.replayed == 3


def test_failed_writes_are_requeued_and_restart_reindexes(topo: VelocityTopology) -> None:
    store = DictStore()
    state = VelocityState(topo, store)
    t0 = datagen.WORLD_EPOCH_MS
    state.apply([Txn("c1", t0, (1.0, "m1"), 0, 1), Txn("c2", t0, (2.0, "m1"), 1, 1)])
    rows = state.drain(1)
    assert len(rows) == 1 and state.dirty_count == 1
    state.requeue(card for card, _ in rows)
    assert {c for c, _ in state.drain(10)} == {"c1", "c2"}
    fresh = VelocityState(topo, store)  # a restarted job over the recovered table
    assert fresh.reindex({1}) == 1
    assert dict(fresh.drain(10)) == {"c2": (1, 1, 2.0, 1)}


def test_decode_event_skips_bad_input_with_a_reason(topo: VelocityTopology) -> None:
    good = {"card_id": "c1", "merchant_id": "m1", "amount": 12.5, "event_time_ms": 1_700_000_000_000}
    tx = decode_event(orjson.dumps(good), topo, 3, 42)
    assert tx == Txn("c1", 1_700_000_000_000, (12.5, "m1"), 3, 42)
    cases = {
        b"{not json": "invalid_json",
        b"[1]": "not_an_object",
        b"": "empty",
        orjson.dumps({**good, "card_id": ""}): "bad_field:card_id",
        orjson.dumps({**good, "event_time_ms": "now"}): "bad_field:event_time_ms",
        orjson.dumps({**good, "event_time_ms": True}): "bad_field:event_time_ms",
        orjson.dumps({**good, "amount": "12"}): "bad_field:amount",
        orjson.dumps({**good, "amount": -5.0}): "bad_field:amount",
        orjson.dumps(good).replace(b'"amount":12.5', b'"amount":1e999'): "invalid_json",  # orjson refuses inf
        orjson.dumps({k: v for k, v in good.items() if k != "merchant_id"}): "bad_field:merchant_id",
    }
    for raw, reason in cases.items():
        assert decode_event(raw, topo, 0, 0) == reason, raw


# ---- Feast's Redis layout ------------------------------------------------------------------


def _feature_repo_view(name: str) -> Any:
    spec = importlib.util.spec_from_file_location("velocity_test_feature_repo", ROOT / "feature_repo" / "features.py")
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
def layout(topo: VelocityTopology) -> FeastRedisLayout:
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


def test_view_and_aggregates_must_match(topo: VelocityTopology) -> None:
    fv = _feature_repo_view("card_velocity")
    fewer = topo.model_copy(update={"aggregates": {k: v for k, v in topo.aggregates.items() if k != "txn_count_1h"}})
    with pytest.raises(VelocityConfigError, match="make them match"):
        layout_for_view(fewer, fv, "streamscore", 3)
    swapped = dict(topo.aggregates)
    swapped["amount_sum_1h"], swapped["txn_count_10m"] = topo.aggregates["txn_count_10m"], topo.aggregates["amount_sum_1h"]
    with pytest.raises(VelocityConfigError, match="needs"):
        layout_for_view(topo.model_copy(update={"aggregates": swapped}), fv, "streamscore", 3)
    with pytest.raises(VelocityConfigError, match="got Feast view"):
        layout_for_view(topo, _feature_repo_view("card_profile"), "streamscore", 3)
