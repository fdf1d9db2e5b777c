"""Model inputs: the vocabulary, the fraud v1 spec by hand, specs refused with their names."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workers.events import EventBatch, OnlineFeatures
from workers.model.inputs import Assembler, FrameColumns, InputSpec, InputSpecError
from workers.schema import EventSchema

ROOT = Path(__file__).resolve().parents[3]
V1 = InputSpec.parse(yaml.safe_load((ROOT / "examples" / "fraud" / "inputs_v1.yaml").read_text()))
ON = V1.online_numeric
VIEWS = ("card_profile", "merchant_risk", "card_velocity")
HOME, PRIMARY = "card_profile:home_country", "card_profile:primary_device"


def batch(amount: list[float], time_ms: list[int], country: list[str], device: list[str]) -> EventBatch:
    n = len(amount)
    i64 = np.zeros(n, dtype=np.int64)
    return EventBatch(
        {"amount": np.array(amount, dtype=np.float64), "event_time_ms": np.array(time_ms, dtype=np.int64),
         "country": np.array(country, dtype=object), "device_id": np.array(device, dtype=object)}, {},
        key=np.full(n, None, dtype=object), topic=np.array(["t"] * n, dtype=object), partition=i64, offset=i64,
        received_ns=i64, kafka_ts_ms=i64,
    )


def online(numeric: np.ndarray, home: list[str], primary: list[str]) -> OnlineFeatures:
    n = numeric.shape[0]
    none = np.zeros(n, dtype=bool)
    return OnlineFeatures(numeric=numeric.astype(np.float32),
                          strings={HOME: np.array(home, dtype=object), PRIMARY: np.array(primary, dtype=object)},
                          missing={v: none for v in VIEWS}, stale={v: none for v in VIEWS})


def assemble(b: object, o: OnlineFeatures, spec: InputSpec = V1) -> np.ndarray:  # type: ignore[type-arg]
    return Assembler(spec, spec.online_numeric).assemble(b, o)  # type: ignore[arg-type]


def col(ref: str) -> int:
    return ON.index(ref)


def test_v1_has_26_named_columns_and_fetches_17_plus_2_features() -> None:
    assert len(V1.columns) == 26 and len(set(V1.columns)) == 26
    assert len(ON) == 17 and V1.online_strings == (HOME, PRIMARY)
    assert V1.event_columns == ("amount", "event_time_ms", "country", "device_id")


def test_hand_computed_row() -> None:
    num = np.zeros((1, len(ON)), dtype=np.float32)
    num[0, col("card_profile:avg_amount")] = 40.0
    num[0, col("card_profile:std_amount")] = 20.0
    num[0, col("merchant_risk:avg_amount")] = 80.0
    num[0, col("card_velocity:txn_count_10m")] = 3.0
    num[0, col("card_profile:is_premium")] = 1.0
    t = 1_704_067_200_000 + 3 * 3_600_000 + 30 * 60_000  # 03:30 UTC
    x = assemble(batch([100.0], [t], ["FR"], ["dev-b"]), online(num, ["DE"], ["dev-a"]))
    assert x.shape == (1, 26) and x.dtype == np.float32
    f = dict(zip(V1.columns, x[0].tolist()))
    angle = 3.5 / 24.0 * 2.0 * math.pi
    assert f["event:log_amount"] == pytest.approx(math.log1p(100.0), rel=1e-6)
    assert f["event:hour_sin"] == pytest.approx(math.sin(angle), abs=1e-6)
    assert f["event:hour_cos"] == pytest.approx(math.cos(angle), abs=1e-6)
    assert f["event:is_night"] == 1.0
    assert f["event:country_mismatch"] == 1.0 and f["event:device_mismatch"] == 1.0
    assert f["event:amount_to_card_avg"] == pytest.approx(2.5)
    assert f["event:amount_zscore"] == pytest.approx(3.0)
    assert f["event:amount_to_merchant_avg"] == pytest.approx(1.25)
    assert f["card_velocity:txn_count_10m"] == 3.0 and f["card_profile:is_premium"] == 1.0
    assert f["card_profile:avg_amount"] == 40.0


def test_zeros_unknown_strings_and_bad_online_values_stay_finite() -> None:
    n = 4
    num = np.zeros((n, len(ON)), dtype=np.float32)
    x = assemble(batch([0.0, 1e9, 5.0, 3.0], [0, 1, 2, 3], ["DE"] * n, ["d"] * n), online(num, [""] * n, [""] * n))
    assert np.isfinite(x).all()
    mism = x[:, [V1.columns.index("event:country_mismatch"), V1.columns.index("event:device_mismatch")]]
    assert (mism == 0.0).all()  # an unknown home country / device is not evidence of a mismatch
    assert x[1, V1.columns.index("event:amount_to_card_avg")] == 1000.0  # the ratio's max
    bad = np.full((2, len(ON)), np.nan, dtype=np.float32)
    bad[1, :] = np.inf
    assert np.isfinite(assemble(batch([5.0, 5.0], [0, 0], ["DE"] * 2, ["d"] * 2), online(bad, ["DE"] * 2, ["d"] * 2))).all()


def test_a_dataframe_assembles_like_a_batch() -> None:
    df = pd.DataFrame({"amount": [3.0, 50.0], "event_time_ms": [10, 20_000_000], "country": ["US", "DE"],
                       "device_id": ["a", "b"]})
    feats = online(np.random.default_rng(0).uniform(1, 100, (2, len(ON))), ["US", "US"], ["a", "a"])
    np.testing.assert_array_equal(assemble(FrameColumns.of(df), feats),
                                  assemble(batch([3.0, 50.0], [10, 20_000_000], ["US", "DE"], ["a", "b"]), feats))


def test_empty_batch_and_shape_mismatch() -> None:
    assert assemble(batch([], [], [], []), online(np.zeros((0, len(ON))), [], [])).shape == (0, 26)
    with pytest.raises(ValueError, match="shape"):
        assemble(batch([1.0, 2.0], [0, 0], ["US"] * 2, ["a"] * 2), online(np.zeros((1, len(ON))), ["US"], ["a"]))


# ---- the rest of the vocabulary, on a made-up login schema --------------------------------------

SPEC = [
    {"name": "fails", "op": "field", "of": "login.failed_attempts", "fill": -1},
    {"name": "success", "op": "field", "of": "login.success"},
    {"name": "hour_in_night", "op": "hour_in_range", "of": "event_time_ms", "from": 22, "to": 6},
    {"name": "clipped", "op": "clip", "of": "login.failed_attempts", "min": 0, "max": 5},
    {"name": "bucket", "op": "bucket", "of": "login.failed_attempts", "edges": [1, 3, 10]},
    {"name": "os", "op": "one_hot", "of": "device.os", "values": ["ios", "android"], "other": True},
    {"name": "same_country", "op": "equal", "of": ["geo.country", "user_profile:home_country"], "unknown": 0.5},
    {"name": "no_attempts", "op": "is_missing", "of": "login.failed_attempts"},
    {"name": "no_profile", "op": "is_missing", "view": "user_profile"},
    {"name": "age_log", "op": "log1p", "of": "user_profile:account_age_days"},
    {"name": "p", "op": "hook", "function": "tests.unit.model.test_inputs:double_age",
     "reads": ["user_profile:account_age_days", "login.failed_attempts"], "outputs": ["age_x2", "one"]},
]


def double_age(events: dict[str, np.ndarray], online: dict[str, np.ndarray]) -> np.ndarray:  # type: ignore[type-arg]
    assert set(events) == {"login.failed_attempts"} and set(online) == {"user_profile:account_age_days"}
    age = online["user_profile:account_age_days"]
    return np.stack([2 * age, np.ones_like(age)], axis=1)


def test_every_op_on_nested_optional_fields() -> None:
    spec = InputSpec.parse(SPEC)
    assert spec.columns[5:8] == ("os=ios", "os=android", "os=other") and spec.columns[-2:] == ("age_x2", "one")
    n = 4
    ev = FrameColumns.of({
        "login.failed_attempts": pd.array([0, 4, None, 12], dtype="Int64").to_numpy(dtype=float, na_value=np.nan),
        "login.success": np.array([True, False, True, False]),
        "event_time_ms": np.array([23, 2, 12, 6], dtype=np.int64) * 3_600_000,
        "device.os": np.array(["ios", "android", "linux", None], dtype=object),
        "geo.country": np.array(["US", "DE", "US", "US"], dtype=object),
    })
    on = OnlineFeatures(np.array([[10.0], [0.0], [3.0], [-5.0]], np.float32),
                        {"user_profile:home_country": np.array(["US", "US", "", "US"], dtype=object)},
                        {"user_profile": np.array([False, False, True, False])}, {})
    x = Assembler(spec, spec.online_numeric).assemble(ev, on)
    f = {c: x[:, i].tolist() for i, c in enumerate(spec.columns)}
    assert f["fails"] == [0, 4, -1, 12]  # fill where null
    assert f["success"] == [1, 0, 1, 0]
    assert f["hour_in_night"] == [1, 1, 0, 0]  # 22:00-06:00 wraps past midnight
    assert f["clipped"] == [0, 4, 0, 5]  # NaN (null) -> 0 at the end
    assert f["bucket"] == [0, 2, 3, 3]  # NaN sorts last: the top bucket
    assert (f["os=ios"], f["os=android"], f["os=other"]) == ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1])
    assert f["same_country"] == [1, 0, 0.5, 1]  # unknown where the profile has no home country
    assert f["no_attempts"] == [0, 0, 1, 0] and f["no_profile"] == [0, 0, 1, 0]
    assert f["age_log"] == pytest.approx([math.log1p(10), 0, math.log1p(3), 0])  # log1p of max(x, 0)
    assert f["age_x2"] == [20, 0, 6, -10] and f["one"] == [1, 1, 1, 1]


def test_a_spec_round_trips_through_its_manifest_form() -> None:
    spec = InputSpec.parse(SPEC)
    again = InputSpec.parse(spec.to_list())
    assert again == spec and again.columns == spec.columns


@pytest.mark.parametrize(("entry", "msg"), [
    ({"name": "a", "op": "ratio", "of": ["x"]}, r"inputs\[0\] \(a\): of"),
    ({"name": "a", "op": "sqrt", "of": "x"}, "does not match any of the expected tags"),
    ({"name": "a", "op": "clip", "of": "x", "min": 2, "max": 1}, "min 2.0 > max 1.0"),
    ({"name": "a", "op": "bucket", "of": "x", "edges": [3, 1]}, "strictly increasing"),
    ({"name": "a", "op": "is_missing"}, "exactly one of"),
    ({"name": "a", "op": "log1p", "of": "x", "base": 2}, "Extra inputs are not permitted"),
])
def test_malformed_entries_name_the_entry(entry: dict[str, object], msg: str) -> None:
    with pytest.raises(InputSpecError, match=msg):
        InputSpec.parse([entry])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(InputSpecError, match="duplicate input names"):
        InputSpec.parse([{"name": "a", "op": "log1p", "of": "x"}, {"name": "a", "op": "log1p", "of": "y"}])


def test_check_names_every_input_the_schema_or_service_cannot_serve() -> None:
    schema = EventSchema.model_validate({"name": "login", "version": 1, "fields": {
        "user_id": {"type": "string"}, "login.success": {"type": "boolean"}, "device.os": {"type": "string"},
        "event_time_ms": {"type": "integer"}}})
    spec = InputSpec.parse([
        {"name": "a", "op": "log1p", "of": "amount"},  # no such field
        {"name": "b", "op": "log1p", "of": "device.os"},  # a string as a number
        {"name": "c", "op": "equal", "of": ["login.success", "device.os"]},  # a boolean as a string
        {"name": "d", "op": "log1p", "of": "user_profile:missing_feature"},  # not served
        {"name": "e", "op": "equal", "of": ["device.os", "user_profile:age"]},  # numeric served, read as string
        {"name": "ok", "op": "hour_sin", "of": "event_time_ms"},
    ])
    with pytest.raises(InputSpecError) as e:
        spec.check(schema, {"user_profile:age": "numeric"}, "t.yaml")
    msg = str(e.value)
    for name in ("'a'", "'b'", "'c'", "'d'", "'e'"):
        assert f"input {name}" in msg
    assert "'ok'" not in msg
    spec.entries[-1:]  # noqa: B018  (the last entry alone passes)
    InputSpec(spec.entries[-1:]).check(schema, {}, "t.yaml")
