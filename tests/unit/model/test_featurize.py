from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workers.model import featurize
from workers.events import EventBatch, OnlineFeatures
from workers.model.featurize import EVENT_FEATURES, FEATURE_ORDER_V1, ONLINE_NUMERIC_V1, Columns, Layout, assemble

LAYOUT = Layout()
VIEWS = ("card_profile", "merchant_risk", "card_velocity")


def batch(amount: list[float], time_ms: list[int], country: list[str], device: list[str]) -> EventBatch:
    n = len(amount)
    o = np.array([f"x{i}" for i in range(n)], dtype=object)
    i64 = np.zeros(n, dtype=np.int64)
    return EventBatch(
        event_id=o, card_id=o, merchant_id=o, amount=np.array(amount, dtype=np.float64),
        currency=np.array(["EUR"] * n, dtype=object), country=np.array(country, dtype=object),
        device_id=np.array(device, dtype=object), event_time_ms=np.array(time_ms, dtype=np.int64),
        trace_id=np.full(n, None, dtype=object), key=np.full(n, None, dtype=object),
        topic=np.array(["t"] * n, dtype=object), partition=i64, offset=i64, received_ns=i64,
        kafka_ts_ms=i64,
    )


def online(numeric: np.ndarray, home: list[str], primary: list[str]) -> OnlineFeatures:
    n = numeric.shape[0]
    none = np.zeros(n, dtype=bool)
    return OnlineFeatures(
        numeric=numeric.astype(np.float32),
        strings={featurize.HOME_COUNTRY: np.array(home, dtype=object),
                 featurize.PRIMARY_DEVICE: np.array(primary, dtype=object)},
        missing={v: none for v in VIEWS}, stale={v: none for v in VIEWS},
    )


def col(ref: str) -> int:
    return ONLINE_NUMERIC_V1.index(ref)


def test_layout_v1_has_event_then_online_features() -> None:
    assert len(FEATURE_ORDER_V1) == len(EVENT_FEATURES) + len(ONLINE_NUMERIC_V1) == 26
    assert len(set(FEATURE_ORDER_V1)) == len(FEATURE_ORDER_V1)


def test_hand_computed_row() -> None:
    num = np.zeros((1, len(ONLINE_NUMERIC_V1)), dtype=np.float32)
    num[0, col("card_profile:avg_amount")] = 40.0
    num[0, col("card_profile:std_amount")] = 20.0
    num[0, col("merchant_risk:avg_amount")] = 80.0
    num[0, col("card_velocity:txn_count_10m")] = 3.0
    num[0, col("card_profile:is_premium")] = 1.0
    t = 1_704_067_200_000 + 3 * 3_600_000 + 30 * 60_000  # 03:30 UTC
    x = assemble(batch([100.0], [t], ["FR"], ["dev-b"]), online(num, ["DE"], ["dev-a"]), LAYOUT)
    assert x.shape == (1, 26) and x.dtype == np.float32
    f = dict(zip(FEATURE_ORDER_V1, x[0].tolist()))
    angle = 3.5 / 24.0 * 2.0 * math.pi
    assert f["event:log_amount"] == pytest.approx(math.log1p(100.0), rel=1e-6)
    assert f["event:hour_sin"] == pytest.approx(math.sin(angle), abs=1e-6)
    assert f["event:hour_cos"] == pytest.approx(math.cos(angle), abs=1e-6)
    assert f["event:is_night"] == 1.0
    assert f["event:country_mismatch"] == 1.0
    assert f["event:device_mismatch"] == 1.0
    assert f["event:amount_to_card_avg"] == pytest.approx(2.5)
    assert f["event:amount_zscore"] == pytest.approx(3.0)
    assert f["event:amount_to_merchant_avg"] == pytest.approx(1.25)
    assert f["card_velocity:txn_count_10m"] == 3.0
    assert f["card_profile:is_premium"] == 1.0
    assert f["card_profile:avg_amount"] == 40.0


def test_matching_country_and_device_and_daytime() -> None:
    num = np.full((1, len(ONLINE_NUMERIC_V1)), 10.0, dtype=np.float32)
    t = 1_704_067_200_000 + 14 * 3_600_000
    x = assemble(batch([10.0], [t], ["DE"], ["dev-a"]), online(num, ["DE"], ["dev-a"]), LAYOUT)
    f = dict(zip(FEATURE_ORDER_V1, x[0].tolist()))
    assert f["event:is_night"] == 0.0 and f["event:country_mismatch"] == 0.0 and f["event:device_mismatch"] == 0.0
    assert f["event:amount_zscore"] == 0.0


def test_zeros_and_unknown_strings_stay_finite() -> None:
    n = 4
    num = np.zeros((n, len(ONLINE_NUMERIC_V1)), dtype=np.float32)
    x = assemble(
        batch([0.0, 1e9, 5.0, 3.0], [0, 1, 2, 3], ["DE"] * n, ["d"] * n), online(num, [""] * n, [""] * n), LAYOUT
    )
    assert np.isfinite(x).all()
    f = x[:, [FEATURE_ORDER_V1.index("event:country_mismatch"), FEATURE_ORDER_V1.index("event:device_mismatch")]]
    assert (f == 0.0).all()  # unknown home country / device is not evidence of a mismatch
    assert x[1, FEATURE_ORDER_V1.index("event:amount_to_card_avg")] == featurize.RATIO_MAX


def test_bad_online_values_do_not_leak_nan() -> None:
    num = np.full((2, len(ONLINE_NUMERIC_V1)), np.nan, dtype=np.float32)
    num[1, :] = np.inf
    x = assemble(batch([5.0, 5.0], [0, 0], ["DE", "DE"], ["d", "d"]), online(num, ["DE", "DE"], ["d", "d"]), LAYOUT)
    assert np.isfinite(x).all()


def test_defaults_from_manifest_stay_finite() -> None:
    from workers.model.manifest import load_manifest
    from workers.settings import PROJECT_ROOT

    m = load_manifest(PROJECT_ROOT / "models", "fraud_mlp", 1)
    n = 8
    num = np.tile(np.asarray(m.numeric_defaults(), dtype=np.float32), (n, 1))
    strings = {r: np.full(n, m.defaults[r], dtype=object) for r in m.online_strings}
    none = np.zeros(n, dtype=bool)
    feats = OnlineFeatures(num, strings, {v: ~none for v in VIEWS}, {v: none for v in VIEWS})
    x = assemble(batch([12.0] * n, list(range(n)), ["US"] * n, ["d"] * n), feats, m)
    assert x.shape == (n, m.n_features) and np.isfinite(x).all()


def test_empty_batch() -> None:
    x = assemble(batch([], [], [], []), online(np.zeros((0, len(ONLINE_NUMERIC_V1))), [], []), LAYOUT)
    assert x.shape == (0, 26)


def test_dataframe_columns_match_event_batch() -> None:
    df = pd.DataFrame({"amount": [3.0, 50.0], "event_time_ms": [10, 20_000_000], "country": ["US", "DE"],
                       "device_id": ["a", "b"]})
    num = np.random.default_rng(0).uniform(1, 100, (2, len(ONLINE_NUMERIC_V1)))
    feats = online(num, ["US", "US"], ["a", "a"])
    a = assemble(Columns.from_mapping(df), feats, LAYOUT)
    b = assemble(batch([3.0, 50.0], [10, 20_000_000], ["US", "DE"], ["a", "b"]), feats, LAYOUT)
    np.testing.assert_array_equal(a, b)


def test_custom_order_and_errors() -> None:
    order = ("card_velocity:txn_count_1h", "event:log_amount")
    num = np.arange(len(ONLINE_NUMERIC_V1), dtype=np.float32)[None, :]
    x = assemble(batch([1.0], [0], ["US"], ["a"]), online(num, ["US"], ["a"]), Layout(order, ONLINE_NUMERIC_V1))
    assert x[0, 0] == col("card_velocity:txn_count_1h") and x[0, 1] == pytest.approx(math.log1p(1.0))
    with pytest.raises(ValueError, match="neither an event feature"):
        assemble(batch([1.0], [0], ["US"], ["a"]), online(num, ["US"], ["a"]), Layout(("nope",), ONLINE_NUMERIC_V1))
    with pytest.raises(ValueError, match="shape"):
        assemble(batch([1.0, 2.0], [0, 0], ["US"] * 2, ["a"] * 2), online(num, ["US"], ["a"]), LAYOUT)
