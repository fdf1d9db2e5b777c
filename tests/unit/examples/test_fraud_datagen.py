from __future__ import annotations

import re
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.fraud import datagen


@pytest.fixture(scope="module")
def small() -> datagen.World:
    return datagen.generate(3, n_cards=400, n_merchants=60, n_txns=20_000)


@pytest.fixture(scope="module")
def default_world() -> datagen.World:
    # The world training and setup_features use; generating it takes well under a second.
    return datagen.generate(7)


def test_same_seed_same_world(small: datagen.World) -> None:
    again = datagen.generate(3, n_cards=400, n_merchants=60, n_txns=20_000)
    pd.testing.assert_frame_equal(small.cards, again.cards)
    pd.testing.assert_frame_equal(small.merchants, again.merchants)
    pd.testing.assert_frame_equal(small.transactions, again.transactions)


def test_other_seed_other_world(small: datagen.World) -> None:
    other = datagen.generate(4, n_cards=400, n_merchants=60, n_txns=20_000)
    assert not small.cards["avg_amount"].equals(other.cards["avg_amount"])


def test_entities_do_not_depend_on_transaction_count(small: datagen.World) -> None:
    more = datagen.generate(3, n_cards=400, n_merchants=60, n_txns=30_000)
    cols = [c for c in small.cards.columns if c != "txn_count_30d"]
    pd.testing.assert_frame_equal(small.cards[cols], more.cards[cols])
    pd.testing.assert_frame_equal(small.merchants, more.merchants)


def test_shapes_and_ids(small: datagen.World) -> None:
    tx = small.transactions
    assert len(tx) == 20_000
    assert tx["event_time_ms"].is_monotonic_increasing
    assert set(tx["card_id"]) <= set(small.cards["card_id"])
    assert set(tx["merchant_id"]) <= set(small.merchants["merchant_id"])
    assert tx["event_id"].is_unique
    assert (tx["amount"] > 0).all()
    assert small.cards["home_country"].isin(datagen.COUNTRIES).all()


def test_velocity_matches_brute_force(small: datagen.World) -> None:
    tx = small.transactions
    rng = np.random.default_rng(0)
    # Rows of the busiest cards exercise non-trivial windows.
    busy = tx["card_id"].value_counts().index[:5]
    sample = np.concatenate([rng.integers(0, len(tx), 100), np.flatnonzero(tx["card_id"].isin(busy))[:200]])
    for i in sample:
        r = tx.iloc[i]
        same = tx[tx["card_id"] == r.card_id]
        before = same[same.index < i]  # sorted by time; equal times count in row order
        t = r.event_time_ms
        w10 = before[before.event_time_ms >= t - datagen.WINDOW_10M_MS]
        w1h = before[before.event_time_ms >= t - datagen.WINDOW_1H_MS]
        w1d = before[before.event_time_ms >= t - datagen.WINDOW_1D_MS]
        assert r.txn_count_10m == len(w10)
        assert r.txn_count_1h == len(w1h)
        assert r.amount_sum_1h == pytest.approx(w1h.amount.sum(), rel=1e-5, abs=1e-3)
        assert r.distinct_merchants_1d == w1d.merchant_id.nunique()


def test_labels_carry_signal(default_world: datagen.World) -> None:
    tx = default_world.transactions
    cards = default_world.cards.set_index("card_id")
    rate = tx["is_fraud"].mean()
    assert 0.01 < rate < 0.04
    # Bursts are where fraud concentrates, and velocity is what reveals a burst.
    assert tx.loc[tx.is_burst, "is_fraud"].mean() > 20 * tx.loc[~tx.is_burst, "is_fraud"].mean()
    fast = tx["txn_count_10m"] > 0
    assert tx.loc[fast, "is_fraud"].mean() > 5 * tx.loc[~fast, "is_fraud"].mean()
    # Each observable in the labelling logistic moves the fraud rate the right way.
    new_device = tx["device_id"].to_numpy() != cards.loc[tx["card_id"], "primary_device"].to_numpy()
    abroad = tx["country"].to_numpy() != cards.loc[tx["card_id"], "home_country"].to_numpy()
    big = tx["amount"].to_numpy() > 3 * cards.loc[tx["card_id"], "avg_amount"].to_numpy()
    y = tx["is_fraud"].to_numpy()
    for flag in (new_device, abroad, big):
        assert y[flag].mean() > 3 * y[~flag].mean()


def test_write_offline(tmp_path: Path, small: datagen.World) -> None:
    ts = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)
    datagen.write_offline(small, tmp_path, ts)
    expect = {
        "card_profile": (len(small.cards), "card_id"),
        "merchant_risk": (len(small.merchants), "merchant_id"),
        "card_velocity": (len(small.cards), "card_id"),
    }
    for name, (rows, key) in expect.items():
        df = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert len(df) == rows and df[key].is_unique
        assert (df["event_timestamp"] == pd.Timestamp(ts)).all()
        assert (df["created"] == pd.Timestamp(ts)).all()
    prof = pd.read_parquet(tmp_path / "card_profile.parquet")
    assert prof["avg_amount"].dtype == np.float32 and prof["is_premium"].dtype == bool
    assert list(tmp_path.glob(".*.tmp")) == []


def test_velocity_at_end_counts_recent_transactions(small: datagen.World) -> None:
    end = int(small.transactions["event_time_ms"].max()) + 1
    vel = datagen.velocity_at(small, end)
    tx = small.transactions
    last_hour = tx[tx.event_time_ms >= end - datagen.WINDOW_1H_MS]
    assert vel["txn_count_1h"].sum() == len(last_hour)
    assert vel["amount_sum_1h"].sum() == pytest.approx(last_hour.amount.sum(), rel=1e-4)


_WIRE_KEYS = {"event_id", "card_id", "merchant_id", "amount", "currency", "country", "device_id", "event_time_ms"}


def test_iter_events_wire_schema_and_entities() -> None:
    params = datagen.WorldParams(n_cards=400, n_merchants=60)
    start = 1_800_000_000_000
    events = list(datagen.iter_events(3, params, start, limit=20_000))
    assert len(events) == 20_000
    known_cards = set(datagen.card_ids(400))
    known_merchants = set(datagen.merchant_ids(60))
    for ev in events[:500]:
        assert set(ev) == _WIRE_KEYS
        assert isinstance(ev["event_id"], str) and isinstance(ev["amount"], float)
        assert isinstance(ev["event_time_ms"], int) and ev["event_time_ms"] >= start
        assert re.fullmatch(r"[A-Z]{3}", str(ev["currency"])) and re.fullmatch(r"[A-Z]{2}", str(ev["country"]))
    times = [int(str(e["event_time_ms"])) for e in events]
    assert times == sorted(times)
    assert len({e["event_id"] for e in events}) == len(events)
    unknown = sum(e["card_id"] not in known_cards or e["merchant_id"] not in known_merchants for e in events)
    assert 0.005 < unknown / len(events) < 0.02
    assert all(str(e["card_id"]).startswith(datagen.UNKNOWN_CARD_PREFIX) for e in events if e["card_id"] not in known_cards)


def test_iter_events_is_deterministic_and_shares_entities(small: datagen.World) -> None:
    a = list(datagen.iter_events(3, small, 1_800_000_000_000, limit=3000))
    b = list(islice(datagen.iter_events(3, small.params, 1_800_000_000_000), 3000))
    assert a == b
    assert {e["card_id"] for e in a} & set(small.cards["card_id"])


def test_iter_events_defaults_run() -> None:
    ev = next(datagen.iter_events(7))
    assert set(ev) == _WIRE_KEYS
