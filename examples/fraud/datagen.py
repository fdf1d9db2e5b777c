"""Seeded synthetic card-transaction world with real fraud signal.

One seed fixes everything: the cards and merchants (shared by the Feast tables, the training set
and the load producer's stream), the historical transactions used for training, and the stream.

How fraud arises here, so that the model has something true to learn:

* Ordinary traffic: a card buys near its usual amount, mostly in its home country, from its
  primary device, mostly in daytime (a per-card share happens at night).
* Fraud bursts: a compromised card is used from a new device, often abroad, at risky merchants,
  for larger amounts, several times within minutes. Bursts are what make velocity matter.
* The label of *every* transaction (burst or not) is drawn from one logistic of observable
  quantities (amount vs the card's usual amount, merchant risk, country and device mismatch,
  night hour, the four velocity values, chargeback history). Bursts merely put many rows where
  that logistic is high; ordinary rows can still be fraud, rarely.

Velocity values per transaction are "as of just before it": over the card's transactions with
``t - W <= t_j <= t`` that came before it (equal times in input order), the transaction itself excluded. A streaming job maintaining
``card_velocity`` should use the same windows.

Amounts are in one reference unit (think USD); ``currency`` is the currency of the country the
transaction happened in and is informational only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

# Fixed so that the same seed yields byte-identical tables on every machine and every day.
WORLD_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000

WINDOW_10M_MS = 10 * MIN_MS
WINDOW_1H_MS = HOUR_MS
WINDOW_1D_MS = DAY_MS

DEFAULT_N_CARDS = 5_000
DEFAULT_N_MERCHANTS = 500
DEFAULT_N_TXNS = 200_000
DEFAULT_SPAN_DAYS = 60

COUNTRIES: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "CA", "NL", "ES", "IT", "AU", "BR", "MX", "JP", "IN", "PL", "SE",
)
_HOME_WEIGHTS = np.array([30, 12, 10, 8, 6, 4, 4, 4, 4, 4, 3, 3, 3, 3, 2], dtype=np.float64)
CURRENCY_OF: dict[str, str] = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "CA": "CAD", "NL": "EUR", "ES": "EUR",
    "IT": "EUR", "AU": "AUD", "BR": "BRL", "MX": "MXN", "JP": "JPY", "IN": "INR", "PL": "PLN",
    "SE": "SEK",
}

# name, category risk, median ticket, share of online merchants, share of merchants
_CATEGORIES: tuple[tuple[str, float, float, float, float], ...] = (
    ("grocery", 0.05, 35.0, 0.10, 0.25),
    ("restaurant", 0.10, 28.0, 0.05, 0.20),
    ("fuel", 0.15, 45.0, 0.00, 0.10),
    ("pharmacy", 0.10, 25.0, 0.20, 0.05),
    ("retail", 0.30, 70.0, 0.40, 0.15),
    ("travel", 0.45, 320.0, 0.70, 0.05),
    ("electronics", 0.65, 240.0, 0.60, 0.08),
    ("digital_goods", 0.75, 20.0, 1.00, 0.07),
    ("gift_cards", 0.85, 100.0, 0.80, 0.03),
    ("gambling", 0.90, 60.0, 1.00, 0.02),
)

# Share of all transactions that belong to fraud bursts, and the logistic that labels every
# transaction. Tuned so that the overall fraud rate is about 2 % and a good model reaches
# a held-out AUC of about 0.95 (the Bayes limit is a little higher: labels are noisy on purpose).
_BURST_SHARE = 0.025
_LABEL_INTERCEPT = -7.4
_W_AMOUNT = 1.0  # per unit of clip(log(amount / usual), -2, 4)
_W_MERCHANT_RISK = 2.2
_W_COUNTRY = 1.6
_W_DEVICE = 1.9
_W_NIGHT = 0.8
_W_COUNT_10M = 0.9  # per log1p(count)
_W_COUNT_1H = 0.5
_W_SUM_1H = 0.4  # per log1p(sum / usual)
_W_DISTINCT_1D = 0.4  # per log1p(distinct - 1)
_W_CHARGEBACKS = 0.3
_W_PREMIUM = -0.5

# A very small unknown-entity share in the stream exercises the feature readers' defaults.
UNKNOWN_CARD_PREFIX = "cx"
UNKNOWN_MERCHANT_PREFIX = "mx"

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Obj = npt.NDArray[np.object_]


@dataclass(frozen=True)
class WorldParams:
    """Sizes of a world. Entities depend only on (seed, n_cards, n_merchants)."""

    n_cards: int = DEFAULT_N_CARDS
    n_merchants: int = DEFAULT_N_MERCHANTS
    n_txns: int = DEFAULT_N_TXNS
    span_days: int = DEFAULT_SPAN_DAYS

    @property
    def span_ms(self) -> int:
        return self.span_days * DAY_MS

    @property
    def txns_per_s(self) -> float:
        """Event-time density of the historical data (what the model's velocity values assume)."""
        return self.n_txns / (self.span_ms / 1000.0)


@dataclass(frozen=True)
class World:
    """Everything one seed generates.

    ``cards``: card_id, avg_amount, std_amount, txn_count_30d, account_age_days, night_txn_ratio,
    chargeback_count, is_premium, home_country, primary_device (plus generator-only columns
    activity, vulnerability, second_device).
    ``merchants``: merchant_id, category, category_risk, fraud_rate, chargeback_rate, avg_amount,
    age_days, is_online (plus popularity).
    ``transactions``: event_id, event_time_ms, card_id, merchant_id, amount, currency, country,
    device_id, is_burst, is_fraud, txn_count_10m, txn_count_1h, amount_sum_1h,
    distinct_merchants_1d; sorted by event_time_ms.
    """

    seed: int
    params: WorldParams
    cards: pd.DataFrame
    merchants: pd.DataFrame
    transactions: pd.DataFrame

    @property
    def end_ms(self) -> int:
        return WORLD_EPOCH_MS + self.params.span_ms


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    # Separate streams per purpose: entities must not change when n_txns changes.
    return np.random.default_rng([seed, stream, *extra])


def card_ids(n: int) -> Obj:
    return np.array([f"c{i:06d}" for i in range(n)], dtype=object)


def merchant_ids(n: int) -> Obj:
    return np.array([f"m{i:05d}" for i in range(n)], dtype=object)


def _hex_ids(rng: np.random.Generator, prefix: str, n: int, bits: int = 48) -> Obj:
    vals = rng.integers(0, 2**bits, size=n, dtype=np.int64)
    width = bits // 4
    return np.array([f"{prefix}{v:0{width}x}" for v in vals.tolist()], dtype=object)


def generate_entities(seed: int, n_cards: int, n_merchants: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cards and merchants of a world (without the transaction-derived ``txn_count_30d``)."""
    rng = _rng(seed, 1)
    # Cards
    premium = rng.random(n_cards) < 0.15
    usual = np.exp(rng.normal(np.log(45.0), 0.7, n_cards)) * np.where(premium, 1.8, 1.0)
    usual = np.clip(usual, 3.0, 3000.0)
    std = usual * rng.uniform(0.3, 1.0, n_cards)
    home = rng.choice(np.array(COUNTRIES, dtype=object), size=n_cards, p=_HOME_WEIGHTS / _HOME_WEIGHTS.sum())
    vulnerability = np.exp(rng.normal(0.0, 0.8, n_cards))
    cards = pd.DataFrame(
        {
            "card_id": card_ids(n_cards),
            "avg_amount": np.round(usual, 2).astype(np.float32),
            "std_amount": np.round(std, 2).astype(np.float32),
            "account_age_days": np.minimum(rng.exponential(800.0, n_cards).astype(np.int64) + 1, 3650),
            "night_txn_ratio": rng.beta(1.5, 12.0, n_cards).astype(np.float32),
            "chargeback_count": rng.poisson(0.12 * vulnerability).astype(np.int64),
            "is_premium": premium,
            "home_country": home,
            "primary_device": _hex_ids(rng, "d", n_cards),
            "second_device": _hex_ids(rng, "d", n_cards),
            "activity": np.exp(rng.normal(0.0, 0.8, n_cards)),
            "vulnerability": vulnerability,
        }
    )
    # Merchants
    cat_w = np.array([c[4] for c in _CATEGORIES])
    cat = rng.choice(len(_CATEGORIES), size=n_merchants, p=cat_w / cat_w.sum())
    cat_risk = np.array([c[1] for c in _CATEGORIES])[cat]
    risk = np.clip(cat_risk + rng.normal(0.0, 0.05, n_merchants), 0.0, 1.0)
    fraud_rate = 0.002 * np.exp(3.5 * risk) * np.exp(rng.normal(0.0, 0.3, n_merchants))
    merchants = pd.DataFrame(
        {
            "merchant_id": merchant_ids(n_merchants),
            "category": np.array([c[0] for c in _CATEGORIES], dtype=object)[cat],
            "category_risk": risk.astype(np.float32),
            "fraud_rate": fraud_rate.astype(np.float64),
            "chargeback_rate": (fraud_rate * rng.uniform(0.4, 1.2, n_merchants) + 0.0005).astype(np.float32),
            "avg_amount": np.round(
                np.array([c[2] for c in _CATEGORIES])[cat] * np.exp(rng.normal(0.0, 0.3, n_merchants)), 2
            ).astype(np.float32),
            "age_days": rng.exponential(900.0, n_merchants).astype(np.int64) + 30,
            "is_online": rng.random(n_merchants) < np.array([c[3] for c in _CATEGORIES])[cat],
            "popularity": np.exp(rng.normal(0.0, 1.0, n_merchants)),
        }
    )
    return cards, merchants


def _hours(rng: np.random.Generator, night_ratio: F64) -> I64:
    # Daytime hours peak around lunch and early evening; night (0-5 UTC) per the card's habit.
    day_w = np.array([1, 2, 4, 6, 7, 8, 9, 8, 7, 7, 8, 9, 9, 8, 6, 4, 3, 2], dtype=np.float64)
    day = rng.choice(np.arange(6, 24), size=night_ratio.shape[0], p=day_w / day_w.sum())
    night = rng.integers(0, 6, size=night_ratio.shape[0])
    return np.where(rng.random(night_ratio.shape[0]) < night_ratio, night, day).astype(np.int64)


def _simulate(
    rng: np.random.Generator,
    cards: pd.DataFrame,
    merchants: pd.DataFrame,
    n: int,
    start_ms: int,
    span_ms: int,
) -> pd.DataFrame:
    """``n`` raw transactions (ordinary + bursts) starting in [start_ms, start_ms + span_ms).

    Burst members may fall after the span's end (a burst lasts minutes); callers that stream
    carry those over. Rows are sorted by event time; no labels, no velocity.
    """
    n_cards, n_merch = len(cards), len(merchants)
    usual = cards["avg_amount"].to_numpy(np.float64)
    std = cards["std_amount"].to_numpy(np.float64)
    m_avg = merchants["avg_amount"].to_numpy(np.float64)
    m_risk = merchants["category_risk"].to_numpy(np.float64)
    pop = merchants["popularity"].to_numpy(np.float64)
    home = cards["home_country"].to_numpy(object)
    countries = np.array(COUNTRIES, dtype=object)

    # Bursts: lengths 1..15 (mean about 4) until they fill their share of n.
    n_burst_target = int(round(n * _BURST_SHARE))
    lengths: list[int] = []
    total = 0
    while total < n_burst_target:
        k = int(min(1 + rng.geometric(0.28), 15))
        k = min(k, n_burst_target - total)
        lengths.append(k)
        total += k
    n_bursts = len(lengths)
    n_legit = n - total

    # Ordinary transactions.
    act = cards["activity"].to_numpy(np.float64)
    c = rng.choice(n_cards, size=n_legit, p=act / act.sum())
    t = start_ms + (rng.random(n_legit) * span_ms).astype(np.int64)
    # Shape hours of the day only when the span covers days; a short streaming window simply
    # takes whatever hour it is.
    diurnal = span_ms >= DAY_MS
    if diurnal:
        hour = _hours(rng, cards["night_txn_ratio"].to_numpy(np.float64)[c])
        t = t - (t - WORLD_EPOCH_MS) % DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, size=n_legit)
        t = np.clip(t, start_ms, start_ms + span_ms - 1)
    m = rng.choice(n_merch, size=n_legit, p=pop / pop.sum())
    sigma = np.sqrt(np.log1p((std[c] / usual[c]) ** 2))
    log_med = np.log(usual[c]) + 0.25 * np.log(m_avg[m] / 50.0)
    amount = np.exp(rng.normal(log_med, sigma))
    travel = rng.random(n_legit) < 0.04
    country = np.where(travel, countries[rng.integers(0, len(countries), n_legit)], home[c])
    u = rng.random(n_legit)
    device = np.where(
        u < 0.92,
        cards["primary_device"].to_numpy(object)[c],
        np.where(u < 0.98, cards["second_device"].to_numpy(object)[c], _hex_ids(rng, "d", n_legit)),
    )

    # Bursts: a vulnerable card, a fresh attacker device, often abroad, risky merchants, minutes apart.
    vul = cards["vulnerability"].to_numpy(np.float64)
    b_card = rng.choice(n_cards, size=n_bursts, p=vul / vul.sum())
    b_start = start_ms + (rng.random(n_bursts) * span_ms).astype(np.int64)
    if diurnal:
        at_night = rng.random(n_bursts) < 0.45
        b_day0 = b_start - (b_start - WORLD_EPOCH_MS) % DAY_MS
        b_start = np.where(at_night, b_day0 + rng.integers(0, 6 * HOUR_MS, size=n_bursts), b_start)
        b_start = np.maximum(b_start, start_ms)
    b_device = _hex_ids(rng, "d", n_bursts)
    abroad = rng.random(n_bursts) < 0.7
    b_country = np.where(abroad, countries[rng.integers(0, len(countries), n_bursts)], home[b_card])
    lens = np.array(lengths, dtype=np.int64)
    bi = np.repeat(np.arange(n_bursts), lens)
    first = np.repeat(np.cumsum(lens) - lens, lens)
    gaps = (rng.exponential(3.0 * MIN_MS, size=total)).astype(np.int64) + 1_000
    gaps[np.arange(total) == first] = 0  # the first member starts the burst
    bt = b_start[bi] + _segment_cumsum(gaps, lens)
    risky = pop * np.exp(4.0 * m_risk)
    bm = rng.choice(n_merch, size=total, p=risky / risky.sum())
    bc = b_card[bi]
    b_amount = usual[bc] * np.exp(rng.normal(np.log(3.0), 0.8, total))

    out = pd.DataFrame(
        {
            "event_time_ms": np.concatenate([t, bt]).astype(np.int64),
            "card_idx": np.concatenate([c, bc]).astype(np.int64),
            "merchant_idx": np.concatenate([m, bm]).astype(np.int64),
            "amount": np.round(np.clip(np.concatenate([amount, b_amount]), 0.5, 50_000.0), 2),
            "country": np.concatenate([country, b_country[bi]]),
            "device_id": np.concatenate([device, b_device[bi]]),
            "is_burst": np.concatenate([np.zeros(n_legit, bool), np.ones(total, bool)]),
        }
    )
    out = out.sort_values(["event_time_ms", "card_idx"], kind="stable").reset_index(drop=True)
    out.insert(0, "event_id", _hex_ids(rng, "e", len(out), bits=60))
    out["currency"] = out["country"].map(CURRENCY_OF).astype(object)
    return out


def _segment_cumsum(x: I64, lens: I64) -> I64:
    """Cumulative sum of ``x`` restarting at each segment of ``lens`` (vectorized)."""
    cs = np.cumsum(x)
    starts = np.cumsum(lens) - lens
    base = np.repeat(cs[starts] - x[starts], lens)
    return np.asarray(cs - base, dtype=np.int64)


def velocity(card_idx: I64, t_ms: I64, merchant_idx: I64, amount: F64) -> dict[str, np.ndarray]:
    """The four per-card velocity values of each row, as of just before it (row excluded).

    Windows are ``t - W <= t_j <= t`` over the same card's earlier rows; rows of equal time count in input
    order. Vectorized: sorting plus ``searchsorted``, and a short loop over window depth for
    the distinct-merchant count.
    """
    n = card_idx.shape[0]
    order = np.lexsort((np.arange(n), t_ms, card_idx))
    c, t, m, a = card_idx[order], t_ms[order], merchant_idx[order], amount[order]
    t_rel = t - t.min() if n else t
    big = int(t_rel.max() if n else 0) + 2 * DAY_MS
    key = c * big + t_rel
    pos = np.arange(n)

    def lo(window: int) -> I64:
        return np.searchsorted(key, key - window, side="left").astype(np.int64)

    lo10, lo1h, lo1d = lo(WINDOW_10M_MS), lo(WINDOW_1H_MS), lo(WINDOW_1D_MS)
    cs = np.concatenate([[0.0], np.cumsum(a)])
    # Index of the next row (in this order) with the same card and merchant, n if none.
    o2 = np.lexsort((pos, m, c))
    nxt = np.full(n, n, dtype=np.int64)
    same = (c[o2][1:] == c[o2][:-1]) & (m[o2][1:] == m[o2][:-1])
    nxt[o2[:-1][same]] = o2[1:][same]
    # A merchant counts once: at its last occurrence inside [lo, i).
    distinct = np.zeros(n, dtype=np.int64)
    depth = int((pos - lo1d).max()) if n else 0
    for d in range(1, depth + 1):
        j = pos - d
        ok = j >= lo1d
        jj = np.where(ok, j, 0)
        distinct += ok & (nxt[jj] >= pos)
    res_sorted = {
        "txn_count_10m": (pos - lo10).astype(np.int64),
        "txn_count_1h": (pos - lo1h).astype(np.int64),
        "amount_sum_1h": (cs[pos] - cs[lo1h]),
        "distinct_merchants_1d": distinct,
    }
    inv = np.empty(n, dtype=np.int64)
    inv[order] = pos
    return {k: v[inv] for k, v in res_sorted.items()}


def fraud_logit(
    amount: F64,
    usual: F64,
    merchant_risk: F64,
    country_mismatch: npt.NDArray[np.bool_],
    device_mismatch: npt.NDArray[np.bool_],
    is_night: npt.NDArray[np.bool_],
    vel: dict[str, np.ndarray],
    chargebacks: F64,
    premium: npt.NDArray[np.bool_],
) -> F64:
    """The ground-truth log-odds of fraud (what the generator labels with)."""
    ratio = np.clip(np.log(amount / usual), -2.0, 4.0)
    return np.asarray(
        _LABEL_INTERCEPT
        + _W_AMOUNT * ratio
        + _W_MERCHANT_RISK * merchant_risk
        + _W_COUNTRY * country_mismatch
        + _W_DEVICE * device_mismatch
        + _W_NIGHT * is_night
        + _W_COUNT_10M * np.log1p(vel["txn_count_10m"])
        + _W_COUNT_1H * np.log1p(vel["txn_count_1h"])
        + _W_SUM_1H * np.log1p(vel["amount_sum_1h"] / usual)
        + _W_DISTINCT_1D * np.log1p(np.maximum(vel["distinct_merchants_1d"] - 1, 0))
        + _W_CHARGEBACKS * chargebacks
        + _W_PREMIUM * premium,
        dtype=np.float64,
    )


def generate(
    seed: int,
    n_cards: int = DEFAULT_N_CARDS,
    n_merchants: int = DEFAULT_N_MERCHANTS,
    n_txns: int = DEFAULT_N_TXNS,
    span_days: int = DEFAULT_SPAN_DAYS,
) -> World:
    """A deterministic world: same arguments → identical DataFrames."""
    params = WorldParams(n_cards, n_merchants, n_txns, span_days)
    cards, merchants = generate_entities(seed, n_cards, n_merchants)
    rng = _rng(seed, 2)
    tx = _simulate(rng, cards, merchants, n_txns, WORLD_EPOCH_MS, params.span_ms)
    ci = tx["card_idx"].to_numpy(np.int64)
    mi = tx["merchant_idx"].to_numpy(np.int64)
    t = tx["event_time_ms"].to_numpy(np.int64)
    amt = tx["amount"].to_numpy(np.float64)
    vel = velocity(ci, t, mi, amt)
    logit = fraud_logit(
        amt,
        cards["avg_amount"].to_numpy(np.float64)[ci],
        merchants["category_risk"].to_numpy(np.float64)[mi],
        tx["country"].to_numpy(object) != cards["home_country"].to_numpy(object)[ci],
        tx["device_id"].to_numpy(object) != cards["primary_device"].to_numpy(object)[ci],
        ((t // HOUR_MS) % 24) < 6,
        vel,
        cards["chargeback_count"].to_numpy(np.float64)[ci],
        cards["is_premium"].to_numpy(bool)[ci],
    )
    is_fraud = rng.random(len(tx)) < 1.0 / (1.0 + np.exp(-logit))

    end = WORLD_EPOCH_MS + params.span_ms
    recent = t >= end - 30 * DAY_MS
    cards = cards.copy()
    cards.insert(3, "txn_count_30d", np.bincount(ci[recent], minlength=n_cards).astype(np.int64))

    tx = tx.assign(
        card_id=card_ids(n_cards)[ci],
        merchant_id=merchant_ids(n_merchants)[mi],
        is_fraud=is_fraud,
        txn_count_10m=vel["txn_count_10m"],
        txn_count_1h=vel["txn_count_1h"],
        amount_sum_1h=vel["amount_sum_1h"].astype(np.float32),
        distinct_merchants_1d=vel["distinct_merchants_1d"],
    )
    cols = [
        "event_id", "event_time_ms", "card_id", "merchant_id", "amount", "currency", "country",
        "device_id", "is_burst", "is_fraud", "txn_count_10m", "txn_count_1h", "amount_sum_1h",
        "distinct_merchants_1d",
    ]
    return World(seed, params, cards, merchants, tx[cols].reset_index(drop=True))


def velocity_at(world: World, as_of_ms: int) -> pd.DataFrame:
    """Each card's velocity values as of ``as_of_ms`` over the world's transactions."""
    tx = world.transactions
    t = tx["event_time_ms"].to_numpy(np.int64)
    idx = pd.Index(world.cards["card_id"]).get_indexer(tx["card_id"])
    amt = tx["amount"].to_numpy(np.float64)
    n = len(world.cards)

    def in_window(w: int) -> npt.NDArray[np.bool_]:
        return np.asarray((t >= as_of_ms - w) & (t < as_of_ms), dtype=np.bool_)

    w10, w1h, w1d = in_window(WINDOW_10M_MS), in_window(WINDOW_1H_MS), in_window(WINDOW_1D_MS)
    midx = pd.Index(world.merchants["merchant_id"]).get_indexer(tx["merchant_id"])
    pairs = np.unique(np.stack([idx[w1d], midx[w1d]]), axis=1)  # distinct (card, merchant) in the day
    return pd.DataFrame(
        {
            "card_id": world.cards["card_id"].to_numpy(object),
            "txn_count_10m": np.bincount(idx[w10], minlength=n).astype(np.int64),
            "txn_count_1h": np.bincount(idx[w1h], minlength=n).astype(np.int64),
            "amount_sum_1h": np.bincount(idx[w1h], weights=amt[w1h], minlength=n).astype(np.float32),
            "distinct_merchants_1d": np.bincount(pairs[0], minlength=n).astype(np.int64),
        }
    )


CARD_PROFILE_COLUMNS = (
    "card_id", "avg_amount", "std_amount", "txn_count_30d", "account_age_days", "night_txn_ratio",
    "chargeback_count", "is_premium", "home_country", "primary_device",
)
MERCHANT_RISK_COLUMNS = (
    "merchant_id", "fraud_rate", "chargeback_rate", "avg_amount", "category_risk", "age_days",
    "is_online",
)


def write_offline(world: World, data_dir: Path, ts: datetime) -> None:
    """Write the parquet files Feast's file sources read, every row stamped ``ts``.

    ``card_velocity`` holds each card's velocity as of the end of the world's history, which is
    what a streaming job would have left in the store; ``ts`` should be "now" so that
    materialization stays inside the views' TTLs.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    stamp = pd.Timestamp(ts)
    # A naive datetime is taken as UTC; Feast compares these stamps with aware UTC times.
    stamp = stamp.tz_convert("UTC") if stamp.tzinfo is not None else stamp.tz_localize("UTC")

    def stamped(df: pd.DataFrame) -> pd.DataFrame:
        out = df.reset_index(drop=True).copy()
        out["event_timestamp"] = stamp
        out["created"] = stamp
        return out

    cards = world.cards[list(CARD_PROFILE_COLUMNS)].astype(
        {"home_country": "string", "primary_device": "string", "card_id": "string"}
    )
    merchants = world.merchants[list(MERCHANT_RISK_COLUMNS)].astype({"merchant_id": "string"})
    vel = velocity_at(world, world.end_ms).astype({"card_id": "string"})
    for name, df in (("card_profile", cards), ("merchant_risk", merchants), ("card_velocity", vel)):
        tmp = data_dir / f".{name}.parquet.tmp"
        stamped(df).to_parquet(tmp, index=False)
        tmp.replace(data_dir / f"{name}.parquet")  # readers never see a half-written file


def iter_events(
    seed: int,
    world_or_params: World | WorldParams | None = None,
    start_ms: int | None = None,
    *,
    rate_per_s: float | None = None,
    limit: int | None = None,
    unknown_frac: float = 0.01,
    chunk_size: int = 4096,
) -> Iterator[dict[str, object]]:
    """Transaction events on the wire schema, endless unless ``limit`` is given.

    Uses the world's cards and merchants (from ``seed``; a ``WorldParams`` avoids generating the
    historical transactions; None means the default sizes, as ``setup_features`` uses), with
    bursts as in training. ``start_ms`` defaults to the current wall-clock time. ``unknown_frac`` of events carry a card
    or merchant id that no table knows. Event time starts at ``start_ms`` and advances by
    ``rate_per_s`` events per second of event time; the default is the historical density, the
    only rate at which the velocity values the streaming job computes look like training's.
    Deterministic for a given (seed, params, start_ms, rate).
    """
    if world_or_params is None:
        world_or_params = WorldParams()
    if start_ms is None:
        start_ms = time.time_ns() // 1_000_000
    params = world_or_params.params if isinstance(world_or_params, World) else world_or_params
    if isinstance(world_or_params, World):
        cards, merchants = world_or_params.cards, world_or_params.merchants
    else:
        cards, merchants = generate_entities(seed, params.n_cards, params.n_merchants)
    rate = params.txns_per_s if rate_per_s is None else rate_per_s
    if rate <= 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate}")
    rng = _rng(seed, 3, start_ms)
    cid, mid = card_ids(params.n_cards), merchant_ids(params.n_merchants)
    chunk_ms = max(1, int(chunk_size / rate * 1000.0))
    window_start = start_ms
    pending = pd.DataFrame()
    emitted = 0
    while limit is None or emitted < limit:
        fresh = _simulate(rng, cards, merchants, chunk_size, window_start, chunk_ms)
        window_end = window_start + chunk_ms
        allrows = pd.concat([pending, fresh], ignore_index=True) if len(pending) else fresh
        allrows = allrows.sort_values("event_time_ms", kind="stable")
        now = allrows[allrows["event_time_ms"] < window_end]
        pending = allrows[allrows["event_time_ms"] >= window_end]
        window_start = window_end
        n = len(now)
        cards_col = cid[now["card_idx"].to_numpy(np.int64)]
        merch_col = mid[now["merchant_idx"].to_numpy(np.int64)]
        unk = rng.random(n) < unknown_frac
        unk_card = unk & (rng.random(n) < 0.5)
        unk_merch = unk & ~unk_card
        cards_col = np.where(unk_card, _hex_ids(rng, UNKNOWN_CARD_PREFIX, n, bits=32), cards_col)
        merch_col = np.where(unk_merch, _hex_ids(rng, UNKNOWN_MERCHANT_PREFIX, n, bits=24), merch_col)
        rows = zip(
            now["event_id"].tolist(),
            cards_col.tolist(),
            merch_col.tolist(),
            now["amount"].tolist(),
            now["currency"].tolist(),
            now["country"].tolist(),
            now["device_id"].tolist(),
            now["event_time_ms"].tolist(),
        )
        for eid, card, merch, amount, cur, country, dev, tms in rows:
            if limit is not None and emitted >= limit:
                return
            emitted += 1
            yield {
                "event_id": eid,
                "card_id": card,
                "merchant_id": merch,
                "amount": amount,
                "currency": cur,
                "country": country,
                "device_id": dev,
                "event_time_ms": tms,
            }
