"""The one function that turns events + online features into model input: ``assemble``.

Training and the worker both call ``assemble``, so a model never sees columns built one way in
training and another way in serving. It is vectorized numpy over the batch: no Python per row.

Model inputs are named: event-derived columns ``"event:<name>"`` (``EVENT_FEATURES``) and online
numeric features by their ``"view:feature"`` ref. A manifest's ``feature_order`` picks and orders
them; the v1 layout is ``FEATURE_ORDER_V1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from workers.events import F32Array, F64Array, I64Array, ObjArray, OnlineFeatures

# Online refs that event-derived features depend on; every layout must fetch them.
CARD_AVG = "card_profile:avg_amount"
CARD_STD = "card_profile:std_amount"
MERCHANT_AVG = "merchant_risk:avg_amount"
HOME_COUNTRY = "card_profile:home_country"
PRIMARY_DEVICE = "card_profile:primary_device"

NIGHT_END_HOUR = 6  # hours [0, 6) UTC count as night, as in the generator
# Ratios and z-scores are clipped: an amount 1000x a card's average is already as suspicious as
# it gets, and unbounded inputs would push an MLP far outside anything it was trained on.
RATIO_MAX = 1000.0
ZSCORE_ABS_MAX = 100.0
# Denominator floors (same unit as amounts): a card with a ~0 average or std is not a reason to
# divide by ~0.
AMOUNT_FLOOR = 1.0

EVENT_FEATURES: tuple[str, ...] = (
    "event:log_amount",  # log1p(amount)
    "event:hour_sin",  # hour of day (UTC, fractional) on the unit circle
    "event:hour_cos",
    "event:is_night",  # 1 if hour < NIGHT_END_HOUR
    "event:country_mismatch",  # 1 if country != card's home country (0 when home is unknown)
    "event:device_mismatch",  # 1 if device != card's primary device (0 when unknown)
    "event:amount_to_card_avg",  # amount / max(card avg, 1)
    "event:amount_zscore",  # (amount - card avg) / max(card std, 1)
    "event:amount_to_merchant_avg",  # amount / max(merchant avg, 1)
)

ONLINE_NUMERIC_V1: tuple[str, ...] = (
    "card_profile:avg_amount",
    "card_profile:std_amount",
    "card_profile:txn_count_30d",
    "card_profile:account_age_days",
    "card_profile:night_txn_ratio",
    "card_profile:chargeback_count",
    "card_profile:is_premium",
    "merchant_risk:fraud_rate",
    "merchant_risk:chargeback_rate",
    "merchant_risk:avg_amount",
    "merchant_risk:category_risk",
    "merchant_risk:age_days",
    "merchant_risk:is_online",
    "card_velocity:txn_count_10m",
    "card_velocity:txn_count_1h",
    "card_velocity:amount_sum_1h",
    "card_velocity:distinct_merchants_1d",
)
ONLINE_STRINGS_V1: tuple[str, ...] = (HOME_COUNTRY, PRIMARY_DEVICE)
FEATURE_ORDER_V1: tuple[str, ...] = EVENT_FEATURES + ONLINE_NUMERIC_V1


class EventColumns(Protocol):
    """The event columns ``assemble`` reads. ``workers.events.EventBatch`` satisfies it."""

    @property
    def amount(self) -> F64Array: ...

    @property
    def event_time_ms(self) -> I64Array: ...

    @property
    def country(self) -> ObjArray: ...

    @property
    def device_id(self) -> ObjArray: ...


class FeatureLayout(Protocol):
    """What ``assemble`` needs from a model manifest. ``ModelManifest`` satisfies it."""

    @property
    def feature_order(self) -> tuple[str, ...]: ...

    @property
    def online_numeric(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Columns:
    """Plain event columns, e.g. built from a training DataFrame with ``Columns.from_mapping``."""

    amount: F64Array
    event_time_ms: I64Array
    country: ObjArray
    device_id: ObjArray

    @staticmethod
    def from_mapping(cols: Mapping[str, object]) -> Columns:
        """From anything indexable by column name (a DataFrame, a dict of arrays)."""
        return Columns(
            amount=np.asarray(cols["amount"], dtype=np.float64),
            event_time_ms=np.asarray(cols["event_time_ms"], dtype=np.int64),
            country=np.asarray(cols["country"], dtype=object),
            device_id=np.asarray(cols["device_id"], dtype=object),
        )


@dataclass(frozen=True)
class Layout:
    """A ``FeatureLayout`` without a manifest (training builds its input before the manifest)."""

    feature_order: tuple[str, ...] = FEATURE_ORDER_V1
    online_numeric: tuple[str, ...] = ONLINE_NUMERIC_V1


@dataclass(frozen=True)
class _Plan:
    """Where each output column comes from: event feature or online numeric column indices."""

    out_event: list[int]
    src_event: list[int]
    out_online: list[int]
    src_online: list[int]


@lru_cache(maxsize=64)
def _plan(feature_order: tuple[str, ...], online_numeric: tuple[str, ...]) -> _Plan:
    # Resolved once per layout, so a batch only pays for two fancy-indexed copies.
    ev = {name: i for i, name in enumerate(EVENT_FEATURES)}
    on = {ref: i for i, ref in enumerate(online_numeric)}
    for needed in (CARD_AVG, CARD_STD, MERCHANT_AVG):
        if needed not in on:
            raise ValueError(f"online_numeric must include {needed!r} (event features are computed from it)")
    plan = _Plan([], [], [], [])
    for j, name in enumerate(feature_order):
        if name in ev:
            plan.out_event.append(j)
            plan.src_event.append(ev[name])
        elif name in on:
            plan.out_online.append(j)
            plan.src_online.append(on[name])
        else:
            raise ValueError(
                f"feature {name!r} in feature_order is neither an event feature {EVENT_FEATURES} "
                "nor listed in online_numeric"
            )
    return plan


def _strings(online: OnlineFeatures, ref: str, n: int) -> ObjArray:
    col = online.strings.get(ref)
    if col is None:
        # No string features fetched: mismatch flags become 0, as for an unknown card.
        return np.full(n, "", dtype=object)
    return col


def event_features(events: EventColumns, online: OnlineFeatures, online_numeric: tuple[str, ...]) -> F64Array:
    """The ``EVENT_FEATURES`` columns, [n, len(EVENT_FEATURES)], float64, finite."""
    n = int(events.amount.shape[0])
    idx = {ref: i for i, ref in enumerate(online_numeric)}
    num = online.numeric
    card_avg = np.maximum(num[:, idx[CARD_AVG]].astype(np.float64), AMOUNT_FLOOR)
    card_std = np.maximum(num[:, idx[CARD_STD]].astype(np.float64), AMOUNT_FLOOR)
    merch_avg = np.maximum(num[:, idx[MERCHANT_AVG]].astype(np.float64), AMOUNT_FLOOR)
    # A negative or NaN amount should never pass decode; if one does, it must not yield NaN here.
    amount = np.nan_to_num(np.maximum(events.amount.astype(np.float64), 0.0), nan=0.0, posinf=0.0)

    ms_of_day = np.mod(events.event_time_ms, 86_400_000)
    hour = ms_of_day.astype(np.float64) / 3_600_000.0
    angle = hour * (2.0 * np.pi / 24.0)
    home = _strings(online, HOME_COUNTRY, n)
    primary = _strings(online, PRIMARY_DEVICE, n)
    out = np.empty((n, len(EVENT_FEATURES)), dtype=np.float64)
    out[:, 0] = np.log1p(amount)
    out[:, 1] = np.sin(angle)
    out[:, 2] = np.cos(angle)
    out[:, 3] = ms_of_day < NIGHT_END_HOUR * 3_600_000
    out[:, 4] = (events.country != home) & (home != "")
    out[:, 5] = (events.device_id != primary) & (primary != "")
    # NaN/inf can only come from corrupt online values; assemble() zeroes them afterwards.
    with np.errstate(invalid="ignore", over="ignore"):
        out[:, 6] = np.minimum(amount / card_avg, RATIO_MAX)
        out[:, 7] = np.clip((amount - card_avg) / card_std, -ZSCORE_ABS_MAX, ZSCORE_ABS_MAX)
        out[:, 8] = np.minimum(amount / merch_avg, RATIO_MAX)
    return out


def assemble(events: EventColumns, online: OnlineFeatures, layout: FeatureLayout) -> F32Array:
    """Model input [n, len(layout.feature_order)] float32, rows aligned with ``events``.

    Online numeric features are used as the reader delivered them (defaults already filled for
    missing entities; booleans as 0/1). The output is always finite.
    """
    n = int(events.amount.shape[0])
    if online.numeric.shape != (n, len(layout.online_numeric)):
        raise ValueError(
            f"online.numeric has shape {online.numeric.shape}, expected ({n}, {len(layout.online_numeric)})"
        )
    plan = _plan(tuple(layout.feature_order), tuple(layout.online_numeric))
    ev = event_features(events, online, tuple(layout.online_numeric))
    out = np.empty((n, len(layout.feature_order)), dtype=np.float32)
    if plan.out_event:
        out[:, plan.out_event] = ev[:, plan.src_event]
    if plan.out_online:
        out[:, plan.out_online] = online.numeric[:, plan.src_online]
    # Online values come from outside (Redis); a NaN written there must not reach the model.
    f32max = float(np.finfo(np.float32).max)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=f32max, neginf=-f32max)
    return out
